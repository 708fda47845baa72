//! Rate limits and concurrency leases of the real daemon. The tests cover a fixed limit shared
//! exactly by two daemons on Redis, and token limits charged on an estimate and settled to the
//! real usage. They check the `Retry-After` of `block` and `throttle` limits, and concurrency
//! slots released when their requests end or freed by lease expiry after their holder is
//! killed. One test covers the fallback to local limits while Redis is down, and one runs two
//! daemons for 75 seconds against a sliding limit.
//!
//! Fixed minute windows reset at every UTC minute boundary, so the tests that count inside one
//! window first make sure that enough of the current minute remains (see
//! [`ensure_minute_room`]).

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxis_tests::services::{
    DATABASE_URL_ENV, REDIS_URL_ENV, RedisServer, TestDatabase, redis_key_prefix, service_url,
};
use synaxisd::billing::tokens;

use common::{Daemon, DaemonOptions, Tenant, create_tenant, ctl_json};

const MODEL: &str = "gpt-4o-mini";
const MINUTE_MS: u64 = 60_000;

// Prometheus series of the limiter that the tests read.
const ACTIVE: &str = "synaxis_limiter_fallback_active";
const SWITCHES: &str = "synaxis_limiter_fallback_switches_total";
const LOCAL_CALLS: &str = "synaxis_limiter_local_calls_total";
const WAITS: &str = "synaxis_limit_waits_total";

/// Returns the current time in milliseconds since the Unix epoch.
fn unix_millis() -> u64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(elapsed.as_millis()).expect("milliseconds fit in u64")
}

/// Returns the start of the UTC minute that contains `millis`, as the daemon's fixed windows
/// align it.
fn minute_start(millis: u64) -> u64 {
    millis - millis % MINUTE_MS
}

/// Waits for the next UTC minute when less than `room` remains of the current one, so that a
/// test's requests all fall into one fixed minute window. It waits for no state of the daemon,
/// and only keeps the window from resetting while the test counts in it.
async fn ensure_minute_room(room: Duration) {
    let now = unix_millis();
    let left = Duration::from_millis(minute_start(now) + MINUTE_MS - now);
    if left < room {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

/// Parses a reset time in OpenAI's header format, such as `250ms`, `12s`, `1.5s` or `6m0s`.
fn parse_reset(text: &str) -> Duration {
    if let Some(millis) = text.strip_suffix("ms") {
        return Duration::from_millis(millis.parse().expect("milliseconds of a reset header"));
    }
    let mut total = 0.0;
    let mut number = String::new();
    for c in text.chars() {
        let unit = match c {
            'h' => 3_600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => {
                number.push(c);
                continue;
            }
        };
        let value: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("invalid reset header {text:?}"));
        total += value * unit;
        number.clear();
    }
    assert!(
        number.is_empty(),
        "reset header {text:?} ends without a unit"
    );
    Duration::from_secs_f64(total)
}

/// Builds a chat request body with one short user message.
fn chat_body(max_tokens: Option<u64>, stream: bool) -> Value {
    let mut body = json!({
        "model": MODEL,
        "stream": stream,
        "messages": [{"role": "user", "content": "Count to three."}],
    });
    if let Some(max_tokens) = max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    body
}

/// Prompt tokens that the daemon charges for [`chat_body`], counted with the same tokenizer.
fn prompt_tokens() -> u64 {
    let body = chat_body(None, false);
    u64::try_from(tokens::count_messages(body.get("messages"))).expect("a positive count")
}

/// A finished response: its status, `error.code`, headers, and when it arrived.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    code: Option<String>,
    headers: HeaderMap,
    /// Time from sending the request to its response's headers.
    elapsed: Duration,
    /// Milliseconds since the Unix epoch when the response's headers arrived.
    arrived_ms: u64,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("the response has no {name} header: {:?}", self.headers))
            .to_str()
            .expect("an ASCII header")
    }

    fn header_number(&self, name: &str) -> u64 {
        let value = self.header(name);
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} is {value:?}, not a whole number"))
    }

    fn is_rejection(&self, code: &str) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS && self.code.as_deref() == Some(code)
    }
}

/// Sends a chat completion request and reads the whole response.
async fn chat(client: &reqwest::Client, daemon_url: &str, key: &str, body: &Value) -> Reply {
    let started = Instant::now();
    let response = client
        .post(format!("{daemon_url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("chat request");
    let elapsed = started.elapsed();
    let arrived_ms = unix_millis();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    let code = if status.is_success() {
        None
    } else {
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status} with a body that is not JSON: {text}"));
        body.pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Reply {
        status,
        code,
        headers,
        elapsed,
        arrived_ms,
    }
}

/// Reads one series of the daemon's `/metrics`, such as `synaxis_limit_waits_total` or
/// `synaxis_limit_refusals_total{reason="quota_exceeded"}`. A series not exported yet reads 0.
async fn metric(daemon_url: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{daemon_url}/metrics"))
        .await
        .expect("metrics request")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|value| value.trim().parse().expect("a metric value"))
        })
        .unwrap_or(0.0)
}

/// Reads a fixed-window counter from Redis. A missing key reads 0.
async fn redis_count(redis_url: &str, key: &str) -> u64 {
    let client = redis::Client::open(redis_url).expect("Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let value: Option<u64> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("GET a counter");
    value.unwrap_or(0)
}

/// Reads the number of concurrency leases stored at `key`, expired ones included.
async fn redis_lease_count(redis_url: &str, key: &str) -> u64 {
    let client = redis::Client::open(redis_url).expect("Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("ZCARD a lease set")
}

/// Returns the Redis key of an org's counter of `metric` in the fixed minute that contains
/// `at_ms`.
fn org_minute_key(prefix: &str, org_id: &str, metric: &str, at_ms: u64) -> String {
    format!(
        "{prefix}limit:org:{org_id}:{metric}:minute:fixed:{}",
        minute_start(at_ms)
    )
}

/// Returns the `[limits]` section of a daemon on the Redis server of `redis_url`, with
/// `settings` (keys of `[limits]`) and `sets` (tables such as `[limits.org.requests]`).
fn redis_limits(redis_url: &str, prefix: &str, settings: &str, sets: &str) -> String {
    format!(
        r#"
[limits]
store = "redis"
redis_url = "{redis_url}"
redis_key_prefix = "{prefix}"
redis_timeout_ms = 250
{settings}
{sets}
"#
    )
}

/// Starts `count` daemons that share `database_url` and `extra_config`, each with a data
/// directory of its own below `dir`.
fn start_daemons(
    count: usize,
    database_url: &str,
    upstream: &FakeUpstream,
    dir: &Path,
    extra_config: &str,
) -> Vec<Daemon> {
    (0..count)
        .map(|index| {
            Daemon::start(&DaemonOptions {
                database_url: database_url.to_owned(),
                upstream_base_url: upstream.base_url(),
                data_dir: dir.join(format!("daemon-{index}")),
                extra_config: extra_config.to_owned(),
                ..DaemonOptions::default()
            })
        })
        .collect()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/synaxis.db", dir.display())
}

/// Creates a second user with a key in the org of `tenant` and returns the key's secret.
fn second_key(daemon: &Daemon, tenant: &Tenant) -> String {
    let email = format!("second-{}@example.test", tenant.org_id);
    let user = ctl_json(
        daemon,
        &["user", "create", "--org", &tenant.org_id, "--email", &email],
    );
    let user_id = user["id"].as_str().expect("user id");
    let created = ctl_json(
        daemon,
        &["key", "create", "--user", user_id, "--name", "second"],
    );
    created["secret"].as_str().expect("secret").to_owned()
}

/// Two daemons on the Redis of the environment, with the org limit sets `sets` and
/// `processes = 2`, sharing one test database, and a tenant made on the first.
struct SharedDaemons {
    database: TestDatabase,
    redis_url: String,
    prefix: String,
    daemons: Vec<Daemon>,
    tenant: Tenant,
    _upstream: FakeUpstream,
    _dir: tempfile::TempDir,
}

impl SharedDaemons {
    /// Starts the daemons, or returns `None` when the test should skip for a missing service.
    async fn start(sets: &str) -> Option<Self> {
        let admin_url = service_url(DATABASE_URL_ENV)?;
        let redis_url = service_url(REDIS_URL_ENV)?;
        let database = TestDatabase::create(&admin_url)
            .await
            .expect("create database");
        let upstream = FakeUpstream::start(FakeConfig::default())
            .await
            .expect("fake upstream");
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = redis_key_prefix();
        let config = redis_limits(&redis_url, &prefix, "processes = 2", sets);
        let daemons = tokio::task::block_in_place(|| {
            start_daemons(2, &database.url, &upstream, dir.path(), &config)
        });
        let tenant = tokio::task::block_in_place(|| create_tenant(&daemons[0], "acme"));
        Some(Self {
            database,
            redis_url,
            prefix,
            daemons,
            tenant,
            _upstream: upstream,
            _dir: dir,
        })
    }

    fn urls(&self) -> Vec<String> {
        self.daemons.iter().map(Daemon::url).collect()
    }

    async fn stop(self) {
        for daemon in self.daemons {
            tokio::task::block_in_place(|| daemon.stop());
        }
        self.database.drop_database().await.expect("drop database");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_share_a_fixed_limit_exactly() {
    let Some(shared) = SharedDaemons::start(
        r#"
[limits.org.requests]
per_minute = { limit = 100, window = "fixed", action = "block" }
"#,
    )
    .await
    else {
        return;
    };
    let (redis_url, prefix, tenant) = (&shared.redis_url, &shared.prefix, &shared.tenant);

    ensure_minute_room(Duration::from_secs(15)).await;
    let client = reqwest::Client::new();
    let body = chat_body(Some(16), false);
    let urls = shared.urls();
    let requests = (0..500).map(|index| chat(&client, &urls[index % 2], &tenant.secret, &body));
    let replies = join_all(requests).await;
    let finished_ms = unix_millis();

    let admitted = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::OK)
        .count();
    let rejected = replies
        .iter()
        .filter(|reply| reply.is_rejection("quota_exceeded"))
        .count();
    let others: Vec<_> = replies
        .iter()
        .filter(|reply| reply.status != StatusCode::OK && !reply.is_rejection("quota_exceeded"))
        .map(|reply| (reply.status, reply.code.clone()))
        .collect();
    assert!(others.is_empty(), "unexpected responses: {others:?}");
    assert_eq!(admitted, 100, "admitted requests of 500");
    assert_eq!(rejected, 400, "requests rejected with quota_exceeded");
    for reply in replies
        .iter()
        .filter(|reply| reply.status != StatusCode::OK)
    {
        assert!(
            reply.header_number("retry-after") >= 1,
            "a rejection without a useful Retry-After: {:?}",
            reply.headers
        );
    }

    let key = org_minute_key(prefix, &tenant.org_id, "requests", finished_ms);
    assert_eq!(
        redis_count(redis_url, &key).await,
        100,
        "the shared counter {key} counts only admitted requests"
    );
    let mut refusals = 0.0;
    for url in &urls {
        refusals += metric(
            url,
            r#"synaxis_limit_refusals_total{reason="quota_exceeded"}"#,
        )
        .await;
    }
    assert!(
        (refusals - 400.0).abs() < f64::EPSILON,
        "refusals counted by the two daemons: {refusals}"
    );

    shared.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limit_counts_input_and_output() {
    let Some(redis_url) = service_url(REDIS_URL_ENV) else {
        return;
    };
    // The fake upstream reports 120 prompt and 80 completion tokens for every request.
    let upstream = FakeUpstream::start(FakeConfig {
        prompt_tokens: 120,
        completion_tokens: 80,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let usage = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = redis_key_prefix();
    let config = redis_limits(
        &redis_url,
        &prefix,
        "output_tokens_estimate = 300",
        r#"
[limits.org.requests]
per_minute = { limit = 100, window = "fixed", action = "block" }
[limits.org.tokens]
per_minute = { limit = 10000, window = "fixed", action = "block" }
"#,
    );
    let daemon = tokio::task::block_in_place(|| {
        start_daemons(1, &sqlite_url(dir.path()), &upstream, dir.path(), &config)
            .pop()
            .expect("a daemon")
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    let client = reqwest::Client::new();
    let url = daemon.url();
    let prompt = prompt_tokens();
    let estimate = prompt + 50;
    let body = chat_body(Some(50), false);

    ensure_minute_room(Duration::from_secs(15)).await;
    let first = chat(&client, &url, &tenant.secret, &body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header_number("x-ratelimit-limit-tokens"), 10_000);
    assert_eq!(
        first.header_number("x-ratelimit-remaining-tokens"),
        10_000 - estimate,
        "admission charges the prompt ({prompt} tokens) plus max_tokens"
    );
    assert_eq!(
        first.header("x-synaxis-ratelimit-scope-tokens"),
        "org/minute"
    );
    assert_eq!(first.header_number("x-ratelimit-remaining-requests"), 99);
    let tokens_key = org_minute_key(&prefix, &tenant.org_id, "tokens", first.arrived_ms);
    let requests_key = org_minute_key(&prefix, &tenant.org_id, "requests", first.arrived_ms);
    wait_for_count(&redis_url, &tokens_key, usage).await;

    let second = chat(&client, &url, &tenant.secret, &body).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        second.header_number("x-ratelimit-remaining-tokens"),
        10_000 - usage - estimate,
        "the first request counts its 120 input and 80 output tokens"
    );
    wait_for_count(&redis_url, &tokens_key, 2 * usage).await;

    let remaining = 10_000 - 2 * usage;
    let too_large = chat_body(Some(remaining - prompt + 1), false);
    let rejected = chat(&client, &url, &tenant.secret, &too_large).await;
    assert!(
        rejected.is_rejection("quota_exceeded"),
        "{:?} {:?}",
        rejected.status,
        rejected.code
    );
    assert_eq!(
        rejected.header_number("x-ratelimit-remaining-tokens"),
        remaining
    );
    assert_eq!(
        rejected.header("x-synaxis-ratelimit-scope-tokens"),
        "org/minute"
    );
    assert_eq!(
        redis_count(&redis_url, &tokens_key).await,
        2 * usage,
        "the rejected request charged no tokens"
    );
    assert_eq!(
        redis_count(&redis_url, &requests_key).await,
        2,
        "the rejected request charged no request"
    );

    let without_max_tokens = chat(&client, &url, &tenant.secret, &chat_body(None, false)).await;
    assert_eq!(without_max_tokens.status, StatusCode::OK);
    assert_eq!(
        without_max_tokens.header_number("x-ratelimit-remaining-tokens"),
        remaining - (prompt + 300),
        "without max_tokens the output estimate is output_tokens_estimate"
    );
    assert_eq!(
        without_max_tokens.header_number("x-ratelimit-remaining-requests"),
        97
    );
    wait_for_count(&redis_url, &tokens_key, 3 * usage).await;

    // A stream settles to the usage of its last chunk.
    let streamed = chat(&client, &url, &tenant.secret, &chat_body(Some(50), true)).await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert_eq!(
        streamed.header_number("x-ratelimit-remaining-tokens"),
        10_000 - 3 * usage - estimate
    );
    wait_for_count(&redis_url, &tokens_key, 4 * usage).await;

    tokio::task::block_in_place(|| daemon.stop());
}

/// Polls a Redis counter until it equals `expected`, as it does once a token estimate is
/// settled shortly after the response ends. Fails after 5 s.
async fn wait_for_count(redis_url: &str, key: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = redis_count(redis_url, key).await;
        if count == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} is {count} after 5 s, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that a rejection's `Retry-After` and `retry-after-ms` point at the end of the fixed
/// minute in which the response arrived, within one second.
fn assert_retry_at_minute_end(reply: &Reply) {
    let reset_ms = minute_start(reply.arrived_ms) + MINUTE_MS - reply.arrived_ms;
    let retry_after_ms = reply.header_number("retry-after-ms");
    let retry_after = reply.header_number("retry-after");
    assert!(
        retry_after_ms.abs_diff(reset_ms) <= 1_000,
        "retry-after-ms is {retry_after_ms}, the window resets in {reset_ms} ms"
    );
    assert!(
        (retry_after * 1_000).abs_diff(reset_ms) <= 1_000,
        "Retry-After is {retry_after} s, the window resets in {reset_ms} ms"
    );
    assert_eq!(
        retry_after,
        retry_after_ms.div_ceil(1_000),
        "Retry-After is retry-after-ms rounded up to whole seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_retry_after_matches_the_window_reset() {
    let Some(redis_url) = service_url(REDIS_URL_ENV) else {
        return;
    };
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = redis_key_prefix();
    // A long throttle wait shows that a block limit does not wait at all.
    let config = redis_limits(
        &redis_url,
        &prefix,
        "throttle_wait_ms = 5000",
        r#"
[limits.org.requests]
per_minute = { limit = 2, window = "fixed", action = "block" }
"#,
    );
    let daemon = tokio::task::block_in_place(|| {
        start_daemons(1, &sqlite_url(dir.path()), &upstream, dir.path(), &config)
            .pop()
            .expect("a daemon")
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    let client = reqwest::Client::new();
    let url = daemon.url();
    let body = chat_body(Some(16), false);

    ensure_minute_room(Duration::from_secs(10)).await;
    let first = chat(&client, &url, &tenant.secret, &body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header_number("x-ratelimit-limit-requests"), 2);
    assert_eq!(first.header_number("x-ratelimit-remaining-requests"), 1);
    assert_eq!(
        first.header("x-synaxis-ratelimit-scope-requests"),
        "org/minute"
    );
    let reset = parse_reset(first.header("x-ratelimit-reset-requests"));
    let reset_ms = minute_start(first.arrived_ms) + MINUTE_MS - first.arrived_ms;
    assert!(
        u64::try_from(reset.as_millis())
            .expect("milliseconds")
            .abs_diff(reset_ms)
            <= 1_000,
        "x-ratelimit-reset-requests is {reset:?}, the window resets in {reset_ms} ms"
    );
    let second = chat(&client, &url, &tenant.secret, &body).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header_number("x-ratelimit-remaining-requests"), 0);

    let rejected = chat(&client, &url, &tenant.secret, &body).await;
    assert!(
        rejected.is_rejection("quota_exceeded"),
        "{:?} {:?}",
        rejected.status,
        rejected.code
    );
    assert!(
        rejected.elapsed < Duration::from_millis(1_000),
        "a block limit rejected after {:?}, as if it waited",
        rejected.elapsed
    );
    assert_retry_at_minute_end(&rejected);
    assert_eq!(rejected.header_number("x-ratelimit-limit-requests"), 2);
    assert_eq!(rejected.header_number("x-ratelimit-remaining-requests"), 0);
    assert_eq!(
        rejected.header("x-synaxis-ratelimit-scope-requests"),
        "org/minute"
    );
    let reset = parse_reset(rejected.header("x-ratelimit-reset-requests"));
    let retry_after_ms = rejected.header_number("retry-after-ms");
    assert!(
        u64::try_from(reset.as_millis())
            .expect("milliseconds")
            .abs_diff(retry_after_ms)
            <= 1_000,
        "x-ratelimit-reset-requests is {reset:?}, retry-after-ms is {retry_after_ms}"
    );
    assert!(
        metric(&url, WAITS).await.abs() < f64::EPSILON,
        "no request waited"
    );

    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_waits_then_refuses_with_retry_after() {
    let Some(redis_url) = service_url(REDIS_URL_ENV) else {
        return;
    };
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    // The model `slow` responds after 800 ms, with the default usage of 11 + 7 tokens.
    let slow_upstream = FakeUpstream::start(FakeConfig {
        latency: Duration::from_millis(800),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = redis_key_prefix();
    let mut config = redis_limits(
        &redis_url,
        &prefix,
        "throttle_wait_ms = 1500",
        r#"
[limits.user.requests]
per_minute = { limit = 1, window = "fixed", action = "throttle" }
[limits.org.tokens]
per_minute = { limit = 2000, window = "fixed", action = "throttle" }
"#,
    );
    config.push_str(&format!(
        r#"
[upstreams.slow]
kind = "openai"
base_url = "{}"

[models.slow]
upstream = "slow"
input_per_million = "1"
output_per_million = "1"
"#,
        slow_upstream.base_url()
    ));
    let daemon = tokio::task::block_in_place(|| {
        start_daemons(1, &sqlite_url(dir.path()), &upstream, dir.path(), &config)
            .pop()
            .expect("a daemon")
    });
    let requests_tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "requests"));
    let tokens_tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "tokens"));
    let tokens_second_key = tokio::task::block_in_place(|| second_key(&daemon, &tokens_tenant));
    let settle_tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "settle"));
    let settle_second_key = tokio::task::block_in_place(|| second_key(&daemon, &settle_tenant));
    let client = reqwest::Client::new();
    let url = daemon.url();
    let body = chat_body(Some(16), false);

    // A request limit frees only when its window ends. The window ends long after the
    // throttle wait here, so the daemon rejects the request at once instead of waiting in vain.
    ensure_minute_room(Duration::from_secs(10)).await;
    let first = chat(&client, &url, &requests_tenant.secret, &body).await;
    assert_eq!(first.status, StatusCode::OK);
    let rejected = chat(&client, &url, &requests_tenant.secret, &body).await;
    assert!(
        rejected.is_rejection("rate_limit_exceeded"),
        "{:?} {:?}",
        rejected.status,
        rejected.code
    );
    assert!(
        rejected.elapsed < Duration::from_millis(1_000),
        "rejected after {:?}, although the window cannot free within the 1500 ms wait",
        rejected.elapsed
    );
    assert_retry_at_minute_end(&rejected);
    assert_eq!(
        rejected.header("x-synaxis-ratelimit-scope-requests"),
        "user/minute"
    );
    assert_eq!(rejected.header_number("x-ratelimit-limit-requests"), 1);
    assert_eq!(rejected.header_number("x-ratelimit-remaining-requests"), 0);
    assert!(
        metric(&url, WAITS).await.abs() < f64::EPSILON,
        "the rejected request did not wait"
    );

    // A token limit can free before its window ends, when an earlier request settles below
    // its estimate, so the daemon waits the whole throttle wait before it rejects. The second
    // request costs the whole limit, which the first request's usage leaves no room for.
    let first = chat(&client, &url, &tokens_tenant.secret, &body).await;
    assert_eq!(first.status, StatusCode::OK);
    let whole_limit = chat_body(Some(2_000 - prompt_tokens()), false);
    let rejected = chat(&client, &url, &tokens_second_key, &whole_limit).await;
    assert!(
        rejected.is_rejection("rate_limit_exceeded"),
        "{:?} {:?}",
        rejected.status,
        rejected.code
    );
    assert!(
        rejected.elapsed >= Duration::from_millis(1_500),
        "rejected after {:?}, before the 1500 ms throttle wait ended",
        rejected.elapsed
    );
    assert!(
        rejected.elapsed < Duration::from_millis(3_000),
        "rejected after {:?}, long after the 1500 ms throttle wait",
        rejected.elapsed
    );
    assert_retry_at_minute_end(&rejected);
    assert_eq!(
        rejected.header("x-synaxis-ratelimit-scope-tokens"),
        "org/minute"
    );
    assert_eq!(rejected.header_number("x-ratelimit-limit-tokens"), 2_000);
    let waits = metric(&url, WAITS).await;
    assert!(
        (waits - 1.0).abs() < f64::EPSILON,
        "one request waited, counted {waits}"
    );

    // A request that waits is admitted once an earlier one settles below its estimate within
    // the wait, because the slow request's estimate leaves no room until it settles to 18
    // tokens.
    let prompt = prompt_tokens();
    let mut slow_body = chat_body(Some(1_900), false);
    slow_body["model"] = json!("slow");
    let slow = tokio::spawn({
        let (client, url, key) = (client.clone(), url.clone(), settle_tenant.secret.clone());
        async move { chat(&client, &url, &key, &slow_body).await }
    });
    slow_upstream
        .wait_for_requests(1, Duration::from_secs(5))
        .await;
    let waiting = chat(
        &client,
        &url,
        &settle_second_key,
        &chat_body(Some(1_000), false),
    )
    .await;
    assert_eq!(waiting.status, StatusCode::OK, "{:?}", waiting.code);
    assert_eq!(
        waiting.header_number("x-ratelimit-remaining-tokens"),
        2_000 - 18 - (prompt + 1_000),
        "admitted after the slow request settled to its 18 tokens"
    );
    assert!(
        waiting.elapsed < Duration::from_millis(1_500),
        "admitted after {:?}, past the 1500 ms throttle wait",
        waiting.elapsed
    );
    let slow = slow.await.expect("slow request");
    assert_eq!(slow.status, StatusCode::OK, "{:?}", slow.code);
    let waits = metric(&url, WAITS).await;
    assert!(
        (waits - 2.0).abs() < f64::EPSILON,
        "two requests waited, counted {waits}"
    );

    let refusals = metric(
        &url,
        r#"synaxis_limit_refusals_total{reason="rate_limit_exceeded"}"#,
    )
    .await;
    assert!(
        (refusals - 2.0).abs() < f64::EPSILON,
        "two throttle refusals, counted {refusals}"
    );

    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_frees_its_concurrency_slot() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let Some(redis_url) = service_url(REDIS_URL_ENV) else {
        return;
    };
    let lease_ttl = Duration::from_secs(3);
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    // A stream sends its first event and then stays open for 30 s. Whole responses end at
    // once.
    let upstream = FakeUpstream::start(FakeConfig {
        cut_after_chunk: Some(1),
        pause_before_cut: Duration::from_secs(30),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = redis_key_prefix();
    let config = redis_limits(
        &redis_url,
        &prefix,
        "throttle_wait_ms = 200\nlease_ttl_secs = 3",
        "[limits.org]\nconcurrent_requests = 1\n",
    );
    let mut daemons = tokio::task::block_in_place(|| {
        start_daemons(2, &database.url, &upstream, dir.path(), &config)
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemons[0], "acme"));
    let holder = daemons.remove(0);
    let other = daemons.remove(0);
    let other_url = other.url();
    let client = reqwest::Client::new();
    let whole = chat_body(Some(16), false);
    let lease_key = format!("{prefix}lease:org:{}", tenant.org_id);

    let acquired = Instant::now();
    let mut stream = client
        .post(format!("{}/v1/chat/completions", holder.url()))
        .bearer_auth(&tenant.secret)
        .json(&chat_body(Some(16), true))
        .send()
        .await
        .expect("stream request");
    assert_eq!(stream.status(), StatusCode::OK);
    let first_chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("the first event within 5 s")
        .expect("stream open");
    assert!(first_chunk.is_some(), "the stream ended at once");
    assert_eq!(redis_lease_count(&redis_url, &lease_key).await, 1);

    // The holder renews its lease while the stream runs, so the slot stays taken for longer
    // than the lease's TTL.
    let mut rejections = 0;
    let hold_until = acquired + lease_ttl + Duration::from_millis(700);
    while Instant::now() < hold_until {
        let reply = chat(&client, &other_url, &tenant.secret, &whole).await;
        assert!(
            reply.is_rejection("concurrency_limit_exceeded"),
            "{:?} {:?} after {:?} of the holder's stream",
            reply.status,
            reply.code,
            acquired.elapsed()
        );
        assert!(
            reply.elapsed >= Duration::from_millis(200),
            "rejected after {:?}, before the 200 ms wait for the slot ended",
            reply.elapsed
        );
        assert!(reply.header_number("retry-after") >= 1);
        rejections += 1;
        assert!(rejections < 100, "more than 100 requests while holding");
    }

    tokio::task::block_in_place(|| holder.kill());
    let killed = Instant::now();
    drop(stream);

    // The lease was renewed at most a third of its TTL before the kill, and nothing released
    // it, so it outlives the holder by at least two thirds of its TTL.
    let reply = chat(&client, &other_url, &tenant.secret, &whole).await;
    assert!(
        reply.is_rejection("concurrency_limit_exceeded"),
        "{:?} {:?} {:?} after the kill, before the lease could expire",
        reply.status,
        reply.code,
        killed.elapsed()
    );
    let deadline = killed + lease_ttl + Duration::from_secs(1);
    let freed_after = loop {
        let reply = chat(&client, &other_url, &tenant.secret, &whole).await;
        if reply.status == StatusCode::OK {
            break killed.elapsed();
        }
        assert!(
            reply.is_rejection("concurrency_limit_exceeded"),
            "{:?} {:?}",
            reply.status,
            reply.code
        );
        assert!(
            Instant::now() < deadline,
            "the slot is still taken {:?} after the holder was killed",
            killed.elapsed()
        );
    };
    assert!(
        freed_after <= lease_ttl + Duration::from_secs(1),
        "the slot freed {freed_after:?} after the kill"
    );
    wait_for_no_leases(&redis_url, &lease_key).await;
    let concurrency_refusals = metric(
        &other_url,
        r#"synaxis_limit_refusals_total{reason="concurrency_limit_exceeded"}"#,
    )
    .await;
    assert!(
        concurrency_refusals >= f64::from(rejections + 1),
        "{concurrency_refusals} concurrency refusals counted, {} seen",
        rejections + 1
    );

    tokio::task::block_in_place(|| other.stop());
    database.drop_database().await.expect("drop database");
}

/// Polls a lease set until it is empty, as it is once every request that held a lease has
/// ended and released it. Fails after 2 s.
async fn wait_for_no_leases(redis_url: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let leases = redis_lease_count(redis_url, key).await;
        if leases == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} still contains {leases} leases 2 s after their requests ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_released_on_disconnect_and_errors() {
    let Some(redis_url) = service_url(REDIS_URL_ENV) else {
        return;
    };
    // A stream sends its first event and then stays open for 30 s.
    let upstream = FakeUpstream::start(FakeConfig {
        cut_after_chunk: Some(1),
        pause_before_cut: Duration::from_secs(30),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let failing_upstream = FakeUpstream::start(FakeConfig {
        fail_first: 100,
        fail_status: 500,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = redis_key_prefix();
    // Leases live 30 s, so a slot that frees within 2 s was released, not expired.
    let mut config = redis_limits(
        &redis_url,
        &prefix,
        "throttle_wait_ms = 300\nlease_ttl_secs = 30",
        r#"
[limits.org]
concurrent_requests = 1
[limits.org.tokens]
per_minute = { limit = 1000, window = "fixed", action = "block" }
"#,
    );
    config.push_str(&format!(
        r#"
[upstreams.failing]
kind = "openai"
base_url = "{}"

[models.failing]
upstream = "failing"
input_per_million = "1"
output_per_million = "1"

[routing]
max_attempts = 1
"#,
        failing_upstream.base_url()
    ));
    let daemon = tokio::task::block_in_place(|| {
        start_daemons(1, &sqlite_url(dir.path()), &upstream, dir.path(), &config)
            .pop()
            .expect("a daemon")
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    let client = reqwest::Client::new();
    let url = daemon.url();
    let lease_key = format!("{prefix}lease:org:{}", tenant.org_id);
    let whole = chat_body(Some(16), false);

    // A client that leaves mid-stream releases the slot at once.
    let mut stream = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&tenant.secret)
        .json(&chat_body(Some(16), true))
        .send()
        .await
        .expect("stream request");
    assert_eq!(stream.status(), StatusCode::OK);
    let first_chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("the first event within 5 s")
        .expect("stream open");
    assert!(first_chunk.is_some(), "the stream ended at once");
    assert_eq!(redis_lease_count(&redis_url, &lease_key).await, 1);
    let waiting = chat(&client, &url, &tenant.secret, &whole).await;
    assert!(
        waiting.is_rejection("concurrency_limit_exceeded"),
        "{:?} {:?} while the stream holds the slot",
        waiting.status,
        waiting.code
    );
    drop(stream);
    wait_for_no_leases(&redis_url, &lease_key).await;
    let after_disconnect = chat(&client, &url, &tenant.secret, &whole).await;
    assert_eq!(
        after_disconnect.status,
        StatusCode::OK,
        "{:?}",
        after_disconnect.code
    );

    // An upstream failure releases the slot and gives back the token estimate, because the
    // failed request used no tokens. This org's counters start empty.
    let failing_tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "failing"));
    let lease_key = format!("{prefix}lease:org:{}", failing_tenant.org_id);
    ensure_minute_room(Duration::from_secs(10)).await;
    let before = chat(&client, &url, &failing_tenant.secret, &whole).await;
    assert_eq!(before.status, StatusCode::OK);
    let tokens_key = org_minute_key(&prefix, &failing_tenant.org_id, "tokens", before.arrived_ms);
    wait_for_no_leases(&redis_url, &lease_key).await;
    // The daemon settles the token estimate shortly after the response, to 11 + 7 tokens.
    wait_for_count(&redis_url, &tokens_key, 18).await;
    let mut failing_body = chat_body(Some(16), false);
    failing_body["model"] = json!("failing");
    let failed = chat(&client, &url, &failing_tenant.secret, &failing_body).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{:?}", failed.code);
    wait_for_no_leases(&redis_url, &lease_key).await;
    wait_for_count(&redis_url, &tokens_key, 18).await;

    // A request rejected by a rate limit after it took the slot gives the slot back.
    let too_large = chat(
        &client,
        &url,
        &failing_tenant.secret,
        &chat_body(Some(2_000), false),
    )
    .await;
    assert!(
        too_large.is_rejection("quota_exceeded"),
        "{:?} {:?}",
        too_large.status,
        too_large.code
    );
    wait_for_no_leases(&redis_url, &lease_key).await;
    let after_rejection = chat(&client, &url, &failing_tenant.secret, &whole).await;
    assert_eq!(
        after_rejection.status,
        StatusCode::OK,
        "{:?}",
        after_rejection.code
    );
    assert!(
        metric(&url, WAITS).await >= 1.0,
        "the request that found the slot taken waited for it"
    );

    tokio::task::block_in_place(|| daemon.stop());
}

/// Responses of one sequential load loop, in the order sent.
#[derive(Debug, Default)]
struct LoadLog {
    replies: Vec<(StatusCode, Option<String>)>,
}

/// Sends requests one after another until `stop` is set, at most 2000 requests or 30 s,
/// counting finished ones in `sent`.
async fn load_loop(
    client: reqwest::Client,
    url: String,
    key: String,
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> LoadLog {
    let body = chat_body(Some(16), false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = LoadLog::default();
    while !stop.load(Ordering::SeqCst) && log.replies.len() < 2_000 && Instant::now() < deadline {
        let reply = chat(&client, &url, &key, &body).await;
        log.replies.push((reply.status, reply.code));
        sent.fetch_add(1, Ordering::SeqCst);
    }
    log
}

/// Polls until every counter in `sent` reaches its target. Fails after `timeout`.
async fn wait_for_sent(sent: &[Arc<AtomicUsize>], targets: &[usize], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let counts: Vec<usize> = sent
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .collect();
        if counts
            .iter()
            .zip(targets)
            .all(|(count, target)| count >= target)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the load sent {counts:?} requests in {timeout:?}, expected {targets:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_falls_back_and_returns() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let mut redis = RedisServer::start()
        .await
        .unwrap_or_else(|error| panic!("this test runs a Redis server of its own: {error}"));
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = redis_key_prefix();
    let limit = 40;
    let share = 20;
    let config = redis_limits(
        &redis.url(),
        &prefix,
        "processes = 2",
        r#"
[limits.org.requests]
per_minute = { limit = 40, window = "fixed", action = "block" }
"#,
    );
    let daemons = tokio::task::block_in_place(|| {
        start_daemons(2, &database.url, &upstream, dir.path(), &config)
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemons[0], "acme"));
    let urls: Vec<String> = daemons.iter().map(Daemon::url).collect();
    let client = reqwest::Client::new();

    ensure_minute_room(Duration::from_secs(20)).await;
    let sent: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = urls
        .iter()
        .zip(&sent)
        .map(|(url, sent)| {
            tokio::spawn(load_loop(
                client.clone(),
                url.clone(),
                tenant.secret.clone(),
                sent.clone(),
                stop.clone(),
            ))
        })
        .collect();

    wait_for_sent(&sent, &[5, 5], Duration::from_secs(10)).await;
    let counter_key = org_minute_key(&prefix, &tenant.org_id, "requests", unix_millis());
    assert!(
        redis_count(&redis.url(), &counter_key).await >= 5,
        "the load is counted on Redis before the outage"
    );
    for url in &urls {
        assert!(metric(url, ACTIVE).await.abs() < f64::EPSILON);
        assert!(metric(url, LOCAL_CALLS).await.abs() < f64::EPSILON);
    }
    redis.stop().await.expect("stop Redis");
    let sent_at_stop: Vec<usize> = sent
        .iter()
        .map(|count| count.load(Ordering::SeqCst))
        .collect();
    let targets: Vec<usize> = sent_at_stop.iter().map(|count| count + 30).collect();
    wait_for_sent(&sent, &targets, Duration::from_secs(15)).await;
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for load in loops {
        logs.push(load.await.expect("load loop"));
    }
    let load_ended_ms = unix_millis();
    assert_eq!(
        minute_start(load_ended_ms),
        minute_start(counter_key_time(&counter_key)),
        "the load ran into the next minute, so the local counts reset"
    );

    let mut admitted_on_redis = 0;
    let mut admitted = 0;
    for ((log, url), at_stop) in logs.iter().zip(&urls).zip(&sent_at_stop) {
        let unexpected: Vec<_> = log
            .replies
            .iter()
            .filter(|(status, code)| {
                *status != StatusCode::OK
                    && !(*status == StatusCode::TOO_MANY_REQUESTS
                        && code.as_deref() == Some("quota_exceeded"))
            })
            .collect();
        assert!(unexpected.is_empty(), "{url}: unexpected {unexpected:?}");
        assert_eq!(metric(url, ACTIVE).await, 1.0, "{url} enforces locally");
        assert_eq!(metric(url, SWITCHES).await, 1.0, "{url} switched once");

        // Each loop sends one request at a time, so the local limiter decided the last requests
        // of each loop. Those are the ones sent after the stop, and perhaps the one in flight
        // during it.
        let local_calls = metric(url, LOCAL_CALLS).await as usize;
        let total = log.replies.len();
        assert!(
            local_calls >= total - at_stop - 1 && local_calls <= total - at_stop + 1,
            "{url}: {local_calls} local calls, {} requests after the stop",
            total - at_stop
        );
        let (on_redis, local) = log.replies.split_at(total - local_calls);
        let statuses: Vec<StatusCode> = local.iter().map(|(status, _)| *status).collect();
        let expected: Vec<StatusCode> = (0..local_calls)
            .map(|index| {
                if index < share {
                    StatusCode::OK
                } else {
                    StatusCode::TOO_MANY_REQUESTS
                }
            })
            .collect();
        assert_eq!(
            statuses, expected,
            "{url}: the local counts start empty and admit the share of {share}"
        );
        admitted_on_redis += on_redis
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .count();
        admitted += log
            .replies
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .count();
    }
    assert!(
        admitted_on_redis <= limit,
        "Redis admitted {admitted_on_redis} of a limit of {limit}"
    );
    assert!(
        admitted <= limit + 2 * share,
        "admitted {admitted} in the minute, above the limit plus both local shares"
    );

    redis.restart().await.expect("restart Redis");
    let deadline = Instant::now() + Duration::from_secs(10);
    for url in &urls {
        loop {
            if metric(url, ACTIVE).await.abs() < f64::EPSILON {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url} still enforces locally 10 s after Redis returned"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut local_calls = Vec::new();
    for url in &urls {
        local_calls.push(metric(url, LOCAL_CALLS).await);
    }
    for url in &urls {
        let reply = chat(&client, url, &tenant.secret, &chat_body(Some(16), false)).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {:?}", reply.code);
        assert_eq!(reply.header_number("x-ratelimit-limit-requests"), 40);
    }
    let counter_key = org_minute_key(&prefix, &tenant.org_id, "requests", unix_millis());
    assert_eq!(
        redis_count(&redis.url(), &counter_key).await,
        2,
        "the restarted Redis, empty at start, counts both requests"
    );
    for (url, before) in urls.iter().zip(local_calls) {
        assert_eq!(metric(url, LOCAL_CALLS).await, before, "{url} used Redis");
        assert_eq!(metric(url, SWITCHES).await, 1.0);
    }

    for daemon in daemons {
        tokio::task::block_in_place(|| daemon.stop());
    }
    redis.stop().await.expect("stop Redis");
    database.drop_database().await.expect("drop database");
}

/// Returns the window start in milliseconds at the end of a fixed counter's key.
fn counter_key_time(key: &str) -> u64 {
    key.rsplit(':')
        .next()
        .and_then(|start| start.parse().ok())
        .expect("a window start at the end of the key")
}

/// Two daemons share a sliding limit of 30 requests per minute for 75 seconds of real time,
/// past several bucket and minute boundaries, under a steady load of 4 requests per second.
/// Requests go one at a time, alternating between the daemons, so that each admitted request's
/// charge lies between its send time and its response time. No window of one minute may then
/// contain more than 30 admissions, and some window must reach the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_keep_a_sliding_limit_across_windows() {
    const LIMIT: usize = 30;
    const RUN: Duration = Duration::from_secs(75);
    let Some(shared) = SharedDaemons::start(
        r#"
[limits.org.requests]
per_minute = { limit = 30, window = "sliding", action = "block" }
"#,
    )
    .await
    else {
        return;
    };

    let client = reqwest::Client::new();
    let body = chat_body(Some(16), false);
    let urls = shared.urls();
    // The interval paces the load; the test waits for no state of the daemons.
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    let started = Instant::now();
    // (sent, arrived) in ms since the Unix epoch, of every admitted request.
    let mut admitted: Vec<(u64, u64)> = Vec::new();
    let mut sent_count = 0_usize;
    while started.elapsed() < RUN && sent_count < 400 {
        pace.tick().await;
        let sent_ms = unix_millis();
        let reply = chat(&client, &urls[sent_count % 2], &shared.tenant.secret, &body).await;
        sent_count += 1;
        match reply.status {
            StatusCode::OK => admitted.push((sent_ms, reply.arrived_ms)),
            _ => assert!(
                reply.is_rejection("quota_exceeded"),
                "unexpected {} {:?}",
                reply.status,
                reply.code
            ),
        }
    }

    assert!(
        admitted.len() > LIMIT,
        "admitted {} in 75 s",
        admitted.len()
    );
    let mut fullest = 0;
    for (first_sent, first_arrived) in &admitted {
        // Every request counted here was charged within a minute of the first one's charge.
        let in_window = admitted
            .iter()
            .filter(|(sent, arrived)| *sent >= *first_arrived && *arrived < first_sent + MINUTE_MS)
            .count()
            + 1;
        assert!(
            in_window <= LIMIT,
            "{in_window} admissions within one minute from {first_sent} ms"
        );
        fullest = fullest.max(in_window);
    }
    assert!(
        fullest >= LIMIT - 1,
        "the busiest minute admitted only {fullest} of {LIMIT}"
    );

    shared.stop().await;
}
