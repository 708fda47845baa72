//! SQLite store, the embedded single-node backend. Timestamps are RFC 3339 text in UTC written
//! by sqlx with the same offset, so text comparison orders them in time.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use synaxis_shared::RegionId;

use super::Store;
use super::queries::impl_store_queries;

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
        let path = options.get_filename();
        if path != Path::new(":memory:") {
            create_private_file(path).map_err(sqlx::Error::Io)?;
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

/// Creates the database file, and its directory, readable only by the owner when they do not
/// exist yet. SQLite gives its WAL and shared-memory files the database file's permissions.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

impl_store_queries!(SqliteStore, Sqlite);

impl SqliteStore {
    /// Inserts `records` with one multi-row `INSERT`.
    async fn insert_request_batch(
        tx: &mut Transaction<'_, Sqlite>,
        records: &[RequestRecord],
    ) -> Result<(), StoreError> {
        Self::insert_requests_in(tx, records, false)
            .await
            .map(|_| ())
    }

    /// Inserts the records that are not stored yet, and returns their ids.
    async fn insert_new_requests(
        tx: &mut Transaction<'_, Sqlite>,
        records: &[RequestRecord],
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        Self::insert_requests_in(tx, records, true).await
    }

    /// Inserts `records`. When `skip_existing`, skips those whose id is already stored and
    /// returns the ids of those inserted; otherwise returns no ids.
    async fn insert_requests_in(
        tx: &mut Transaction<'_, Sqlite>,
        records: &[RequestRecord],
        skip_existing: bool,
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("INSERT INTO requests (");
        query.push(REQUEST_COLUMNS).push(") ");
        query.push_values(records, |mut row, record| {
            row.push_bind(record.id.0)
                .push_bind(record.stored_region.as_str())
                .push_bind(&record.request_id)
                .push_bind(record.org_id.0)
                .push_bind(record.user_id.0)
                .push_bind(record.key_id.0)
                .push_bind(&record.endpoint)
                .push_bind(&record.model)
                .push_bind(record.stream)
                .push_bind(i32::from(record.status_code))
                .push_bind(&record.error_code)
                .push_bind(record.prompt_tokens)
                .push_bind(record.completion_tokens)
                .push_bind(Money(record.cost_usd))
                .push_bind(record.started_at)
                .push_bind(record.duration_ms);
        });
        if skip_existing {
            query.push(" ON CONFLICT (stored_region, id) DO NOTHING RETURNING id");
        }
        let inserted: Vec<(uuid::Uuid,)> = query.build_query_as().fetch_all(&mut **tx).await?;
        Ok(inserted.into_iter().map(|(id,)| id).collect())
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
