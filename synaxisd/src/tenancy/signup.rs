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
use super::{Caller, Tenancy, TenancyError, slugify, validate_email, validate_slug};
use crate::store::StoreError;

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
        // Both are checked before anything is stored, so that bad input leaves nothing.
        let email = request.email.trim().to_owned();
        validate_email(&email)?;
        let name = request.org_name.trim().to_owned();
        if validate_slug(&slugify(&name)).is_err() {
            return Err(TenancyError::invalid(
                "org_name",
                format!(
                    "`{name}` is not usable as an organization name: give at least 2 ASCII letters or digits, such as `Acme Labs`"
                ),
            ));
        }
        let org = self
            .create_org_with_trial(
                &caller,
                CreateOrgRequest {
                    name: name.clone(),
                    slug: None,
                    plan: Some(trial_plan.to_owned()),
                },
                Some(Duration::days(i64::from(trial_days))),
            )
            .await
            .map_err(|error| match error {
                TenancyError::Store(StoreError::Conflict(_)) => {
                    TenancyError::Store(StoreError::Conflict(format!(
                        "an organization named `{name}` exists already: choose another org_name"
                    )))
                }
                other => other,
            })?;
        let owner = async {
            let user = self
                .create_user(
                    &caller,
                    CreateUserRequest {
                        org_id: org.id,
                        email,
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
                // An org without its owner is of no use.
                self.discard_failed_signup(&caller, org).await;
                Err(error)
            }
        }
    }

    /// Deletes the org of a signup whose owner or key could not be created, so that its name
    /// is free again.
    async fn discard_failed_signup(&self, caller: &Caller, org: Org) {
        let mut draft = self.draft(caller, Action::OrgRevoke, "organization");
        draft.target_id = Some(org.id.to_string());
        draft.org_id = Some(org.id);
        draft.justification = Some("the signup failed, so its organization was removed".to_owned());
        if let Err(error) = self.store.discard_org(org.id, &draft).await {
            tracing::error!(%error, org.id = %org.id, "removing the org of a failed signup failed");
        }
    }
}
