//! Access to the external services that tests use, by URL from the environment.
//!
//! A test whose service URL is unset skips on a developer machine, and fails when `CI=true`,
//! because CI must never pass by skipping.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Admin URL of the PostgreSQL server for tests, such as `postgres://postgres@127.0.0.1:5432/postgres`.
pub const DATABASE_URL_ENV: &str = "SYNAXIS_TEST_DATABASE_URL";

/// URL of the Redis server for tests, such as `redis://127.0.0.1:6379`. Tests share its
/// database, so each one keeps its keys under its own [`redis_key_prefix`].
pub const REDIS_URL_ENV: &str = "SYNAXIS_TEST_REDIS_URL";

/// Bootstrap servers of the Kafka-protocol broker for tests, such as `127.0.0.1:9092`. Tests
/// share it, so each one uses topics and consumer groups with a UUID in their names.
pub const KAFKA_BROKERS_ENV: &str = "SYNAXIS_TEST_KAFKA_BROKERS";

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

/// Path of the `redis-server` binary that [`RedisServer`] runs. When it is unset, `redis-server`
/// is looked up on `PATH`.
pub const REDIS_SERVER_ENV: &str = "SYNAXIS_TEST_REDIS_SERVER";

/// Maximum wait for a started `redis-server` to reply to `PING`.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` process of one test, on a free loopback port, that the test can stop and
/// start again on the same port to cause an outage. It keeps no data on disk, so a restart
/// starts empty. The process is killed when the value is dropped.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    program: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it replies to `PING`.
    /// When the binary is missing, the error names the package to install and the variable that
    /// sets the binary's path.
    pub async fn start() -> Result<Self, String> {
        let program = std::env::var_os(REDIS_SERVER_ENV)
            .filter(|value| !value.is_empty())
            .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from);
        let mut last_error = String::new();
        // Another process can take the free port between the check and the server's bind, so a
        // failed start is retried on another port.
        for _ in 0..5 {
            let port = free_port().map_err(|error| format!("no free port: {error}"))?;
            let mut server = Self {
                port,
                program: program.clone(),
                child: None,
            };
            match server.restart().await {
                Ok(()) => return Ok(server),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// Returns the URL of the server, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it has exited.
    pub async fn stop(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .map_err(|error| format!("killing redis-server failed: {error}"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port, after [`RedisServer::stop`], and waits until it
    /// replies to `PING`.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.stop().await?;
        let port = self.port.to_string();
        let mut child = Command::new(&self.program)
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                format!(
                    "starting {} failed: {error}; install Redis (the `redis-server` package) \
                     or set {REDIS_SERVER_ENV} to the binary's path",
                    self.program.display()
                )
            })?;

        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {port} exited with {status} before answering PING"
                ));
            }
            if ping(self.port).await {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(format!(
                    "redis-server on port {port} did not answer PING within {REDIS_START_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Returns a port of 127.0.0.1 that nothing listened on when it was checked. The port lies
/// below Linux's default ephemeral range (32768 to 60999), where port 0 binds and outgoing
/// connections take their ports. So only an explicit bind can take it while the server is
/// stopped.
fn free_port() -> std::io::Result<u16> {
    let mut last_error = None;
    for _ in 0..50 {
        let offset = uuid::Uuid::new_v4().as_u128() % 16_000;
        let port = 16_000 + u16::try_from(offset).unwrap_or(0);
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return Ok(port),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no port was tried")))
}

/// Returns whether a Redis server on `port` of 127.0.0.1 replies `+PONG` to `PING` within a
/// second.
async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
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
