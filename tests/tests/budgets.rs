//! End-to-end tests of budgets on two `synaxisd` processes that share one PostgreSQL database.
//! Each budget leaves room for exactly one request at a fixed `max_tokens`. Of 20 concurrent
//! requests spread across both processes, exactly one is admitted and the others get 402
//! `budget_exceeded`. The test runs this for a key, a team and an org budget. The fake upstream
//! fails every third call, so that failed requests must release their holds too. Afterwards each
//! budget's spend equals the cost of its request records, and no hold is left.

// Test helpers fail the test by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxis_tests::services::{DATABASE_URL_ENV, TestDatabase, service_url};
use synaxisd::billing::tokens;

use common::{Daemon, DaemonOptions, create_tenant, ctl_json};

const MODEL: &str = "metered";
const MAX_TOKENS: u64 = 16;
/// Prices in USD per million tokens: $0.001 per input token and $0.002 per output token.
const INPUT_PER_MILLION: u64 = 1_000;
const OUTPUT_PER_MILLION: u64 = 2_000;
const REQUESTS: usize = 20;
const ROUNDS: usize = 3;

fn chat_body() -> Value {
    json!({
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "Count to three."}],
    })
}

/// Counts the input tokens of [`chat_body`] with the tokenizer that the gateway uses.
fn prompt_tokens() -> u64 {
    let body = chat_body();
    u64::try_from(tokens::count_messages(body.get("messages"))).expect("token count fits in u64")
}

/// Computes the worst-case cost that admission reserves for [`chat_body`].
fn worst_case() -> Decimal {
    let micros = prompt_tokens() * INPUT_PER_MILLION + MAX_TOKENS * OUTPUT_PER_MILLION;
    Decimal::new(
        i64::try_from(micros).expect("worst-case micros fit in i64"),
        6,
    )
}

fn usd(value: &Value) -> Decimal {
    Decimal::from_str(value.as_str().expect("an amount as a string")).expect("a decimal amount")
}

/// One budget under test: the CLI flag and id that name it, and the key that spends it.
struct Owner {
    flag: &'static str,
    id: String,
    secret: String,
    key_id: String,
}

/// Sets `owner`'s budget to `spent` plus one worst-case request and returns the budget.
fn leave_room_for_one(daemon: &Daemon, owner: &Owner, spent: Decimal) -> Value {
    let max = (spent + worst_case()).to_string();
    ctl_json(
        daemon,
        &[
            "--justification",
            "budget test",
            "budget",
            "set",
            owner.flag,
            &owner.id,
            "--max-usd",
            &max,
        ],
    )
}

/// Sends one chat request and returns its status and `error.code`.
async fn chat(client: &reqwest::Client, url: &str, secret: &str) -> (StatusCode, Option<String>) {
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&chat_body())
        .send()
        .await
        .expect("chat request");
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    let code = body
        .pointer("/error/code")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (status, code)
}

/// Returns the number of a key's request records in the database and the sum of their costs.
async fn record_totals(database: &mut PgConnection, key_id: &str) -> (i64, Decimal) {
    let key_id = uuid::Uuid::parse_str(key_id).expect("key id");
    let (count, cost): (i64, Option<Decimal>) =
        sqlx::query_as("SELECT COUNT(*), SUM(cost_usd) FROM requests WHERE key_id = $1")
            .bind(key_id)
            .fetch_one(&mut *database)
            .await
            .expect("count records");
    (count, cost.unwrap_or_default())
}

/// Counts the budget holds left in the database, of every key.
async fn count_holds(database: &mut PgConnection) -> i64 {
    let (holds,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM budget_holds")
        .fetch_one(&mut *database)
        .await
        .expect("count holds");
    holds
}

/// Waits until the key has `expected` records and no hold is left, because the record writer
/// stores records in batches after the responses. Fails the test after 20 s.
async fn wait_for_settlement(database: &mut PgConnection, key_id: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (count, _) = record_totals(database, key_id).await;
        let holds = count_holds(database).await;
        if count == expected && holds == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after 20 s the key has {count} of {expected} records and {holds} open holds"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates one budget owner per scope, each in an org of its own: a key, a team with one
/// member's key, and an org with its key. No budget is set yet.
fn owners(daemon: &Daemon) -> Vec<Owner> {
    let key_tenant = create_tenant(daemon, "key-budget");
    let key_owner = Owner {
        flag: "--key",
        id: key_tenant.key_id.clone(),
        secret: key_tenant.secret,
        key_id: key_tenant.key_id,
    };

    let team_tenant = create_tenant(daemon, "team-budget");
    let team = ctl_json(
        daemon,
        &[
            "team",
            "create",
            "--org",
            &team_tenant.org_id,
            "--name",
            "core",
        ],
    );
    let team_id = team["id"].as_str().expect("team id").to_owned();
    let user = ctl_json(
        daemon,
        &[
            "user",
            "create",
            "--org",
            &team_tenant.org_id,
            "--email",
            "member@team-budget.test",
            "--team",
            &team_id,
        ],
    );
    let user_id = user["id"].as_str().expect("user id");
    let member_key = ctl_json(daemon, &["key", "create", "--user", user_id, "--name", "t"]);
    let team_owner = Owner {
        flag: "--team",
        id: team_id,
        secret: member_key["secret"].as_str().expect("secret").to_owned(),
        key_id: member_key["key"]["id"].as_str().expect("key id").to_owned(),
    };

    let org_tenant = create_tenant(daemon, "org-budget");
    let org_owner = Owner {
        flag: "--org",
        id: org_tenant.org_id,
        secret: org_tenant.secret,
        key_id: org_tenant.key_id,
    };
    vec![key_owner, team_owner, org_owner]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_never_overspend_budget() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    let upstream = FakeUpstream::start(FakeConfig {
        prompt_tokens: prompt_tokens(),
        completion_tokens: 7,
        fail_every: Some(3),
        // The admitted request keeps its hold while the other 19 are decided, failures
        // included, since a failed request releases its hold at once.
        latency: Duration::from_millis(500),
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    // One attempt per request, so that a failed upstream call fails its request.
    let config = format!(
        r#"
[routing]
max_attempts = 1

[models.{MODEL}]
upstream = "fake"
input_per_million = "{INPUT_PER_MILLION}"
output_per_million = "{OUTPUT_PER_MILLION}"
"#
    );
    let daemons: Vec<Daemon> = tokio::task::block_in_place(|| {
        (0..2)
            .map(|index| {
                Daemon::start(&DaemonOptions {
                    database_url: database.url.clone(),
                    upstream_base_url: upstream.base_url(),
                    data_dir: dir.path().join(format!("daemon-{index}")),
                    extra_config: config.clone(),
                    ..DaemonOptions::default()
                })
            })
            .collect()
    });
    let urls: Vec<String> = daemons.iter().map(Daemon::url).collect();
    let mut connection = PgConnection::connect(&database.url)
        .await
        .expect("connect to the test database");
    let client = reqwest::Client::new();
    let owners = tokio::task::block_in_place(|| owners(&daemons[0]));

    let mut upstream_failures = 0;
    for owner in &owners {
        let mut spent = Decimal::ZERO;
        for round in 1..=ROUNDS {
            let budget =
                tokio::task::block_in_place(|| leave_room_for_one(&daemons[0], owner, spent));
            assert_eq!(usd(&budget["remaining_usd"]), worst_case());

            let requests =
                (0..REQUESTS).map(|index| chat(&client, &urls[index % 2], &owner.secret));
            let replies = join_all(requests).await;
            // The admitted request settled its hold before its response ended, so a client
            // that sends its next request at once finds the budget free again.
            let budget = tokio::task::block_in_place(|| {
                ctl_json(&daemons[1], &["budget", "show", owner.flag, &owner.id])
            });
            assert_eq!(
                usd(&budget["reserved_usd"]),
                Decimal::ZERO,
                "{} round {round}: a hold outlived its response",
                owner.flag
            );

            let rejected = replies
                .iter()
                .filter(|(status, code)| {
                    *status == StatusCode::PAYMENT_REQUIRED
                        && code.as_deref() == Some("budget_exceeded")
                })
                .count();
            let admitted: Vec<_> = replies
                .iter()
                .filter(|(status, _)| *status != StatusCode::PAYMENT_REQUIRED)
                .collect();
            assert_eq!(
                rejected,
                REQUESTS - 1,
                "{} round {round}: {replies:?}",
                owner.flag
            );
            assert_eq!(admitted.len(), 1, "{} round {round}", owner.flag);
            match admitted[0] {
                (StatusCode::OK, None) => {}
                (StatusCode::BAD_GATEWAY, Some(code)) if code == "upstream_error" => {
                    upstream_failures += 1;
                }
                other => panic!("unexpected response to the admitted request: {other:?}"),
            }

            let expected = i64::try_from(round * REQUESTS).expect("count");
            wait_for_settlement(&mut connection, &owner.key_id, expected).await;
            let (_, cost) = record_totals(&mut connection, &owner.key_id).await;
            let budget = tokio::task::block_in_place(|| {
                ctl_json(&daemons[1], &["budget", "show", owner.flag, &owner.id])
            });
            assert_eq!(
                usd(&budget["spent_usd"]),
                cost,
                "{} round {round}: the spend is the cost of the records",
                owner.flag
            );
            assert_eq!(
                usd(&budget["reserved_usd"]),
                Decimal::ZERO,
                "{} round {round}: no reservation is left",
                owner.flag
            );
            spent = cost;
        }
    }
    // Three owners with three rounds each make nine upstream calls, and the fake upstream fails
    // the 3rd, 6th and 9th.
    assert_eq!(
        upstream_failures, 3,
        "expected 3 admitted requests to fail upstream"
    );

    drop(connection);
    for daemon in daemons {
        tokio::task::block_in_place(|| daemon.stop());
    }
    database.drop_database().await.expect("drop database");
}
