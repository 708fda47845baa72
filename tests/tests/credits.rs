//! End-to-end test of the `credit_charge` action of the plan's monthly token quota: past the
//! quota, requests go on and each one's overage is charged to the org's credit ledger at the
//! plan's price, exactly; once a charge would take the balance under the minimum, requests get
//! 402 `insufficient_credits`.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxisd::billing::tokens;

use common::{Daemon, DaemonOptions, ctl_json};

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
    let daemon = tokio::task::block_in_place(|| {
        Daemon::start(&DaemonOptions {
            database_url: format!("sqlite://{}/synaxis.db", dir.path().display()),
            upstream_base_url: upstream.base_url(),
            data_dir: dir.path().to_owned(),
            ..DaemonOptions::default()
        })
    });

    // A quota of two and a half requests, and credit for two and a half requests of overage
    // above the minimum balance.
    let quota = 2 * per_request + per_request / 2;
    let rate = usd(OVERAGE_PER_TOKEN);
    let top_up = usd(MINIMUM_BALANCE) + Decimal::from(quota) * rate;
    let (org, secret) = tokio::task::block_in_place(|| {
        let org = ctl_json(
            &daemon,
            &[
                "org", "create", "--name", "Metered", "--slug", "metered", "--plan", "pro",
            ],
        );
        let org_id = org["id"].as_str().expect("org id").to_owned();
        ctl_json(
            &daemon,
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
            &daemon,
            &[
                "--justification",
                "overage test",
                "credits",
                "topup",
                &org_id,
                "--amount",
                &top_up.to_string(),
            ],
        );
        let user = ctl_json(
            &daemon,
            &[
                "user",
                "create",
                "--org",
                &org_id,
                "--email",
                "ops@metered.test",
            ],
        );
        let key = ctl_json(
            &daemon,
            &[
                "key",
                "create",
                "--user",
                user["id"].as_str().expect("user id"),
            ],
        );
        (org_id, key["secret"].as_str().expect("secret").to_owned())
    });

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
        message.contains("saldo mínimo de US$ 5.00"),
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
