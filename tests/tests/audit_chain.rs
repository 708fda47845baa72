//! The audit chain through `synaxisctl`: a team, users of each role and their keys leave a chain
//! that `audit verify` accepts. Editing an entry directly in the database, or deleting the
//! newest entries, makes `audit verify` name the broken entry and exit non-zero. Each case runs
//! on SQLite and on PostgreSQL, whose triggers the tampering first disables, as an attacker with
//! database access could.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};

use serde_json::Value;
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxis_tests::services::{DATABASE_URL_ENV, TestDatabase, service_url};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN, binary, ctl_json};

const ROLES: [&str; 5] = ["owner", "admin", "developer", "billing", "viewer"];

/// Runs `synaxisctl --output json ARGS` and returns its whole output, whatever its status.
fn ctl(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(binary("synaxisctl"))
        .args([
            "--endpoint",
            &daemon.url(),
            "--token",
            OPERATOR_TOKEN,
            "--output",
            "json",
        ])
        .args(args)
        .env_remove("SYNAXIS_LANG")
        .output()
        .expect("run synaxisctl")
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// Builds an org with a team, a user of each role and their keys, then rotates and revokes a
/// key. Returns how many audit entries that made.
fn populate(daemon: &Daemon) -> i64 {
    let org = id(&ctl_json(
        daemon,
        &[
            "--justification",
            "onboarding",
            "org",
            "create",
            "--name",
            "Acme",
            "--slug",
            "acme",
            "--plan",
            "enterprise",
        ],
    ));
    let team = id(&ctl_json(
        daemon,
        &["team", "create", "--org", &org, "--name", "Core"],
    ));
    let mut keys = Vec::new();
    for role in ROLES {
        let email = format!("{role}@acme.test");
        let user = id(&ctl_json(
            daemon,
            &[
                "user", "create", "--org", &org, "--email", &email, "--role", role, "--team", &team,
            ],
        ));
        let scope = if matches!(role, "owner" | "admin") {
            "management"
        } else {
            "inference"
        };
        let created = ctl_json(
            daemon,
            &["key", "create", "--user", &user, "--scope", scope],
        );
        keys.push(id(&created["key"]));
    }
    ctl_json(daemon, &["key", "rotate", &keys[2], "--grace", "60s"]);
    ctl_json(daemon, &["key", "revoke", &keys[3]]);
    // org, team, 5 users, 5 keys, one rotation, one revocation.
    14
}

fn verify(daemon: &Daemon) -> (Option<i32>, Value, String) {
    let output = ctl(daemon, &["audit", "verify"]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("verify prints JSON");
    (
        output.status.code(),
        report,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The database under test, for statements outside the daemon.
enum Database {
    Sqlite(String),
    Postgres(String),
}

impl Database {
    async fn execute(&self, statements: &[&str]) {
        match self {
            Self::Sqlite(url) => {
                let pool = sqlx::SqlitePool::connect(url).await.expect("open SQLite");
                for statement in statements {
                    sqlx::query(statement)
                        .execute(&pool)
                        .await
                        .expect(statement);
                }
                pool.close().await;
            }
            Self::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url)
                    .await
                    .expect("connect PostgreSQL");
                for statement in statements {
                    sqlx::query(statement)
                        .execute(&pool)
                        .await
                        .expect(statement);
                }
                pool.close().await;
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            Self::Sqlite(url) | Self::Postgres(url) => url,
        }
    }

    fn disable_triggers(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "DROP TRIGGER audit_log_no_update",
            Self::Postgres(_) => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        }
    }

    fn disable_delete_trigger(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "DROP TRIGGER audit_log_no_delete",
            Self::Postgres(_) => "SELECT 1",
        }
    }
}

async fn start(database: &Database, upstream: &FakeUpstream, dir: &std::path::Path) -> Daemon {
    Daemon::start(&DaemonOptions {
        database_url: database.url().to_owned(),
        upstream_base_url: upstream.base_url(),
        log_level: "info".to_owned(),
        data_dir: dir.to_owned(),
        shutdown_timeout_secs: 10,
        ..DaemonOptions::default()
    })
}

async fn edited_entry_is_named(database: Database) {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = start(&database, &upstream, dir.path()).await;
    let entries = tokio::task::block_in_place(|| populate(&daemon));

    let (code, report, stderr) = tokio::task::block_in_place(|| verify(&daemon));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["entries_checked"], entries);
    let listed =
        tokio::task::block_in_place(|| ctl_json(&daemon, &["audit", "list", "--limit", "3"]));
    assert_eq!(listed["data"][0]["justification"], "onboarding");

    database
        .execute(&[
            database.disable_triggers(),
            "UPDATE audit_log SET actor_id = 'someone-else' WHERE seq = 5",
        ])
        .await;

    let (code, report, stderr) = tokio::task::block_in_place(|| verify(&daemon));
    assert_ne!(code, Some(0), "verify must fail on an edited entry");
    assert_eq!(report["valid"], false);
    assert_eq!(report["first_broken"]["seq"], 5, "{report}");
    assert!(
        stderr.contains('5'),
        "the message names the entry: {stderr}"
    );

    tokio::task::block_in_place(|| daemon.stop());
}

async fn deleted_newest_entries_are_detected(database: Database) {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = start(&database, &upstream, dir.path()).await;
    let entries = tokio::task::block_in_place(|| populate(&daemon));

    let (code, _, stderr) = tokio::task::block_in_place(|| verify(&daemon));
    assert_eq!(code, Some(0), "{stderr}");

    let delete = format!("DELETE FROM audit_log WHERE seq > {}", entries - 2);
    database
        .execute(&[
            database.disable_triggers(),
            database.disable_delete_trigger(),
            &delete,
        ])
        .await;

    let (code, report, stderr) = tokio::task::block_in_place(|| verify(&daemon));
    assert_ne!(
        code,
        Some(0),
        "verify must fail when the newest entries are gone"
    );
    assert_eq!(report["valid"], false);
    assert_eq!(report["head_seq"], entries);
    assert_eq!(report["first_broken"]["seq"], entries - 1, "{report}");
    let reason = report["first_broken"]["reason"].as_str().expect("reason");
    assert!(reason.contains("missing"), "{reason}");
    assert!(!stderr.is_empty());

    tokio::task::block_in_place(|| daemon.stop());
}

fn sqlite_database(dir: &tempfile::TempDir) -> Database {
    Database::Sqlite(format!("sqlite://{}/synaxis.db", dir.path().display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_entry_is_named_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    edited_entry_is_named(sqlite_database(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_entries_are_detected_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    deleted_newest_entries_are_detected(sqlite_database(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_entry_is_named_on_postgres() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    edited_entry_is_named(Database::Postgres(database.url.clone())).await;
    database.drop_database().await.expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_entries_are_detected_on_postgres() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    deleted_newest_entries_are_detected(Database::Postgres(database.url.clone())).await;
    database.drop_database().await.expect("drop database");
}
