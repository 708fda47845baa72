//! Organizations, teams, users, virtual keys and their limit sets: the rules for changing them,
//! who may change them, and key authentication. Every state-changing call is audited: a success in the same
//! transaction as the change, a denial or failure as an entry of its own.

pub mod budgets;
pub mod cache;
pub mod consent;
pub mod credits;
pub mod invoices;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod models;
pub mod plans;
pub mod rbac;
pub mod signup;

use std::sync::Arc;
use synaxis_shared::compliance::{OrgTransferMechanism, TransferMechanismChange};

use chrono::Duration;
use secrecy::ExposeSecret;
use synaxis_shared::api::{
    ActorKind, AuditResult, CreateKeyRequest, CreateOrgRequest, CreateTeamRequest,
    CreateUserRequest, CreatedKey, Key, KeyScope, Org, RotateKeyRequest, Team, UpdateKeyRequest,
    UpdateOrgRequest, UpdateTeamRequest, UpdateUserRequest, User,
};
use synaxis_shared::limits::MAX_AMOUNT;
use synaxis_shared::money::Currency;
use synaxis_shared::{KeyId, OrgId, RegionId, TeamId, UserId};

use crate::audit::AuditDraft;
use crate::clock::Clock;
use crate::store::{AuthenticatedKey, KeyFilter, KeyRotation, Store, StoreError, UserFilter};
use cache::AuthCache;
use keys::KeyHasher;
use plans::{PlanCatalog, PlanLimit, over_cap};
use rbac::{Action, Actor, Denial, Target, authorize};

/// Longest accepted grace period of a rotated key's old secret.
const MAX_ROTATION_GRACE_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
    #[error("permission denied: {0}")]
    Denied(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the {} plan's limit of {} is reached", .0.plan_name, .0.field)]
    PlanLimit(Box<PlanLimit>),
}

impl TenancyError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn audit_result(&self) -> AuditResult {
        match self {
            Self::Denied(_) => AuditResult::Denied,
            _ => AuditResult::Failure,
        }
    }
}

/// The caller of a control call: actor, source address and stated reason.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: Actor,
    pub source_ip: Option<String>,
    pub justification: Option<String>,
}

impl Caller {
    /// Returns the operator with no source address, for tests and internal jobs.
    pub fn operator() -> Self {
        Self {
            actor: Actor::Operator,
            source_ip: None,
            justification: None,
        }
    }
}

/// The tenancy service of one region.
#[derive(Clone, Debug)]
pub struct Tenancy {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hasher: KeyHasher,
    region: RegionId,
    key_prefix: String,
    auth_cache: Arc<AuthCache>,
    plans: Arc<PlanCatalog>,
    /// Every region of the service; consent may name only these. Empty accepts any.
    regions: Vec<RegionId>,
}

impl Tenancy {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        hasher: KeyHasher,
        region: RegionId,
        key_prefix: String,
        plans: Arc<PlanCatalog>,
    ) -> Self {
        Self {
            store,
            clock,
            hasher,
            region,
            key_prefix,
            auth_cache: Arc::new(AuthCache::default()),
            plans,
            regions: Vec::new(),
        }
    }

    /// Sets the regions of the service, which consent records may name.
    pub fn with_regions(mut self, regions: Vec<RegionId>) -> Self {
        self.regions = regions;
        self
    }

    pub fn plans(&self) -> &Arc<PlanCatalog> {
        &self.plans
    }

    /// Replaces the auth cache, so that it counts into the daemon's metrics.
    pub fn with_auth_cache(mut self, cache: AuthCache) -> Self {
        self.auth_cache = Arc::new(cache);
        self
    }

    pub fn auth_cache(&self) -> &AuthCache {
        &self.auth_cache
    }

    /// Returns a handle on the authentication cache, for the tasks that evict from it.
    pub fn auth_cache_handle(&self) -> Arc<AuthCache> {
        self.auth_cache.clone()
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Starts the audit entry of a state-changing call.
    fn draft(&self, caller: &Caller, action: Action, target_kind: &str) -> AuditDraft {
        let mut draft = AuditDraft::new(self.clock.now(), self.region.clone());
        match &caller.actor {
            Actor::Operator => {
                draft.actor_kind = ActorKind::Operator;
                draft.actor_id = "operator".to_owned();
            }
            Actor::Member(member) => {
                draft.actor_kind = ActorKind::User;
                draft.actor_id = member.user_id.to_string();
            }
            Actor::Signup => {
                draft.actor_kind = ActorKind::Signup;
                draft.actor_id = "signup".to_owned();
            }
        }
        draft.action = action.name().to_owned();
        draft.target_kind = target_kind.to_owned();
        draft.source_ip = caller.source_ip.clone();
        draft.justification = caller.justification.clone();
        draft
    }

    /// Records a denied or failed call in the audit log and returns its error. The success
    /// entry of a call is written by the store with the change itself.
    async fn audited<T>(
        &self,
        mut draft: AuditDraft,
        result: Result<T, TenancyError>,
    ) -> Result<T, TenancyError> {
        let Err(error) = result else {
            return result;
        };
        draft.result = error.audit_result();
        if let Err(audit_error) = self.store.append_audit(&draft).await {
            tracing::error!(
                action = draft.action.as_str(),
                error = %audit_error,
                "failed to record a rejected control call in the audit log"
            );
        }
        Err(error)
    }

    /// Checks that `caller` may run `action`, an operation that changes no stored resource,
    /// such as a failover drill, and records a refusal in the audit log.
    pub async fn authorize_operation(
        &self,
        caller: &Caller,
        action: Action,
        target_kind: &str,
    ) -> Result<(), TenancyError> {
        let result = check(&caller.actor, action, &Target::default());
        if result.is_err() {
            let draft = self.draft(caller, action, target_kind);
            return self.audited(draft, result).await;
        }
        Ok(())
    }

    /// Records in the audit log an operation that [`Tenancy::authorize_operation`] allowed,
    /// with its result.
    pub async fn record_operation(
        &self,
        caller: &Caller,
        action: Action,
        target: (&str, &str),
        result: AuditResult,
    ) -> Result<(), TenancyError> {
        let (target_kind, target_id) = target;
        let mut draft = self.draft(caller, action, target_kind);
        draft.target_id = Some(target_id.to_owned());
        draft.result = result;
        self.store.append_audit(&draft).await?;
        Ok(())
    }

    // Organizations.

    pub async fn create_org(
        &self,
        caller: &Caller,
        request: CreateOrgRequest,
    ) -> Result<Org, TenancyError> {
        self.create_org_with_trial(caller, request, None).await
    }

    /// Creates an organization whose trial of its plan lasts `trial` from its creation, when
    /// set.
    pub(crate) async fn create_org_with_trial(
        &self,
        caller: &Caller,
        request: CreateOrgRequest,
        trial: Option<Duration>,
    ) -> Result<Org, TenancyError> {
        let mut draft = self.draft(caller, Action::OrgCreate, "organization");
        let result = self
            .create_org_inner(caller, request, trial, &mut draft)
            .await;
        self.audited(draft, result).await
    }

    async fn create_org_inner(
        &self,
        caller: &Caller,
        request: CreateOrgRequest,
        trial: Option<Duration>,
        draft: &mut AuditDraft,
    ) -> Result<Org, TenancyError> {
        check(&caller.actor, Action::OrgCreate, &Target::default())?;
        let name = request.name.trim();
        if name.is_empty() {
            return Err(TenancyError::invalid(
                "name",
                "the organization name is empty",
            ));
        }
        let slug = request.slug.unwrap_or_else(|| slugify(name));
        validate_slug(&slug)?;
        let plan_id = request
            .plan
            .unwrap_or_else(|| self.plans.default_plan().to_owned());
        let plan = self.plans.require("plan", &plan_id)?;

        let created_at = self.clock.now();
        let org = Org {
            id: OrgId::new(),
            slug,
            name: name.to_owned(),
            primary_region: self.region.clone(),
            allowed_models: Vec::new(),
            active: true,
            created_at,
            plan: plan.id.clone(),
            plan_version: plan.latest().0,
            plan_overrides: Default::default(),
            billing_currency: Currency::base(),
            transfer_mechanism: None,
            trial_ends_at: trial.map(|trial| created_at + trial),
        };
        // The failure entry of a create names no target, because none was created.
        let mut success = draft.clone();
        success.target_id = Some(org.id.to_string());
        success.org_id = Some(org.id);
        self.store.create_org(&org, &success).await?;
        Ok(org)
    }

    /// Finds an organization by id or, when `id_or_slug` is not a UUID, by slug.
    pub async fn find_org(&self, caller: &Caller, id_or_slug: &str) -> Result<Org, TenancyError> {
        let org = self.load_org(id_or_slug).await?;
        check(
            &caller.actor,
            Action::OrgRead,
            &org_target(org.id, "organization", id_or_slug),
        )?;
        Ok(org)
    }

    async fn load_org(&self, id_or_slug: &str) -> Result<Org, TenancyError> {
        let org = match id_or_slug.parse::<OrgId>() {
            Ok(id) => self.store.get_org(id).await?,
            Err(_) => self.store.get_org_by_slug(id_or_slug).await?,
        };
        Ok(org)
    }

    /// Lists every organization for the operator, and a member's own.
    pub async fn list_orgs(&self, caller: &Caller) -> Result<Vec<Org>, TenancyError> {
        match &caller.actor {
            Actor::Operator => Ok(self.store.list_orgs().await?),
            Actor::Member(member) => Ok(vec![self.store.get_org(member.org_id).await?]),
            Actor::Signup => Ok(Vec::new()),
        }
    }

    pub async fn update_org(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        request: UpdateOrgRequest,
    ) -> Result<Org, TenancyError> {
        let mut draft = self.draft(caller, Action::OrgUpdate, "organization");
        let result = async {
            let mut org = self.load_org(id_or_slug).await?;
            draft.target_id = Some(org.id.to_string());
            draft.org_id = Some(org.id);
            check(
                &caller.actor,
                Action::OrgUpdate,
                &org_target(org.id, "organization", id_or_slug),
            )?;

            if let Some(name) = request.name {
                let name = name.trim();
                if name.is_empty() {
                    return Err(TenancyError::invalid(
                        "name",
                        "the organization name is empty",
                    ));
                }
                org.name = name.to_owned();
            }
            if let Some(models) = request.allowed_models {
                org.allowed_models = models::normalize(models)
                    .map_err(|message| TenancyError::invalid("allowed_models", message))?;
            }
            if let Some(currency) = request.billing_currency {
                self.check_billing_currency(&org, currency)?;
                org.billing_currency = currency;
            }
            if let Some(change) = request.transfer_mechanism {
                if !matches!(caller.actor, Actor::Operator) {
                    return Err(TenancyError::Denied(
                        "only the operator records an org's transfer mechanism".to_owned(),
                    ));
                }
                plans::require_justification(caller, "recording a transfer mechanism")?;
                org.transfer_mechanism = match change {
                    TransferMechanismChange::StandardContractualClauses => {
                        Some(OrgTransferMechanism::StandardContractualClauses)
                    }
                    TransferMechanismChange::None => None,
                };
            }
            self.store.update_org(&org, &draft).await?;
            self.auth_cache.evict_org(org.id);
            Ok(org)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Deactivates an organization: none of its keys authenticate afterwards.
    pub async fn revoke_org(&self, caller: &Caller, id_or_slug: &str) -> Result<Org, TenancyError> {
        let mut draft = self.draft(caller, Action::OrgRevoke, "organization");
        let result = async {
            let mut org = self.load_org(id_or_slug).await?;
            draft.target_id = Some(org.id.to_string());
            draft.org_id = Some(org.id);
            check(
                &caller.actor,
                Action::OrgRevoke,
                &org_target(org.id, "organization", id_or_slug),
            )?;

            org.active = false;
            self.store.update_org(&org, &draft).await?;
            self.auth_cache.evict_org(org.id);
            Ok(org)
        }
        .await;
        self.audited(draft, result).await
    }

    // Teams.

    pub async fn create_team(
        &self,
        caller: &Caller,
        request: CreateTeamRequest,
    ) -> Result<Team, TenancyError> {
        let mut draft = self.draft(caller, Action::TeamCreate, "team");
        draft.org_id = Some(request.org_id);
        let result = async {
            check(
                &caller.actor,
                Action::TeamCreate,
                &org_target(request.org_id, "organization", request.org_id),
            )?;
            let org = self.store.get_org(request.org_id).await?;
            let (cap, limit) = self.resource_cap(&org, "teams", |plan| plan.teams)?;
            let name = validate_team_name(&request.name)?;
            let allowed_models = models::normalize(request.allowed_models)
                .map_err(|message| TenancyError::invalid("allowed_models", message))?;

            let team = Team {
                id: TeamId::new(),
                org_id: org.id,
                name,
                allowed_models,
                created_at: self.clock.now(),
                suspended_at: None,
            };
            let mut success = draft.clone();
            success.target_id = Some(team.id.to_string());
            self.store
                .create_team(&team, cap, &success)
                .await
                .map_err(|error| over_cap(error, limit))?;
            Ok(team)
        }
        .await;
        self.audited(draft, result).await
    }

    pub async fn get_team(&self, caller: &Caller, id: TeamId) -> Result<Team, TenancyError> {
        let team = self.store.get_team(id).await?;
        check(
            &caller.actor,
            Action::TeamRead,
            &org_target(team.org_id, "team", id),
        )?;
        Ok(team)
    }

    pub async fn list_teams(
        &self,
        caller: &Caller,
        org_id: OrgId,
    ) -> Result<Vec<Team>, TenancyError> {
        check(
            &caller.actor,
            Action::TeamRead,
            &org_target(org_id, "organization", org_id),
        )?;
        Ok(self.store.list_teams(org_id).await?)
    }

    pub async fn update_team(
        &self,
        caller: &Caller,
        id: TeamId,
        request: UpdateTeamRequest,
    ) -> Result<Team, TenancyError> {
        let mut draft = self.draft(caller, Action::TeamUpdate, "team");
        draft.target_id = Some(id.to_string());
        let result = async {
            let mut team = self.store.get_team(id).await?;
            draft.org_id = Some(team.org_id);
            check(
                &caller.actor,
                Action::TeamUpdate,
                &org_target(team.org_id, "team", id),
            )?;

            if let Some(name) = request.name {
                team.name = validate_team_name(&name)?;
            }
            if let Some(models) = request.allowed_models {
                team.allowed_models = models::normalize(models)
                    .map_err(|message| TenancyError::invalid("allowed_models", message))?;
            }
            self.store.update_team(&team, &draft).await?;
            self.auth_cache.evict_team(team.id);
            Ok(team)
        }
        .await;
        self.audited(draft, result).await
    }

    // Users.

    pub async fn create_user(
        &self,
        caller: &Caller,
        request: CreateUserRequest,
    ) -> Result<User, TenancyError> {
        let mut draft = self.draft(caller, Action::UserCreate, "user");
        draft.org_id = Some(request.org_id);
        let result = async {
            let target = Target {
                org_id: Some(request.org_id),
                grants_role: Some(request.role),
                ..Target::default()
            };
            check(&caller.actor, Action::UserCreate, &target)?;
            let email = request.email.trim();
            validate_email(email)?;
            let org = self.store.get_org(request.org_id).await?;
            if let Some(team_id) = request.team_id {
                self.check_team_in_org(team_id, org.id).await?;
            }
            let (cap, limit) =
                self.resource_cap(&org, "users_per_team", |plan| plan.users_per_team)?;

            let user = User {
                id: UserId::new(),
                org_id: org.id,
                team_id: request.team_id,
                email: email.to_owned(),
                role: request.role,
                locale: request.locale,
                data_residency_region: org.primary_region,
                active: true,
                created_at: self.clock.now(),
            };
            let mut success = draft.clone();
            success.target_id = Some(user.id.to_string());
            self.store
                .create_user(&user, cap, &success)
                .await
                .map_err(|error| over_cap(error, limit))?;
            Ok(user)
        }
        .await;
        self.audited(draft, result).await
    }

    async fn check_team_in_org(&self, team_id: TeamId, org_id: OrgId) -> Result<(), TenancyError> {
        let team = match self.store.get_team(team_id).await {
            Ok(team) => team,
            Err(StoreError::NotFound { .. }) => {
                return Err(TenancyError::invalid(
                    "team_id",
                    format!("team `{team_id}` does not exist"),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        if team.org_id != org_id {
            return Err(TenancyError::invalid(
                "team_id",
                format!("team `{team_id}` belongs to another organization"),
            ));
        }
        if team.suspended_at.is_some() {
            return Err(TenancyError::invalid(
                "team_id",
                format!(
                    "team `{team_id}` is suspended, because the org's plan allows fewer teams: choose another team, or move the org to a plan that allows more (`synaxisctl plan migrate`)"
                ),
            ));
        }
        Ok(())
    }

    pub async fn get_user(&self, caller: &Caller, id: UserId) -> Result<User, TenancyError> {
        let user = self.store.get_user(id).await?;
        check(
            &caller.actor,
            Action::UserRead,
            &org_target(user.org_id, "user", id),
        )?;
        Ok(user)
    }

    pub async fn list_users(
        &self,
        caller: &Caller,
        filter: &UserFilter,
    ) -> Result<Vec<User>, TenancyError> {
        let org_id = filter
            .org_id
            .ok_or_else(|| TenancyError::invalid("org_id", "the organization id is required"))?;
        check(
            &caller.actor,
            Action::UserRead,
            &org_target(org_id, "organization", org_id),
        )?;
        Ok(self.store.list_users(filter).await?)
    }

    pub async fn update_user(
        &self,
        caller: &Caller,
        id: UserId,
        request: UpdateUserRequest,
    ) -> Result<User, TenancyError> {
        let mut draft = self.draft(caller, Action::UserUpdate, "user");
        draft.target_id = Some(id.to_string());
        let result = async {
            let mut user = self.store.get_user(id).await?;
            draft.org_id = Some(user.org_id);
            // Naming a role or team counts as changing it, even to the current value.
            let target = Target {
                org_id: Some(user.org_id),
                subject: Some((user.id, user.role)),
                grants_role: request.role,
                changes_privileges: request.role.is_some() || request.team_id.is_some(),
                management_key: false,
                limits_of: None,
                named: ("user", id.to_string()),
            };
            check(&caller.actor, Action::UserUpdate, &target)?;

            // An active user who joins a team counts against its cap.
            let mut team_cap = None;
            if let Some(team_id) = request.team_id {
                self.check_team_in_org(team_id, user.org_id).await?;
                if user.active && user.team_id != Some(team_id) {
                    let org = self.store.get_org(user.org_id).await?;
                    team_cap = Some(
                        self.resource_cap(&org, "users_per_team", |plan| plan.users_per_team)?,
                    );
                }
                user.team_id = Some(team_id);
            }
            if let Some(role) = request.role {
                user.role = role;
            }
            if let Some(locale) = request.locale {
                user.locale = locale;
            }
            match team_cap {
                Some((cap, limit)) => self
                    .store
                    .update_user(&user, cap, &draft)
                    .await
                    .map_err(|error| over_cap(error, limit))?,
                None => self.store.update_user(&user, None, &draft).await?,
            }
            self.auth_cache.evict_user(user.id);
            Ok(user)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Deactivates a user: none of their keys authenticate afterwards.
    pub async fn revoke_user(&self, caller: &Caller, id: UserId) -> Result<User, TenancyError> {
        let mut draft = self.draft(caller, Action::UserRevoke, "user");
        draft.target_id = Some(id.to_string());
        let result = async {
            let mut user = self.store.get_user(id).await?;
            draft.org_id = Some(user.org_id);
            check(
                &caller.actor,
                Action::UserRevoke,
                &subject_target(&user, "user", id),
            )?;

            user.active = false;
            self.store.update_user(&user, None, &draft).await?;
            self.store.forget_user_suspension(user.id).await?;
            self.auth_cache.evict_user(user.id);
            Ok(user)
        }
        .await;
        self.audited(draft, result).await
    }

    // Keys.

    /// Creates a key for a user and returns it with its secret, which is not stored.
    pub async fn create_key(
        &self,
        caller: &Caller,
        request: CreateKeyRequest,
    ) -> Result<CreatedKey, TenancyError> {
        let mut draft = self.draft(caller, Action::KeyCreate, "key");
        let result = async {
            let user = self.store.get_user(request.user_id).await?;
            draft.org_id = Some(user.org_id);
            let target = Target {
                management_key: request.scope == KeyScope::Management,
                ..subject_target(&user, "user", request.user_id)
            };
            check(&caller.actor, Action::KeyCreate, &target)?;

            let now = self.clock.now();
            if let Some(expires_at) = request.expires_at
                && expires_at <= now
            {
                return Err(TenancyError::invalid(
                    "expires_at",
                    format!("{expires_at} is not in the future"),
                ));
            }
            let allowed_models = models::normalize(request.allowed_models)
                .map_err(|message| TenancyError::invalid("allowed_models", message))?;
            let rpm_limit = request
                .rpm_limit
                .map(|limit| validate_key_limit("rpm_limit", limit))
                .transpose()?;
            let tpm_limit = request
                .tpm_limit
                .map(|limit| validate_key_limit("tpm_limit", limit))
                .transpose()?;
            let org = self.store.get_org(user.org_id).await?;
            let (cap, limit) =
                self.resource_cap(&org, "keys_per_user", |plan| plan.keys_per_user)?;

            let secret = keys::generate(&self.key_prefix);
            let key = Key {
                id: KeyId::new(),
                org_id: user.org_id,
                user_id: user.id,
                name: request.name.unwrap_or_else(|| "default".to_owned()),
                scope: request.scope,
                region: self.region.clone(),
                allowed_models,
                rpm_limit,
                tpm_limit,
                active: true,
                expires_at: request.expires_at,
                created_at: now,
                rotated_at: None,
                previous_secret_expires_at: None,
                revoked_at: None,
            };
            let mut success = draft.clone();
            success.target_id = Some(key.id.to_string());
            let hash = self.hasher.hash(secret.expose_secret());
            self.store
                .create_key(&key, &hash, cap, &success)
                .await
                .map_err(|error| over_cap(error, limit))?;
            self.auth_cache
                .announce(crate::directory::DirectorySelector::Key(key.id));

            Ok(CreatedKey {
                key,
                secret: secret.expose_secret().to_owned(),
            })
        }
        .await;
        self.audited(draft, result).await
    }

    /// Loads a key and its user, records the key's org in `draft`, and checks that `caller`
    /// may perform `action` on the key.
    async fn load_key_for(
        &self,
        caller: &Caller,
        id: KeyId,
        action: Action,
        draft: &mut AuditDraft,
    ) -> Result<Key, TenancyError> {
        let key = self.store.get_key(id).await?;
        draft.org_id = Some(key.org_id);
        let user = self.store.get_user(key.user_id).await?;
        check(&caller.actor, action, &subject_target(&user, "key", id))?;
        Ok(key)
    }

    pub async fn get_key(&self, caller: &Caller, id: KeyId) -> Result<Key, TenancyError> {
        let key = self.store.get_key(id).await?;
        check(
            &caller.actor,
            Action::KeyRead,
            &org_target(key.org_id, "key", id),
        )?;
        Ok(key)
    }

    /// Lists keys; a member gets only their organization's.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        filter: KeyFilter,
    ) -> Result<Vec<Key>, TenancyError> {
        let mut filter = filter;
        if let Actor::Member(member) = &caller.actor {
            let org_id = *filter.org_id.get_or_insert(member.org_id);
            check(
                &caller.actor,
                Action::KeyRead,
                &org_target(org_id, "organization", org_id),
            )?;
        }
        Ok(self.store.list_keys(&filter).await?)
    }

    pub async fn update_key(
        &self,
        caller: &Caller,
        id: KeyId,
        request: UpdateKeyRequest,
    ) -> Result<Key, TenancyError> {
        let mut draft = self.draft(caller, Action::KeyUpdate, "key");
        draft.target_id = Some(id.to_string());
        let result = async {
            let mut key = self
                .load_key_for(caller, id, Action::KeyUpdate, &mut draft)
                .await?;
            draft.org_id = Some(key.org_id);

            if let Some(name) = request.name {
                key.name = name;
            }
            if let Some(models) = request.allowed_models {
                key.allowed_models = models::normalize(models)
                    .map_err(|message| TenancyError::invalid("allowed_models", message))?;
            }
            if let Some(expires_at) = request.expires_at {
                if expires_at <= self.clock.now() {
                    return Err(TenancyError::invalid(
                        "expires_at",
                        format!("{expires_at} is not in the future"),
                    ));
                }
                key.expires_at = Some(expires_at);
            }
            if let Some(limit) = request.rpm_limit {
                key.rpm_limit = limit
                    .map(|limit| validate_key_limit("rpm_limit", limit))
                    .transpose()?;
            }
            if let Some(limit) = request.tpm_limit {
                key.tpm_limit = limit
                    .map(|limit| validate_key_limit("tpm_limit", limit))
                    .transpose()?;
            }
            self.store.update_key(&key, &draft).await?;
            self.auth_cache.evict_key(key.id);
            Ok(key)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Gives a key a new secret with the same id and settings. The old secret keeps working for
    /// `grace_seconds`, or stops at once when it is 0.
    pub async fn rotate_key(
        &self,
        caller: &Caller,
        id: KeyId,
        request: RotateKeyRequest,
    ) -> Result<CreatedKey, TenancyError> {
        let mut draft = self.draft(caller, Action::KeyRotate, "key");
        draft.target_id = Some(id.to_string());
        let result = async {
            let key = self.load_key_for(caller, id, Action::KeyRotate, &mut draft).await?;
            draft.org_id = Some(key.org_id);
            if request.grace_seconds > MAX_ROTATION_GRACE_SECS {
                return Err(TenancyError::invalid(
                    "grace_seconds",
                    format!(
                        "{} is longer than the maximum of {MAX_ROTATION_GRACE_SECS} seconds (30 days)",
                        request.grace_seconds
                    ),
                ));
            }

            let now = self.clock.now();
            let grace_until = (request.grace_seconds > 0).then(|| {
                // Bounded above by MAX_ROTATION_GRACE_SECS, so the conversion cannot fail.
                now + Duration::seconds(i64::try_from(request.grace_seconds).unwrap_or(0))
            });
            let secret = keys::generate(&self.key_prefix);
            let rotation = KeyRotation {
                id,
                new_hash: self.hasher.hash(secret.expose_secret()),
                at: now,
                grace_until,
            };
            let key = self.store.rotate_key(&rotation, &draft).await?;
            self.auth_cache.evict_key(key.id);

            Ok(CreatedKey {
                key,
                secret: secret.expose_secret().to_owned(),
            })
        }
        .await;
        self.audited(draft, result).await
    }

    pub async fn revoke_key(&self, caller: &Caller, id: KeyId) -> Result<Key, TenancyError> {
        let mut draft = self.draft(caller, Action::KeyRevoke, "key");
        draft.target_id = Some(id.to_string());
        let result = async {
            let key = self
                .load_key_for(caller, id, Action::KeyRevoke, &mut draft)
                .await?;
            draft.org_id = Some(key.org_id);
            let key = self.store.revoke_key(id, self.clock.now(), &draft).await?;
            self.auth_cache.evict_key(id);
            Ok(key)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Returns the peer region's replicated entry of the key `presented`, when the entry
    /// accepts it now: a key of another region that is active and unexpired there.
    pub async fn find_in_directory(
        &self,
        presented: &str,
    ) -> Result<Option<crate::directory::DirectoryEntry>, StoreError> {
        let hash = self.hasher.hash(presented);
        let entry = self.store.find_directory_entry(&hash).await?;
        Ok(entry.filter(|entry| entry.accepts(&hash, self.clock.now())))
    }

    /// Returns the usable key that `presented` is a secret of, or `None` for a malformed,
    /// unknown, revoked or expired key, or one of another region.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<Arc<AuthenticatedKey>>, StoreError> {
        if keys::region_prefix(presented) != Some(self.key_prefix.as_str()) {
            return Ok(None);
        }
        let hash = self.hasher.hash(presented);
        let now = self.clock.now();
        if let Some(cached) = self.auth_cache.get(&hash, now) {
            if cached.refresh {
                self.refresh_cached(hash, now);
            }
            return Ok(Some(cached.key));
        }
        self.auth_cache
            .load(&hash, now, || self.store.find_usable_key(&hash, now))
            .await
    }

    /// Looks the key of `hash` up again in a task of its own, to replace its cache entry before
    /// it ends.
    fn refresh_cached(&self, hash: String, now: chrono::DateTime<chrono::Utc>) {
        let cache = Arc::clone(&self.auth_cache);
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let lookup = || store.find_usable_key(&hash, now);
            if let Err(error) = cache.load(&hash, now, lookup).await {
                tracing::warn!(%error, "refreshing a cached key failed; its next use after the entry ends looks it up");
            }
        });
    }
}

/// Applies [`authorize`], turning a denial into the error callers return: "not found" for a
/// resource of another organization, so that its existence is not revealed.
pub(crate) fn check(actor: &Actor, action: Action, target: &Target) -> Result<(), TenancyError> {
    match authorize(actor, action, target) {
        Ok(()) => Ok(()),
        Err(Denial::OtherOrg) => {
            let (entity, id) = &target.named;
            Err(TenancyError::Store(StoreError::not_found(entity, id)))
        }
        Err(Denial::Forbidden(reason)) => Err(TenancyError::Denied(reason)),
    }
}

/// Builds the target of a resource of the org `org_id`, named `(entity, id)` as the caller
/// named it.
fn org_target(org_id: OrgId, entity: &'static str, id: impl ToString) -> Target {
    Target {
        org_id: Some(org_id),
        named: (entity, id.to_string()),
        ..Target::default()
    }
}

/// Builds the target of a user, or of a resource of that user named `(entity, id)`.
fn subject_target(user: &User, entity: &'static str, id: impl ToString) -> Target {
    Target {
        org_id: Some(user.org_id),
        subject: Some((user.id, user.role)),
        named: (entity, id.to_string()),
        ..Target::default()
    }
}

/// Derives a slug from a name: lowercase ASCII letters and digits, other runs become `-`.
fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

fn validate_slug(slug: &str) -> Result<(), TenancyError> {
    let valid = (2..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(TenancyError::invalid(
            "slug",
            format!(
                "`{slug}` must be 2 to 63 lowercase letters, digits and inner hyphens, such as `acme-labs`"
            ),
        ))
    }
}

/// Checks a key's per-minute limit, which must be at least 1 and at most
/// [`MAX_AMOUNT`](synaxis_shared::limits::MAX_AMOUNT), the largest count a limiter accepts.
fn validate_key_limit(field: &'static str, limit: u64) -> Result<u64, TenancyError> {
    if limit == 0 || limit > MAX_AMOUNT {
        return Err(TenancyError::invalid(
            field,
            format!(
                "`{field}` is {limit}, and it must be between 1 and {MAX_AMOUNT}; leave it out, or send null on an update, for no key limit"
            ),
        ));
    }
    Ok(limit)
}

fn validate_team_name(name: &str) -> Result<String, TenancyError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(TenancyError::invalid(
            "name",
            "a team name must have 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

fn validate_email(email: &str) -> Result<(), TenancyError> {
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(TenancyError::invalid(
            "email",
            format!("`{email}` is not an email address such as `ana@example.com`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_keeps_letters_and_digits() {
        assert_eq!(slugify("Acme Labs, Inc."), "acme-labs-inc");
        assert_eq!(slugify("  Ação 42 "), "a-o-42");
    }

    #[test]
    fn email_validation() {
        assert!(validate_email("ana@example.com").is_ok());
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana @example.com",
            "ana@localhost",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
    }
}
