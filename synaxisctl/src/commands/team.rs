//! `synaxisctl team ...`

use std::io::Write;

use synaxis_shared::api::{CreateTeamRequest, Team, UpdateTeamRequest};

use super::CommandError;
use crate::cli::TeamAction;
use crate::client::Client;
use crate::output::Printer;
use crate::prompt::{Field, Prompter};

pub async fn run(
    action: TeamAction,
    client: &Client,
    prompter: &Prompter,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        TeamAction::Create {
            org_id,
            name,
            allowed_models,
        } => {
            let org_id = prompter.require(org_id, Field::OrgId)?;
            let name = prompter.require(name, Field::TeamName)?;
            let request = CreateTeamRequest {
                org_id,
                name,
                allowed_models,
            };
            let reply = client.post::<Team, _>(&["teams"], &request).await?;
            printer.one(&reply)?;
        }
        TeamAction::List { org_id } => {
            let org_id = prompter.require(org_id, Field::OrgId)?;
            let query = [("org_id", org_id.to_string())];
            let reply = client.get(&["teams"], &query).await?;
            printer.list::<Team>(&reply)?;
        }
        TeamAction::Show { team_id } => {
            let reply = client
                .get::<Team>(&["teams", &team_id.to_string()], &[])
                .await?;
            printer.one(&reply)?;
        }
        TeamAction::Update {
            team_id,
            name,
            models,
        } => {
            let request = UpdateTeamRequest {
                name,
                allowed_models: models.into_request(),
            };
            let path = ["teams", &team_id.to_string()];
            let reply = client.patch::<Team, _>(&path, &request).await?;
            printer.one(&reply)?;
        }
    }
    Ok(())
}
