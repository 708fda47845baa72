//! `synaxisctl`: a command-line client of the Synaxis control API. It parses the command
//! line, sends one request and prints the reply. `synaxisctl context` manages the config
//! file instead and sends no request.

mod cli;
mod client;
mod commands;
mod config;
mod exit;
mod language;
mod limits_file;
mod messages;
mod output;
mod prompt;
mod settings;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, GlobalArgs, Resource};
use crate::client::Client;
use crate::commands::CommandError;
use crate::config::ConfigStore;
use crate::exit::Exit;
use crate::language::Language;
use crate::output::Printer;
use crate::prompt::{Field, Prompter};
use crate::settings::{Connection, Layer};

fn main() -> ExitCode {
    let Cli { global, resource } = Cli::parse();
    let language = Language::from_env();
    let prompter = Prompter::for_terminal(language);

    let result = match resource {
        Resource::Context { action } => {
            let flags = commands::ContextFlags {
                endpoint: global.endpoint,
                token: global.token,
            };
            let mut printer = Printer::new(io::stdout(), global.output, language);
            commands::context(action, flags, &prompter, &mut printer)
        }
        Resource::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "synaxisctl", &mut io::stdout());
            Ok(())
        }
        resource => run(global, resource, &prompter, language),
    };

    match result {
        Ok(()) => Exit::Success.into(),
        Err(error) => {
            if !error.is_broken_pipe() {
                eprintln!("synaxisctl: {}", language.describe(&error));
            }
            error.exit().into()
        }
    }
}

/// Runs a command of the control API.
fn run(
    global: GlobalArgs,
    resource: Resource,
    prompter: &Prompter,
    language: Language,
) -> Result<(), CommandError> {
    let connection = connect(&global, language)?;
    let token = connection.token.ok_or(CommandError::MissingToken)?;

    let timeout = Duration::from_secs(
        resource
            .minimum_timeout()
            .map_or(global.timeout, |minimum| minimum.max(global.timeout)),
    );
    let justification = match global.justification {
        None if resource.requires_justification() => {
            Some(prompter.require(None, Field::Justification)?)
        }
        justification => justification,
    };
    let client = Client::new(
        connection.endpoint,
        &token,
        language,
        timeout,
        justification.as_ref(),
    )?;
    let mut printer = Printer::new(io::stdout(), global.output, language);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    runtime.block_on(dispatch(resource, &client, prompter, &mut printer))
}

/// Resolves the endpoint and the token, and warns when the token comes from a config file
/// that other users may read.
fn connect(global: &GlobalArgs, language: Language) -> Result<Connection, CommandError> {
    let flags = Layer {
        endpoint: global.endpoint.clone(),
        token: global.token.clone(),
    };
    let environment = Layer::from_env()?;
    let connection = settings::resolve(flags, environment, Layer::from_current_context)?;

    if connection.token_from_context
        && let Ok(store) = ConfigStore::from_env()
        && let Some(mode) = store.exposed_mode()
    {
        eprintln!(
            "synaxisctl: {}",
            language.exposed_config_warning(store.path(), mode)
        );
    }
    Ok(connection)
}

async fn dispatch(
    resource: Resource,
    client: &Client,
    prompter: &Prompter,
    printer: &mut Printer<io::Stdout>,
) -> Result<(), CommandError> {
    match resource {
        Resource::Org { action } => commands::org(action, client, prompter, printer).await,
        Resource::Team { action } => commands::team(action, client, prompter, printer).await,
        Resource::User { action } => commands::user(action, client, prompter, printer).await,
        Resource::Key { action } => commands::key(action, client, prompter, printer).await,
        Resource::Limits { action } => commands::limits(action, client, printer).await,
        Resource::Plan { action } => commands::plan(action, client, printer).await,
        Resource::Credits { action } => commands::credits(action, client, printer).await,
        Resource::Budget { action } => commands::budget(action, client, printer).await,
        Resource::Fx { action } => commands::fx(action, client, printer).await,
        Resource::Invoice { action } => commands::invoice(action, client, printer).await,
        Resource::Audit { action } => commands::audit(action, client, printer).await,
        Resource::Region { action } => commands::region(action, client, printer).await,
        Resource::Failover { action } => commands::failover(action, client, printer).await,
        Resource::Compliance { action } => commands::compliance(action, client, printer).await,
        // `main` runs `context` and `completions` without a client.
        Resource::Context { .. } | Resource::Completions { .. } => Ok(()),
    }
}
