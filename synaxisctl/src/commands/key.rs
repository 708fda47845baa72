//! `synaxisctl key ...`

use std::io::Write;

use synaxis_shared::api::{CreateKeyRequest, CreatedKey, Key, RotateKeyRequest, UpdateKeyRequest};

use super::CommandError;
use crate::cli::KeyAction;
use crate::client::Client;
use crate::output::Printer;
use crate::prompt::{Field, Prompter};

pub async fn run(
    action: KeyAction,
    client: &Client,
    prompter: &Prompter,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        KeyAction::Create {
            user_id,
            name,
            scope,
            expires_at,
            allowed_models,
            rpm_limit,
            tpm_limit,
        } => {
            let user_id = prompter.require(user_id, Field::UserId)?;
            let request = CreateKeyRequest {
                user_id,
                name,
                scope,
                expires_at,
                allowed_models,
                rpm_limit,
                tpm_limit,
            };
            let reply = client.post::<CreatedKey, _>(&["keys"], &request).await?;
            printer.created_key(&reply)?;
        }
        KeyAction::List { org_id, user_id } => {
            let mut query = Vec::new();
            if let Some(org_id) = org_id {
                query.push(("org_id", org_id.to_string()));
            }
            if let Some(user_id) = user_id {
                query.push(("user_id", user_id.to_string()));
            }
            let reply = client.get(&["keys"], &query).await?;
            printer.list::<Key>(&reply)?;
        }
        KeyAction::Show { key_id } => {
            let reply = client
                .get::<Key>(&["keys", &key_id.to_string()], &[])
                .await?;
            printer.one(&reply)?;
        }
        KeyAction::Update {
            key_id,
            name,
            models,
            expires_at,
            rpm_limit,
            tpm_limit,
        } => {
            let request = UpdateKeyRequest {
                name,
                allowed_models: models.into_request(),
                expires_at,
                rpm_limit: rpm_limit.map(|change| change.0),
                tpm_limit: tpm_limit.map(|change| change.0),
            };
            let path = ["keys", &key_id.to_string()];
            let reply = client.patch::<Key, _>(&path, &request).await?;
            printer.one(&reply)?;
        }
        KeyAction::Rotate {
            key_id,
            grace_seconds,
        } => {
            let request = RotateKeyRequest { grace_seconds };
            let path = ["keys", &key_id.to_string(), "rotate"];
            let reply = client.post::<CreatedKey, _>(&path, &request).await?;
            printer.rotated_key(&reply)?;
        }
        KeyAction::Revoke { key_id } => {
            let path = ["keys", &key_id.to_string(), "revoke"];
            let reply = client.post_empty::<Key>(&path).await?;
            printer.one(&reply)?;
        }
    }
    Ok(())
}
