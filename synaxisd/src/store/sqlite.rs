//! SQLite store, the embedded single-node backend. Timestamps are RFC 3339 text in UTC written
//! by sqlx with the same offset, so text comparison orders them in time; money is decimal text.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite};
use synaxis_shared::api::{Key, Org, User};
use synaxis_shared::{KeyId, OrgId, RegionId, UserId};
use uuid::Uuid;

use super::rows::{OrgRow, UserRow, convert_all};
use super::{
    KeyFilter, RequestFilter, RequestRecord, RequestStore, Store, StoreError, TenancyStore,
    conflict_on_unique, parse_region,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (and creates when missing) the database file, and its directory, in WAL mode.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(dir) = options.get_filename().parent() {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }

        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    org_id: Uuid,
    user_id: Uuid,
    name: String,
    region: String,
    allowed_models: Json<Vec<String>>,
    active: bool,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<KeyRow> for Key {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        Ok(Key {
            id: row.id.into(),
            org_id: row.org_id.into(),
            user_id: row.user_id.into(),
            name: row.name,
            region: parse_region(row.region)?,
            allowed_models: row.allowed_models.0,
            active: row.active,
            expires_at: row.expires_at,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RequestRow {
    id: Uuid,
    stored_region: String,
    request_id: String,
    org_id: Uuid,
    user_id: Uuid,
    key_id: Uuid,
    endpoint: String,
    model: String,
    stream: bool,
    status_code: i32,
    error_code: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_usd: String,
    started_at: DateTime<Utc>,
    duration_ms: i64,
}

impl TryFrom<RequestRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(row: RequestRow) -> Result<Self, StoreError> {
        Ok(RequestRecord {
            id: row.id.into(),
            stored_region: parse_region(row.stored_region)?,
            request_id: row.request_id,
            org_id: row.org_id.into(),
            user_id: row.user_id.into(),
            key_id: row.key_id.into(),
            endpoint: row.endpoint,
            model: row.model,
            stream: row.stream,
            status_code: u16::try_from(row.status_code)
                .map_err(|_| StoreError::Corrupt(format!("status code {}", row.status_code)))?,
            error_code: row.error_code,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            cost_usd: Decimal::from_str(&row.cost_usd)
                .map_err(|_| StoreError::Corrupt(format!("cost `{}`", row.cost_usd)))?,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
        })
    }
}

#[async_trait]
impl TenancyStore for SqliteStore {
    async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO organizations (id, slug, name, primary_region, active, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(org.id.0)
        .bind(&org.slug)
        .bind(&org.name)
        .bind(org.primary_region.as_str())
        .bind(org.active)
        .bind(org.created_at)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            conflict_on_unique(error, || {
                format!("an organization with slug `{}` already exists", org.slug)
            })
        })?;
        Ok(())
    }

    async fn get_org(&self, id: OrgId) -> Result<Org, StoreError> {
        sqlx::query_as::<_, OrgRow>(
            "SELECT id, slug, name, primary_region, active, created_at
             FROM organizations WHERE id = ?1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("organization", id))?
        .try_into()
    }

    async fn get_org_by_slug(&self, slug: &str) -> Result<Org, StoreError> {
        sqlx::query_as::<_, OrgRow>(
            "SELECT id, slug, name, primary_region, active, created_at
             FROM organizations WHERE slug = ?1",
        )
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("organization", slug))?
        .try_into()
    }

    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows = sqlx::query_as::<_, OrgRow>(
            "SELECT id, slug, name, primary_region, active, created_at
             FROM organizations ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        convert_all(rows)
    }

    async fn set_org_active(&self, id: OrgId, active: bool) -> Result<Org, StoreError> {
        sqlx::query_as::<_, OrgRow>(
            "UPDATE organizations SET active = ?2 WHERE id = ?1
             RETURNING id, slug, name, primary_region, active, created_at",
        )
        .bind(id.0)
        .bind(active)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("organization", id))?
        .try_into()
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, org_id, email, role, data_residency_region, active, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(user.id.0)
        .bind(user.org_id.0)
        .bind(&user.email)
        .bind(user.role.as_str())
        .bind(user.data_residency_region.as_str())
        .bind(user.active)
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            conflict_on_unique(error, || {
                format!(
                    "a user with email `{}` already exists in this region",
                    user.email
                )
            })
        })?;
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
        sqlx::query_as::<_, UserRow>(
            "SELECT id, org_id, email, role, data_residency_region, active, created_at
             FROM users WHERE id = ?1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("user", id))?
        .try_into()
    }

    async fn list_users(&self, org_id: OrgId) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query_as::<_, UserRow>(
            "SELECT id, org_id, email, role, data_residency_region, active, created_at
             FROM users WHERE org_id = ?1 ORDER BY created_at, id",
        )
        .bind(org_id.0)
        .fetch_all(&self.pool)
        .await?;
        convert_all(rows)
    }

    async fn set_user_active(&self, id: UserId, active: bool) -> Result<User, StoreError> {
        sqlx::query_as::<_, UserRow>(
            "UPDATE users SET active = ?2 WHERE id = ?1
             RETURNING id, org_id, email, role, data_residency_region, active, created_at",
        )
        .bind(id.0)
        .bind(active)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("user", id))?
        .try_into()
    }

    async fn create_key(&self, key: &Key, key_hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, user_id, name, key_hash, region, allowed_models,
                                   active, expires_at, created_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(key.id.0)
        .bind(key.org_id.0)
        .bind(key.user_id.0)
        .bind(&key.name)
        .bind(key_hash)
        .bind(key.region.as_str())
        .bind(Json(&key.allowed_models))
        .bind(key.active)
        .bind(key.expires_at)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            conflict_on_unique(error, || format!("key `{}` already exists", key.id))
        })?;
        Ok(())
    }

    async fn get_key(&self, id: KeyId) -> Result<Key, StoreError> {
        sqlx::query_as::<_, KeyRow>(
            "SELECT id, org_id, user_id, name, region, allowed_models, active, expires_at,
                    created_at, revoked_at
             FROM api_keys WHERE id = ?1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("key", id))?
        .try_into()
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Key>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT id, org_id, user_id, name, region, allowed_models, active, expires_at,
                    created_at, revoked_at
             FROM api_keys WHERE TRUE",
        );
        if let Some(org_id) = filter.org_id {
            query.push(" AND org_id = ").push_bind(org_id.0);
        }
        if let Some(user_id) = filter.user_id {
            query.push(" AND user_id = ").push_bind(user_id.0);
        }
        query.push(" ORDER BY created_at, id");

        let rows = query
            .build_query_as::<KeyRow>()
            .fetch_all(&self.pool)
            .await?;
        convert_all(rows)
    }

    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>) -> Result<Key, StoreError> {
        sqlx::query_as::<_, KeyRow>(
            "UPDATE api_keys
             SET active = FALSE, revoked_at = COALESCE(revoked_at, ?2)
             WHERE id = ?1
             RETURNING id, org_id, user_id, name, region, allowed_models, active, expires_at,
                       created_at, revoked_at",
        )
        .bind(id.0)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("key", id))?
        .try_into()
    }

    async fn find_usable_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Key>, StoreError> {
        let row = sqlx::query_as::<_, KeyRow>(
            "SELECT k.id, k.org_id, k.user_id, k.name, k.region, k.allowed_models, k.active,
                    k.expires_at, k.created_at, k.revoked_at
             FROM api_keys k
             JOIN users u ON u.id = k.user_id
             JOIN organizations o ON o.id = k.org_id
             WHERE k.key_hash = ?1
               AND k.active AND u.active AND o.active
               AND (k.expires_at IS NULL OR k.expires_at > ?2)",
        )
        .bind(key_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Key::try_from).transpose()
    }
}

#[async_trait]
impl RequestStore for SqliteStore {
    async fn insert_request(&self, record: &RequestRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO requests (id, stored_region, request_id, org_id, user_id, key_id,
                                   endpoint, model, stream, status_code, error_code,
                                   prompt_tokens, completion_tokens, cost_usd, started_at,
                                   duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )
        .bind(record.id.0)
        .bind(record.stored_region.as_str())
        .bind(&record.request_id)
        .bind(record.org_id.0)
        .bind(record.user_id.0)
        .bind(record.key_id.0)
        .bind(&record.endpoint)
        .bind(&record.model)
        .bind(record.stream)
        .bind(i32::from(record.status_code))
        .bind(&record.error_code)
        .bind(record.prompt_tokens)
        .bind(record.completion_tokens)
        .bind(record.cost_usd.to_string())
        .bind(record.started_at)
        .bind(record.duration_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT id, stored_region, request_id, org_id, user_id, key_id, endpoint, model,
                    stream, status_code, error_code, prompt_tokens, completion_tokens, cost_usd,
                    started_at, duration_ms
             FROM requests WHERE TRUE",
        );
        if let Some(org_id) = filter.org_id {
            query.push(" AND org_id = ").push_bind(org_id.0);
        }
        if let Some(key_id) = filter.key_id {
            query.push(" AND key_id = ").push_bind(key_id.0);
        }
        query
            .push(" ORDER BY started_at DESC, id DESC LIMIT ")
            .push_bind(filter.limit);

        let rows = query
            .build_query_as::<RequestRow>()
            .fetch_all(&self.pool)
            .await?;
        convert_all(rows)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Does nothing, because the embedded database keeps every region's records in one table.
    async fn prepare_regions(&self, _regions: &[RegionId]) -> Result<(), StoreError> {
        Ok(())
    }
}
