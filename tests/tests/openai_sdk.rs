//! End-to-end: the official OpenAI Python SDK against `synaxisd` on the embedded default, with
//! tenants made by `synaxisctl` and a fake upstream.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxis_tests::services::{PYTHON_ENV, service_url};
use synaxisd::store::sqlite::SqliteStore;
use synaxisd::store::{RequestFilter, RequestStore};

use common::{Daemon, DaemonOptions, UPSTREAM_KEY, create_tenant, ctl_json};

const REPLY: &str = "Synaxis streams this reply word by word.";

fn run_sdk(python: &str, daemon: &Daemon, key: &str, phase: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_sdk_e2e.py");
    let output = Command::new(python)
        .arg(script)
        .arg(phase)
        .env("SYNAXIS_BASE_URL", format!("{}/v1", daemon.url()))
        .env("SYNAXIS_KEY", key)
        .env("SYNAXIS_MODEL", "gpt-4o-mini")
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "SDK script `{phase}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("script prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_chat_stream_models_and_revocation() {
    let Some(python) = service_url(PYTHON_ENV) else {
        return;
    };
    let upstream = FakeUpstream::start(FakeConfig {
        reply: REPLY.to_owned(),
        prompt_tokens: 1_000,
        completion_tokens: 500,
        api_key: Some(UPSTREAM_KEY.to_owned()),
        ..FakeConfig::default()
    })
    .await
    .expect("start fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}/synaxis.db", dir.path().display());
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        log_level: "info".to_owned(),
        data_dir: dir.path().to_owned(),
        shutdown_timeout_secs: 10,
        ..DaemonOptions::default()
    });

    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    let used = tokio::task::block_in_place(|| run_sdk(&python, &daemon, &tenant.secret, "use"));

    assert_eq!(used["chat_text"], REPLY);
    assert_eq!(used["chat_usage"], serde_json::json!([1000, 500]));
    assert_eq!(used["stream_text"], REPLY);
    assert_eq!(
        used["stream_usage_chunks"], 0,
        "a usage chunk reached a client that did not ask"
    );
    assert_eq!(
        used["stream_reported_usage"],
        serde_json::json!([1000, 500])
    );
    assert_eq!(
        used["models"],
        serde_json::json!(["gpt-4o", "gpt-4o-mini", "unreachable"])
    );
    assert_eq!(used["wrong_key_error"], "AuthenticationError");

    let received = upstream.received();
    assert_eq!(received.len(), 3, "three chat completions went upstream");
    assert_eq!(
        received[0]["model"], "fake-small",
        "the upstream model name is sent"
    );
    assert_eq!(
        received[0]["synaxis_probe"],
        serde_json::json!({"kept": true}),
        "unknown fields pass through"
    );
    assert_eq!(
        received[1]["stream_options"]["include_usage"], true,
        "the gateway asks for usage"
    );

    let revoked =
        tokio::task::block_in_place(|| ctl_json(&daemon, &["key", "revoke", &tenant.key_id]));
    assert_eq!(revoked["active"], false);
    let rejected =
        tokio::task::block_in_place(|| run_sdk(&python, &daemon, &tenant.secret, "rejected"));
    assert_eq!(rejected["revoked_key_error"], "AuthenticationError");
    assert_eq!(
        upstream.received().len(),
        3,
        "a revoked key reaches no upstream"
    );

    // Stopping the daemon flushes its record writer.
    tokio::task::block_in_place(|| daemon.stop());
    let store = SqliteStore::connect(&database_url, 1)
        .await
        .expect("open store");
    let records = store
        .list_requests(&RequestFilter {
            key_id: Some(tenant.key_id.parse().expect("key id")),
            ..RequestFilter::default()
        })
        .await
        .expect("list records");
    let all = store
        .list_requests(&RequestFilter::default())
        .await
        .expect("list all");
    assert_eq!(
        all.len(),
        4,
        "one record per authenticated call and none for rejected keys"
    );
    assert_eq!(records.len(), 4);

    let chats: Vec<_> = records
        .iter()
        .filter(|record| record.endpoint == "/v1/chat/completions")
        .collect();
    assert_eq!(chats.len(), 3);
    let expected_cost = Decimal::from_str("0.00045").expect("decimal");
    for record in &chats {
        assert_eq!(record.status_code, 200);
        assert_eq!(record.model, "gpt-4o-mini");
        assert_eq!(
            (record.prompt_tokens, record.completion_tokens),
            (1000, 500)
        );
        assert_eq!(record.cost_usd, expected_cost);
        assert_eq!(record.org_id.to_string(), tenant.org_id);
        assert_eq!(record.user_id.to_string(), tenant.user_id);
    }
    assert_eq!(chats.iter().filter(|record| record.stream).count(), 2);
    let models = records
        .iter()
        .find(|record| record.endpoint == "/v1/models")
        .expect("models record");
    assert_eq!(
        (models.status_code, models.prompt_tokens, models.cost_usd),
        (200, 0, Decimal::ZERO)
    );
}
