//! `synaxisctl budget ...`: sets, shows or removes the budget of a key, team or organization.

use std::io::Write;

use synaxis_shared::budgets::{Budget, SetBudgetRequest};

use super::CommandError;
use crate::cli::BudgetAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: BudgetAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    let budget = match action {
        BudgetAction::Set {
            owner,
            max_usd,
            reset_spend,
        } => {
            let path = owner.path();
            let segments = path.each_ref().map(String::as_str);
            let request = SetBudgetRequest {
                max_usd,
                reset_spend,
            };
            client.put::<Budget, _>(&segments, &request).await?
        }
        BudgetAction::Show { owner } => {
            let path = owner.path();
            let segments = path.each_ref().map(String::as_str);
            client.get::<Budget>(&segments, &[]).await?
        }
        BudgetAction::Remove { owner } => {
            let path = owner.path();
            let segments = path.each_ref().map(String::as_str);
            client.delete::<Budget>(&segments).await?
        }
    };
    printer.one(&budget)?;
    Ok(())
}
