//! `synaxisctl`: a command-line client of the Synaxis control API. It parses the command
//! line, sends one request and prints the reply.

mod cli;
mod client;
mod commands;
mod exit;
mod language;
mod messages;
mod output;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, GlobalArgs, OperatorToken, Resource};
use crate::client::Client;
use crate::commands::CommandError;
use crate::exit::Exit;
use crate::language::Language;
use crate::output::Printer;

fn main() -> ExitCode {
    let Cli { global, resource } = Cli::parse();
    let language = Language::from_env();

    let Some(token) = global.token.clone() else {
        eprintln!("synaxisctl: {}", language.missing_token());
        return Exit::Usage.into();
    };

    match run(global, &token, resource, language) {
        Ok(()) => Exit::Success.into(),
        Err(error) => {
            if !error.is_broken_pipe() {
                eprintln!("synaxisctl: {}", language.describe(&error));
            }
            error.exit().into()
        }
    }
}

fn run(
    global: GlobalArgs,
    token: &OperatorToken,
    resource: Resource,
    language: Language,
) -> Result<(), CommandError> {
    let timeout = Duration::from_secs(global.timeout);
    let client = Client::new(global.endpoint, token, language, timeout)?;
    let mut printer = Printer::new(io::stdout(), global.output, language);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    runtime.block_on(dispatch(resource, &client, &mut printer))
}

async fn dispatch(
    resource: Resource,
    client: &Client,
    printer: &mut Printer<io::Stdout>,
) -> Result<(), CommandError> {
    match resource {
        Resource::Org { action } => commands::org(action, client, printer).await,
        Resource::User { action } => commands::user(action, client, printer).await,
        Resource::Key { action } => commands::key(action, client, printer).await,
    }
}
