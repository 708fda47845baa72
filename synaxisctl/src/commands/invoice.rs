//! `synaxisctl invoice ...`

use std::io::Write;

use synaxis_shared::api::List;
use synaxis_shared::invoices::{Invoice, IssueInvoiceRequest};

use super::CommandError;
use crate::cli::InvoiceAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: InvoiceAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    match action {
        InvoiceAction::Issue { org, period } => {
            let request = IssueInvoiceRequest { period };
            let reply = client
                .post::<Invoice, _>(&["orgs", &org, "invoices"], &request)
                .await?;
            printer.one(&reply)?;
        }
        InvoiceAction::Show { invoice_id } => {
            let id = invoice_id.to_string();
            let reply = client.get::<Invoice>(&["invoices", &id], &[]).await?;
            printer.one(&reply)?;
        }
        InvoiceAction::List { org } => {
            let reply = client
                .get::<List<Invoice>>(&["orgs", &org, "invoices"], &[])
                .await?;
            printer.list(&reply)?;
        }
    }
    Ok(())
}
