//! `synaxisctl compliance ...`

use std::io::Write;

use synaxis_shared::api::List;
use synaxis_shared::compliance::ResidencyCheck;

use super::CommandError;
use crate::cli::ComplianceAction;
use crate::client::{Client, Reply};
use crate::output::Printer;

pub async fn run(
    action: ComplianceAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        ComplianceAction::ResidencyCheck => {
            let reply = client
                .get::<ResidencyCheck>(&["compliance", "residency"], &[])
                .await?;
            let problems: Vec<String> = reply
                .body
                .reports
                .iter()
                .filter_map(|report| match (&report.error, report.violations.len()) {
                    (Some(error), _) => Some(format!("{}: {error}", report.region)),
                    (None, 0) => None,
                    (None, count) => Some(format!("{}: {count} violations", report.region)),
                })
                .collect();
            // The whole report is printed in both cases, so that scripts can read it before
            // checking the exit status.
            printer.list(&Reply {
                raw: reply.raw,
                body: List {
                    data: reply.body.reports,
                },
            })?;
            if !problems.is_empty() {
                return Err(CommandError::ResidencyProblems { problems });
            }
        }
    }
    Ok(())
}
