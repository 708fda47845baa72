//! Inference errors: each has the OpenAI error shape with the right status, code and parameter,
//! and every request that presented a valid key is recorded, failures included.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxisd::server::MAX_BODY_BYTES;
use synaxisd::store::sqlite::SqliteStore;
use synaxisd::store::{RequestFilter, RequestStore};

use common::{Daemon, DaemonOptions, create_tenant, ctl_json};

struct Case {
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    param: Value,
}

fn case(body: impl Into<Vec<u8>>, status: StatusCode, code: &'static str, param: Value) -> Case {
    Case {
        body: body.into(),
        status,
        code,
        param,
    }
}

async fn post_chat(
    daemon: &Daemon,
    key: &str,
    body: Vec<u8>,
    language: &str,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", daemon.url()))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept-language", language)
        .body(body)
        .send()
        .await
        .expect("chat request");
    let status = response.status();
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["x-synaxis-region"], "us-east-1");
    (status, response.json().await.expect("error body is JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_openai_shape_and_records() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
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
    let limited = tokio::task::block_in_place(|| {
        ctl_json(
            &daemon,
            &[
                "key",
                "create",
                "--user",
                &tenant.user_id,
                "--allow-model",
                "gpt-4o",
            ],
        )
    });
    let limited_secret = limited["secret"].as_str().expect("secret").to_owned();

    let messages = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        case(
            b"{\"model\": \"gpt-4o\", \"messages\": [{\"content\": \"\xff\"}]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Value::Null,
        ),
        case(
            "{\"model\": ",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Value::Null,
        ),
        case(
            json!({"messages": messages}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            json!("model"),
        ),
        case(
            json!({"model": "gpt-4o"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            json!("messages"),
        ),
        case(
            json!({"model": "gpt-4o", "messages": "hi"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            json!("messages"),
        ),
        case(
            json!({"model": "no-such-model", "messages": messages}).to_string(),
            StatusCode::NOT_FOUND,
            "model_not_found",
            json!("model"),
        ),
        case(
            json!({"model": "unreachable", "messages": messages}).to_string(),
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            Value::Null,
        ),
        case(
            vec![b' '; MAX_BODY_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            Value::Null,
        ),
    ];
    for case in &cases {
        let (status, body) = post_chat(&daemon, &tenant.secret, case.body.clone(), "en").await;
        assert_eq!(status, case.status, "{body}");
        assert_eq!(body["error"]["code"], case.code, "{body}");
        assert_eq!(body["error"]["param"], case.param, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty())
        );
    }

    let allowed_elsewhere = json!({"model": "GPT-4O-MINI", "messages": messages})
        .to_string()
        .into_bytes();
    let (status, body) = post_chat(
        &daemon,
        &limited_secret,
        allowed_elsewhere,
        "pt-BR,pt;q=0.9",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert_eq!(body["error"]["type"], "permission_error");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message
            .contains("O modelo `gpt-4o-mini` não é permitido pela política de modelos da chave"),
        "{message}"
    );

    let any_case = json!({"model": "GPT-4o", "messages": messages})
        .to_string()
        .into_bytes();
    let (status, body) = post_chat(&daemon, &limited_secret, any_case, "en").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an allowed model matches in any case: {body}"
    );

    let (status, body) = post_chat(&daemon, "sk-syn-us-not-a-key", b"{}".to_vec(), "en").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // Stopping the daemon flushes its record writer.
    tokio::task::block_in_place(|| daemon.stop());
    let store = SqliteStore::connect(&database_url, 1)
        .await
        .expect("open store");
    let records = store
        .list_requests(&RequestFilter::default())
        .await
        .expect("records");
    assert_eq!(
        records.len(),
        cases.len() + 2,
        "one record per request with a valid key"
    );
    let mut statuses: Vec<u16> = records.iter().map(|record| record.status_code).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        vec![200, 400, 400, 400, 400, 400, 403, 404, 413, 502]
    );
    let failed = records.iter().filter(|record| record.status_code != 200);
    for record in failed {
        assert!(record.error_code.is_some(), "{record:?}");
        assert_eq!(record.prompt_tokens + record.completion_tokens, 0);
        assert!(record.cost_usd.is_zero());
    }
    let bad_gateway = records
        .iter()
        .find(|record| record.status_code == 502)
        .expect("502 record");
    assert_eq!(bad_gateway.model, "unreachable");
    assert_eq!(bad_gateway.error_code.as_deref(), Some("upstream_error"));
}

/// SIGTERM lets a stream in flight finish, and its record is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_inflight_stream() {
    let upstream = FakeUpstream::start(FakeConfig {
        reply: "one two three four five six seven eight".to_owned(),
        chunk_delay: std::time::Duration::from_millis(50),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
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

    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", daemon.url()))
        .bearer_auth(&tenant.secret)
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "count"}]}))
        .send()
        .await
        .expect("stream request");
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = response
        .chunk()
        .await
        .expect("first chunk")
        .expect("stream open")
        .to_vec();

    let stopping = tokio::task::spawn_blocking(move || daemon.stop());
    while let Some(chunk) = response
        .chunk()
        .await
        .expect("stream continues during the drain")
    {
        received.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(received).expect("UTF-8 stream");
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {text}"
    );
    assert!(text.contains("eight"), "{text}");
    stopping.await.expect("daemon stopped");

    let store = SqliteStore::connect(&database_url, 1)
        .await
        .expect("open store");
    let records = store
        .list_requests(&RequestFilter::default())
        .await
        .expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status_code, 200);
    assert_eq!(records[0].completion_tokens, 7);
}

/// A request still waiting on the upstream when the drain deadline passes ends with 503
/// `shutting_down` and a request record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cancels_with_record() {
    let upstream = FakeUpstream::start(FakeConfig {
        latency: std::time::Duration::from_secs(120),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}/synaxis.db", dir.path().display());
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        log_level: "info".to_owned(),
        data_dir: dir.path().to_owned(),
        shutdown_timeout_secs: 1,
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));

    let request = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", daemon.url()))
        .bearer_auth(&tenant.secret)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    let pending = tokio::spawn(request);
    upstream
        .wait_for_requests(1, std::time::Duration::from_secs(30))
        .await;

    tokio::task::block_in_place(|| daemon.stop());
    let response = pending
        .await
        .expect("task")
        .expect("response before the connection closed");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "shutting_down");

    let store = SqliteStore::connect(&database_url, 1)
        .await
        .expect("open store");
    let records = store
        .list_requests(&RequestFilter::default())
        .await
        .expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status_code, 503);
    assert_eq!(records[0].error_code.as_deref(), Some("shutting_down"));
}
