//! End-to-end tests of the `credit_charge` action of the plan's monthly token quota. Past the
//! quota, requests go on, and each one's overage is charged to the org's credit ledger at the
//! plan's price, exactly. Once a charge would take the balance under the minimum, requests get
//! 402 `insufficient_credits`. An Enterprise org with auto top-up gets credit added, through a
//! pending invoice line, once overage takes its balance under its threshold. A Pro org cannot
//! turn auto top-up on.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxisd::billing::tokens;

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN, binary, ctl_json};

/// The overage price of the Pro plan, USD per token.
const OVERAGE_PER_TOKEN: &str = "0.0001";
/// The minimum balance of the Pro plan, USD.
const MINIMUM_BALANCE: &str = "5.00";

fn usd(text: &str) -> Decimal {
    Decimal::from_str(text).expect("decimal")
}

fn chat_body(max_tokens: u64) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Count to three."}],
    })
}

/// Input tokens that the gateway counts for [`chat_body`], with the same tokenizer.
fn prompt_tokens() -> u64 {
    let body = chat_body(0);
    u64::try_from(tokens::count_messages(body.get("messages"))).expect("a positive count")
}

/// Sends one chat request and returns its status and `error.code`.
async fn chat(client: &reqwest::Client, daemon: &Daemon, secret: &str, body: &Value) -> Value {
    let response = client
        .post(format!("{}/v1/chat/completions", daemon.url()))
        .bearer_auth(secret)
        .header("accept-language", "pt-BR")
        .json(body)
        .send()
        .await
        .expect("chat request");
    let status = response.status().as_u16();
    let mut reply: Value = response.json().await.expect("a JSON body");
    reply["status"] = json!(status);
    reply
}

/// Waits until the org's ledger has `count` entries, since overage is written with the
/// request's record after the response; fails after 10 s.
fn wait_for_entries(daemon: &Daemon, org: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = ctl_json(daemon, &["credits", "history", org]);
        let entries = history["data"].as_array().expect("ledger entries").clone();
        if entries.len() >= count {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "after 10 s the ledger has {} of {count} entries: {history}",
            entries.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a daemon on an embedded database with the fake upstream.
fn start(upstream: &FakeUpstream, dir: &std::path::Path) -> Daemon {
    Daemon::start(&DaemonOptions {
        database_url: format!("sqlite://{}/synaxis.db", dir.display()),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.to_owned(),
        ..DaemonOptions::default()
    })
}

/// Creates an org on `plan` with a monthly token quota of `quota` and `credit` USD of
/// credit, and returns its id and a key's secret.
fn metered_org(
    daemon: &Daemon,
    slug: &str,
    plan: &str,
    quota: u64,
    credit: Decimal,
) -> (String, String) {
    let org = ctl_json(
        daemon,
        &[
            "org", "create", "--name", "Metered", "--slug", slug, "--plan", plan,
        ],
    );
    let org_id = org["id"].as_str().expect("org id").to_owned();
    ctl_json(
        daemon,
        &[
            "--justification",
            "overage test",
            "org",
            "override",
            &org_id,
            "--set",
            &format!("tokens_per_month={quota}"),
        ],
    );
    ctl_json(
        daemon,
        &[
            "--justification",
            "overage test",
            "credits",
            "topup",
            &org_id,
            "--amount",
            &credit.to_string(),
        ],
    );
    let email = format!("ops@{slug}.test");
    let user = ctl_json(
        daemon,
        &["user", "create", "--org", &org_id, "--email", &email],
    );
    let key = ctl_json(
        daemon,
        &[
            "key",
            "create",
            "--user",
            user["id"].as_str().expect("user id"),
        ],
    );
    (org_id, key["secret"].as_str().expect("secret").to_owned())
}

/// Reads the kinds and amounts of an org's ledger entries.
fn ledger(entries: &[Value]) -> Vec<(String, Decimal)> {
    entries
        .iter()
        .map(|entry| {
            (
                entry["kind"].as_str().expect("kind").to_owned(),
                usd(entry["amount_usd"].as_str().expect("amount")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_is_charged_until_the_minimum_balance() {
    // Each request uses exactly its estimate (input plus `max_tokens`), so that the quota's
    // counter needs no settling, and an even number of tokens, so that half a request is whole.
    let completion = if prompt_tokens().is_multiple_of(2) {
        8
    } else {
        7
    };
    let per_request = prompt_tokens() + completion;
    let upstream = FakeUpstream::start(FakeConfig {
        prompt_tokens: prompt_tokens(),
        completion_tokens: completion,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = tokio::task::block_in_place(|| start(&upstream, dir.path()));

    // A quota of two and a half requests, and credit for two and a half requests of overage
    // above the minimum balance.
    let quota = 2 * per_request + per_request / 2;
    let rate = usd(OVERAGE_PER_TOKEN);
    let top_up = usd(MINIMUM_BALANCE) + Decimal::from(quota) * rate;
    let (org, secret) =
        tokio::task::block_in_place(|| metered_org(&daemon, "metered", "pro", quota, top_up));

    let client = reqwest::Client::new();
    let body = chat_body(completion);
    // Within the quota: no charge.
    for _ in 0..2 {
        let reply = chat(&client, &daemon, &secret, &body).await;
        assert_eq!(reply["status"], 200, "{reply}");
    }
    // Past it: half of the third request, then all of the fourth and fifth.
    let mut expected = vec![usd("0")];
    for overage in [per_request / 2, per_request, per_request] {
        let reply = chat(&client, &daemon, &secret, &body).await;
        assert_eq!(reply["status"], 200, "{reply}");
        expected.push(-(Decimal::from(overage) * rate));
        tokio::task::block_in_place(|| wait_for_entries(&daemon, &org, expected.len()));
    }

    let entries = tokio::task::block_in_place(|| wait_for_entries(&daemon, &org, expected.len()));
    let kinds: Vec<&str> = entries
        .iter()
        .map(|entry| entry["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["topup", "overage", "overage", "overage"]);
    let amounts: Vec<Decimal> = entries[1..]
        .iter()
        .map(|entry| usd(entry["amount_usd"].as_str().expect("amount")))
        .collect();
    assert_eq!(amounts, expected[1..], "each overage charge is exact");
    let balance = tokio::task::block_in_place(|| ctl_json(&daemon, &["credits", "show", &org]));
    assert_eq!(
        usd(balance["balance_usd"].as_str().expect("balance")),
        usd(MINIMUM_BALANCE),
        "the balance reached the minimum"
    );

    // The next overage would take the balance under the minimum.
    let reply = chat(&client, &daemon, &secret, &body).await;
    assert_eq!(reply["status"], 402, "{reply}");
    assert_eq!(reply["error"]["code"], "insufficient_credits");
    let message = reply["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("saldo mínimo de US$ 5,00"),
        "the message names the minimum balance: {message}"
    );
    let entries = tokio::task::block_in_place(|| ctl_json(&daemon, &["credits", "history", &org]));
    assert_eq!(
        entries["data"].as_array().map(Vec::len),
        Some(4),
        "a refused request is not charged"
    );

    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_topup_adds_credit_under_the_threshold() {
    let completion = 8;
    let per_request = prompt_tokens() + completion;
    let upstream = FakeUpstream::start(FakeConfig {
        prompt_tokens: prompt_tokens(),
        completion_tokens: completion,
        ..FakeConfig::default()
    })
    .await
    .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = tokio::task::block_in_place(|| start(&upstream, dir.path()));
    let rate = usd(OVERAGE_PER_TOKEN);
    let (org, secret) = tokio::task::block_in_place(|| {
        metered_org(&daemon, "auto", "enterprise", per_request, usd("5.10"))
    });

    // A Pro org may not turn auto top-up on: exit status 5 names the plan that has it.
    let (pro, _) =
        tokio::task::block_in_place(|| metered_org(&daemon, "pro", "pro", per_request, usd("6")));
    let refused = std::process::Command::new(binary("synaxisctl"))
        .args(["--endpoint", &daemon.url(), "--token", OPERATOR_TOKEN])
        .args([
            "credits",
            "auto-topup",
            &pro,
            "--threshold",
            "5.10",
            "--amount",
            "10",
        ])
        .env("SYNAXIS_LANG", "en")
        .output()
        .expect("run synaxisctl");
    assert_eq!(refused.status.code(), Some(5));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("Enterprise"), "{message}");

    let settings = tokio::task::block_in_place(|| {
        ctl_json(
            &daemon,
            &[
                "credits",
                "auto-topup",
                &org,
                "--threshold",
                "5.10",
                "--amount",
                "10.00",
            ],
        )
    });
    assert_eq!(settings["auto_topup"]["threshold_usd"], "5.10");

    let client = reqwest::Client::new();
    let body = chat_body(completion);
    // The first request is within the quota; the second's overage takes the balance under
    // 5.10, and the auto top-up adds 10.00.
    for _ in 0..2 {
        let reply = chat(&client, &daemon, &secret, &body).await;
        assert_eq!(reply["status"], 200, "{reply}");
    }
    let entries = tokio::task::block_in_place(|| wait_for_entries(&daemon, &org, 3));
    let overage = Decimal::from(per_request) * rate;
    assert_eq!(
        ledger(&entries),
        [
            ("topup".to_owned(), usd("5.10")),
            ("overage".to_owned(), -overage),
            ("auto_topup".to_owned(), usd("10.00")),
        ]
    );
    let reference = entries[2]["reference"].as_str().expect("reference");
    assert!(reference.starts_with("invoice line "), "{reference}");

    // Above the threshold again, the next overage adds no top-up.
    let reply = chat(&client, &daemon, &secret, &body).await;
    assert_eq!(reply["status"], 200, "{reply}");
    let entries = tokio::task::block_in_place(|| wait_for_entries(&daemon, &org, 4));
    assert_eq!(entries.len(), 4, "{entries:?}");
    let balance = tokio::task::block_in_place(|| ctl_json(&daemon, &["credits", "show", &org]));
    assert_eq!(
        usd(balance["balance_usd"].as_str().expect("balance")),
        usd("15.10") - overage - overage
    );

    // An org at the minimum balance is topped up when a request needs the credit, instead of
    // being refused.
    let (edge, edge_secret) = tokio::task::block_in_place(|| {
        let created = metered_org(&daemon, "edge", "enterprise", per_request, usd("5.00"));
        ctl_json(
            &daemon,
            &[
                "credits",
                "auto-topup",
                "edge",
                "--threshold",
                "5.00",
                "--amount",
                "10",
            ],
        );
        created
    });
    for _ in 0..2 {
        let reply = chat(&client, &daemon, &edge_secret, &body).await;
        assert_eq!(reply["status"], 200, "{reply}");
    }
    let entries = tokio::task::block_in_place(|| wait_for_entries(&daemon, &edge, 3));
    assert_eq!(
        ledger(&entries),
        [
            ("topup".to_owned(), usd("5.00")),
            ("auto_topup".to_owned(), usd("10")),
            ("overage".to_owned(), -overage),
        ]
    );

    // A threshold under the minimum balance would come only after refusals.
    let low = tokio::task::block_in_place(|| {
        std::process::Command::new(binary("synaxisctl"))
            .args(["--endpoint", &daemon.url(), "--token", OPERATOR_TOKEN])
            .args([
                "credits",
                "auto-topup",
                "edge",
                "--threshold",
                "2",
                "--amount",
                "10",
            ])
            .env("SYNAXIS_LANG", "en")
            .output()
            .expect("run synaxisctl")
    });
    assert_eq!(low.status.code(), Some(1));
    let message = String::from_utf8_lossy(&low.stderr);
    assert!(message.contains("minimum balance"), "{message}");

    tokio::task::block_in_place(|| daemon.stop());
}
