//! End-to-end test of exchange rates and invoices through `synaxisctl`. A Pro org billed in EUR
//! gets an invoice that charges its plan fee and the credit it bought. Each line is converted at
//! the rate in force and rounded once, and the overage that credits paid is listed, not charged
//! again. A Free org cannot bill in EUR, and a month is invoiced once.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::json;
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN, binary, ctl_json};

fn usd(text: &str) -> Decimal {
    Decimal::from_str(text).expect("decimal")
}

/// Runs `synaxisctl ARGS` in English and returns its output, whatever its status.
fn ctl(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(binary("synaxisctl"))
        .args(["--endpoint", &daemon.url(), "--token", OPERATOR_TOKEN])
        .args(args)
        .env("SYNAXIS_LANG", "en")
        .output()
        .expect("run synaxisctl")
}

fn justified<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--justification", "invoice test"];
    all.extend_from_slice(args);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_charges_fee_and_credit_once() {
    let upstream = FakeUpstream::start(FakeConfig {
        prompt_tokens: 30,
        completion_tokens: 20,
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
    let rates = dir.path().join("rates.csv");
    std::fs::write(
        &rates,
        "currency,rate,effective_at\nBRL,5.31,\nGBP,0.79,2026-01-01T00:00:00Z\n",
    )
    .expect("write rates");

    let secret = tokio::task::block_in_place(|| {
        ctl_json(&daemon, &justified(&["fx", "set", "EUR", "0.92"]));
        let imported = ctl_json(
            &daemon,
            &justified(&["fx", "import", rates.to_str().expect("path")]),
        );
        assert_eq!(imported["data"].as_array().map(Vec::len), Some(2));

        // A Free org bills in USD only: exit status 5 names the plan that lifts it.
        ctl_json(
            &daemon,
            &["org", "create", "--name", "Free", "--slug", "free"],
        );
        let refused = ctl(
            &daemon,
            &["org", "update", "free", "--billing-currency", "EUR"],
        );
        assert_eq!(refused.status.code(), Some(5));
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains("Pro"), "{message}");

        let org = ctl_json(
            &daemon,
            &[
                "org", "create", "--name", "Euro", "--slug", "euro", "--plan", "pro",
            ],
        );
        let org_id = org["id"].as_str().expect("org id").to_owned();
        let updated = ctl_json(
            &daemon,
            &["org", "update", "euro", "--billing-currency", "EUR"],
        );
        assert_eq!(updated["billing_currency"], "EUR");
        ctl_json(
            &daemon,
            &justified(&["org", "override", "euro", "--set", "tokens_per_month=50"]),
        );
        ctl_json(
            &daemon,
            &justified(&["credits", "topup", "euro", "--amount", "25.00"]),
        );
        let user = ctl_json(
            &daemon,
            &[
                "user",
                "create",
                "--org",
                &org_id,
                "--email",
                "ana@euro.test",
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
        key["secret"].as_str().expect("secret").to_owned()
    });

    // The first request fits the quota of 50 tokens; the second is 50 tokens of overage.
    let client = reqwest::Client::new();
    let body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "Count to three."}],
    });
    for _ in 0..2 {
        let status = client
            .post(format!("{}/v1/chat/completions", daemon.url()))
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await
            .expect("chat request")
            .status();
        assert_eq!(status, 200);
    }
    let overage = tokio::task::block_in_place(|| wait_for_overage(&daemon));

    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let invoice = tokio::task::block_in_place(|| {
        ctl_json(&daemon, &["invoice", "issue", "euro", "--period", &period])
    });
    assert_eq!(invoice["currency"], "EUR");
    assert_eq!(usd(invoice["fx_rate"].as_str().expect("rate")), usd("0.92"));
    let lines: Vec<(String, Decimal, bool)> = invoice["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| {
            (
                line["kind"].as_str().expect("kind").to_owned(),
                usd(line["amount"].as_str().expect("amount")),
                line["charged"].as_bool().expect("charged"),
            )
        })
        .collect();
    // 49 USD * 0.92 = 45.08 EUR; 25 USD * 0.92 = 23.00 EUR; the overage paid from credits is
    // listed, not charged.
    let overage_eur = (overage * usd("0.92"))
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven);
    assert_eq!(
        lines,
        [
            ("plan_fee".to_owned(), usd("45.08"), true),
            ("credit_topups".to_owned(), usd("23.00"), true),
            ("overage".to_owned(), overage_eur, false),
        ]
    );
    assert_eq!(usd(invoice["total"].as_str().expect("total")), usd("68.08"));

    // A month is invoiced once.
    let again = tokio::task::block_in_place(|| {
        ctl(&daemon, &["invoice", "issue", "euro", "--period", &period])
    });
    assert_eq!(again.status.code(), Some(5));
    let listed = tokio::task::block_in_place(|| ctl_json(&daemon, &["invoice", "list", "euro"]));
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    let id = invoice["id"].as_str().expect("invoice id");
    let shown = tokio::task::block_in_place(|| ctl_json(&daemon, &["invoice", "show", id]));
    assert_eq!(shown, invoice);

    tokio::task::block_in_place(|| daemon.stop());
}

/// Waits for the org's overage entry, written after the response, and returns its USD amount
/// as a positive number; fails after 10 s.
fn wait_for_overage(daemon: &Daemon) -> Decimal {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = ctl_json(daemon, &["credits", "history", "euro"]);
        let overage = history["data"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|entry| entry["kind"] == "overage")
            .map(|entry| -usd(entry["amount_usd"].as_str().expect("amount")));
        if let Some(overage) = overage {
            return overage;
        }
        assert!(
            Instant::now() < deadline,
            "no overage entry after 10 s: {history}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
