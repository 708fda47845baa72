//! Users' consent to cross-border processing. The user grants and withdraws it with their own
//! key, or the operator does on the user's documented request, and the org's managers may read
//! it. Every change is a new version, audited, and sent to the key directory, so that peer
//! regions see the latest state.

use synaxis_shared::compliance::{
    ConsentRecord, ConsentScope, ConsentSource, ConsentState, GrantConsentRequest,
};
use synaxis_shared::{RegionId, UserId};

use super::rbac::{Action, Actor};
use super::{Caller, Tenancy, TenancyError, check, subject_target};
use crate::store::NewConsent;

impl Tenancy {
    /// Returns the user's consent in `scope`: the latest record and the history.
    pub async fn consent(
        &self,
        caller: &Caller,
        user_id: UserId,
        scope: ConsentScope,
    ) -> Result<ConsentState, TenancyError> {
        let user = self.store.get_user(user_id).await?;
        check(
            &caller.actor,
            Action::ConsentRead,
            &subject_target(&user, "user", user_id),
        )?;
        self.consent_state(user_id, scope).await
    }

    /// Records the user's consent in the request's scope, for its regions.
    pub async fn grant_consent(
        &self,
        caller: &Caller,
        user_id: UserId,
        request: GrantConsentRequest,
    ) -> Result<ConsentState, TenancyError> {
        let mut regions = request.regions;
        regions.sort();
        regions.dedup();
        self.change_consent(
            caller,
            user_id,
            request.scope,
            true,
            regions,
            Action::ConsentGrant,
        )
        .await
    }

    /// Records the withdrawal of the user's consent in `scope`.
    pub async fn withdraw_consent(
        &self,
        caller: &Caller,
        user_id: UserId,
        scope: ConsentScope,
    ) -> Result<ConsentState, TenancyError> {
        self.change_consent(
            caller,
            user_id,
            scope,
            false,
            Vec::new(),
            Action::ConsentWithdraw,
        )
        .await
    }

    async fn change_consent(
        &self,
        caller: &Caller,
        user_id: UserId,
        scope: ConsentScope,
        granted: bool,
        regions: Vec<RegionId>,
        action: Action,
    ) -> Result<ConsentState, TenancyError> {
        let mut draft = self.draft(caller, action, "user");
        draft.target_id = Some(user_id.to_string());
        let result = async {
            let user = self.store.get_user(user_id).await?;
            draft.org_id = Some(user.org_id);
            check(
                &caller.actor,
                action,
                &subject_target(&user, "user", user_id),
            )?;
            self.check_consent_regions(&regions)?;
            let source = match caller.actor {
                Actor::Operator => {
                    // The operator acts on the user's documented request, which the audit
                    // entry names.
                    super::plans::require_justification(caller, "recording a user's consent")?;
                    ConsentSource::Operator
                }
                _ => ConsentSource::User,
            };
            let change = NewConsent {
                user_id,
                scope,
                granted,
                regions,
                source,
                at: self.clock.now(),
            };
            self.store.record_consent(&change, &draft).await?;
            // Peer regions read the consent from the key directory entries of the user's keys.
            self.auth_cache.evict_user(user_id);
            self.consent_state(user_id, scope).await
        }
        .await;
        self.audited(draft, result).await
    }

    /// Refuses a region that is not in the service's region table.
    fn check_consent_regions(&self, regions: &[RegionId]) -> Result<(), TenancyError> {
        let Some(unknown) = regions
            .iter()
            .find(|region| !self.regions.is_empty() && !self.regions.contains(region))
        else {
            return Ok(());
        };
        let known: Vec<&str> = self.regions.iter().map(RegionId::as_str).collect();
        Err(TenancyError::invalid(
            "regions",
            format!(
                "`{unknown}` is not a region of the service: use some of {}",
                known.join(", ")
            ),
        ))
    }

    async fn consent_state(
        &self,
        user_id: UserId,
        scope: ConsentScope,
    ) -> Result<ConsentState, TenancyError> {
        let history: Vec<ConsentRecord> = self.store.consent_history(user_id, scope).await?;
        let current = history.last().cloned();
        Ok(ConsentState {
            user_id,
            scope,
            granted: current.as_ref().is_some_and(|record| record.granted),
            current,
            history,
        })
    }
}
