//! End-to-end test of self-service signup. The client's country, from the peer address or the
//! `X-Forwarded-For` entry of a trusted proxy, picks the region. A US address signs up here
//! (`us-east-1`) on a Pro trial. German and Brazilian addresses get 421 with their region's
//! signup URL, and nothing is stored. The header of an untrusted peer is ignored.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN};

/// The country database that `tests/data/geoip/generate.py` writes: 192.0.2.0/24 is DE,
/// 198.51.100.0/24 BR, 203.0.113.0/24 US.
const GEOIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/geoip/test-country.mmdb");

fn start(upstream: &FakeUpstream, dir: &std::path::Path, trusted: &str) -> Daemon {
    Daemon::start(&DaemonOptions {
        database_url: format!("sqlite://{}/synaxis.db", dir.display()),
        upstream_base_url: upstream.base_url(),
        data_dir: dir.to_owned(),
        extra_config: format!(
            "\n[signup]\nenabled = true\ngeoip_database = \"{GEOIP}\"\ntrusted_proxies = [{trusted}]\n"
        ),
        ..DaemonOptions::default()
    })
}

/// Signs up from `forwarded_for` with an org named after `email`, and returns the status and
/// body.
async fn signup(daemon: &Daemon, forwarded_for: &str, email: &str) -> (StatusCode, Value) {
    signup_named(daemon, forwarded_for, email, &format!("Org of {email}")).await
}

async fn signup_named(
    daemon: &Daemon,
    forwarded_for: &str,
    email: &str,
    org_name: &str,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/control/v1/signup", daemon.url()))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": email, "org_name": org_name}))
        .send()
        .await
        .expect("signup request");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

async fn org_count(daemon: &Daemon) -> usize {
    let orgs: Value = reqwest::Client::new()
        .get(format!("{}/control/v1/orgs", daemon.url()))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("list orgs")
        .json()
        .await
        .expect("JSON");
    orgs["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_lands_in_the_client_region() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = tokio::task::block_in_place(|| start(&upstream, dir.path(), "\"127.0.0.1/32\""));

    // A US address, behind the trusted proxy, signs up here on a 14-day Pro trial.
    let (status, body) = signup(&daemon, "198.18.0.1, 203.0.113.7", "ana@us.test").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["org"]["primary_region"], "us-east-1");
    assert_eq!(body["org"]["plan"], "pro");
    assert_eq!(body["user"]["role"], "owner");
    let created = chrono::DateTime::parse_from_rfc3339(
        body["org"]["created_at"].as_str().expect("created_at"),
    )
    .expect("time");
    let trial_ends = chrono::DateTime::parse_from_rfc3339(
        body["org"]["trial_ends_at"]
            .as_str()
            .expect("trial_ends_at"),
    )
    .expect("time");
    assert_eq!(trial_ends - created, chrono::Duration::days(14));
    // The management key works at once.
    let secret = body["secret"].as_str().expect("secret");
    let org_id = body["org"]["id"].as_str().expect("org id");
    let own = reqwest::Client::new()
        .get(format!("{}/control/v1/orgs/{org_id}", daemon.url()))
        .bearer_auth(secret)
        .send()
        .await
        .expect("read own org");
    assert_eq!(own.status(), StatusCode::OK);

    // German and Brazilian addresses belong to other regions: 421 with their signup URL.
    for (address, region) in [("192.0.2.7", "eu-west-1"), ("198.51.100.7", "sa-east-1")] {
        let (status, body) = signup(&daemon, address, &format!("x@{region}.test")).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "wrong_region");
        let message = body["error"]["message"].as_str().expect("message");
        let url = format!("https://{region}.synaxis.test/control/v1/signup");
        assert!(message.contains(&url), "{message}");
    }
    assert_eq!(
        org_count(&daemon).await,
        1,
        "a misdirected signup stores nothing"
    );

    // A taken email fails the signup after its org was created: the org is removed.
    let (status, body) = signup_named(&daemon, "203.0.113.8", "ana@us.test", "Second").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        org_count(&daemon).await,
        1,
        "the failed signup leaves no org"
    );
    let (status, body) = signup_named(&daemon, "203.0.113.8", "bo@us.test", "Second").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the name is free again: {body}"
    );
    let (status, body) = signup(&daemon, "203.0.113.8", "bad address").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "email");
    assert_eq!(org_count(&daemon).await, 2, "bad input stores nothing");

    // The audit log names the signup as the actor.
    let audit: Value = reqwest::Client::new()
        .get(format!("{}/control/v1/audit", daemon.url()))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("JSON");
    let actors: Vec<&str> = audit["data"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["actor_kind"].as_str().expect("actor kind"))
        .collect();
    assert_eq!(
        actors, ["signup"; 9],
        "org, owner and key; the org, refused owner and removal of a failed signup; then another"
    );
    tokio::task::block_in_place(|| daemon.stop());

    // Without the proxy trusted, the header is ignored: the peer, 127.0.0.1, is in no
    // country, so the default region, this one, takes the signup.
    let other = tempfile::tempdir().expect("temp dir");
    let daemon = tokio::task::block_in_place(|| start(&upstream, other.path(), ""));
    let (status, body) = signup(&daemon, "192.0.2.7", "eve@de.test").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["org"]["primary_region"], "us-east-1");
    tokio::task::block_in_place(|| daemon.stop());
}
