//! `synaxisctl region ...`

use std::io::Write;

use synaxis_shared::api::List;
use synaxis_shared::region::{RegionStatus, RegionsStatus};

use super::CommandError;
use crate::cli::RegionAction;
use crate::client::{Client, Reply};
use crate::output::{Printer, RegionRow};

pub async fn run(
    action: RegionAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        RegionAction::Status => {
            let reply = client.get::<RegionsStatus>(&["regions"], &[]).await?;
            let rows = RegionRow::rows(&reply.body);
            let problems: Vec<String> = reply
                .body
                .views
                .iter()
                .flat_map(|view| {
                    let unreadable = view
                        .error
                        .as_ref()
                        .map(|error| format!("{}: {error}", view.observer));
                    let down = view
                        .regions
                        .iter()
                        .filter(|health| health.status == RegionStatus::Down)
                        .map(|health| format!("{}: {} down", view.observer, health.region));
                    unreadable.into_iter().chain(down)
                })
                .collect();
            // The whole response is printed in both cases, so that scripts can read it before
            // checking the exit status.
            printer.list(&Reply {
                raw: reply.raw,
                body: List { data: rows },
            })?;
            if !problems.is_empty() {
                return Err(CommandError::RegionsDegraded { problems });
            }
        }
    }
    Ok(())
}
