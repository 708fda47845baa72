//! End-to-end test of exchange rates and billing currencies through `synaxisctl`. Rates are set
//! one by one and from a CSV file, a Pro org bills in EUR while a Free org cannot, and a month
//! is invoiced only once it has ended.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};

use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN, binary, ctl_json};

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
async fn rates_currencies_and_invoice_rules() {
    let upstream = FakeUpstream::start(FakeConfig::default())
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

    tokio::task::block_in_place(|| {
        ctl_json(&daemon, &justified(&["fx", "set", "EUR", "0.92"]));
        let imported = ctl_json(
            &daemon,
            &justified(&["fx", "import", rates.to_str().expect("path")]),
        );
        assert_eq!(imported["data"].as_array().map(Vec::len), Some(2));
        let listed = ctl_json(&daemon, &["fx", "list", "--currency", "GBP"]);
        assert_eq!(listed["data"][0]["rate"], "0.79");

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

        ctl_json(
            &daemon,
            &[
                "org", "create", "--name", "Euro", "--slug", "euro", "--plan", "pro",
            ],
        );
        let updated = ctl_json(
            &daemon,
            &["org", "update", "euro", "--billing-currency", "EUR"],
        );
        assert_eq!(updated["billing_currency"], "EUR");
    });

    // The current month has not ended, so its invoice waits; the contract test
    // `invoice_charges_fee_and_credit_once` checks an issued invoice with a settable clock.
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let early = tokio::task::block_in_place(|| {
        ctl(&daemon, &["invoice", "issue", "euro", "--period", &period])
    });
    assert_eq!(early.status.code(), Some(1));
    let message = String::from_utf8_lossy(&early.stderr);
    assert!(message.contains("after the month ends"), "{message}");
    let listed = tokio::task::block_in_place(|| ctl_json(&daemon, &["invoice", "list", "euro"]));
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0));

    tokio::task::block_in_place(|| daemon.stop());
}
