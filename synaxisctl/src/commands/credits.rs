//! `synaxisctl credits ...`

use std::io::Write;

use synaxis_shared::api::List;
use synaxis_shared::credits::{
    AddCreditRequest, AutoTopup, CreditBalance, CreditEntry, CreditKind,
};

use super::CommandError;
use crate::cli::{CreditArgs, CreditsAction};
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
        CreditsAction::AutoTopup {
            org,
            threshold,
            amount,
            off: _,
        } => {
            let path = ["orgs", org.as_str(), "credits", "auto-topup"];
            let reply = match threshold.zip(amount) {
                Some((threshold_usd, amount_usd)) => {
                    let settings = AutoTopup {
                        threshold_usd,
                        amount_usd,
                    };
                    client.put::<CreditBalance, _>(&path, &settings).await?
                }
                None => client.delete::<CreditBalance>(&path).await?,
            };
            printer.one(&reply)?;
            return Ok(());
        }
        CreditsAction::Topup(args) => credit(CreditKind::Topup, args),
        CreditsAction::Refund(args) => credit(CreditKind::Refund, args),
        CreditsAction::Adjust(args) => credit(CreditKind::Adjustment, args),
    };
    let reply = client
        .post::<CreditEntry, _>(&["orgs", &org, "credits"], &request)
        .await?;
    printer.one(&reply)?;
    Ok(())
}

/// Returns the org and the request of a new ledger entry.
fn credit(kind: CreditKind, args: CreditArgs) -> (String, AddCreditRequest) {
    let request = AddCreditRequest {
        kind,
        amount_usd: args.amount,
        reference: args.reference,
    };
    (args.org, request)
}
