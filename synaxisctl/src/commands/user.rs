//! `synaxisctl user ...`

use std::io::Write;

use synaxis_shared::api::{CreateUserRequest, UpdateUserRequest, User};
use synaxis_shared::compliance::{ConsentScope, ConsentState, GrantConsentRequest};

use super::CommandError;
use crate::cli::{ConsentAction, UserAction};
use crate::client::Client;
use crate::output::Printer;
use crate::prompt::{Field, Prompter};

pub async fn run(
    action: UserAction,
    client: &Client,
    prompter: &Prompter,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        UserAction::Create {
            org_id,
            email,
            role,
            team_id,
            locale,
        } => {
            let org_id = prompter.require(org_id, Field::OrgId)?;
            let email = prompter.require(email, Field::Email)?;
            let request = CreateUserRequest {
                org_id,
                email,
                role,
                team_id,
                locale,
            };
            let reply = client.post::<User, _>(&["users"], &request).await?;
            printer.one(&reply)?;
        }
        UserAction::List { org_id, team_id } => {
            let org_id = prompter.require(org_id, Field::OrgId)?;
            let mut query = vec![("org_id", org_id.to_string())];
            if let Some(team_id) = team_id {
                query.push(("team_id", team_id.to_string()));
            }
            let reply = client.get(&["users"], &query).await?;
            printer.list::<User>(&reply)?;
        }
        UserAction::Show { user_id } => {
            let reply = client
                .get::<User>(&["users", &user_id.to_string()], &[])
                .await?;
            printer.one(&reply)?;
        }
        UserAction::Update {
            user_id,
            role,
            team_id,
            locale,
        } => {
            let request = UpdateUserRequest {
                role,
                team_id,
                locale,
            };
            let path = ["users", &user_id.to_string()];
            let reply = client.patch::<User, _>(&path, &request).await?;
            printer.one(&reply)?;
        }
        UserAction::Revoke { user_id } => {
            let path = ["users", &user_id.to_string(), "revoke"];
            let reply = client.post_empty::<User>(&path).await?;
            printer.one(&reply)?;
        }
        UserAction::Consent { action } => {
            let reply = match action {
                ConsentAction::Show { user_id } => {
                    let path = ["users", &user_id.to_string(), "consent"];
                    client.get::<ConsentState>(&path, &[]).await?
                }
                ConsentAction::Grant { user_id, regions } => {
                    let path = ["users", &user_id.to_string(), "consent"];
                    let body = GrantConsentRequest {
                        scope: ConsentScope::CrossBorderFailover,
                        regions,
                    };
                    client.post::<ConsentState, _>(&path, &body).await?
                }
                ConsentAction::Withdraw { user_id } => {
                    let path = ["users", &user_id.to_string(), "consent"];
                    client.delete::<ConsentState>(&path).await?
                }
            };
            printer.one(&reply)?;
        }
    }
    Ok(())
}
