//! `synaxisctl credits ...`

use std::io::Write;

use synaxis_shared::api::List;
use synaxis_shared::credits::{AddCreditRequest, CreditBalance, CreditEntry, CreditKind};

use super::CommandError;
use crate::cli::CreditsAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: CreditsAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    let (org, request) = match action {
        CreditsAction::Show { org } => {
            let reply = client
                .get::<CreditBalance>(&["orgs", &org, "credits"], &[])
                .await?;
            printer.one(&reply)?;
            return Ok(());
        }
        CreditsAction::History { org, after, limit } => {
            let query = [
                ("after_seq", after.to_string()),
                ("limit", limit.to_string()),
            ];
            let reply = client
                .get::<List<CreditEntry>>(&["orgs", &org, "credits", "history"], &query)
                .await?;
            printer.list(&reply)?;
            return Ok(());
        }
        CreditsAction::Topup {
            org,
            amount,
            reference,
        } => (org, credit(CreditKind::Topup, amount, reference)),
        CreditsAction::Refund {
            org,
            amount,
            reference,
        } => (org, credit(CreditKind::Refund, amount, reference)),
        CreditsAction::Adjust {
            org,
            amount,
            reference,
        } => (org, credit(CreditKind::Adjustment, amount, reference)),
    };
    let reply = client
        .post::<CreditEntry, _>(&["orgs", &org, "credits"], &request)
        .await?;
    printer.one(&reply)?;
    Ok(())
}

fn credit(
    kind: CreditKind,
    amount_usd: rust_decimal::Decimal,
    reference: Option<String>,
) -> AddCreditRequest {
    AddCreditRequest {
        kind,
        amount_usd,
        reference,
    }
}
