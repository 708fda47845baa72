//! Persistence behind traits, with one module per database: [`postgres`] for production and
//! [`sqlite`] for the embedded single node. Both run the same SQL, written once in [`queries`];
//! the contract tests in `synaxisd/tests/store.rs` run the same cases against both.
//!
//! Every state-changing method of [`TenancyStore`] takes an [`AuditDraft`] and appends it to
//! the audit chain in the same transaction as the change.

mod queries;
mod rows;
mod types;

pub mod postgres;
pub mod sqlite;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use synaxis_shared::api::{AuditEntry, Key, Org, Team, User};
use synaxis_shared::budgets::{Budget, BudgetRef};
use synaxis_shared::compliance::{
    ConsentRecord, ConsentScope, ConsentSource, ResidencyReport, TransferRecord,
};
use synaxis_shared::credits::{AutoTopup, CreditEntry, CreditKind};
use synaxis_shared::invoices::{FxRate, Invoice};
use synaxis_shared::limits::LimitSet;
use synaxis_shared::money::Currency;
pub use synaxis_shared::plans::ResourceCounts;
use synaxis_shared::{InvoiceId, KeyId, Locale, OrgId, RegionId, RequestId, Role, TeamId, UserId};

use crate::audit::{AuditDraft, AuditHead};
use crate::config::DatabaseConfig;
use crate::directory::{DirectoryEntry, DirectorySelector};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} `{id}` not found")]
    NotFound { entity: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A creation would pass the cap that the caller set: `count` exist already.
    #[error("the cap is reached: {count} exist already")]
    CapReached { count: u64 },
}

impl StoreError {
    pub(crate) fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }
}

/// Organizations, teams, users and virtual keys.
#[async_trait]
pub trait TenancyStore: Send + Sync {
    /// Inserts an organization; a taken slug is a [`StoreError::Conflict`].
    async fn create_org(&self, org: &Org, audit: &AuditDraft) -> Result<(), StoreError>;
    async fn get_org(&self, id: OrgId) -> Result<Org, StoreError>;
    async fn get_org_by_slug(&self, slug: &str) -> Result<Org, StoreError>;
    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError>;
    /// Stores the name, model policy and active flag of an existing organization.
    async fn update_org(&self, org: &Org, audit: &AuditDraft) -> Result<(), StoreError>;

    /// Inserts a team. A name taken in the org is a conflict. With a `cap`, the insert happens
    /// only while the org has fewer teams, and otherwise fails with [`StoreError::CapReached`].
    async fn create_team(
        &self,
        team: &Team,
        cap: Option<u64>,
        audit: &AuditDraft,
    ) -> Result<(), StoreError>;
    async fn get_team(&self, id: TeamId) -> Result<Team, StoreError>;
    async fn list_teams(&self, org_id: OrgId) -> Result<Vec<Team>, StoreError>;
    /// Stores the name and model policy of an existing team.
    async fn update_team(&self, team: &Team, audit: &AuditDraft) -> Result<(), StoreError>;

    /// Inserts a user; an email already taken in this region, in any case, is a conflict. With
    /// a `cap`, a user of a team is inserted only while the team has fewer active users.
    async fn create_user(
        &self,
        user: &User,
        cap: Option<u64>,
        audit: &AuditDraft,
    ) -> Result<(), StoreError>;
    async fn get_user(&self, id: UserId) -> Result<User, StoreError>;
    async fn list_users(&self, filter: &UserFilter) -> Result<Vec<User>, StoreError>;
    /// Stores the role, team, locale and active flag of an existing user. With a `cap`, which a
    /// caller passes when the user joins a team, the update happens only while that team has
    /// fewer active users.
    async fn update_user(
        &self,
        user: &User,
        cap: Option<u64>,
        audit: &AuditDraft,
    ) -> Result<(), StoreError>;

    /// Inserts a key with the hash of its secret. With a `cap`, the key is inserted only while
    /// its user has fewer active keys.
    async fn create_key(
        &self,
        key: &Key,
        key_hash: &str,
        cap: Option<u64>,
        audit: &AuditDraft,
    ) -> Result<(), StoreError>;
    async fn get_key(&self, id: KeyId) -> Result<Key, StoreError>;
    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Key>, StoreError>;
    /// Stores the name, model allow-list, expiry and per-minute limits of an existing key.
    async fn update_key(&self, key: &Key, audit: &AuditDraft) -> Result<(), StoreError>;
    /// Replaces an active key's secret. The old secret keeps working until `grace_until`, or
    /// stops at once when it is `None`.
    async fn rotate_key(
        &self,
        rotation: &KeyRotation,
        audit: &AuditDraft,
    ) -> Result<Key, StoreError>;
    /// Deactivates a key. Revoking a revoked key changes nothing and returns it.
    async fn revoke_key(
        &self,
        id: KeyId,
        at: DateTime<Utc>,
        audit: &AuditDraft,
    ) -> Result<Key, StoreError>;
    /// Returns the key whose current secret, or previous secret within its grace period, has
    /// this hash, when the key, its user and its org are active and it has not expired at
    /// `now`.
    async fn find_usable_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<AuthenticatedKey>, StoreError>;

    /// Returns the limit set of an organization, team or user; an empty set when none is
    /// stored.
    async fn get_limits(&self, scope: LimitScope) -> Result<LimitSet, StoreError>;
    /// Replaces the limit set of an organization, team or user. An empty set is stored as none.
    async fn set_limits(
        &self,
        scope: LimitScope,
        limits: &LimitSet,
        audit: &AuditDraft,
    ) -> Result<(), StoreError>;
}

/// The hash-chained audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry that records no change, such as a denied or failed call.
    async fn append_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError>;
    /// Returns entries in sequence order.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
    async fn audit_head(&self) -> Result<AuditHead, StoreError>;
}

/// Request records: one per inference request that presented a valid key.
#[async_trait]
pub trait RequestStore: Send + Sync {
    async fn insert_request(&self, record: &RequestRecord) -> Result<(), StoreError>;
    /// Inserts records in one statement, settles the budget holds of `charges` and appends
    /// `credits` to their orgs' ledgers, all in one transaction: all or none are stored.
    async fn insert_requests(
        &self,
        records: &[RequestRecord],
        charges: &[BudgetCharge],
        credits: &[NewCredit],
    ) -> Result<(), StoreError>;
    /// Returns matching records, newest first.
    async fn list_requests(&self, filter: &RequestFilter)
    -> Result<Vec<RequestRecord>, StoreError>;
    /// Returns up to `limit` of the records held here for `region`, of the org `org_id` when
    /// given, oldest first: the usage of that region's users served here while it was down, not
    /// yet handed to it.
    async fn held_requests(
        &self,
        region: &RegionId,
        org_id: Option<OrgId>,
        limit: i64,
    ) -> Result<Vec<RequestRecord>, StoreError>;
    /// Deletes the records held for `region` with these ids, once `region` has stored them.
    /// Returns how many were deleted.
    async fn release_held_requests(
        &self,
        region: &RegionId,
        ids: &[RequestId],
    ) -> Result<u64, StoreError>;
    /// Stores records that another region held for this one, skipping any already stored, so
    /// that a hand-off repeated after a lost response stores nothing twice. Returns how many were
    /// new.
    async fn accept_held_requests(&self, records: &[RequestRecord]) -> Result<u64, StoreError>;
    /// Counts the records of each of `request_ids` (`x-request-id` values) by the region they
    /// are stored for; request ids without records are left out.
    async fn count_requests_by_id(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<(String, RegionId, i64)>, StoreError>;
}

/// Facts about the deployment, by name.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// Stores `value` under `name` unless a value is already there, and returns the stored one.
    async fn put_setting_if_absent(&self, name: &str, value: &str) -> Result<String, StoreError>;
}

/// A new entry of an org's credit ledger; the store gives it its position and balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCredit {
    pub org_id: OrgId,
    pub kind: CreditKind,
    pub amount_usd: Decimal,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The append-only credit ledgers of organizations.
#[async_trait]
pub trait CreditStore: Send + Sync {
    /// Appends an entry after the org's last one, with the audit entry when given, in one
    /// transaction that holds the org's row lock, and returns it with its position and the new
    /// balance.
    async fn append_credit(
        &self,
        credit: &NewCredit,
        audit: Option<&AuditDraft>,
    ) -> Result<CreditEntry, StoreError>;
    /// Returns the org's balance and its number of entries.
    async fn credit_balance(&self, org_id: OrgId) -> Result<(Decimal, u64), StoreError>;
    /// Lists the org's entries after position `after_seq`, oldest first, at most `limit`.
    async fn list_credits(
        &self,
        org_id: OrgId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<CreditEntry>, StoreError>;
    /// Returns the org's auto top-up; `None` when it is off.
    async fn get_auto_topup(&self, org_id: OrgId) -> Result<Option<AutoTopup>, StoreError>;
    /// Sets or, with `None`, turns off the org's auto top-up, with the audit entry.
    async fn set_auto_topup(
        &self,
        org_id: OrgId,
        auto_topup: Option<AutoTopup>,
        audit: &AuditDraft,
    ) -> Result<(), StoreError>;
    /// Records a pending invoice line of `amount_usd` and appends the matching `auto_topup`
    /// entry, in one transaction that holds the org's row lock, when the balance is still under
    /// `threshold_usd`. Returns the entry, or `None` when the balance is not under it, such as
    /// after another process's top-up.
    async fn invoice_topup(
        &self,
        org_id: OrgId,
        threshold_usd: Decimal,
        amount_usd: Decimal,
        now: DateTime<Utc>,
    ) -> Result<Option<CreditEntry>, StoreError>;
}

/// The end of a request's budget holds: its real cost is added to the spend of each budget it
/// holds, and the amounts still held are released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetCharge {
    pub request_id: RequestId,
    pub cost_usd: Decimal,
}

/// Outcome of a reservation on budgets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetReservation {
    /// The amount is held on these budgets, the ones of those asked about that exist.
    Held(Vec<BudgetRef>),
    /// This budget has too little left; nothing is held.
    Exceeded(Budget),
}

/// Spend limits of keys, teams and organizations, and the holds of requests in flight.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Creates or changes a budget, appending `audit` in the same transaction. A changed budget
    /// keeps its spend unless `reset_spend` is set, and always keeps its reservations.
    async fn set_budget(
        &self,
        budget: BudgetRef,
        org_id: OrgId,
        max_micros: i64,
        reset_spend: bool,
        now: DateTime<Utc>,
        audit: &AuditDraft,
    ) -> Result<Budget, StoreError>;
    async fn get_budget(&self, budget: BudgetRef) -> Result<Option<Budget>, StoreError>;
    /// Removes a budget and the holds on it, and returns it as it was; removing a missing one
    /// changes nothing and returns `None`. Requests still in flight then settle nothing on it,
    /// nor on a budget set again in its place.
    async fn remove_budget(
        &self,
        budget: BudgetRef,
        audit: &AuditDraft,
    ) -> Result<Option<Budget>, StoreError>;
    /// Holds `amount_micros` for `request_id` on each of `budgets` that exists, all or none: a
    /// budget whose spend and reservations plus the amount would pass its maximum refuses, and
    /// then nothing is held. Budgets are locked in their order, so `budgets` must be sorted.
    async fn reserve_budgets(
        &self,
        request_id: RequestId,
        budgets: &[BudgetRef],
        amount_micros: i64,
        expires_at: DateTime<Utc>,
    ) -> Result<BudgetReservation, StoreError>;
    /// Settles `charges` without a request record: for requests that end before one is stored,
    /// such as those refused after their reservation.
    async fn settle_budgets(&self, charges: &[BudgetCharge]) -> Result<(), StoreError>;
    /// Releases the amounts of the holds that expired by `now`, those of requests whose process
    /// stopped before settling them, and returns how many it released. A released hold stays
    /// for a day, so that a request that ends later still adds its cost to the spend.
    async fn release_expired_budget_holds(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// The caps of a plan on an org's resources; `None` is no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceCaps {
    pub teams: Option<u64>,
    pub users_per_team: Option<u64>,
    pub keys_per_user: Option<u64>,
}

/// Trials, and the resources of orgs over their plan's caps.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Lists the active orgs whose trial ended by `now`.
    async fn orgs_with_ended_trials(&self, now: DateTime<Utc>) -> Result<Vec<Org>, StoreError>;
    /// Suspends, newest first, the org's teams, users per team and keys per user past `caps`:
    /// they are deactivated with the time `now`. A suspended team suspends its active users.
    /// Appends `audit` when something was suspended.
    async fn suspend_over_caps(
        &self,
        org_id: OrgId,
        caps: ResourceCaps,
        now: DateTime<Utc>,
        audit: &AuditDraft,
    ) -> Result<ResourceCounts, StoreError>;
    /// Deletes an org that a failed signup left without an owner, with its users and keys, and
    /// appends `audit`. Its slug is free again.
    async fn discard_org(&self, org_id: OrgId, audit: &AuditDraft) -> Result<(), StoreError>;
    /// Makes a user's deactivation final: a revoked user is not restored with the suspended
    /// ones. A revoked key is final already.
    async fn forget_user_suspension(&self, user_id: UserId) -> Result<(), StoreError>;
    /// Reactivates every suspended team, user and key of the org, appending `audit` when there
    /// were some.
    async fn restore_suspended(
        &self,
        org_id: OrgId,
        audit: &AuditDraft,
    ) -> Result<ResourceCounts, StoreError>;
    /// Lists the orgs with resources suspended at or before `before`.
    async fn orgs_with_suspensions(&self, before: DateTime<Utc>) -> Result<Vec<OrgId>, StoreError>;
    /// Deletes the org's resources suspended at or before `before`, appending `audit` when
    /// there were some.
    async fn purge_suspended(
        &self,
        org_id: OrgId,
        before: DateTime<Utc>,
        audit: &AuditDraft,
    ) -> Result<ResourceCounts, StoreError>;
}

/// Exchange rates and invoices.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Stores rates, all or none, with the audit entry. A rate for a currency and time that
    /// already has one is a conflict.
    async fn insert_fx_rates(&self, rates: &[FxRate], audit: &AuditDraft)
    -> Result<(), StoreError>;
    /// Lists rates, of one currency or all, newest effective time first.
    async fn list_fx_rates(&self, currency: Option<Currency>) -> Result<Vec<FxRate>, StoreError>;
    /// Returns the rate of `currency` in force at `at`: the one that took effect last before it.
    async fn fx_rate_at(
        &self,
        currency: Currency,
        at: DateTime<Utc>,
    ) -> Result<Option<FxRate>, StoreError>;
    /// Lists the org's ledger entries created in `[from, to)`, oldest first.
    async fn credits_between(
        &self,
        org_id: OrgId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CreditEntry>, StoreError>;
    /// Stores an invoice with its lines and the audit entry, and marks the org's pending
    /// invoice lines of the period as invoiced. A second invoice of the same org and period is
    /// a conflict.
    async fn insert_invoice(&self, invoice: &Invoice, audit: &AuditDraft)
    -> Result<(), StoreError>;
    async fn get_invoice(&self, id: InvoiceId) -> Result<Invoice, StoreError>;
    /// Lists the org's invoices, newest period first.
    async fn list_invoices(&self, org_id: OrgId) -> Result<Vec<Invoice>, StoreError>;
}

/// Users' consent records, versioned per user and scope.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Appends a grant or withdrawal as the next version of the user's consent in its scope,
    /// with its audit entry. Two changes at once may both take the same version: the second
    /// fails with [`StoreError::Conflict`].
    async fn record_consent(
        &self,
        change: &NewConsent,
        audit: &AuditDraft,
    ) -> Result<ConsentRecord, StoreError>;
    /// Returns every record of the user's consent in `scope`, oldest first.
    async fn consent_history(
        &self,
        user_id: UserId,
        scope: ConsentScope,
    ) -> Result<Vec<ConsentRecord>, StoreError>;
}

/// The transfer records of this region: requests it processed for users of other jurisdictions.
#[async_trait]
pub trait TransferStore: Send + Sync {
    async fn record_transfer(&self, transfer: &TransferRecord) -> Result<(), StoreError>;
    /// Lists the transfers of a user, or all of them, oldest first, at most `limit`.
    async fn list_transfers(
        &self,
        user_id: Option<UserId>,
        limit: i64,
    ) -> Result<Vec<TransferRecord>, StoreError>;
}

/// The residency audit of this region's own records.
#[async_trait]
pub trait ResidencyStore: Send + Sync {
    /// Checks every request record against its user's residency region, as seen from `region`.
    async fn check_residency(&self, region: &RegionId) -> Result<ResidencyReport, StoreError>;
}

/// A consent change to record.
#[derive(Clone, Debug)]
pub struct NewConsent {
    pub user_id: UserId,
    pub scope: ConsentScope,
    pub granted: bool,
    pub regions: Vec<RegionId>,
    pub source: ConsentSource,
    pub at: DateTime<Utc>,
}

/// This region's key directory entries, and the replica of its peers' entries.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Returns the entries of this region's keys that `selector` names, with `version`.
    async fn directory_entries(
        &self,
        selector: DirectorySelector,
        version: i64,
    ) -> Result<Vec<DirectoryEntry>, StoreError>;
    /// Stores the peers' entries that are newer than the stored ones, and returns how many.
    async fn apply_directory_entries(&self, entries: &[DirectoryEntry]) -> Result<u64, StoreError>;
    /// Returns the replica entry whose current or previous hash is `key_hash`.
    async fn find_directory_entry(
        &self,
        key_hash: &str,
    ) -> Result<Option<DirectoryEntry>, StoreError>;
}

#[async_trait]
pub trait Store:
    TenancyStore
    + AuditStore
    + RequestStore
    + SettingsStore
    + CreditStore
    + BudgetStore
    + BillingStore
    + LifecycleStore
    + DirectoryStore
    + ConsentStore
    + TransferStore
    + ResidencyStore
    + Debug
{
    /// Checks that the database responds.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Prepares storage for request records of these regions (PostgreSQL partitions).
    async fn prepare_regions(&self, regions: &[RegionId]) -> Result<(), StoreError>;
}

/// A key as authentication finds it, with what model access and the control API need from its
/// user, team and org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub key: Key,
    pub role: Role,
    pub team_id: Option<TeamId>,
    pub locale: Locale,
    /// The team's model policy; empty when the user has no team or the team allows all.
    pub team_allowed_models: Vec<String>,
    pub org_allowed_models: Vec<String>,
    pub limits: KeyLimits,
    /// The org's plan, plan version and overrides, whose quotas admission enforces.
    pub org_plan: OrgPlan,
    /// The budgets of the key, its team and its org that exist, in that order.
    pub budgets: Vec<BudgetRef>,
}

/// The plan that an org is on: its id, version and per-field overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgPlan {
    pub plan: String,
    pub version: u32,
    pub overrides: synaxis_shared::plans::Overrides,
}

/// The limit sets of a key's user, team and org; empty where none is set. The key's own
/// `rpm_limit` and `tpm_limit` are on [`Key`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub user: LimitSet,
    pub team: LimitSet,
    pub org: LimitSet,
}

/// The owner of a limit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    Org(OrgId),
    Team(TeamId),
    User(UserId),
}

impl LimitScope {
    /// Returns the entity's name in errors, as [`StoreError::NotFound`] names it.
    pub fn entity(self) -> &'static str {
        match self {
            Self::Org(_) => "organization",
            Self::Team(_) => "team",
            Self::User(_) => "user",
        }
    }

    /// Returns the entity's id as text.
    pub fn id(self) -> String {
        match self {
            Self::Org(id) => id.to_string(),
            Self::Team(id) => id.to_string(),
            Self::User(id) => id.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct KeyRotation {
    pub id: KeyId,
    pub new_hash: String,
    pub at: DateTime<Utc>,
    pub grace_until: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    pub org_id: Option<OrgId>,
    pub team_id: Option<TeamId>,
}

#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
    pub org_id: Option<OrgId>,
    pub user_id: Option<UserId>,
}

#[derive(Clone, Debug)]
pub struct AuditFilter {
    pub org_id: Option<OrgId>,
    /// Only entries with a larger sequence number.
    pub after_seq: i64,
    pub limit: i64,
}

impl Default for AuditFilter {
    fn default() -> Self {
        Self {
            org_id: None,
            after_seq: 0,
            limit: 100,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestFilter {
    pub org_id: Option<OrgId>,
    pub key_id: Option<KeyId>,
    pub limit: i64,
}

impl Default for RequestFilter {
    fn default() -> Self {
        Self {
            org_id: None,
            key_id: None,
            limit: 100,
        }
    }
}

/// Cost and outcome of one inference request. Regions hand held records to each other as
/// JSON.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestRecord {
    pub id: RequestId,
    pub stored_region: RegionId,
    /// The `x-request-id` of the request.
    pub request_id: String,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub key_id: KeyId,
    /// Route template, such as `/v1/chat/completions`.
    pub endpoint: String,
    /// Public model name the client asked for; empty when the body named none.
    pub model: String,
    pub stream: bool,
    /// HTTP status returned to the client; 499 when the client disconnected first.
    pub status_code: u16,
    pub error_code: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// USD, rounded to 6 decimal places.
    pub cost_usd: Decimal,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
}

/// Opens the database named by `config.url`, runs pending migrations, and returns the store.
pub async fn connect(config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    if config.is_embedded() {
        let store = sqlite::SqliteStore::connect(&config.url, config.max_connections).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        let store = postgres::PgStore::connect(&config.url, config.max_connections).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    }
}

/// Maps a unique-constraint violation to a conflict with `message`, and other errors as they are.
pub(crate) fn conflict_on_unique(
    error: sqlx::Error,
    message: impl FnOnce() -> String,
) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Database(error),
    }
}

pub(crate) fn parse_region(value: String) -> Result<RegionId, StoreError> {
    value
        .parse()
        .map_err(|error| StoreError::Corrupt(format!("{error}")))
}
