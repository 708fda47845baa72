//! End-to-end tests of plans through `synaxisctl`. A Free org's second team is rejected with
//! exit status 5 and a message naming the limit and the plan that lifts it. A new version of a
//! plan reaches an org only through `plan migrate`, which leaves its overrides alone. Credit
//! added to an org's ledger keeps its exact amounts.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use synaxis_tests::services::{DATABASE_URL_ENV, TestDatabase, service_url};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN, binary, ctl_json};

/// The plan catalog of the repository, which synaxisd also builds in.
const CATALOG: &str = include_str!("../../config/plans.toml");

/// Runs `synaxisctl ARGS` in `language` and returns its whole output, whatever its status.
fn ctl(daemon: &Daemon, language: &str, args: &[&str]) -> Output {
    Command::new(binary("synaxisctl"))
        .args(["--endpoint", &daemon.url(), "--token", OPERATOR_TOKEN])
        .args(args)
        .env("SYNAXIS_LANG", language)
        .output()
        .expect("run synaxisctl")
}

fn start(database_url: &str, data_dir: &Path, catalog: &Path) -> Daemon {
    Daemon::start(&DaemonOptions {
        database_url: database_url.to_owned(),
        // The test makes no inference call, so the upstream URL points where nothing listens.
        upstream_base_url: "http://127.0.0.1:9/v1".to_owned(),
        data_dir: data_dir.to_owned(),
        extra_config: format!("\n[plans]\nfile = \"{}\"\n", catalog.display()),
        ..DaemonOptions::default()
    })
}

/// Returns the value and source of entitlement `name` in the JSON of `org show`.
fn entitlement(org_json: &Value, name: &str) -> (Value, String) {
    let fields = org_json["entitlements"]["fields"]
        .as_array()
        .expect("entitlement fields");
    let field = fields
        .iter()
        .find(|field| field["name"] == name)
        .unwrap_or_else(|| panic!("no entitlement `{name}` in {org_json}"));
    let source = field["source"].as_str().expect("source").to_owned();
    (field["value"].clone(), source)
}

async fn check_plans(database_url: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = dir.path().join("plans.toml");
    std::fs::write(&catalog, CATALOG).expect("write catalog");
    let mut daemon = start(database_url, dir.path(), &catalog);

    // A Free org's second team.
    let free = ctl_json(
        &daemon,
        &["org", "create", "--name", "Tiny", "--slug", "tiny"],
    );
    assert_eq!(free["plan"], "free", "orgs join the default plan");
    let free_id = free["id"].as_str().expect("org id").to_owned();
    ctl_json(
        &daemon,
        &["team", "create", "--org", &free_id, "--name", "first"],
    );
    for (language, expected) in [
        (
            "en",
            "The Free plan allows 1 team per organization, and that limit is reached. Move the organization to the Pro plan, which allows 5",
        ),
        (
            "pt-BR",
            "O plano Free permite 1 equipe por organização, e esse limite foi atingido. Mude a organização para o plano Pro, que permite 5",
        ),
    ] {
        let second = ctl(
            &daemon,
            language,
            &["team", "create", "--org", &free_id, "--name", "second"],
        );
        assert_eq!(second.status.code(), Some(5), "{second:?}");
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(stderr.contains(expected), "{language}: {stderr}");
    }
    let teams = ctl_json(&daemon, &["team", "list", "--org", &free_id]);
    assert_eq!(teams["data"].as_array().map(Vec::len), Some(1));

    // A Pro org with an override, then a new version of Pro.
    let pro = ctl_json(
        &daemon,
        &[
            "org", "create", "--name", "Mid", "--slug", "mid", "--plan", "pro",
        ],
    );
    assert_eq!(pro["plan_version"], 1);
    let unjustified = ctl(
        &daemon,
        "en",
        &["org", "override", "mid", "--set", "teams=7"],
    );
    assert_ne!(unjustified.status.code(), Some(0), "{unjustified:?}");
    let overridden = ctl_json(
        &daemon,
        &[
            "--justification",
            "contract 42",
            "org",
            "override",
            "mid",
            "--set",
            "teams=7",
        ],
    );
    assert_eq!(overridden["overrides"]["teams"], 7);

    let version_2 = "[plans.pro.versions.2]\nteams = 8\nusers_per_team = 20\nkeys_per_user = 15\nconcurrent_requests = 100\nrequests_per_day = 100000\ntokens_per_month = 10000000\nrate_limit_windows = \"fixed_and_sliding\"\nbilling_currencies = [\"USD\", \"EUR\", \"BRL\", \"GBP\"]\naudit_log_access = true\nsso = false\nmonthly_fee_usd = \"59\"\n";
    std::fs::write(&catalog, format!("{CATALOG}\n{version_2}")).expect("write catalog");
    daemon.stop();
    daemon = start(database_url, dir.path(), &catalog);

    let mid_org = ctl_json(&daemon, &["org", "show", "mid"]);
    assert_eq!(mid_org["plan_version"], 1, "the org stays on its version");
    assert_eq!(mid_org["entitlements"]["latest_version"], 2);
    assert_eq!(
        entitlement(&mid_org, "teams"),
        (Value::from(7), "override".to_owned())
    );
    assert_eq!(
        entitlement(&mid_org, "keys_per_user"),
        (Value::from(10), "plan".to_owned())
    );
    assert_eq!(
        entitlement(&mid_org, "monthly_fee_usd"),
        (Value::from("49"), "plan".to_owned())
    );

    ctl_json(
        &daemon,
        &["--justification", "yearly review", "plan", "migrate", "mid"],
    );
    let mid_org = ctl_json(&daemon, &["org", "show", "mid"]);
    assert_eq!(mid_org["plan_version"], 2);
    assert_eq!(
        entitlement(&mid_org, "teams"),
        (Value::from(7), "override".to_owned()),
        "the override survives the migration"
    );
    assert_eq!(
        entitlement(&mid_org, "keys_per_user"),
        (Value::from(15), "plan".to_owned())
    );
    assert_eq!(
        entitlement(&mid_org, "monthly_fee_usd"),
        (Value::from("59"), "plan".to_owned())
    );

    // The org's credit ledger: amounts stay exact decimals, and a negative adjustment parses.
    let topup = ctl_json(
        &daemon,
        &[
            "--justification",
            "invoice 17",
            "credits",
            "topup",
            "mid",
            "--amount",
            "25.00",
        ],
    );
    assert_eq!(topup["balance_usd"], "25.00");
    let adjusted = ctl_json(
        &daemon,
        &[
            "--justification",
            "double charge",
            "credits",
            "adjust",
            "mid",
            "--amount",
            "-3.50",
        ],
    );
    assert_eq!(adjusted["seq"], 2);
    assert_eq!(adjusted["balance_usd"], "21.50");
    let balance = ctl_json(&daemon, &["credits", "show", "mid"]);
    assert_eq!(balance["balance_usd"], "21.50");
    assert_eq!(balance["minimum_balance_usd"], "5.00");
    let history = ctl_json(&daemon, &["credits", "history", "mid"]);
    let kinds: Vec<&str> = history["data"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["topup", "adjustment"]);

    // The human table names each value's source.
    let table = ctl(&daemon, "en", &["org", "show", "mid"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("7 (override)"), "{text}");
    assert!(text.contains("15 (plan pro v2)"), "{text}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/synaxis.db", dir.path().display());
    check_plans(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_on_postgres() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    check_plans(&database.url).await;
    database.drop_database().await.expect("drop database");
}
