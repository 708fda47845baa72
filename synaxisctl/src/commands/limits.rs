//! `synaxisctl limits ...`

use std::io::Write;

use synaxis_shared::limits::LimitSet;

use super::CommandError;
use crate::cli::LimitsAction;
use crate::client::Client;
use crate::limits_file::{self, Input};
use crate::output::Printer;

pub async fn run(
    action: LimitsAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        LimitsAction::Set { scope, file } => {
            let limits = limits_file::read(&Input::from_arg(&file))?;
            let path = scope.path();
            let segments = path.each_ref().map(String::as_str);
            let reply = client.put::<LimitSet, _>(&segments, &limits).await?;
            printer.one(&reply)?;
        }
        LimitsAction::Show { scope } => {
            let path = scope.path();
            let segments = path.each_ref().map(String::as_str);
            let reply = client.get::<LimitSet>(&segments, &[]).await?;
            printer.one(&reply)?;
            if reply.body.is_empty() {
                eprintln!("{}", printer.language().no_stored_limits());
            }
        }
    }
    Ok(())
}
