//! `synaxisctl org ...`

use std::io::Write;

use synaxis_shared::api::{CreateOrgRequest, Org, UpdateOrgRequest};
use synaxis_shared::plans::OrgEntitlements;

use super::CommandError;
use crate::cli::OrgAction;
use crate::client::Client;
use crate::output::Printer;
use crate::prompt::{Field, Prompter};

pub async fn run(
    action: OrgAction,
    client: &Client,
    prompter: &Prompter,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        OrgAction::Create { name, slug, plan } => {
            let name = prompter.require(name, Field::OrgName)?;
            let request = CreateOrgRequest { name, slug, plan };
            let reply = client.post::<Org, _>(&["orgs"], &request).await?;
            printer.one(&reply)?;
        }
        OrgAction::List => {
            let reply = client.get(&["orgs"], &[]).await?;
            printer.list::<Org>(&reply)?;
        }
        OrgAction::Show { org } => {
            let reply = client.get::<Org>(&["orgs", &org], &[]).await?;
            let entitlements = client
                .get::<OrgEntitlements>(&["orgs", &org, "entitlements"], &[])
                .await?;
            printer.org_details(&reply, &entitlements)?;
        }
        OrgAction::Update {
            org,
            name,
            models,
            billing_currency,
            transfer_mechanism,
        } => {
            let request = UpdateOrgRequest {
                name,
                allowed_models: models.into_request(),
                billing_currency,
                transfer_mechanism: transfer_mechanism.map(Into::into),
            };
            let reply = client.patch::<Org, _>(&["orgs", &org], &request).await?;
            printer.one(&reply)?;
        }
        OrgAction::Revoke { org } => {
            let reply = client.post_empty::<Org>(&["orgs", &org, "revoke"]).await?;
            printer.one(&reply)?;
        }
        OrgAction::Override { org, set, unset } => {
            let mut changes = serde_json::Map::new();
            for field in unset {
                changes.insert(field, serde_json::Value::Null);
            }
            for (field, value) in set {
                changes.insert(field, value);
            }
            let reply = client
                .patch::<OrgEntitlements, _>(&["orgs", &org, "entitlements"], &changes)
                .await?;
            printer.one(&reply)?;
        }
    }
    Ok(())
}
