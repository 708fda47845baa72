//! The key directory shared between regions. Each region publishes the minimal entry of each
//! of its keys (hashes, ids, home region, limits, model policies, active flag, consent flags;
//! no email, name, prompt or completion) to its topic `<prefix>.<region>.keys`, and keeps a
//! replica of its peers' entries in `key_directory`. An entry carries a version, the time of the
//! read it was made from, so a replica keeps the newest and ignores duplicates and late
//! arrivals.
//!
//! Every process also evicts the keys of its own region's entries from its authentication
//! cache, so a change made by one process reaches the others before the cache's TTL.

mod publisher;
mod replicator;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use synaxis_shared::api::KeyScope;
use synaxis_shared::budgets::{Budget, BudgetScope};
pub use synaxis_shared::compliance::ConsentFlags;
use synaxis_shared::limits::LimitSet;
use synaxis_shared::plans::Overrides;
use synaxis_shared::{KeyId, Locale, OrgId, RegionId, Role, TeamId, UserId};

pub use publisher::{Changed, DirectoryPublisher};
pub use replicator::Replicator;

use crate::store::{AuthenticatedKey, KeyLimits, OrgPlan};

/// Returns the topic of the key directory of `region`.
pub fn topic(prefix: &str, region: &RegionId) -> String {
    format!("{prefix}.{region}.keys")
}

/// The entry of one key, as peer regions replicate it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub key_id: KeyId,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub team_id: Option<TeamId>,
    pub home_region: RegionId,
    /// HMAC-SHA-256 of the key under the service's pepper, as the home region stores it.
    pub key_hash: String,
    /// Hash of the secret that the last rotation replaced, while its grace period lasts.
    pub previous_key_hash: Option<String>,
    pub previous_key_expires_at: Option<DateTime<Utc>>,
    pub scope: KeyScope,
    pub role: Role,
    pub locale: Locale,
    /// Whether the key, its user and its org are all active and the key is not revoked.
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub allowed_models: AllowedModels,
    pub limits: Limits,
    pub plan: String,
    pub plan_version: u32,
    pub plan_overrides: Overrides,
    /// The user's consent flags for cross-border processing.
    #[serde(default)]
    pub consent: ConsentFlags,
    /// The transfer mechanism recorded on the org, if any.
    #[serde(default)]
    pub org_transfer_mechanism: Option<synaxis_shared::compliance::OrgTransferMechanism>,
    /// The budgets of the key, its team and its org, with their spend when the entry was made.
    #[serde(default)]
    pub budgets: Vec<Budget>,
    /// Microseconds since the Unix epoch at the read that made the entry.
    pub version: i64,
}

/// The model policies of the key, its team and its org; empty allows all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedModels {
    pub key: Vec<String>,
    pub team: Vec<String>,
    pub org: Vec<String>,
}

/// The limit sets of the key's user, team and org.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub user: LimitSet,
    pub team: LimitSet,
    pub org: LimitSet,
}

/// The facts of a key row that the authentication join does not return.
#[derive(Clone, Debug)]
pub struct KeyState {
    pub key_hash: String,
    pub previous_key_hash: Option<String>,
    pub user_active: bool,
    pub org_active: bool,
}

impl DirectoryEntry {
    /// Builds the entry of a key of this region from its authentication join.
    pub fn new(key: AuthenticatedKey, state: KeyState, version: i64) -> Self {
        let AuthenticatedKey {
            key,
            role,
            team_id,
            locale,
            team_allowed_models,
            org_allowed_models,
            limits: KeyLimits { user, team, org },
            org_plan:
                OrgPlan {
                    plan,
                    version: plan_version,
                    overrides,
                },
            budgets: _,
        } = key;
        let active =
            key.active && key.revoked_at.is_none() && state.user_active && state.org_active;
        Self {
            key_id: key.id,
            org_id: key.org_id,
            user_id: key.user_id,
            team_id,
            home_region: key.region,
            key_hash: state.key_hash,
            previous_key_hash: state.previous_key_hash,
            previous_key_expires_at: key.previous_secret_expires_at,
            scope: key.scope,
            role,
            locale,
            active,
            expires_at: key.expires_at,
            rpm_limit: key.rpm_limit,
            tpm_limit: key.tpm_limit,
            allowed_models: AllowedModels {
                key: key.allowed_models,
                team: team_allowed_models,
                org: org_allowed_models,
            },
            limits: Limits { user, team, org },
            plan,
            plan_version,
            plan_overrides: overrides,
            consent: ConsentFlags::default(),
            org_transfer_mechanism: None,
            budgets: Vec::new(),
            version,
        }
    }

    /// Returns the key as this region authenticates it while serving its user during failover:
    /// the entry's limits and model policies, without the budgets that only the home region
    /// holds. Fields that the entry does not carry, such as the key's name, are empty.
    pub fn authenticated_key(&self) -> AuthenticatedKey {
        let at = DateTime::<Utc>::from_timestamp_micros(self.version).unwrap_or_default();
        AuthenticatedKey {
            key: synaxis_shared::api::Key {
                id: self.key_id,
                org_id: self.org_id,
                user_id: self.user_id,
                name: String::new(),
                scope: self.scope,
                region: self.home_region.clone(),
                allowed_models: self.allowed_models.key.clone(),
                rpm_limit: self.rpm_limit,
                tpm_limit: self.tpm_limit,
                active: self.active,
                expires_at: self.expires_at,
                created_at: at,
                rotated_at: None,
                previous_secret_expires_at: self.previous_key_expires_at,
                revoked_at: None,
            },
            role: self.role,
            team_id: self.team_id,
            locale: self.locale,
            team_allowed_models: self.allowed_models.team.clone(),
            org_allowed_models: self.allowed_models.org.clone(),
            limits: KeyLimits {
                user: self.limits.user.clone(),
                team: self.limits.team.clone(),
                org: self.limits.org.clone(),
            },
            org_plan: OrgPlan {
                plan: self.plan.clone(),
                version: self.plan_version,
                overrides: self.plan_overrides.clone(),
            },
            budgets: Vec::new(),
        }
    }

    /// Returns whether `budget` belongs to this entry's key, its team or its org.
    pub fn owns_budget(&self, budget: &Budget) -> bool {
        match budget.scope {
            BudgetScope::Key => budget.id == self.key_id.0,
            BudgetScope::Team => self.team_id.is_some_and(|team| budget.id == team.0),
            BudgetScope::Org => budget.id == self.org_id.0,
        }
    }

    /// Returns whether `key_hash` authenticates this entry's key at `now`.
    pub fn accepts(&self, key_hash: &str, now: DateTime<Utc>) -> bool {
        let current = self.key_hash == key_hash;
        let previous = self.previous_key_hash.as_deref() == Some(key_hash)
            && self
                .previous_key_expires_at
                .is_some_and(|until| until > now);
        let unexpired = self.expires_at.is_none_or(|at| at > now);
        self.active && unexpired && (current || previous)
    }
}

/// The keys whose entries a change affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectorySelector {
    Key(KeyId),
    User(UserId),
    Team(TeamId),
    Org(OrgId),
    /// Every key of the region.
    All,
}
