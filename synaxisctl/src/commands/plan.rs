//! `synaxisctl plan ...`

use std::io::Write;

use synaxis_shared::plans::{LifecycleReport, MigratePlanRequest, OrgEntitlements};

use super::CommandError;
use crate::cli::PlanAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: PlanAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        PlanAction::RunLifecycle => {
            let reply = client
                .post_empty::<LifecycleReport>(&["plans", "lifecycle"])
                .await?;
            printer.one(&reply)?;
        }
        PlanAction::Migrate { org, plan, version } => {
            let request = MigratePlanRequest { plan, version };
            let reply = client
                .post::<OrgEntitlements, _>(&["orgs", &org, "plan"], &request)
                .await?;
            printer.one(&reply)?;
        }
    }
    Ok(())
}
