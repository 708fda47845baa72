//! Role matrix: every case of the table in `docs/permissions.md`, called with a management key
//! of each role, gets the allow or deny that the table gives, on SQLite and on PostgreSQL.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};
use synaxis_tests::services::{DATABASE_URL_ENV, TestDatabase, service_url};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN};

const ROLES: [&str; 5] = ["owner", "admin", "developer", "billing", "viewer"];

/// One row of the permission table: the case name and the expected verdict per role.
#[derive(Debug)]
struct Row {
    case: String,
    allowed: BTreeMap<String, bool>,
}

fn permission_table() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/permissions.md");
    let text = std::fs::read_to_string(path).expect("read docs/permissions.md");
    let mut rows = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for line in text.lines().filter(|line| line.starts_with('|')) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect();
        if cells.first().is_some_and(|cell| cell == "case") {
            header = Some(cells);
            continue;
        }
        let Some(header) = &header else { continue };
        if cells.first().is_some_and(|cell| cell.starts_with("---")) {
            continue;
        }
        let mut allowed = BTreeMap::new();
        for role in ROLES {
            let column = header
                .iter()
                .position(|name| name == role)
                .expect("role column");
            let verdict = match cells[column].as_str() {
                "allow" => true,
                "deny" => false,
                other => panic!(
                    "cell `{other}` of case {} is neither allow nor deny",
                    cells[0]
                ),
            };
            allowed.insert(role.to_owned(), verdict);
        }
        rows.push(Row {
            case: cells[0].clone(),
            allowed,
        });
    }
    assert!(
        rows.len() >= 25,
        "the permission table has too few rows: {}",
        rows.len()
    );
    rows
}

/// A client of one daemon.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        // Setting limits requires a justification; the other routes keep it in the audit log.
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("x-synaxis-justification", "role matrix");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control request");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Calls as the operator and returns the body, failing the test on an error status.
    async fn operator(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(OPERATOR_TOKEN, method, path, body).await;
        assert!(
            status.is_success(),
            "operator call {path} failed with {status}: {body}"
        );
        body
    }

    async fn user(&self, org_id: &str, role: &str) -> String {
        let email = format!("{}@acme.test", uuid::Uuid::new_v4().simple());
        let user = self
            .operator(
                Method::POST,
                "/control/v1/users",
                Some(json!({"org_id": org_id, "email": email, "role": role})),
            )
            .await;
        user["id"].as_str().expect("user id").to_owned()
    }

    async fn key(&self, user_id: &str, scope: &str) -> (String, String) {
        let created = self
            .operator(
                Method::POST,
                "/control/v1/keys",
                Some(json!({"user_id": user_id, "scope": scope})),
            )
            .await;
        (
            created["key"]["id"].as_str().expect("key id").to_owned(),
            created["secret"].as_str().expect("secret").to_owned(),
        )
    }
}

/// The org and the resources that the cases act on.
struct Fixture {
    org_id: String,
    team_id: String,
    /// Per role: the user's id and their management key's secret.
    members: BTreeMap<String, (String, String)>,
}

async fn fixture(api: &Api) -> Fixture {
    let org = api
        .operator(
            Method::POST,
            "/control/v1/orgs",
            Some(json!({"name": "Acme", "slug": "acme", "plan": "enterprise"})),
        )
        .await;
    let org_id = org["id"].as_str().expect("org id").to_owned();
    api.operator(
        Method::PUT,
        &format!("/control/v1/orgs/{org_id}/budget"),
        Some(json!({"max_usd": "1000"})),
    )
    .await;
    let team = api
        .operator(
            Method::POST,
            "/control/v1/teams",
            Some(json!({"org_id": org_id, "name": "Core"})),
        )
        .await;
    let team_id = team["id"].as_str().expect("team id").to_owned();

    let mut members = BTreeMap::new();
    for role in ROLES {
        let user_id = api.user(&org_id, role).await;
        let (_, secret) = api.key(&user_id, "management").await;
        members.insert(role.to_owned(), (user_id, secret));
    }
    Fixture {
        org_id,
        team_id,
        members,
    }
}

/// Returns a limit set with one requests-per-minute limit.
fn limit_set() -> Value {
    json!({"requests": {"per_minute": {"limit": 1000, "window": "sliding", "action": "throttle"}}})
}

/// Performs `case` as the member with `role`, creating fresh targets first, and returns the
/// status.
async fn perform(api: &Api, fixture: &Fixture, case: &str, role: &str) -> StatusCode {
    let (own_id, token) = &fixture.members[role];
    let org = &fixture.org_id;
    let team = &fixture.team_id;
    let unique = uuid::Uuid::new_v4().simple().to_string();

    let (method, path, body) = match case {
        "org.create" => (
            Method::POST,
            "/control/v1/orgs".to_owned(),
            Some(json!({"name": "New", "slug": format!("n{}", &unique[..8])})),
        ),
        "org.list" => (Method::GET, "/control/v1/orgs".to_owned(), None),
        "org.read" => (Method::GET, format!("/control/v1/orgs/{org}"), None),
        "org.update" => (
            Method::PATCH,
            format!("/control/v1/orgs/{org}"),
            Some(json!({"name": "Acme Labs"})),
        ),
        "org.revoke" => (Method::POST, format!("/control/v1/orgs/{org}/revoke"), None),
        "org.entitlements" => (
            Method::GET,
            format!("/control/v1/orgs/{org}/entitlements"),
            None,
        ),
        "plan.override" => (
            Method::PATCH,
            format!("/control/v1/orgs/{org}/entitlements"),
            Some(json!({"sso": null})),
        ),
        "credits.read" => (Method::GET, format!("/control/v1/orgs/{org}/credits"), None),
        "credits.history" => (
            Method::GET,
            format!("/control/v1/orgs/{org}/credits/history"),
            None,
        ),
        "credits.add" => (
            Method::POST,
            format!("/control/v1/orgs/{org}/credits"),
            Some(json!({"kind": "topup", "amount_usd": "1.00"})),
        ),
        "plan.migrate" => (
            Method::POST,
            format!("/control/v1/orgs/{org}/plan"),
            Some(json!({})),
        ),
        "team.create" => (
            Method::POST,
            "/control/v1/teams".to_owned(),
            Some(json!({"org_id": org, "name": unique})),
        ),
        "team.list" => (Method::GET, format!("/control/v1/teams?org_id={org}"), None),
        "team.read" => (Method::GET, format!("/control/v1/teams/{team}"), None),
        "team.update" => (
            Method::PATCH,
            format!("/control/v1/teams/{team}"),
            Some(json!({"allowed_models": ["gpt-4o*"]})),
        ),
        "user.create" => (
            Method::POST,
            "/control/v1/users".to_owned(),
            Some(json!({"org_id": org, "email": format!("{unique}@acme.test")})),
        ),
        "user.create.owner" => (
            Method::POST,
            "/control/v1/users".to_owned(),
            Some(json!({"org_id": org, "email": format!("{unique}@acme.test"), "role": "owner"})),
        ),
        "user.list" => (Method::GET, format!("/control/v1/users?org_id={org}"), None),
        "user.read" => (Method::GET, format!("/control/v1/users/{own_id}"), None),
        "user.update.developer-role" => {
            let developer = api.user(org, "developer").await;
            (
                Method::PATCH,
                format!("/control/v1/users/{developer}"),
                Some(json!({"role": "viewer"})),
            )
        }
        "user.update.own-locale" => (
            Method::PATCH,
            format!("/control/v1/users/{own_id}"),
            Some(json!({"locale": "pt-BR"})),
        ),
        "user.update.own-role" => (
            Method::PATCH,
            format!("/control/v1/users/{own_id}"),
            Some(json!({"role": "owner"})),
        ),
        "user.revoke.developer" => {
            let developer = api.user(org, "developer").await;
            (
                Method::POST,
                format!("/control/v1/users/{developer}/revoke"),
                None,
            )
        }
        "user.revoke.own" => (
            Method::POST,
            format!("/control/v1/users/{own_id}/revoke"),
            None,
        ),
        "key.create.own" => (
            Method::POST,
            "/control/v1/keys".to_owned(),
            Some(json!({"user_id": own_id})),
        ),
        "key.create.developer" => {
            let developer = api.user(org, "developer").await;
            (
                Method::POST,
                "/control/v1/keys".to_owned(),
                Some(json!({"user_id": developer})),
            )
        }
        "key.create.management" => (
            Method::POST,
            "/control/v1/keys".to_owned(),
            Some(json!({"user_id": own_id, "scope": "management"})),
        ),
        "key.list" => (Method::GET, "/control/v1/keys".to_owned(), None),
        "key.read" => {
            let (key, _) = api.key(own_id, "inference").await;
            (Method::GET, format!("/control/v1/keys/{key}"), None)
        }
        "key.update.own" => {
            let (key, _) = api.key(own_id, "inference").await;
            (
                Method::PATCH,
                format!("/control/v1/keys/{key}"),
                Some(json!({"allowed_models": ["gpt-4o"]})),
            )
        }
        "key.rotate.own" | "key.revoke.own" => {
            let (key, _) = api.key(own_id, "inference").await;
            let action = case.split('.').nth(1).expect("action");
            (
                Method::POST,
                format!("/control/v1/keys/{key}/{action}"),
                Some(json!({})),
            )
        }
        "key.rotate.developer" | "key.revoke.developer" => {
            let developer = api.user(org, "developer").await;
            let (key, _) = api.key(&developer, "inference").await;
            let action = case.split('.').nth(1).expect("action");
            (
                Method::POST,
                format!("/control/v1/keys/{key}/{action}"),
                Some(json!({})),
            )
        }
        "key.update.own-limits" => {
            let (key, _) = api.key(own_id, "inference").await;
            (
                Method::PATCH,
                format!("/control/v1/keys/{key}"),
                Some(json!({"rpm_limit": 600, "tpm_limit": null})),
            )
        }
        "limits.read.org" => (Method::GET, format!("/control/v1/orgs/{org}/limits"), None),
        "limits.set.org" => (
            Method::PUT,
            format!("/control/v1/orgs/{org}/limits"),
            Some(limit_set()),
        ),
        "limits.set.team" => (
            Method::PUT,
            format!("/control/v1/teams/{team}/limits"),
            Some(limit_set()),
        ),
        "limits.set.developer" => {
            let developer = api.user(org, "developer").await;
            (
                Method::PUT,
                format!("/control/v1/users/{developer}/limits"),
                Some(limit_set()),
            )
        }
        "limits.set.own" => (
            Method::PUT,
            format!("/control/v1/users/{own_id}/limits"),
            Some(limit_set()),
        ),
        "budget.read.org" => (Method::GET, format!("/control/v1/orgs/{org}/budget"), None),
        "budget.set.org" => (
            Method::PUT,
            format!("/control/v1/orgs/{org}/budget"),
            Some(json!({"max_usd": "1000"})),
        ),
        "budget.set.team" => (
            Method::PUT,
            format!("/control/v1/teams/{team}/budget"),
            Some(json!({"max_usd": "100"})),
        ),
        "budget.set.developer-key" => {
            let developer = api.user(org, "developer").await;
            let (key, _) = api.key(&developer, "inference").await;
            (
                Method::PUT,
                format!("/control/v1/keys/{key}/budget"),
                Some(json!({"max_usd": "10"})),
            )
        }
        "budget.set.own-key" => {
            let (key, _) = api.key(own_id, "inference").await;
            (
                Method::PUT,
                format!("/control/v1/keys/{key}/budget"),
                Some(json!({"max_usd": "10"})),
            )
        }
        "credits.auto_topup" => (
            Method::PUT,
            format!("/control/v1/orgs/{org}/credits/auto-topup"),
            Some(json!({"threshold_usd": "20", "amount_usd": "100"})),
        ),
        "plan.lifecycle" => (Method::POST, "/control/v1/plans/lifecycle".to_owned(), None),
        "fx.read" => (Method::GET, "/control/v1/fx".to_owned(), None),
        "fx.set" => (
            Method::POST,
            "/control/v1/fx".to_owned(),
            Some(json!({"rates": [{"currency": "EUR", "rate": "0.92"}]})),
        ),
        "invoice.read" => (
            Method::GET,
            format!("/control/v1/orgs/{org}/invoices"),
            None,
        ),
        "invoice.issue" => (
            Method::POST,
            format!("/control/v1/orgs/{org}/invoices"),
            Some(json!({"period": "2026-11"})),
        ),
        "audit.list" => (Method::GET, "/control/v1/audit".to_owned(), None),
        "audit.verify" => (Method::GET, "/control/v1/audit/verify".to_owned(), None),
        "region.status" => (Method::GET, "/control/v1/regions".to_owned(), None),
        "compliance.residency" => (
            Method::GET,
            "/control/v1/compliance/residency".to_owned(),
            None,
        ),
        "failover.drill" => (
            Method::POST,
            "/control/v1/failover/drills".to_owned(),
            Some(json!({"region": "eu-west-1", "duration_secs": 1})),
        ),
        other => panic!("docs/permissions.md has case `{other}`, which this test does not know"),
    };

    let (status, body) = api.call(token, method, &path, body).await;
    if status == StatusCode::FORBIDDEN {
        assert_eq!(
            body["error"]["code"], "permission_denied",
            "{case} as {role}: {body}"
        );
    }
    status
}

async fn check_matrix(database_url: &str) {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.to_owned(),
        upstream_base_url: upstream.base_url(),
        log_level: "info".to_owned(),
        data_dir: dir.path().to_owned(),
        shutdown_timeout_secs: 10,
        ..DaemonOptions::default()
    });
    let api = Api {
        base: daemon.url(),
        http: reqwest::Client::new(),
    };
    let fixture = fixture(&api).await;

    let mut mismatches = Vec::new();
    for row in permission_table() {
        for role in ROLES {
            let status = perform(&api, &fixture, &row.case, role).await;
            let expected = row.allowed[role];
            let allowed = status.is_success();
            let denied = status == StatusCode::FORBIDDEN;
            if (expected && !allowed) || (!expected && !denied) {
                let verdict = if expected { "allow" } else { "deny" };
                mismatches.push(format!(
                    "{} as {role}: table says {verdict}, daemon answered {status}",
                    row.case
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "role matrix mismatches:\n{}",
        mismatches.join("\n")
    );

    let (status, body) = api
        .call(&fixture.members["owner"].1, Method::GET, "/v1/models", None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a management key cannot call the inference API"
    );
    assert_eq!(body["error"]["code"], "wrong_key_scope");

    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/synaxis.db", dir.path().display());
    check_matrix(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_on_postgres() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    check_matrix(&database.url).await;
    database.drop_database().await.expect("drop database");
}

/// A member of one org cannot see another org's resources: they return 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_org_is_not_found() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: format!("sqlite://{}/synaxis.db", dir.path().display()),
        upstream_base_url: upstream.base_url(),
        log_level: "info".to_owned(),
        data_dir: dir.path().to_owned(),
        shutdown_timeout_secs: 10,
        ..DaemonOptions::default()
    });
    let api = Api {
        base: daemon.url(),
        http: reqwest::Client::new(),
    };
    let mine = fixture(&api).await;
    let other = api
        .operator(
            Method::POST,
            "/control/v1/orgs",
            Some(json!({"name": "Other", "slug": "other"})),
        )
        .await;
    let other_id = other["id"].as_str().expect("org id");
    let other_user = api.user(other_id, "developer").await;

    let owner_token = &mine.members["owner"].1;
    let missing = uuid::Uuid::new_v4();
    let (_, hidden) = api
        .call(
            owner_token,
            Method::GET,
            &format!("/control/v1/users/{other_user}"),
            None,
        )
        .await;
    let (_, absent) = api
        .call(
            owner_token,
            Method::GET,
            &format!("/control/v1/users/{missing}"),
            None,
        )
        .await;
    let hidden = hidden["error"]["message"]
        .as_str()
        .expect("message")
        .replace(&other_user, "ID");
    let absent = absent["error"]["message"]
        .as_str()
        .expect("message")
        .replace(&missing.to_string(), "ID");
    assert_eq!(
        hidden, absent,
        "another org's user reads exactly like a missing one"
    );
    for path in [
        format!("/control/v1/orgs/{other_id}"),
        format!("/control/v1/users/{other_user}"),
        format!("/control/v1/users?org_id={other_id}"),
    ] {
        let (status, _) = api.call(owner_token, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, body) = api
        .call(owner_token, Method::GET, "/control/v1/orgs", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{body}");

    tokio::task::block_in_place(|| daemon.stop());
}
