//! Operations on the budgets of keys, teams and organizations. Setting or removing a budget
//! requires a written justification. [`rbac`](super::rbac) checks budget changes by the rules
//! for limit sets, because a key's budget binds the key's user and a team's budget binds its
//! members, as their limits do.

use rust_decimal::Decimal;
use synaxis_shared::budgets::{Budget, BudgetRef, BudgetScope, SetBudgetRequest, to_micros};
use synaxis_shared::{KeyId, TeamId};

use super::rbac::{Action, Target};
use super::{Caller, Tenancy, TenancyError, check};
use crate::store::{LimitScope, StoreError};

/// Largest budget in USD, so that sums of micro-dollars stay far from overflowing 64 bits.
const MAX_BUDGET_USD: i64 = 1_000_000_000;

/// Budget owner as the caller named it: a key or team by id, or an organization by id or slug.
#[derive(Clone, Copy, Debug)]
pub enum BudgetOf<'a> {
    Key(KeyId),
    Team(TeamId),
    Org(&'a str),
}

impl BudgetOf<'_> {
    fn entity(self) -> &'static str {
        match self {
            Self::Key(_) => "key",
            Self::Team(_) => "team",
            Self::Org(_) => "organization",
        }
    }
}

impl Tenancy {
    /// Returns a budget with its spend and reservations, or a not-found error when the owner
    /// has no budget.
    pub async fn get_budget(
        &self,
        caller: &Caller,
        of: BudgetOf<'_>,
    ) -> Result<Budget, TenancyError> {
        let (budget, target) = self.budget_target(of).await?;
        check(&caller.actor, Action::BudgetRead, &target)?;
        self.store
            .get_budget(budget)
            .await?
            .ok_or_else(|| budget_not_found(budget).into())
    }

    /// Sets a budget's maximum and creates the budget when missing. Requires a justification.
    /// The change and any rejection are written to the audit log.
    pub async fn set_budget(
        &self,
        caller: &Caller,
        of: BudgetOf<'_>,
        request: SetBudgetRequest,
    ) -> Result<Budget, TenancyError> {
        let mut draft = self.draft(caller, Action::BudgetSet, of.entity());
        let result = async {
            let (budget, target) = self.budget_target(of).await?;
            draft.target_id = Some(budget.id.to_string());
            draft.org_id = target.org_id;
            check(&caller.actor, Action::BudgetSet, &target)?;
            super::plans::require_justification(caller, "changing a budget")?;
            let max_micros = max_micros(request.max_usd)?;
            let org_id = target.org_id.ok_or(TenancyError::Invalid {
                field: "org".to_owned(),
                message: "the budget's organization is unknown".to_owned(),
            })?;
            let stored = self
                .store
                .set_budget(
                    budget,
                    org_id,
                    max_micros,
                    request.reset_spend,
                    self.clock.now(),
                    &draft,
                )
                .await?;
            self.evict_budget(budget);
            Ok(stored)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Removes a budget, so that new requests are no longer limited by it, and returns its last
    /// state. Requires a justification. The change and any rejection are written to the audit log.
    pub async fn remove_budget(
        &self,
        caller: &Caller,
        of: BudgetOf<'_>,
    ) -> Result<Budget, TenancyError> {
        let mut draft = self.draft(caller, Action::BudgetRemove, of.entity());
        let result = async {
            let (budget, target) = self.budget_target(of).await?;
            draft.target_id = Some(budget.id.to_string());
            draft.org_id = target.org_id;
            check(&caller.actor, Action::BudgetRemove, &target)?;
            super::plans::require_justification(caller, "removing a budget")?;
            let removed = self
                .store
                .remove_budget(budget, &draft)
                .await?
                .ok_or_else(|| budget_not_found(budget))?;
            self.evict_budget(budget);
            Ok(removed)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Evicts the cached lookups of the keys that the budget applies to, so that this process
    /// reserves on a new budget from its next request. Other processes start when their cached
    /// lookups expire, within [`AUTH_CACHE_TTL_SECS`](super::cache::AUTH_CACHE_TTL_SECS) seconds.
    fn evict_budget(&self, budget: BudgetRef) {
        match budget.scope {
            BudgetScope::Key => self.auth_cache.evict_key(budget.id.into()),
            BudgetScope::Team => self.auth_cache.evict_team(budget.id.into()),
            BudgetScope::Org => self.auth_cache.evict_org(budget.id.into()),
        }
    }

    /// Loads the budget's owner and returns the budget reference with the permission target.
    /// The target is the owner's limit set, so a key's budget is checked like its user's limits.
    async fn budget_target(&self, of: BudgetOf<'_>) -> Result<(BudgetRef, Target), TenancyError> {
        let (budget, org_id, subject, limits_of, name) = match of {
            BudgetOf::Key(id) => {
                let key = self.store.get_key(id).await?;
                let user = self.store.get_user(key.user_id).await?;
                (
                    BudgetRef {
                        scope: BudgetScope::Key,
                        id: id.0,
                    },
                    key.org_id,
                    Some((user.id, user.role)),
                    LimitScope::User(user.id),
                    id.to_string(),
                )
            }
            BudgetOf::Team(id) => {
                let team = self.store.get_team(id).await?;
                (
                    BudgetRef {
                        scope: BudgetScope::Team,
                        id: id.0,
                    },
                    team.org_id,
                    None,
                    LimitScope::Team(id),
                    id.to_string(),
                )
            }
            BudgetOf::Org(id_or_slug) => {
                let org = self.load_org(id_or_slug).await?;
                (
                    BudgetRef {
                        scope: BudgetScope::Org,
                        id: org.id.0,
                    },
                    org.id,
                    None,
                    LimitScope::Org(org.id),
                    id_or_slug.to_owned(),
                )
            }
        };
        let target = Target {
            org_id: Some(org_id),
            subject,
            limits_of: Some(limits_of),
            named: (of.entity(), name),
            ..Target::default()
        };
        Ok((budget, target))
    }
}

fn budget_not_found(budget: BudgetRef) -> StoreError {
    StoreError::not_found("budget", format!("{} {}", budget.scope, budget.id))
}

/// Converts a budget's maximum to micro-dollars. Rejects negative amounts, fractions of a
/// micro-dollar and amounts that do not fit in an `i64`.
fn max_micros(max_usd: Decimal) -> Result<i64, TenancyError> {
    if max_usd.is_sign_negative() {
        return Err(TenancyError::invalid(
            "max_usd",
            format!("a budget cannot be negative ({max_usd}): give 0 or more USD"),
        ));
    }
    if max_usd > Decimal::from(MAX_BUDGET_USD) {
        return Err(TenancyError::invalid(
            "max_usd",
            format!("{max_usd} is above the largest budget, {MAX_BUDGET_USD} USD"),
        ));
    }
    to_micros(max_usd).ok_or_else(|| {
        TenancyError::invalid(
            "max_usd",
            format!(
                "{max_usd} has a fraction of a micro-dollar: give USD with at most 6 decimals, such as 25.50"
            ),
        )
    })
}
