//! `synaxisctl user ...`

use std::io::Write;

use synaxis_shared::api::{CreateUserRequest, User};

use super::CommandError;
use crate::cli::UserAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: UserAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        UserAction::Create {
            org_id,
            email,
            role,
        } => {
            let request = CreateUserRequest {
                org_id,
                email,
                role,
            };
            let reply = client.post::<User, _>(&["users"], &request).await?;
            printer.one(&reply)?;
        }
        UserAction::List { org_id } => {
            let query = [("org_id", org_id.to_string())];
            let reply = client.get(&["users"], &query).await?;
            printer.list::<User>(&reply)?;
        }
        UserAction::Show { user_id } => {
            let reply = client
                .get::<User>(&["users", &user_id.to_string()], &[])
                .await?;
            printer.one(&reply)?;
        }
        UserAction::Revoke { user_id } => {
            let path = ["users", &user_id.to_string(), "revoke"];
            let reply = client.post_empty::<User>(&path).await?;
            printer.one(&reply)?;
        }
    }
    Ok(())
}
