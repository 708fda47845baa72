//! `synaxisctl failover ...`

use std::io::Write;

use synaxis_shared::region::{DrillReport, DrillRequest};

use super::CommandError;
use crate::cli::FailoverAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: FailoverAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        FailoverAction::Drill {
            region,
            duration,
            model,
        } => {
            let request = DrillRequest {
                region,
                duration_secs: duration,
                model,
            };
            let reply = client
                .post::<DrillReport, _>(&["failover", "drills"], &request)
                .await?;
            // The whole report is printed in both cases, so that scripts can read it before
            // checking the exit status.
            printer.drill_report(&reply)?;
            let report = &reply.body;
            if !report.passed() {
                let usage = &report.usage;
                let mut problems = report.unexpected.clone();
                for (count, what) in [
                    (usage.lost, "usage records lost"),
                    (usage.duplicated, "usage records duplicated"),
                    (
                        usage.still_held,
                        "usage records still held outside their region",
                    ),
                    (report.errors, "requests failed"),
                ] {
                    if count > 0 {
                        problems.push(format!("{count} {what}"));
                    }
                }
                if !report.restored {
                    problems.push(format!(
                        "{} was not restored in every region; its drain ends by itself a minute after the drill",
                        report.region
                    ));
                }
                return Err(CommandError::DrillProblems { problems });
            }
        }
    }
    Ok(())
}
