//! PostgreSQL store, the production backend. Request records live in a table partitioned by
//! `stored_region`.

use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use synaxis_shared::RegionId;

use super::Store;
use super::queries::impl_store_queries;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl_store_queries!(PgStore, Postgres);

impl PgStore {
    /// Inserts `records` with one statement that binds a column array each, so that batches of
    /// any size share one prepared statement.
    async fn insert_request_batch(
        tx: &mut Transaction<'_, Postgres>,
        records: &[RequestRecord],
    ) -> Result<(), StoreError> {
        Self::insert_requests_in(tx, records, false)
            .await
            .map(|_| ())
    }

    /// Inserts the records that are not stored yet, and returns their ids.
    async fn insert_new_requests(
        tx: &mut Transaction<'_, Postgres>,
        records: &[RequestRecord],
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        Self::insert_requests_in(tx, records, true).await
    }

    /// Inserts `records`. When `skip_existing`, skips those whose id is already stored and
    /// returns the ids of those inserted; otherwise returns no ids.
    async fn insert_requests_in(
        tx: &mut Transaction<'_, Postgres>,
        records: &[RequestRecord],
        skip_existing: bool,
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        fn column<'r, T>(
            records: &'r [RequestRecord],
            field: impl Fn(&'r RequestRecord) -> T,
        ) -> Vec<T> {
            records.iter().map(field).collect()
        }
        let mut statement = String::from(
            "INSERT INTO requests (id, stored_region, request_id, org_id, user_id, key_id,
                                   endpoint, model, stream, status_code, error_code,
                                   prompt_tokens, completion_tokens, cost_usd, started_at,
                                   duration_ms)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[],
                                  $6::uuid[], $7::text[], $8::text[], $9::boolean[],
                                  $10::integer[], $11::text[], $12::bigint[], $13::bigint[],
                                  $14::numeric[], $15::timestamptz[], $16::bigint[])",
        );
        if skip_existing {
            statement.push_str(" ON CONFLICT (stored_region, id) DO NOTHING RETURNING id");
        }
        let query = sqlx::query_as::<_, (uuid::Uuid,)>(&statement)
            .bind(column(records, |record| record.id.0))
            .bind(column(records, |record| record.stored_region.as_str()))
            .bind(column(records, |record| record.request_id.as_str()))
            .bind(column(records, |record| record.org_id.0))
            .bind(column(records, |record| record.user_id.0))
            .bind(column(records, |record| record.key_id.0))
            .bind(column(records, |record| record.endpoint.as_str()))
            .bind(column(records, |record| record.model.as_str()))
            .bind(column(records, |record| record.stream))
            .bind(column(records, |record| i32::from(record.status_code)))
            .bind(column(records, |record| record.error_code.as_deref()))
            .bind(column(records, |record| record.prompt_tokens))
            .bind(column(records, |record| record.completion_tokens))
            .bind(column(records, |record| record.cost_usd))
            .bind(column(records, |record| record.started_at))
            .bind(column(records, |record| record.duration_ms));
        let inserted = query.fetch_all(&mut **tx).await?;
        Ok(inserted.into_iter().map(|(id,)| id).collect())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn prepare_regions(&self, regions: &[RegionId]) -> Result<(), StoreError> {
        for region in regions {
            sqlx::query("SELECT synaxis_ensure_request_partition($1)")
                .bind(region.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
