//! Self-service signup: an org on a trial of a plan, its owner, and the owner's first
//! management key, created by the signup actor. The region of the signup is chosen before, by
//! the control handler.

use chrono::Duration;
use synaxis_shared::api::{
    CreateKeyRequest, CreateOrgRequest, CreateUserRequest, KeyScope, Org, SignupRequest,
    SignupResponse,
};
use synaxis_shared::{Locale, Role};

use super::rbac::{Action, Actor};
use super::{Caller, Tenancy, TenancyError};

impl Tenancy {
    /// Creates the org of a signup on a trial of `trial_plan` for `trial_days`, its owner
    /// with `request.email`, and the owner's management key. `source_ip` is the client's
    /// address, which the audit log keeps.
    pub async fn signup(
        &self,
        request: SignupRequest,
        trial_plan: &str,
        trial_days: u32,
        source_ip: Option<String>,
    ) -> Result<SignupResponse, TenancyError> {
        let caller = Caller {
            actor: Actor::Signup,
            source_ip,
            justification: None,
        };
        let org = self
            .create_org_with_trial(
                &caller,
                CreateOrgRequest {
                    name: request.org_name,
                    slug: None,
                    plan: Some(trial_plan.to_owned()),
                },
                Some(Duration::days(i64::from(trial_days))),
            )
            .await?;
        let owner = async {
            let user = self
                .create_user(
                    &caller,
                    CreateUserRequest {
                        org_id: org.id,
                        email: request.email,
                        role: Role::Owner,
                        team_id: None,
                        locale: Locale::En,
                    },
                )
                .await?;
            let created = self
                .create_key(
                    &caller,
                    CreateKeyRequest {
                        user_id: user.id,
                        name: Some("signup".to_owned()),
                        scope: KeyScope::Management,
                        expires_at: None,
                        allowed_models: Vec::new(),
                        rpm_limit: None,
                        tpm_limit: None,
                    },
                )
                .await?;
            Ok::<_, TenancyError>((user, created))
        }
        .await;
        match owner {
            Ok((user, created)) => Ok(SignupResponse {
                org,
                user,
                key: created.key,
                secret: created.secret,
            }),
            Err(error) => {
                // An org without its owner is of no use: it is deactivated, and its slug stays
                // taken, as for any revoked org.
                self.deactivate_failed_signup(&caller, org).await;
                Err(error)
            }
        }
    }

    async fn deactivate_failed_signup(&self, caller: &Caller, mut org: Org) {
        let mut draft = self.draft(caller, Action::OrgRevoke, "organization");
        draft.target_id = Some(org.id.to_string());
        draft.org_id = Some(org.id);
        org.active = false;
        if let Err(error) = self.store.update_org(&org, &draft).await {
            tracing::error!(%error, org.id = %org.id, "deactivating the org of a failed signup failed");
        }
    }
}
