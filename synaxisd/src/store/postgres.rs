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
