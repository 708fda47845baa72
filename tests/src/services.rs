//! Access to the external services that tests use, by URL from the environment.
//!
//! A test whose service URL is unset skips on a developer machine, and fails when `CI=true`,
//! because CI must never pass by skipping.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Admin URL of the PostgreSQL server for tests, such as `postgres://postgres@127.0.0.1:5432/postgres`.
pub const DATABASE_URL_ENV: &str = "SYNAXIS_TEST_DATABASE_URL";

/// URL of the Redis server for tests, such as `redis://127.0.0.1:6379`. Tests share its
/// database, so each one keeps its keys under its own [`redis_key_prefix`].
pub const REDIS_URL_ENV: &str = "SYNAXIS_TEST_REDIS_URL";

/// Python interpreter with the `openai` package, for end-to-end tests.
pub const PYTHON_ENV: &str = "SYNAXIS_TEST_PYTHON";

/// Returns the value of `variable`, or `None` when the test should skip. Panics when the
/// variable is unset under `CI=true`.
pub fn service_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        // A missing service under CI=true must fail the test, and panicking is how a test fails.
        #[allow(clippy::panic)]
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!(
                "{variable} is not set, and CI=true forbids skipping; run the tests through .ci/run"
            )
        }
        _ => {
            eprintln!("skipped: {variable} is not set (bash .ci/run sets it)");
            None
        }
    }
}

/// Returns a Redis key prefix of its own for one test, `synaxis_test_<uuid>:`.
pub fn redis_key_prefix() -> String {
    format!("synaxis_test_{}:", uuid::Uuid::new_v4().simple())
}

/// A PostgreSQL database created for one test, named `synaxis_test_<uuid>`.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    /// URL of the new database.
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database on the server of `admin_url`.
    pub async fn create(admin_url: &str) -> Result<Self, sqlx::Error> {
        let name = format!("synaxis_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        // Identifiers cannot be bound as parameters; the name is generated above.
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;

        let url = replace_database(admin_url, &name);
        Ok(Self {
            name,
            url,
            admin_url: admin_url.to_owned(),
        })
    }

    /// Drops the database, closing any connections still open to it.
    pub async fn drop_database(self) -> Result<(), sqlx::Error> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await
    }
}

/// Replaces the database name in a PostgreSQL URL, keeping any query string.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme_end| scheme_end + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut result = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_database_keeps_authority_and_query() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
