//! Routing and usage: fallback across deployments bills only the one that responded, aliases
//! and model policies, a reported zero usage, a client that leaves mid-stream, and the auth
//! cache, alone and across two daemons that share a database.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxisd::billing::tokens;
use synaxisd::store::sqlite::SqliteStore;
use synaxisd::store::{RequestFilter, RequestRecord, RequestStore};
use synaxisd::tenancy::cache::{AUTH_CACHE_TTL_SECS, REFRESH_AHEAD_MS};

use common::{Daemon, DaemonOptions, create_tenant, ctl_json};

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(daemon: &Daemon, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", daemon.url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("chat request")
}

/// Stops the daemon, which stores every pending record, and returns the records oldest first.
async fn records_after_stop(daemon: Daemon, database_url: &str) -> Vec<RequestRecord> {
    tokio::task::block_in_place(|| daemon.stop());
    let store = SqliteStore::connect(database_url, 1)
        .await
        .expect("open store");
    let mut records = store
        .list_requests(&RequestFilter::default())
        .await
        .expect("records");
    records.reverse();
    records
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/synaxis.db", dir.path().display())
}

/// Reads a counter's value from the daemon's `/metrics`.
async fn metric(daemon: &Daemon, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", daemon.url()))
        .await
        .expect("metrics request")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_bills_only_the_winner() {
    let failing_500 = FakeUpstream::start(FakeConfig {
        fail_first: 1,
        fail_status: 500,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let failing_429 = FakeUpstream::start(FakeConfig {
        fail_first: 1,
        fail_status: 429,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let healthy = FakeUpstream::start(FakeConfig {
        prompt_tokens: 1_000,
        completion_tokens: 500,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let extra = format!(
        r#"
[upstreams.first]
kind = "openai"
base_url = "{}"

[upstreams.second]
kind = "openai"
base_url = "{}"

[upstreams.third]
kind = "openai"
base_url = "{}"

[models.routed]
input_per_million = "100"
output_per_million = "100"

[[models.routed.deployments]]
upstream = "first"
priority = 0

[[models.routed.deployments]]
upstream = "second"
priority = 1

[[models.routed.deployments]]
upstream = "third"
priority = 2
input_per_million = "1.00"
output_per_million = "2.00"

[routing]
max_attempts = 3
retry_backoff_ms = 1
retry_backoff_max_ms = 5
"#,
        failing_500.base_url(),
        failing_429.base_url(),
        healthy.base_url()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = sqlite_url(&dir);
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: healthy.base_url(),
        data_dir: dir.path().to_owned(),
        extra_config: extra,
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));

    let response = post(&daemon, &tenant.secret, &chat_body("routed", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-synaxis-cost-usd"], "0.002");
    let fallbacks = metric(&daemon, "synaxis_fallbacks_total").await;
    assert!(
        (fallbacks - 2.0).abs() < f64::EPSILON,
        "two fallbacks counted: {fallbacks}"
    );

    let calls =
        failing_500.received().len() + failing_429.received().len() + healthy.received().len();
    assert_eq!(calls, 3, "the upstreams saw exactly three calls");
    let records = records_after_stop(daemon, &database_url).await;
    assert_eq!(records.len(), 1, "one record for the request");
    // 1000 * 1.00 / 1e6 + 500 * 2.00 / 1e6, at the winning deployment's prices only.
    assert_eq!(
        records[0].cost_usd,
        Decimal::from_str("0.002").expect("decimal")
    );
    assert_eq!(
        (records[0].prompt_tokens, records[0].completion_tokens),
        (1_000, 500)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_whole_bill_the_same() {
    let upstream = FakeUpstream::start(FakeConfig {
        prompt_tokens: 1_234,
        completion_tokens: 567,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = sqlite_url(&dir);
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    for stream in [false, true] {
        let response = post(&daemon, &tenant.secret, &chat_body("gpt-4o-mini", stream)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("body");
    }

    let records = records_after_stop(daemon, &database_url).await;
    assert_eq!(records.len(), 2);
    assert_eq!((records[0].stream, records[1].stream), (false, true));
    assert_eq!(records[0].prompt_tokens, records[1].prompt_tokens);
    assert_eq!(records[0].completion_tokens, records[1].completion_tokens);
    assert_eq!(records[0].cost_usd, records[1].cost_usd);
    assert_eq!(records[0].prompt_tokens, 1_234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_zero_usage_wins() {
    let upstream = FakeUpstream::start(FakeConfig {
        zero_usage: true,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = sqlite_url(&dir);
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    for stream in [false, true] {
        let response = post(&daemon, &tenant.secret, &chat_body("gpt-4o-mini", stream)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("body");
    }

    for record in records_after_stop(daemon, &database_url).await {
        assert_eq!(
            (record.prompt_tokens, record.completion_tokens),
            (0, 0),
            "{record:?}"
        );
        assert!(record.cost_usd.is_zero());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_is_counted() {
    let reply = "The quick brown fox jumps over the lazy dog.";
    let upstream = FakeUpstream::start(FakeConfig {
        omit_usage: true,
        reply: reply.to_owned(),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = sqlite_url(&dir);
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    for stream in [false, true] {
        let response = post(&daemon, &tenant.secret, &chat_body("gpt-4o-mini", stream)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("body");
    }

    let expected_prompt = tokens::count_messages(Some(&json!([{"role": "user", "content": "hi"}])));
    for record in records_after_stop(daemon, &database_url).await {
        assert_eq!(record.completion_tokens, tokens::count(reply), "{record:?}");
        assert_eq!(record.prompt_tokens, expected_prompt, "{record:?}");
        assert!(!record.cost_usd.is_zero());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_stream_is_billed_for_delivered() {
    let upstream = FakeUpstream::start(FakeConfig {
        reply: "one two three four five six".to_owned(),
        cut_after_chunk: Some(3),
        pause_before_cut: Duration::from_secs(5),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = sqlite_url(&dir);
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));

    let mut response = post(&daemon, &tenant.secret, &chat_body("gpt-4o-mini", true)).await;
    let mut received = String::new();
    while received.matches("data: ").count() < 3 {
        let chunk = response
            .chunk()
            .await
            .expect("stream")
            .expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);

    let mut delivered = String::new();
    for line in received.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            let chunk: Value = serde_json::from_str(data).expect("chunk JSON");
            tokens::collect_delta(&chunk, &mut delivered);
        }
    }
    let records = records_after_stop(daemon, &database_url).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status_code, 499, "{:?}", records[0]);
    assert_eq!(
        records[0].completion_tokens,
        tokens::count(&delivered),
        "delivered {delivered:?}"
    );
    assert!(records[0].completion_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_cannot_bypass_model_policy() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: sqlite_url(&dir),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        extra_config: r#"
[aliases]
mini = "gpt-4o-mini"
big = "gpt-4o"
gpt-4o-mini-fast = "gpt-4o"
"#
        .to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    let exact = tokio::task::block_in_place(|| {
        ctl_json(
            &daemon,
            &[
                "key",
                "create",
                "--user",
                &tenant.user_id,
                "--allow-model",
                "gpt-4o-mini",
            ],
        )
    });
    let exact = exact["secret"].as_str().expect("secret").to_owned();
    let glob = tokio::task::block_in_place(|| {
        ctl_json(
            &daemon,
            &[
                "key",
                "create",
                "--user",
                &tenant.user_id,
                "--allow-model",
                "gpt-4o-mini*",
            ],
        )
    });
    let glob = glob["secret"].as_str().expect("secret").to_owned();

    let status = |key: String, model: &'static str| {
        let daemon_url = daemon.url();
        async move {
            reqwest::Client::new()
                .post(format!("{daemon_url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body(model, false))
                .send()
                .await
                .expect("chat request")
                .status()
        }
    };
    assert_eq!(
        status(exact.clone(), "GPT-4o-Mini").await,
        StatusCode::OK,
        "another case"
    );
    assert_eq!(
        status(exact.clone(), "mini").await,
        StatusCode::OK,
        "alias of an allowed model"
    );
    assert_eq!(
        status(exact.clone(), "gpt-4o").await,
        StatusCode::FORBIDDEN,
        "another model"
    );
    assert_eq!(
        status(exact.clone(), "big").await,
        StatusCode::FORBIDDEN,
        "alias of another model"
    );
    assert_eq!(
        status(glob.clone(), "gpt-4o-mini").await,
        StatusCode::OK,
        "the glob admits the model"
    );
    assert_eq!(
        status(glob, "gpt-4o-mini-fast").await,
        StatusCode::FORBIDDEN,
        "an alias that matches the glob but names another model"
    );
    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_receives_one_model_per_body() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: sqlite_url(&dir),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    let key = tokio::task::block_in_place(|| {
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
    let key = key["secret"].as_str().expect("secret").to_owned();
    let send = |body: &'static str| {
        let daemon_url = daemon.url();
        let key = key.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{daemon_url}/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("chat request")
                .status()
        }
    };

    // The gateway checks the last `model` of a body that names two, here one whose upstream
    // name is its own. The upstream must not see the first, whichever of the two its JSON
    // parser would keep.
    let twice = r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}"#;
    assert_eq!(send(twice).await, StatusCode::OK);
    // A body already fit for the upstream goes unchanged, spacing included.
    let plain = r#"{"model": "gpt-4o",  "messages": [{"role": "user", "content": "hi"}]}"#;
    assert_eq!(send(plain).await, StatusCode::OK);

    let received = upstream.received_requests();
    assert_eq!(received.len(), 2);
    let first = std::str::from_utf8(&received[0].raw_body).expect("UTF-8 body");
    assert_eq!(first.matches("\"model\"").count(), 1, "{first}");
    assert_eq!(received[0].body["model"], "gpt-4o", "{first}");
    assert_eq!(&received[1].raw_body[..], plain.as_bytes());
    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cache_serves_a_key_from_memory() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: sqlite_url(&dir),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));

    let client = reqwest::Client::new();
    let misses_before = metric(&daemon, "synaxis_auth_cache_misses_total").await;
    let started = Instant::now();
    let mut uses = 0;
    while uses < 1_000 {
        let response = client
            .get(format!("{}/v1/models", daemon.url()))
            .bearer_auth(&tenant.secret)
            .send()
            .await
            .expect("models request");
        assert_eq!(response.status(), StatusCode::OK);
        uses += 1;
    }
    let elapsed = started.elapsed();
    let misses = metric(&daemon, "synaxis_auth_cache_misses_total").await - misses_before;
    let hits = metric(&daemon, "synaxis_auth_cache_hits_total").await;
    // A use in an entry's last moments starts the lookup that replaces it, so the uses share
    // one lookup when they all come before that.
    let first_lookup_serves = Duration::from_millis(
        u64::try_from(AUTH_CACHE_TTL_SECS * 1_000 - REFRESH_AHEAD_MS).expect("positive"),
    );
    if elapsed < first_lookup_serves {
        assert!(
            misses <= 1.0,
            "{misses} store lookups for 1000 uses within one TTL"
        );
    }
    assert!(hits >= 1_000.0 - misses, "hits {hits}, misses {misses}");
    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_second_daemon_within_ttl() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = sqlite_url(&dir);
    let first = Daemon::start(&DaemonOptions {
        database_url: database_url.clone(),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().join("first"),
        ..DaemonOptions::default()
    });
    let second = Daemon::start(&DaemonOptions {
        database_url,
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().join("second"),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&first, "acme"));
    let client = reqwest::Client::new();
    let models = |daemon: &Daemon| {
        client
            .get(format!("{}/v1/models", daemon.url()))
            .bearer_auth(&tenant.secret)
            .send()
    };
    assert_eq!(
        models(&second).await.expect("request").status(),
        StatusCode::OK,
        "cached in the second daemon"
    );

    tokio::task::block_in_place(|| ctl_json(&first, &["key", "revoke", &tenant.key_id]));
    let revoked_at = Instant::now();
    assert_eq!(
        models(&first).await.expect("request").status(),
        StatusCode::UNAUTHORIZED,
        "at once in the revoking daemon"
    );

    let deadline = revoked_at + Duration::from_secs(10);
    loop {
        let status = models(&second).await.expect("request").status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second daemon still accepts the key after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = revoked_at.elapsed();
    assert!(
        elapsed <= Duration::from_millis(5_500),
        "the second daemon took {elapsed:?}"
    );

    tokio::task::block_in_place(|| first.stop());
    tokio::task::block_in_place(|| second.stop());
}
