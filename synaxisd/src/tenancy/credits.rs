//! The credit ledger of an org: its balance, its history, and the credit that an operator adds
//! with a justification.

use rust_decimal::Decimal;
use synaxis_shared::api::Org;
use synaxis_shared::credits::{AddCreditRequest, CreditBalance, CreditEntry, CreditKind};

use super::rbac::Action;
use super::{Caller, Tenancy, TenancyError, check, org_target};
use crate::store::NewCredit;

/// Entries returned at most by one history call.
pub const MAX_HISTORY: u64 = 1000;

impl Tenancy {
    /// Returns an org's credit balance and its plan's minimum balance.
    pub async fn credit_balance(
        &self,
        caller: &Caller,
        id_or_slug: &str,
    ) -> Result<CreditBalance, TenancyError> {
        let org = self.credits_org(caller, id_or_slug).await?;
        let (balance_usd, entries) = self.store.credit_balance(org.id).await?;
        let (entitlements, _) = self.plans.entitlements_of(&org)?;
        Ok(CreditBalance {
            org_id: org.id,
            balance_usd,
            minimum_balance_usd: entitlements.minimum_balance_usd,
            entries,
        })
    }

    /// Lists an org's ledger entries after position `after_seq`, oldest first.
    pub async fn credit_history(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<CreditEntry>, TenancyError> {
        let org = self.credits_org(caller, id_or_slug).await?;
        let limit = limit.clamp(1, MAX_HISTORY);
        Ok(self.store.list_credits(org.id, after_seq, limit).await?)
    }

    /// Loads the org whose credits the caller reads, when the caller may read them.
    async fn credits_org(&self, caller: &Caller, id_or_slug: &str) -> Result<Org, TenancyError> {
        let org = self.load_org(id_or_slug).await?;
        check(
            &caller.actor,
            Action::CreditsRead,
            &org_target(org.id, "organization", id_or_slug),
        )?;
        Ok(org)
    }

    /// Adds a top-up, a refund or an adjustment to an org's ledger. Top-ups and refunds are
    /// positive; an adjustment has either sign but is not zero. The call requires a
    /// justification.
    pub async fn add_credit(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        request: AddCreditRequest,
    ) -> Result<CreditEntry, TenancyError> {
        let mut draft = self.draft(caller, Action::CreditsAdd, "organization");
        let result = async {
            let org = self.load_org(id_or_slug).await?;
            draft.target_id = Some(org.id.to_string());
            draft.org_id = Some(org.id);
            check(
                &caller.actor,
                Action::CreditsAdd,
                &org_target(org.id, "organization", id_or_slug),
            )?;
            super::plans::require_justification(caller, "adding credit")?;
            validate_credit(&request)?;
            let credit = NewCredit {
                org_id: org.id,
                kind: request.kind,
                amount_usd: request.amount_usd,
                reference: request.reference,
                created_at: self.clock.now(),
            };
            Ok(self.store.append_credit(&credit, Some(&draft)).await?)
        }
        .await;
        self.audited(draft, result).await
    }
}

fn validate_credit(request: &AddCreditRequest) -> Result<(), TenancyError> {
    let amount = request.amount_usd;
    match request.kind {
        CreditKind::Topup | CreditKind::Refund if amount <= Decimal::ZERO => {
            Err(TenancyError::invalid(
                "amount_usd",
                format!(
                    "a {} adds credit, so its amount must be positive, not {amount}",
                    request.kind.as_str()
                ),
            ))
        }
        CreditKind::Adjustment if amount.is_zero() => Err(TenancyError::invalid(
            "amount_usd",
            "an adjustment of 0 changes nothing: give a positive or negative amount",
        )),
        CreditKind::Topup | CreditKind::Refund | CreditKind::Adjustment => Ok(()),
        CreditKind::Usage | CreditKind::Overage | CreditKind::AutoTopup => {
            Err(TenancyError::invalid(
                "kind",
                format!(
                    "entries of kind `{}` are written by the gateway: add a topup, refund or adjustment",
                    request.kind.as_str()
                ),
            ))
        }
    }
}
