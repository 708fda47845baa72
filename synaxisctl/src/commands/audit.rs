//! `synaxisctl audit ...`

use std::io::Write;

use synaxis_shared::api::{AuditEntry, AuditVerification};

use super::CommandError;
use crate::cli::AuditAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: AuditAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        AuditAction::List {
            org_id,
            after_seq,
            limit,
        } => {
            let mut query = Vec::new();
            if let Some(org_id) = org_id {
                query.push(("org_id", org_id.to_string()));
            }
            if let Some(after_seq) = after_seq {
                query.push(("after_seq", after_seq.to_string()));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let reply = client.get(&["audit"], &query).await?;
            printer.list::<AuditEntry>(&reply)?;
        }
        AuditAction::Verify => {
            let reply = client
                .get::<AuditVerification>(&["audit", "verify"], &[])
                .await?;
            // The result is printed in both cases, so that scripts can read it before
            // checking the exit status.
            printer.one(&reply)?;
            if !reply.body.valid {
                return Err(CommandError::AuditChainBroken {
                    first_broken: reply.body.first_broken,
                });
            }
        }
    }
    Ok(())
}
