//! `synaxisctl org ...`

use std::io::Write;

use synaxis_shared::api::{CreateOrgRequest, Org};

use super::CommandError;
use crate::cli::OrgAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: OrgAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        OrgAction::Create { name, slug } => {
            let request = CreateOrgRequest { name, slug };
            let reply = client.post::<Org, _>(&["orgs"], &request).await?;
            printer.one(&reply)?;
        }
        OrgAction::List => {
            let reply = client.get(&["orgs"], &[]).await?;
            printer.list::<Org>(&reply)?;
        }
        OrgAction::Show { org } => {
            let reply = client.get::<Org>(&["orgs", &org], &[]).await?;
            printer.one(&reply)?;
        }
        OrgAction::Revoke { org } => {
            let reply = client.post_empty::<Org>(&["orgs", &org, "revoke"]).await?;
            printer.one(&reply)?;
        }
    }
    Ok(())
}
