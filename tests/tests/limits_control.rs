//! Limit sets and key limits through the control API and `synaxisctl`, on SQLite and on
//! PostgreSQL. The test sets, shows and clears the limits of an org, a team and a user. It
//! checks that errors name the bad key and leave the stored set as it was, that a justification
//! is required, who may set which limits, the audit entries, and a key's `rpm_limit` and
//! `tpm_limit`.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use synaxis_tests::services::{DATABASE_URL_ENV, TestDatabase, service_url};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN, binary, ctl_json};

const JUSTIFICATION: &str = "launch capacity, ticket OPS-7";

/// The org's limits, written with top-level tables.
const ORG_LIMITS: &str = r#"
concurrent_requests = 20

[requests]
per_minute = { limit = 100, window = "sliding", action = "throttle" }
per_day    = { limit = 100000, window = "fixed", action = "block" }

[tokens]
per_month  = { limit = 10000000, action = "credit_charge" }
"#;

/// The team's limits, written under `[limits]`.
const TEAM_LIMITS: &str = r#"
[limits.tokens]
per_minute = { limit = 10000, window = "sliding", action = "throttle" }
"#;

/// Runs `synaxisctl ARGS` as the operator with `stdin` on standard input, and returns its
/// whole output, whatever its status.
fn ctl(daemon: &Daemon, args: &[&str], stdin: &str, language: &str) -> Output {
    let mut child = Command::new(binary("synaxisctl"))
        .args(["--endpoint", &daemon.url(), "--token", OPERATOR_TOKEN])
        .args(args)
        .env("SYNAXIS_LANG", language)
        .env_remove("SYNAXIS_JUSTIFICATION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start synaxisctl");
    let written = child
        .stdin
        .take()
        .expect("stdin pipe")
        .write_all(stdin.as_bytes());
    // A command that fails before it reads standard input closes the pipe first.
    if let Err(error) = written {
        assert_eq!(error.kind(), ErrorKind::BrokenPipe, "write stdin: {error}");
    }
    child.wait_with_output().expect("run synaxisctl")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_str(&stdout_of_success(output)).expect("JSON output")
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// A client of the control API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// Sends a control call with `token`, and with `justification` in its header when given.
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        justification: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(justification) = justification {
            request = request.header("x-synaxis-justification", justification);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control request");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Sends `PUT path` with a justification and returns the status and the body.
    async fn put_limits(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(token, Method::PUT, path, Some(JUSTIFICATION), Some(body))
            .await
    }

    async fn get(&self, token: &str, path: &str) -> Value {
        let (status, body) = self.call(token, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

/// A set with one sliding requests-per-minute limit, as the API returns it.
fn per_minute(limit: u64) -> Value {
    json!({
        "requests": {"per_minute": {"limit": limit, "window": "sliding", "action": "throttle"}},
        "tokens": {}
    })
}

/// The members of the org: each role's user id and management key.
struct Members {
    owner: (String, String),
    admin: (String, String),
    developer: (String, String),
    /// A developer of the team, whose limits the developer above tries to raise.
    colleague: String,
}

fn member(daemon: &Daemon, org: &str, team: &str, role: &str) -> (String, String) {
    let email = format!("{role}-{}@acme.test", uuid::Uuid::new_v4().simple());
    let user = id(&ctl_json(
        daemon,
        &[
            "user", "create", "--org", org, "--email", &email, "--role", role, "--team", team,
        ],
    ));
    let created = ctl_json(
        daemon,
        &["key", "create", "--user", &user, "--scope", "management"],
    );
    let secret = created["secret"].as_str().expect("secret").to_owned();
    (user, secret)
}

/// Returns the arguments of `limits set` with JSON output and the justification.
fn set_args<'a>(scope_flag: &'a str, scope: &'a str, file: &'a str) -> [&'a str; 10] {
    [
        "--output",
        "json",
        "--justification",
        JUSTIFICATION,
        "limits",
        "set",
        scope_flag,
        scope,
        "--file",
        file,
    ]
}

/// Sets, shows and clears limit sets through the CLI, in both file forms.
fn set_show_and_clear(daemon: &Daemon, dir: &Path, org: &str, team: &str, user: &str) {
    let org_file = dir.join("org-limits.toml");
    std::fs::write(&org_file, ORG_LIMITS).expect("write limits file");
    let expected_org = json!({
        "concurrent_requests": 20,
        "requests": {
            "per_minute": {"limit": 100, "window": "sliding", "action": "throttle"},
            "per_day": {"limit": 100000, "window": "fixed", "action": "block"}
        },
        "tokens": {"per_month": {"limit": 10000000, "window": "fixed", "action": "credit_charge"}}
    });
    let file = org_file.to_str().expect("UTF-8 path");
    let org_args = set_args("--org", "acme", file);
    let stored = json_of(&ctl(daemon, &org_args, "", "en"));
    assert_eq!(stored, expected_org, "set prints the stored set");
    let shown = json_of(&ctl(
        daemon,
        &["--output", "json", "limits", "show", "--org", org],
        "",
        "en",
    ));
    assert_eq!(shown, expected_org, "show by id prints the set set by slug");

    let table = stdout_of_success(&ctl(daemon, &["limits", "show", "--org", "acme"], "", "en"));
    assert!(table.contains("requests.per_minute"), "{table}");
    assert!(table.contains("100, sliding, throttle"), "{table}");
    assert!(table.contains("10000000, fixed, credit_charge"), "{table}");

    let team_args = set_args("--team", team, "-");
    let stored = json_of(&ctl(daemon, &team_args, TEAM_LIMITS, "en"));
    let expected_team = json!({
        "requests": {},
        "tokens": {"per_minute": {"limit": 10000, "window": "sliding", "action": "throttle"}}
    });
    assert_eq!(
        stored, expected_team,
        "the [limits] form from standard input"
    );

    let user_args = set_args("--user", user, "-");
    let one_limit =
        "[requests]\nper_minute = { limit = 10, window = \"sliding\", action = \"throttle\" }\n";
    assert_eq!(
        json_of(&ctl(daemon, &user_args, one_limit, "en")),
        per_minute(10)
    );
    let cleared = json_of(&ctl(daemon, &user_args, "# no limits\n", "en"));
    assert_eq!(
        cleared,
        json!({"requests": {}, "tokens": {}}),
        "an empty file clears"
    );
    let shown = ctl(
        daemon,
        &["--output", "json", "limits", "show", "--user", user],
        "",
        "en",
    );
    assert_eq!(json_of(&shown), json!({"requests": {}, "tokens": {}}));
    let note = String::from_utf8_lossy(&shown.stderr);
    assert!(
        note.contains("[limits.user]"),
        "an empty set says which configured limits apply: {note}"
    );
}

/// Returns the standard output of a command, failing the test unless it succeeded.
fn stdout_of_success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "synaxisctl failed with {}: {}",
        output.status,
        stderr_of(output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Checks that invalid files fail in the CLI before any request, naming the file, line and
/// key.
fn cli_rejects_bad_files(daemon: &Daemon, dir: &Path, team: &str) {
    let bad_file = dir.join("bad-limits.toml");
    std::fs::write(
        &bad_file,
        "[requests]\nper_minute = { limit = \"many\", action = \"throttle\" }\n",
    )
    .expect("write limits file");
    let file = bad_file.to_str().expect("UTF-8 path");
    let args = [
        "--justification",
        JUSTIFICATION,
        "limits",
        "set",
        "--team",
        team,
        "--file",
        file,
    ];
    let output = ctl(daemon, &args, "", "en");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    assert!(message.contains(file), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("`requests.per_minute.limit`"), "{message}");
    assert!(message.contains("Fix it:"), "{message}");

    let output = ctl(daemon, &args, "", "pt-BR");
    let message = stderr_of(&output);
    assert!(message.contains("linha 2"), "{message}");
    assert!(message.contains("Corrija:"), "{message}");

    let unjustified = ["limits", "set", "--team", team, "--file", "-"];
    let output = ctl(daemon, &unjustified, TEAM_LIMITS, "en");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("missing --justification: pass --justification TEXT"),
        "{}",
        stderr_of(&output)
    );
}

/// Checks that invalid sets and a missing justification get 400 naming the key, and change
/// nothing.
async fn api_rejects_invalid_sets(api: &Api, org: &str, team: &str) {
    let team_path = format!("/control/v1/teams/{team}/limits");
    let before = api.get(OPERATOR_TOKEN, &team_path).await;

    let cases = [
        (per_minute(0), "limits.requests.per_minute.limit"),
        (
            json!({"requests": {"per_week": {"limit": 1, "action": "block"}}}),
            "limits.requests.per_week",
        ),
        (
            json!({"tokens": {"per_day": {"limit": 5, "action": "wait"}}}),
            "limits.tokens.per_day.action",
        ),
        (
            json!({"concurrent_requests": 4}),
            "limits.concurrent_requests",
        ),
        (json!({"budget": 10}), "limits.budget"),
        (json!([]), "limits"),
    ];
    for (body, key) in cases {
        let (status, error) = api
            .put_limits(OPERATOR_TOKEN, &team_path, body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["param"], key, "{body}: {error}");
        assert_eq!(error["error"]["code"], "invalid_request", "{body}: {error}");
    }
    let (_, error) = api
        .put_limits(OPERATOR_TOKEN, &team_path, per_minute(0))
        .await;
    let message = error["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("`limits.requests.per_minute.limit`"),
        "{message}"
    );
    assert_eq!(
        api.get(OPERATOR_TOKEN, &team_path).await,
        before,
        "rejected sets leave the stored set as it was"
    );

    let org_path = format!("/control/v1/orgs/{org}/limits");
    let (status, error) = api
        .call(
            OPERATOR_TOKEN,
            Method::PUT,
            &org_path,
            None,
            Some(per_minute(5)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["param"], "x-synaxis-justification");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.contains("--justification"), "{message}");
    assert_ne!(
        api.get(OPERATOR_TOKEN, &org_path).await,
        per_minute(5),
        "an unjustified set is not stored"
    );
}

/// Checks that developers raise no limits, admins set only limits that do not bind them, and
/// owners set all.
async fn roles_decide_who_sets_limits(api: &Api, org: &str, team: &str, members: &Members) {
    let (owner_id, owner) = &members.owner;
    let (admin_id, admin) = &members.admin;
    let (developer_id, developer) = &members.developer;
    let colleague = &members.colleague;
    let user_path = |id: &str| format!("/control/v1/users/{id}/limits");
    let org_path = format!("/control/v1/orgs/{org}/limits");
    let team_path = format!("/control/v1/teams/{team}/limits");

    let cases = [
        (
            "developer raises own",
            developer,
            user_path(developer_id),
            StatusCode::FORBIDDEN,
        ),
        (
            "developer raises colleague's",
            developer,
            user_path(colleague),
            StatusCode::FORBIDDEN,
        ),
        (
            "developer raises team's",
            developer,
            team_path.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "developer raises org's",
            developer,
            org_path.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin sets own",
            admin,
            user_path(admin_id),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin sets own team's",
            admin,
            team_path.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin sets org's",
            admin,
            org_path.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin sets owner's",
            admin,
            user_path(owner_id),
            StatusCode::FORBIDDEN,
        ),
        (
            "admin sets developer's",
            admin,
            user_path(developer_id),
            StatusCode::OK,
        ),
        ("owner sets org's", owner, org_path.clone(), StatusCode::OK),
        (
            "owner sets team's",
            owner,
            team_path.clone(),
            StatusCode::OK,
        ),
        ("owner sets own", owner, user_path(owner_id), StatusCode::OK),
    ];
    for (case, token, path, expected) in cases {
        let (status, body) = api.put_limits(token, &path, per_minute(1_000)).await;
        assert_eq!(status, expected, "{case}: {body}");
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(body["error"]["code"], "permission_denied", "{case}: {body}");
        }
    }
    assert_eq!(
        api.get(developer, &user_path(developer_id)).await,
        per_minute(1_000),
        "a developer reads their own limits"
    );
    assert_eq!(
        api.get(developer, &org_path).await,
        per_minute(1_000),
        "a developer reads the org's limits"
    );
}

/// Checks that another org's limits are not found, as if they did not exist.
async fn other_org_limits_are_not_found(api: &Api, owner: &str) {
    let other = api
        .call(
            OPERATOR_TOKEN,
            Method::POST,
            "/control/v1/orgs",
            None,
            Some(json!({"name": "Other", "slug": "other"})),
        )
        .await
        .1;
    let path = format!("/control/v1/orgs/{}/limits", id(&other));
    let (status, body) = api.put_limits(owner, &path, per_minute(5)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api.call(owner, Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// Checks that every PUT of limits is in the audit log: successes with the justification,
/// denials and failures too.
fn audit_records_limit_calls(daemon: &Daemon, org: &str, members: &Members) {
    let audit = ctl_json(daemon, &["audit", "list", "--org", org, "--limit", "1000"]);
    let entries: Vec<&Value> = audit["data"]
        .as_array()
        .expect("audit entries")
        .iter()
        .filter(|entry| entry["action"] == "limits.set")
        .collect();
    let count = |result: &str| {
        entries
            .iter()
            .filter(|entry| entry["result"] == result)
            .count()
    };
    // Successes: org, team and user (twice) by the CLI, then admin's one and owner's three.
    assert_eq!(count("success"), 8, "{entries:#?}");
    assert_eq!(count("denied"), 8, "{entries:#?}");
    // Failures: six invalid sets and the repeat of the first, and one unjustified set.
    assert_eq!(count("failure"), 8, "{entries:#?}");

    let first = entries.first().expect("a limits.set entry");
    assert_eq!(first["result"], "success");
    assert_eq!(first["target_kind"], "organization");
    assert_eq!(first["target_id"], org);
    assert_eq!(first["actor_id"], "operator");
    assert_eq!(first["justification"], JUSTIFICATION);
    let developer_id = &members.developer.0;
    assert!(
        entries.iter().any(|entry| entry["result"] == "denied"
            && entry["actor_id"] == developer_id.as_str()
            && entry["target_id"] == developer_id.as_str()
            && entry["justification"] == JUSTIFICATION),
        "no denied entry of the developer's own limits: {entries:#?}"
    );
    assert!(
        entries
            .iter()
            .any(|entry| entry["result"] == "failure" && entry["justification"].is_null()),
        "no failed entry without a justification: {entries:#?}"
    );
}

/// Checks a key's `rpm_limit` and `tpm_limit`: set at creation, changed, kept and removed.
async fn key_limits_set_and_clear(daemon: &Daemon, api: &Api, user: &str) {
    let created = ctl_json(
        daemon,
        &[
            "key",
            "create",
            "--user",
            user,
            "--rpm-limit",
            "600",
            "--tpm-limit",
            "100000",
        ],
    );
    assert_eq!(created["key"]["rpm_limit"], 600, "{created}");
    assert_eq!(created["key"]["tpm_limit"], 100_000, "{created}");
    let key = created["key"]["id"].as_str().expect("key id");

    let updated = ctl_json(daemon, &["key", "update", key, "--rpm-limit", "none"]);
    assert!(updated["rpm_limit"].is_null(), "{updated}");
    assert_eq!(
        updated["tpm_limit"], 100_000,
        "an absent flag keeps the limit"
    );
    let updated = ctl_json(daemon, &["key", "update", key, "--tpm-limit", "5000"]);
    assert_eq!(updated["tpm_limit"], 5_000, "{updated}");
    let shown = ctl_json(daemon, &["key", "show", key]);
    assert!(shown["rpm_limit"].is_null(), "{shown}");
    assert_eq!(shown["tpm_limit"], 5_000, "{shown}");

    let key_path = format!("/control/v1/keys/{key}");
    let (status, body) = api
        .call(
            OPERATOR_TOKEN,
            Method::PATCH,
            &key_path,
            None,
            Some(json!({"tpm_limit": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["tpm_limit"].is_null(),
        "JSON null removes the limit: {body}"
    );

    for (field, value) in [
        ("rpm_limit", json!(0)),
        ("tpm_limit", json!(9_007_199_254_740_992_u64)),
    ] {
        let (status, body) = api
            .call(
                OPERATOR_TOKEN,
                Method::POST,
                "/control/v1/keys",
                None,
                Some(json!({"user_id": user, field: value})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert_eq!(body["error"]["param"], field, "{body}");
        let (status, body) = api
            .call(
                OPERATOR_TOKEN,
                Method::PATCH,
                &key_path,
                None,
                Some(json!({field: value})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert_eq!(body["error"]["param"], field, "{body}");
    }

    let output = ctl(
        daemon,
        &["key", "update", key, "--rpm-limit", "0"],
        "",
        "en",
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
}

async fn check_limits_control(database_url: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: database_url.to_owned(),
        // The test makes no inference call, so the upstream URL points where nothing listens.
        upstream_base_url: "http://127.0.0.1:9/v1".to_owned(),
        data_dir: dir.path().to_owned(),
        ..DaemonOptions::default()
    });
    let api = Api {
        base: daemon.url(),
        http: reqwest::Client::new(),
    };

    let org = id(&ctl_json(
        &daemon,
        &[
            "org",
            "create",
            "--name",
            "Acme",
            "--slug",
            "acme",
            "--plan",
            "enterprise",
        ],
    ));
    let team = id(&ctl_json(
        &daemon,
        &["team", "create", "--org", &org, "--name", "Core"],
    ));
    let members = Members {
        owner: member(&daemon, &org, &team, "owner"),
        admin: member(&daemon, &org, &team, "admin"),
        developer: member(&daemon, &org, &team, "developer"),
        colleague: member(&daemon, &org, &team, "developer").0,
    };

    set_show_and_clear(&daemon, dir.path(), &org, &team, &members.colleague);
    cli_rejects_bad_files(&daemon, dir.path(), &team);
    api_rejects_invalid_sets(&api, &org, &team).await;
    roles_decide_who_sets_limits(&api, &org, &team, &members).await;
    other_org_limits_are_not_found(&api, &members.owner.1).await;
    audit_records_limit_calls(&daemon, &org, &members);
    key_limits_set_and_clear(&daemon, &api, &members.developer.0).await;

    tokio::task::block_in_place(|| daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_control_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/synaxis.db", dir.path().display());
    check_limits_control(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_control_on_postgres() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    check_limits_control(&database.url).await;
    database.drop_database().await.expect("drop database");
}
