//! The plan lifecycle: trials that end, and resources past a plan's caps. When a trial ends,
//! the org moves to the catalog's default plan. After that, or any plan change that lowers a
//! cap, the teams, users and keys past the caps are suspended, newest first. A change that
//! raises a cap restores them, and what stays suspended for 30 days is deleted.

use chrono::{DateTime, Duration, Utc};
use synaxis_shared::OrgId;
use synaxis_shared::api::Org;
use synaxis_shared::money::Currency;
use synaxis_shared::plans::{Entitlements, LifecycleReport, Quota};

use super::rbac::{Action, Target};
use super::{Caller, Tenancy, TenancyError, check};
use crate::store::{ResourceCaps, ResourceCounts};

/// Days that a suspended resource is kept before it is deleted.
pub const PURGE_AFTER_DAYS: i64 = 30;

impl Tenancy {
    /// Ends the trials that are over, suspends what their orgs have past the default plan's
    /// caps, and deletes what was suspended 30 days ago or more. Operator only.
    pub async fn run_lifecycle(&self, caller: &Caller) -> Result<LifecycleReport, TenancyError> {
        check(&caller.actor, Action::PlanLifecycle, &Target::default())?;
        let now = self.clock.now();
        let mut report = LifecycleReport::default();

        for mut org in self.store.orgs_with_ended_trials(now).await? {
            let trial_plan = org.plan.clone();
            let plan = self.plans.require("plan", self.plans.default_plan())?;
            org.plan = plan.id.clone();
            org.plan_version = plan.latest().0;
            org.trial_ends_at = None;
            self.fit_currency(&mut org);
            let mut draft = self.lifecycle_draft(caller, Action::PlanTrialEnd, org.id);
            draft.justification = Some(format!("the trial of {trial_plan} ended"));
            self.store.update_org(&org, &draft).await?;
            report.trials_ended.push(org.id);
            let suspended = self.suspend_over_caps(caller, &org, now).await?;
            report.suspended.add(suspended);
        }

        let before = now - Duration::days(PURGE_AFTER_DAYS);
        for org_id in self.store.orgs_with_suspensions(before).await? {
            let mut draft = self.lifecycle_draft(caller, Action::PlanPurge, org_id);
            draft.justification = Some(format!("suspended for {PURGE_AFTER_DAYS} days"));
            let purged = self.store.purge_suspended(org_id, before, &draft).await?;
            report.purged.add(purged);
            self.auth_cache.evict_org(org_id);
        }
        Ok(report)
    }

    /// Applies the caps of `org`'s plan after a change from `previous`. When a cap rose, or the
    /// previous caps are unknown, the suspended resources are restored first. Then those past
    /// the caps are suspended.
    pub(super) async fn apply_caps(
        &self,
        caller: &Caller,
        previous: Option<&Entitlements>,
        org: &Org,
    ) -> Result<(), TenancyError> {
        let (entitlements, _) = self.plans.entitlements_of(org)?;
        if previous.is_none_or(|previous| raises_a_cap(previous, &entitlements)) {
            let draft = self.lifecycle_draft(caller, Action::PlanRestore, org.id);
            self.store.restore_suspended(org.id, &draft).await?;
        }
        let mut fitted = org.clone();
        if self.fit_currency(&mut fitted) {
            let mut draft = self.lifecycle_draft(caller, Action::OrgUpdate, org.id);
            draft.justification = Some(format!(
                "the plan does not bill in {}, so the org bills in USD",
                org.billing_currency
            ));
            self.store.update_org(&fitted, &draft).await?;
        }
        self.suspend_over_caps(caller, org, self.clock.now())
            .await?;
        Ok(())
    }

    /// Moves the org to USD billing when its plan does not bill in its currency, and reports
    /// whether it did.
    fn fit_currency(&self, org: &mut Org) -> bool {
        let allowed = self
            .plans
            .entitlements_of(org)
            .is_ok_and(|(entitlements, _)| {
                entitlements
                    .billing_currencies
                    .iter()
                    .any(|code| code == org.billing_currency.code())
            });
        if allowed {
            return false;
        }
        org.billing_currency = Currency::base();
        true
    }

    async fn suspend_over_caps(
        &self,
        caller: &Caller,
        org: &Org,
        now: DateTime<Utc>,
    ) -> Result<ResourceCounts, TenancyError> {
        let (entitlements, plan) = self.plans.entitlements_of(org)?;
        let caps = ResourceCaps {
            teams: entitlements.teams.limit(),
            users_per_team: entitlements.users_per_team.limit(),
            keys_per_user: entitlements.keys_per_user.limit(),
        };
        let mut draft = self.lifecycle_draft(caller, Action::PlanSuspend, org.id);
        draft.justification = Some(format!("past the caps of the {} plan", plan.name));
        let suspended = self
            .store
            .suspend_over_caps(org.id, caps, now, &draft)
            .await?;
        self.auth_cache.evict_org(org.id);
        Ok(suspended)
    }

    fn lifecycle_draft(
        &self,
        caller: &Caller,
        action: Action,
        org_id: OrgId,
    ) -> crate::audit::AuditDraft {
        let mut draft = self.draft(caller, action, "organization");
        draft.target_id = Some(org_id.to_string());
        draft.org_id = Some(org_id);
        draft
    }
}

/// Reports whether any cap of `next` allows more than the same cap of `previous`.
fn raises_a_cap(previous: &Entitlements, next: &Entitlements) -> bool {
    [
        (previous.teams, next.teams),
        (previous.users_per_team, next.users_per_team),
        (previous.keys_per_user, next.keys_per_user),
    ]
    .into_iter()
    .any(|(before, after)| match (before, after) {
        (Quota::Unlimited, _) => false,
        (Quota::Limited(_), Quota::Unlimited) => true,
        (Quota::Limited(before), Quota::Limited(after)) => after > before,
    })
}
