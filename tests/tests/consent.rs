//! A user's consent to cross-border failover through `/v1/privacy/consent` with their own key,
//! and through `synaxisctl user consent` as the operator, on one daemon.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};

use common::{Daemon, DaemonOptions, create_tenant, ctl_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_api_records_versions() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("start fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: format!("sqlite://{}/synaxis.db", dir.path().display()),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let tenant = tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    let client = reqwest::Client::new();
    let url = format!("{}/v1/privacy/consent", daemon.url());

    let granted: Value = client
        .post(&url)
        .bearer_auth(&tenant.secret)
        .json(&json!({"scope": "cross_border_failover", "regions": ["eu-west-1"]}))
        .send()
        .await
        .expect("grant")
        .json()
        .await
        .expect("consent state");
    assert_eq!(granted["granted"], true);
    assert_eq!(granted["current"]["version"], 1);
    assert_eq!(granted["current"]["source"], "user");
    assert_eq!(granted["current"]["regions"], json!(["eu-west-1"]));

    let unknown = client
        .post(&url)
        .bearer_auth(&tenant.secret)
        .header("accept-language", "pt-BR")
        .json(&json!({"scope": "cross_border_failover", "regions": ["mars-north-1"]}))
        .send()
        .await
        .expect("grant with an unknown region");
    assert_eq!(unknown.status(), 400);
    let error: Value = unknown.json().await.expect("error body");
    assert_eq!(error["error"]["param"], "regions");

    let shown = tokio::task::block_in_place(|| {
        ctl_json(&daemon, &["user", "consent", "show", &tenant.user_id])
    });
    assert_eq!(shown["granted"], true);
    let withdrawn = tokio::task::block_in_place(|| {
        ctl_json(
            &daemon,
            &[
                "user",
                "consent",
                "withdraw",
                &tenant.user_id,
                "--justification",
                "withdrawal requested by email",
            ],
        )
    });
    assert_eq!(withdrawn["granted"], false);
    assert_eq!(withdrawn["current"]["version"], 2);
    assert_eq!(withdrawn["current"]["source"], "operator");

    let read: Value = client
        .get(&url)
        .bearer_auth(&tenant.secret)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("consent state");
    assert_eq!(read["granted"], false);
    assert_eq!(read["history"].as_array().map(Vec::len), Some(2));

    let audit = tokio::task::block_in_place(|| ctl_json(&daemon, &["audit", "list"]));
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .filter(|action| action.starts_with("consent."))
        .collect();
    assert_eq!(
        actions,
        ["consent.grant", "consent.grant", "consent.withdraw"]
    );
}
