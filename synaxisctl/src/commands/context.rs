//! `synaxisctl context ...`: edits the contexts of the config file.

use std::io::Write;

use reqwest::Url;

use super::CommandError;
use crate::cli::{BearerToken, ContextAction};
use crate::config::{ConfigStore, Context};
use crate::output::Printer;
use crate::prompt::{Field, Prompter};

/// The values of `--endpoint` and `--token` given on the command line, which `context add`
/// saves.
#[derive(Debug)]
pub struct ContextFlags {
    pub endpoint: Option<Url>,
    pub token: Option<BearerToken>,
}

pub fn run(
    action: ContextAction,
    flags: ContextFlags,
    prompter: &Prompter,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    let store = ConfigStore::from_env()?;
    // Loading first means that a broken file is reported before any prompt, and that it is
    // never overwritten.
    let mut file = store.load()?;
    let language = printer.language();

    match action {
        ContextAction::Add { name, replace } => {
            let endpoint = prompter.require(flags.endpoint, Field::Endpoint)?;
            let context = Context {
                endpoint,
                token: flags.token,
            };
            let added = file
                .add(&name, context, replace)
                .map_err(|error| store.context_error(error))?;
            store.save(&file)?;
            let message = language.context_added(&name, added, store.path());
            printer.context_change(&message, &file)?;
        }
        ContextAction::Use { name } => {
            let context = file
                .use_context(&name)
                .map_err(|error| store.context_error(error))?;
            let message = language.context_used(&name, &context.endpoint);
            store.save(&file)?;
            printer.context_change(&message, &file)?;
        }
        ContextAction::List => {
            printer.contexts(&file)?;
        }
        ContextAction::Remove { name } => {
            let was_current = file
                .remove(&name)
                .map_err(|error| store.context_error(error))?;
            store.save(&file)?;
            let message = language.context_removed(&name, was_current);
            printer.context_change(&message, &file)?;
        }
    }
    Ok(())
}
