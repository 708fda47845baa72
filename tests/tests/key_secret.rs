//! A key's secret appears only in the response that creates it: not in the daemon's logs at
//! trace level, and not in the database, on SQLite (with its WAL) or PostgreSQL (`pg_dump`).

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use secrecy::SecretString;
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxis_tests::services::{DATABASE_URL_ENV, TestDatabase, service_url};
use synaxisd::tenancy::keys::KeyHasher;

use common::{Daemon, DaemonOptions, PEPPER, Tenant, create_tenant, ctl_json};

/// Uses the key the ways a client can: a chat completion, streamed and not, the model list, and
/// a call after revocation.
async fn exercise_key(daemon: &Daemon, tenant: &Tenant) {
    let client = reqwest::Client::new();
    let chat = format!("{}/v1/chat/completions", daemon.url());
    for stream in [false, true] {
        let response = client
            .post(&chat)
            .bearer_auth(&tenant.secret)
            .json(&serde_json::json!({
                "model": "gpt-4o-mini",
                "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .send()
            .await
            .expect("chat request");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("chat body");
    }
    let models = client
        .get(format!("{}/v1/models", daemon.url()))
        .bearer_auth(&tenant.secret)
        .send()
        .await
        .expect("models request");
    assert_eq!(models.status(), 200);

    tokio::task::block_in_place(|| ctl_json(daemon, &["key", "revoke", &tenant.key_id]));
    let after = client
        .get(format!("{}/v1/models", daemon.url()))
        .bearer_auth(&tenant.secret)
        .send()
        .await
        .expect("request after revocation");
    assert_eq!(after.status(), 401);
}

fn key_hash(secret: &str) -> String {
    KeyHasher::new(&SecretString::from(PEPPER)).hash(secret)
}

/// The parts of a key that must not be found: the whole key and its random part.
fn secret_forms(secret: &str) -> [&str; 2] {
    let random = secret.rsplit('-').next().expect("random part");
    [secret, random]
}

/// Runs a daemon at trace level on `database_url`, makes and uses a key, stops the daemon, and
/// returns the key with the daemon's whole output.
async fn run_daemon(database_url: &str, data_dir: &Path) -> (Tenant, String) {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.to_owned(),
        upstream_base_url: upstream.base_url(),
        log_level: "trace".to_owned(),
        data_dir: data_dir.to_owned(),
        shutdown_timeout_secs: 10,
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    exercise_key(&daemon, &tenant).await;
    let logs = tokio::task::block_in_place(|| daemon.stop());

    assert!(
        logs.contains(&tenant.key_id),
        "the captured logs are the daemon's"
    );
    assert!(
        logs.lines().count() > 50,
        "trace logging produced too little output to search"
    );
    for form in secret_forms(&tenant.secret) {
        assert!(
            !logs.contains(form),
            "the key's secret appears in the daemon's logs"
        );
    }
    (tenant, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_absent_from_sqlite_files_and_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}/synaxis.db", dir.path().display());
    let (tenant, _) = run_daemon(&database_url, dir.path()).await;

    let mut contents = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("synaxis.db{suffix}"));
        if let Ok(bytes) = std::fs::read(&path) {
            contents.extend_from_slice(&bytes);
        }
    }
    let contents = String::from_utf8_lossy(&contents);
    assert!(
        contents.contains(&key_hash(&tenant.secret)),
        "the searched files hold the key's hash"
    );
    for form in secret_forms(&tenant.secret) {
        assert!(
            !contents.contains(form),
            "the key's secret appears in the SQLite files"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_absent_from_postgres_dump_and_logs() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    let dir = tempfile::tempdir().expect("temp dir");
    let (tenant, _) = run_daemon(&database.url, dir.path()).await;

    let dump = Command::new("pg_dump")
        .args(["--dbname", &database.url])
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains(&key_hash(&tenant.secret)),
        "the dump holds the key's hash"
    );
    for form in secret_forms(&tenant.secret) {
        assert!(
            !dump.contains(form),
            "the key's secret appears in the PostgreSQL dump"
        );
    }

    database.drop_database().await.expect("drop database");
}
