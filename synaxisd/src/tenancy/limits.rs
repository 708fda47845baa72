//! Limit sets of organizations, teams and users: reading them, and replacing them with a written
//! justification. [`rbac`](super::rbac) decides who may set which scope's limits.

use synaxis_shared::api::JUSTIFICATION_HEADER;
use synaxis_shared::limits::{LimitSet, WindowKind};
use synaxis_shared::plans::Quota;
use synaxis_shared::{OrgId, TeamId, UserId};

use super::plans::PlanLimit;
use super::rbac::{Action, Target};
use super::{Caller, Tenancy, TenancyError, check};
use crate::store::LimitScope;

/// The prefix of the keys that validation errors name, such as
/// `limits.requests.per_minute.limit`.
pub const LIMITS_PREFIX: &str = "limits";

/// The owner of a limit set as the caller named it: an org by id or slug, a team or a user by
/// id.
#[derive(Clone, Copy, Debug)]
pub enum LimitsOf<'a> {
    Org(&'a str),
    Team(TeamId),
    User(UserId),
}

impl LimitsOf<'_> {
    fn entity(self) -> &'static str {
        match self {
            Self::Org(_) => "organization",
            Self::Team(_) => "team",
            Self::User(_) => "user",
        }
    }
}

impl Tenancy {
    /// Returns the limit set of an organization, team or user; an empty set when it has none.
    pub async fn get_limits(
        &self,
        caller: &Caller,
        of: LimitsOf<'_>,
    ) -> Result<LimitSet, TenancyError> {
        let (scope, target) = self.limits_target(of).await?;
        check(&caller.actor, Action::LimitsRead, &target)?;
        Ok(self.store.get_limits(scope).await?)
    }

    /// Replaces the limit set of an organization, team or user and returns the stored set. An
    /// empty set removes the scope's own set. `body` is the set that the request carried,
    /// or the error of reading it, so that an unreadable body is audited like any other
    /// failure. The call requires a justification.
    pub async fn set_limits(
        &self,
        caller: &Caller,
        of: LimitsOf<'_>,
        body: Result<LimitSet, TenancyError>,
    ) -> Result<LimitSet, TenancyError> {
        let mut draft = self.draft(caller, Action::LimitsSet, of.entity());
        let result = async {
            let (scope, target) = self.limits_target(of).await?;
            draft.target_id = Some(scope.id());
            draft.org_id = target.org_id;
            check(&caller.actor, Action::LimitsSet, &target)?;
            if caller.justification.is_none() {
                return Err(TenancyError::invalid(
                    JUSTIFICATION_HEADER,
                    format!(
                        "changing limits requires a justification: send it in the `{JUSTIFICATION_HEADER}` header, or pass --justification \"TEXT\" to synaxisctl"
                    ),
                ));
            }

            let limits = body?;
            let for_org = matches!(scope, LimitScope::Org(_));
            if let Err((key, reason)) = limits.validate(LIMITS_PREFIX, for_org) {
                let message = format!("invalid `{key}`: {reason}");
                return Err(TenancyError::invalid(key, message));
            }
            if let Some(org_id) = target.org_id {
                self.check_window_kinds(org_id, &limits).await?;
            }
            self.store.set_limits(scope, &limits, &draft).await?;
            match scope {
                LimitScope::Org(id) => self.auth_cache.evict_org(id),
                LimitScope::Team(id) => self.auth_cache.evict_team(id),
                LimitScope::User(id) => self.auth_cache.evict_user(id),
            }
            Ok(limits)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Rejects sliding windows in a limit set of an org whose plan allows only fixed ones.
    async fn check_window_kinds(
        &self,
        org_id: OrgId,
        limits: &LimitSet,
    ) -> Result<(), TenancyError> {
        let uses_sliding = limits
            .rules()
            .any(|(_, _, rule)| rule.window == WindowKind::Sliding);
        if !uses_sliding {
            return Ok(());
        }
        let org = self.store.get_org(org_id).await?;
        let (entitlements, plan) = self.plans.entitlements_of(&org)?;
        if entitlements.rate_limit_windows.allows_sliding() {
            return Ok(());
        }
        let lifted_by = self
            .plans
            .plans()
            .filter(|other| other.rank > plan.rank)
            .filter(|other| other.latest().1.rate_limit_windows.allows_sliding())
            .min_by_key(|other| other.rank)
            .map(|other| (other.name.clone(), Quota::Unlimited));
        Err(TenancyError::PlanLimit(Box::new(PlanLimit {
            field: "rate_limit_windows",
            plan_name: plan.name.clone(),
            limit: None,
            value: None,
            lifted_by,
        })))
    }

    /// Loads the owner of a limit set and returns its scope and the target that permissions
    /// are checked on.
    async fn limits_target(&self, of: LimitsOf<'_>) -> Result<(LimitScope, Target), TenancyError> {
        let (scope, org_id, subject, named) = match of {
            LimitsOf::Org(id_or_slug) => {
                let org = self.load_org(id_or_slug).await?;
                (LimitScope::Org(org.id), org.id, None, id_or_slug.to_owned())
            }
            LimitsOf::Team(id) => {
                let team = self.store.get_team(id).await?;
                (LimitScope::Team(id), team.org_id, None, id.to_string())
            }
            LimitsOf::User(id) => {
                let user = self.store.get_user(id).await?;
                let subject = Some((user.id, user.role));
                (LimitScope::User(id), user.org_id, subject, id.to_string())
            }
        };
        let target = Target {
            org_id: Some(org_id),
            subject,
            limits_of: Some(scope),
            named: (of.entity(), named),
            ..Target::default()
        };
        Ok((scope, target))
    }
}
