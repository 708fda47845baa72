//! The credit ledger of an org: its balance, its history, and the credit that an operator adds
//! with a justification.

use rust_decimal::Decimal;
use synaxis_shared::api::Org;
use synaxis_shared::credits::{
    AddCreditRequest, AutoTopup, CreditBalance, CreditEntry, CreditKind,
};
use synaxis_shared::plans::Quota;

use super::plans::PlanLimit;
use super::rbac::Action;
use super::{Caller, Tenancy, TenancyError, check, org_target};
use crate::audit::AuditDraft;
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
        let auto_topup = self.store.get_auto_topup(org.id).await?;
        Ok(CreditBalance {
            org_id: org.id,
            balance_usd,
            minimum_balance_usd: entitlements.minimum_balance_usd,
            entries,
            auto_topup,
        })
    }

    /// Sets, or with `None` turns off, an org's auto top-up: when overage takes its balance
    /// under the threshold, the payment provider adds the amount. Only plans with the
    /// `auto_topup` entitlement allow it.
    pub async fn set_auto_topup(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        auto_topup: Option<AutoTopup>,
    ) -> Result<CreditBalance, TenancyError> {
        let mut draft = self.draft(caller, Action::CreditsAutoTopup, "organization");
        let result = async {
            let org = self
                .checked_org(caller, Action::CreditsAutoTopup, id_or_slug, &mut draft)
                .await?;
            if let Some(settings) = &auto_topup {
                validate_auto_topup(settings)?;
                let (entitlements, plan) = self.plans.entitlements_of(&org)?;
                let minimum = entitlements.minimum_balance_usd;
                if entitlements.auto_topup && settings.threshold_usd < minimum {
                    return Err(TenancyError::invalid(
                        "threshold_usd",
                        format!(
                            "the threshold {} is under the plan's minimum balance of {minimum} USD, which refuses overage first: give {minimum} or more",
                            settings.threshold_usd
                        ),
                    ));
                }
                if !entitlements.auto_topup {
                    let lifted_by = self
                        .plans
                        .plans()
                        .filter(|other| other.rank > plan.rank && other.latest().1.auto_topup)
                        .min_by_key(|other| other.rank)
                        .map(|other| (other.name.clone(), Quota::Unlimited));
                    return Err(TenancyError::PlanLimit(Box::new(PlanLimit {
                        field: "auto_topup",
                        plan_name: plan.name.clone(),
                        limit: None,
                        value: None,
                        lifted_by,
                    })));
                }
            }
            self.store
                .set_auto_topup(org.id, auto_topup, &draft)
                .await?;
            Ok(org)
        }
        .await;
        let org = self.audited(draft, result).await?;
        self.credit_balance(caller, &org.id.to_string()).await
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

    /// Loads the org that `action` changes, names it in `draft`, and checks that the caller may
    /// perform the action.
    pub(super) async fn checked_org(
        &self,
        caller: &Caller,
        action: Action,
        id_or_slug: &str,
        draft: &mut AuditDraft,
    ) -> Result<Org, TenancyError> {
        let org = self.load_org(id_or_slug).await?;
        draft.target_id = Some(org.id.to_string());
        draft.org_id = Some(org.id);
        check(
            &caller.actor,
            action,
            &org_target(org.id, "organization", id_or_slug),
        )?;
        Ok(org)
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
            let org = self
                .checked_org(caller, Action::CreditsAdd, id_or_slug, &mut draft)
                .await?;
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

fn validate_auto_topup(settings: &AutoTopup) -> Result<(), TenancyError> {
    if settings.threshold_usd.is_sign_negative() {
        return Err(TenancyError::invalid(
            "threshold_usd",
            format!(
                "the threshold cannot be negative ({}): give the balance in USD under which to top up, such as 20.00",
                settings.threshold_usd
            ),
        ));
    }
    if settings.amount_usd <= Decimal::ZERO {
        return Err(TenancyError::invalid(
            "amount_usd",
            format!(
                "a top-up adds credit, so its amount must be positive, not {}",
                settings.amount_usd
            ),
        ));
    }
    Ok(())
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
