//! Persistence behind traits, with one module per database: [`postgres`] for production and
//! [`sqlite`] for the embedded single node. The contract tests in `synaxisd/tests/store.rs` run
//! the same cases against both.

mod rows;

pub mod postgres;
pub mod sqlite;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use synaxis_shared::api::{Key, Org, User};
use synaxis_shared::{KeyId, OrgId, RegionId, RequestId, UserId};

use crate::config::DatabaseConfig;

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
}

impl StoreError {
    pub(crate) fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }
}

/// Organizations, users and virtual keys.
#[async_trait]
pub trait TenancyStore: Send + Sync {
    /// Inserts an organization; a taken slug is a [`StoreError::Conflict`].
    async fn create_org(&self, org: &Org) -> Result<(), StoreError>;
    async fn get_org(&self, id: OrgId) -> Result<Org, StoreError>;
    async fn get_org_by_slug(&self, slug: &str) -> Result<Org, StoreError>;
    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError>;
    /// Activates or deactivates an organization; the keys of an inactive one do not authenticate.
    async fn set_org_active(&self, id: OrgId, active: bool) -> Result<Org, StoreError>;

    /// Inserts a user; an email already taken in this region, in any case, is a conflict.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    async fn get_user(&self, id: UserId) -> Result<User, StoreError>;
    async fn list_users(&self, org_id: OrgId) -> Result<Vec<User>, StoreError>;
    async fn set_user_active(&self, id: UserId, active: bool) -> Result<User, StoreError>;

    /// Inserts a key with the hash of its secret.
    async fn create_key(&self, key: &Key, key_hash: &str) -> Result<(), StoreError>;
    async fn get_key(&self, id: KeyId) -> Result<Key, StoreError>;
    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Key>, StoreError>;
    /// Deactivates a key. Revoking a revoked key changes nothing and returns it.
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>) -> Result<Key, StoreError>;
    /// Returns the key with this hash when it, its user and its org are active and it has not
    /// expired at `now`.
    async fn find_usable_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Key>, StoreError>;
}

/// Request records: one per inference request that presented a valid key.
#[async_trait]
pub trait RequestStore: Send + Sync {
    async fn insert_request(&self, record: &RequestRecord) -> Result<(), StoreError>;
    /// Returns matching records, newest first.
    async fn list_requests(&self, filter: &RequestFilter)
    -> Result<Vec<RequestRecord>, StoreError>;
}

#[async_trait]
pub trait Store: TenancyStore + RequestStore + Debug {
    /// Checks that the database responds.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Prepares storage for request records of these regions (PostgreSQL partitions).
    async fn prepare_regions(&self, regions: &[RegionId]) -> Result<(), StoreError>;
}

#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
    pub org_id: Option<OrgId>,
    pub user_id: Option<UserId>,
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

/// Cost and outcome of one inference request.
#[derive(Clone, Debug, PartialEq, Eq)]
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

pub(crate) fn parse_role(value: &str) -> Result<synaxis_shared::Role, StoreError> {
    value
        .parse()
        .map_err(|error| StoreError::Corrupt(format!("{error}")))
}
