//! End-to-end: the official OpenAI Python SDK against `synaxisd` in front of an upstream of
//! kind `anthropic`, served by the fake upstream's Messages API. Streams and whole completions
//! carry a tool call, and the request records carry the fake's token counts.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxis_tests::services::{PYTHON_ENV, service_url};
use synaxisd::store::sqlite::SqliteStore;
use synaxisd::store::{RequestFilter, RequestStore};

use common::{Daemon, DaemonOptions, ctl_json};

const UPSTREAM_KEY: &str = "sk-ant-upstream-test-key";
const UPSTREAM_KEY_ENV: &str = "SYNAXIS_TEST_ANTHROPIC_KEY";
const MODEL: &str = "claude-sonnet";
const UPSTREAM_MODEL: &str = "claude-test";
const REPLY: &str = "Checking the weather for you.";
const PROMPT_TOKENS: i64 = 1_200;
const COMPLETION_TOKENS: i64 = 340;

/// Returns the config of an upstream of kind `anthropic` and a model it serves, added to the
/// harness's config.
fn anthropic_config(upstream_base_url: &str) -> String {
    format!(
        r#"
[upstreams.claude]
kind = "anthropic"
base_url = "{upstream_base_url}"
api_key_env = "{UPSTREAM_KEY_ENV}"
connect_timeout_secs = 5
request_timeout_secs = 30

[models.{MODEL}]
upstream = "claude"
upstream_model = "{UPSTREAM_MODEL}"
input_per_million = "3.00"
output_per_million = "15.00"
"#
    )
}

/// Creates an org, a user and a key; returns the key's id and secret.
fn create_key(daemon: &Daemon) -> (String, String) {
    let org = ctl_json(
        daemon,
        &[
            "org",
            "create",
            "--name",
            "Claude Labs",
            "--slug",
            "claude-labs",
        ],
    );
    let org_id = org["id"].as_str().expect("org id");
    let user = ctl_json(
        daemon,
        &[
            "user",
            "create",
            "--org",
            org_id,
            "--email",
            "dev@claude-labs.test",
        ],
    );
    let user_id = user["id"].as_str().expect("user id");
    let created = ctl_json(
        daemon,
        &["key", "create", "--user", user_id, "--name", "e2e"],
    );
    (
        created["key"]["id"].as_str().expect("key id").to_owned(),
        created["secret"].as_str().expect("secret").to_owned(),
    )
}

fn run_sdk(python: &str, daemon: &Daemon, key: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/anthropic_sdk_e2e.py");
    let output = Command::new(python)
        .arg(script)
        .env("SYNAXIS_BASE_URL", format!("{}/v1", daemon.url()))
        .env("SYNAXIS_KEY", key)
        .env("SYNAXIS_MODEL", MODEL)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("script prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_tool_calls_and_usage() {
    let Some(python) = service_url(PYTHON_ENV) else {
        return;
    };
    let tool_input = json!({"city": "Lisbon", "unit": "celsius"});
    let upstream = FakeUpstream::start(FakeConfig {
        reply: REPLY.to_owned(),
        prompt_tokens: PROMPT_TOKENS.unsigned_abs(),
        completion_tokens: COMPLETION_TOKENS.unsigned_abs(),
        api_key: Some(UPSTREAM_KEY.to_owned()),
        tool_call: Some(("get_weather".to_owned(), tool_input.clone())),
        ..FakeConfig::default()
    })
    .await
    .expect("start fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}/synaxis.db", dir.path().display());
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        extra_config: anthropic_config(&upstream.base_url()),
        extra_env: vec![(UPSTREAM_KEY_ENV.to_owned(), UPSTREAM_KEY.to_owned())],
        ..DaemonOptions::default()
    });

    let (key_id, secret) = tokio::task::block_in_place(|| create_key(&daemon));
    let seen = tokio::task::block_in_place(|| run_sdk(&python, &daemon, &secret));

    let expected_call =
        json!([{"id": "toolu_fake", "name": "get_weather", "arguments": tool_input}]);
    let streamed = &seen["stream_with_usage"];
    assert_eq!(streamed["roles"], json!(["assistant"]));
    assert_eq!(streamed["text"], REPLY);
    assert_eq!(streamed["tool_calls"], expected_call);
    assert_eq!(streamed["finish_reason"], "tool_calls");
    assert_eq!(streamed["usage"], json!([PROMPT_TOKENS, COMPLETION_TOKENS]));
    assert_eq!(streamed["usage_chunks"], 1);

    let unasked = &seen["stream_without_usage"];
    assert_eq!(unasked["tool_calls"], expected_call);
    assert_eq!(
        unasked["usage_chunks"], 0,
        "a usage chunk reached a client that did not ask"
    );
    assert_eq!(unasked["usage"], Value::Null);

    let complete = &seen["complete"];
    assert_eq!(complete["text"], REPLY);
    assert_eq!(
        complete["tool_calls"],
        json!([{"id": "toolu_fake", "type": "function", "name": "get_weather", "arguments": tool_input}])
    );
    assert_eq!(complete["finish_reason"], "tool_calls");
    assert_eq!(complete["usage"], json!([PROMPT_TOKENS, COMPLETION_TOKENS]));

    let follow_up = &seen["follow_up"];
    assert_eq!(follow_up["text"], REPLY);
    assert_eq!(follow_up["tool_calls"], 0);
    assert_eq!(follow_up["finish_reason"], "stop");

    let sent = upstream.received_requests();
    assert_eq!(sent.len(), 4, "four chat completions went upstream");
    for request in &sent {
        assert_eq!(request.path, "/v1/messages");
        assert_eq!(request.headers["x-api-key"], UPSTREAM_KEY);
        assert_eq!(request.headers["anthropic-version"], "2023-06-01");
        assert_eq!(request.body["model"], UPSTREAM_MODEL);
        assert_eq!(request.body["system"], "Answer briefly.");
        assert_eq!(request.body["max_tokens"], 4096);
    }
    assert_eq!(sent[0].body["stream"], true);
    assert_eq!(sent[0].body["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent[0].body["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    assert_eq!(sent[2].body["tool_choice"], json!({"type": "any"}));
    assert!(
        sent[3].body.get("tools").is_none(),
        "tool_choice none leaves out the tools"
    );
    assert_eq!(
        sent[3].body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "What is the weather in Lisbon?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": REPLY},
                {"type": "tool_use", "id": "toolu_fake", "name": "get_weather", "input": tool_input},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_fake", "content": "18 degrees and sunny"},
            ]},
        ])
    );

    // Stopping the daemon flushes its record writer.
    tokio::task::block_in_place(|| daemon.stop());
    let store = SqliteStore::connect(&database_url, 1)
        .await
        .expect("open store");
    let records = store
        .list_requests(&RequestFilter {
            key_id: Some(key_id.parse().expect("key id")),
            ..RequestFilter::default()
        })
        .await
        .expect("list records");
    assert_eq!(records.len(), 4, "one record per chat completion");
    // 1,200 prompt tokens at $3.00 and 340 completion tokens at $15.00 per million.
    let expected_cost = Decimal::from_str("0.0087").expect("decimal");
    for record in &records {
        assert_eq!(record.endpoint, "/v1/chat/completions");
        assert_eq!(record.status_code, 200);
        assert_eq!(record.model, MODEL);
        assert_eq!(record.prompt_tokens, PROMPT_TOKENS);
        assert_eq!(record.completion_tokens, COMPLETION_TOKENS);
        assert_eq!(record.cost_usd, expected_cost);
    }
    assert_eq!(records.iter().filter(|record| record.stream).count(), 2);
}
