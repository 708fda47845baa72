//! End-to-end tests of the three-region deployment that `deploy/local/up` starts, named by
//! `SYNAXIS_TEST_DEPLOYMENT` (its `deployment.json`). They run one at a time
//! (`.config/nextest.toml`), because one of them stops and starts a region.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use synaxis_tests::services::{PYTHON_ENV, service_url};
use tokio_rustls::rustls;

/// Path of the `deployment.json` that `deploy/local/up` writes.
const DEPLOYMENT_ENV: &str = "SYNAXIS_TEST_DEPLOYMENT";

/// Bound on the time a replicated change may take, from the spec of the key directory.
const PROPAGATION: Duration = Duration::from_secs(5);

/// Bound on the health probes' verdict. Three probes 500 ms apart with 500 ms timeouts take
/// about 3 s, and the rest is margin for a loaded machine.
const HEALTH_VERDICT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
struct Deployment {
    ca_file: PathBuf,
    regions: BTreeMap<String, Region>,
}

#[derive(Debug, Deserialize)]
struct Region {
    url: String,
    database_url: String,
    operator_token: String,
}

impl Deployment {
    fn load() -> Option<Self> {
        let path = service_url(DEPLOYMENT_ENV)?;
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {path}: {error}; run deploy/local/up"));
        Some(serde_json::from_str(&text).expect("deployment.json parses"))
    }

    fn region(&self, id: &str) -> &Region {
        &self.regions[id]
    }

    /// Runs `synaxisctl --output json ARGS` against `region` and returns its exit status and
    /// parsed output.
    fn ctl_status(&self, region: &str, args: &[&str]) -> (i32, Value) {
        let region = self.region(region);
        let output = Command::new(common::binary("synaxisctl"))
            .args(["--endpoint", &region.url, "--token", &region.operator_token])
            .args(["--output", "json"])
            .args(args)
            .env("SYNAXIS_CA_CERT", &self.ca_file)
            .env_remove("SYNAXIS_LANG")
            .output()
            .expect("run synaxisctl");
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "synaxisctl {args:?} printed no JSON ({error}): {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), value)
    }

    /// Runs `synaxisctl ARGS` against `region`, expecting it to fail, and returns its exit
    /// status and error message.
    fn ctl_error(&self, region: &str, args: &[&str]) -> (i32, String) {
        let region = self.region(region);
        let output = Command::new(common::binary("synaxisctl"))
            .args(["--endpoint", &region.url, "--token", &region.operator_token])
            .args(args)
            .env("SYNAXIS_CA_CERT", &self.ca_file)
            .env_remove("SYNAXIS_LANG")
            .output()
            .expect("run synaxisctl");
        let message = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code().unwrap_or(-1), message)
    }

    fn ctl(&self, region: &str, args: &[&str]) -> Value {
        let (status, value) = self.ctl_status(region, args);
        assert_eq!(status, 0, "synaxisctl {args:?} in {region} failed: {value}");
        value
    }

    /// Creates an org, a user and an inference key in `region`; returns their ids and the
    /// key's secret.
    fn tenant(&self, region: &str) -> Tenant {
        let slug = format!("regions-{}", uuid::Uuid::new_v4().simple());
        let org = self.ctl(
            region,
            &[
                "org",
                "create",
                "--name",
                "Regions",
                "--slug",
                &slug,
                "--plan",
                "enterprise",
            ],
        );
        let org_id = org["id"].as_str().expect("org id").to_owned();
        let email = format!("dev@{slug}.test");
        let user = self.ctl(
            region,
            &["user", "create", "--org", &org_id, "--email", &email],
        );
        let user_id = user["id"].as_str().expect("user id").to_owned();
        let key = self.ctl(region, &["key", "create", "--user", &user_id]);
        Tenant {
            org_id,
            user_id,
            key_id: key["key"]["id"].as_str().expect("key id").to_owned(),
            secret: key["secret"].as_str().expect("secret").to_owned(),
        }
    }

    fn http(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_file).expect("read the CA");
        let ca = reqwest::Certificate::from_pem(&pem).expect("CA certificate");
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("HTTP client")
    }

    async fn database(&self, region: &str) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.region(region).database_url)
            .await
            .expect("connect to the region's database")
    }
}

#[derive(Debug)]
struct Tenant {
    org_id: String,
    user_id: String,
    key_id: String,
    secret: String,
}

fn uuid(text: &str) -> uuid::Uuid {
    text.parse().expect("UUID")
}

/// Sends one chat completion with `secret` to `region` and returns its status.
async fn chat_status(
    deployment: &Deployment,
    http: &reqwest::Client,
    region: &str,
    secret: &str,
) -> u16 {
    http.post(format!(
        "{}/v1/chat/completions",
        deployment.region(region).url
    ))
    .bearer_auth(secret)
    .json(&serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
    }))
    .send()
    .await
    .expect("send a chat completion")
    .status()
    .as_u16()
}

/// Returns the replica entry of `key_id` in `pool` as JSON, if there is one.
async fn replica_entry(pool: &sqlx::PgPool, key_id: &str) -> Option<Value> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT entry FROM key_directory WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(pool)
            .await
            .expect("read the replica");
    row.map(|(entry,)| serde_json::from_str(&entry).expect("entry JSON"))
}

/// Returns the `active` flag of the replica entry of `key_id`, if there is one.
async fn replica_active(pool: &sqlx::PgPool, key_id: &str) -> Option<bool> {
    let entry = replica_entry(pool, key_id).await?;
    Some(entry["active"].as_bool().expect("active flag"))
}

/// Returns the consent flag of the replica entry of `key_id`, if there is one.
async fn replica_consent(pool: &sqlx::PgPool, key_id: &str) -> Option<bool> {
    let entry = replica_entry(pool, key_id).await?;
    Some(
        entry["consent"]["cross_border_failover"]
            .as_bool()
            .expect("consent flag"),
    )
}

/// Streams one chat completion with the official `openai` SDK through `region`, and returns
/// what the script saw: text, usage, and the region, request id and cross-border headers.
fn sdk_stream(deployment: &Deployment, python: &str, region: &str, secret: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/regions_stream.py");
    let output = Command::new(python)
        .arg(script)
        .env(
            "SYNAXIS_BASE_URL",
            format!("{}/v1", deployment.region(region).url),
        )
        .env("SYNAXIS_KEY", secret)
        .env("SYNAXIS_MODEL", "gpt-4o-mini")
        .env("SYNAXIS_CA_CERT", &deployment.ca_file)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "the SDK stream failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("script prints JSON")
}

async fn count(pool: &sqlx::PgPool, sql: &str, id: uuid::Uuid) -> i64 {
    let (count,): (i64,) = sqlx::query_as(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    count
}

#[tokio::test]
async fn forwarding_stores_only_at_home() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    let Some(python) = service_url(PYTHON_ENV) else {
        return;
    };
    let tenant = deployment.tenant("sa-east-1");
    assert!(tenant.secret.starts_with("sk-syn-br-"), "{}", tenant.secret);

    let seen = sdk_stream(&deployment, &python, "us-east-1", &tenant.secret);
    assert_eq!(seen["text"], "Hello from the fake upstream.");
    assert_eq!(seen["usage"], serde_json::json!([11, 7]));
    assert_eq!(seen["region"], "sa-east-1", "processed in the home region");
    let request_id = seen["request_id"].as_str().expect("request id").to_owned();

    // The home region stores the record; its writer batches records within 20 ms.
    let home = deployment.database("sa-east-1").await;
    let key_id = uuid(&tenant.key_id);
    let deadline = Instant::now() + PROPAGATION;
    let stored: Vec<(String, String, bool)> = loop {
        let rows = sqlx::query_as(
            "SELECT stored_region, request_id, stream FROM requests WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_all(&home)
        .await
        .expect("read the home region's records");
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        stored,
        vec![("sa-east-1".to_owned(), request_id, true)],
        "one streamed record, stored in sa-east-1"
    );

    // The other regions hold no row about the request, the key's user or its org.
    for region in ["us-east-1", "eu-west-1"] {
        let pool = deployment.database(region).await;
        let org_id = uuid(&tenant.org_id);
        let user_id = uuid(&tenant.user_id);
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM requests WHERE key_id = $1",
                key_id
            )
            .await,
            0,
            "{region}"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM requests WHERE org_id = $1",
                org_id
            )
            .await,
            0,
            "{region}"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM organizations WHERE id = $1",
                org_id
            )
            .await,
            0,
            "{region}"
        );
        assert_eq!(
            count(&pool, "SELECT count(*) FROM users WHERE id = $1", user_id).await,
            0,
            "{region}"
        );
        assert_eq!(
            count(&pool, "SELECT count(*) FROM api_keys WHERE id = $1", key_id).await,
            0,
            "{region}"
        );
    }
}

#[tokio::test]
async fn revocation_reaches_peers_within_5s() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    let http = deployment.http();
    let tenant = deployment.tenant("sa-east-1");
    let peers = ["us-east-1", "eu-west-1"];
    let mut replicas = Vec::new();
    for region in peers {
        replicas.push((region, deployment.database(region).await));
    }

    // The new key reaches both replicas as active.
    let deadline = Instant::now() + PROPAGATION;
    for (region, pool) in &replicas {
        while replica_active(pool, &tenant.key_id).await != Some(true) {
            assert!(
                Instant::now() < deadline,
                "the new key did not reach {region}'s replica in 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for region in peers {
        assert_eq!(
            chat_status(&deployment, &http, region, &tenant.secret).await,
            200,
            "{region}"
        );
    }

    deployment.ctl("sa-east-1", &["key", "revoke", &tenant.key_id]);
    let revoked = Instant::now();
    for (region, pool) in &replicas {
        loop {
            let refused = chat_status(&deployment, &http, region, &tenant.secret).await == 401;
            let inactive = replica_active(pool, &tenant.key_id).await == Some(false);
            if refused && inactive {
                break;
            }
            assert!(
                revoked.elapsed() < PROPAGATION,
                "{region} still accepts the revoked key (refused: {refused}, replica inactive: {inactive})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn peer_calls_need_credentials() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    let http = deployment.http();
    let url = &deployment.region("us-east-1").url;
    let now = chrono::Utc::now().timestamp();
    let forged = format!("region=sa-east-1, ts={now}, sig={}", "00".repeat(32));
    let cases = [
        ("GET", "/peer/v1/health", None),
        ("GET", "/peer/v1/health", Some(forged.as_str())),
        (
            "GET",
            "/peer/v1/health",
            Some("region=us-east-1, ts=0, sig=00"),
        ),
        ("POST", "/peer/v1/forward/v1/chat/completions", None),
        (
            "POST",
            "/peer/v1/forward/v1/chat/completions",
            Some(forged.as_str()),
        ),
    ];
    for (method, path, header) in cases {
        let mut request = http.request(method.parse().expect("method"), format!("{url}{path}"));
        if let Some(header) = header {
            request = request.header("x-synaxis-peer", header);
        }
        let response = request.send().await.expect("send a peer call");
        assert_eq!(
            response.status().as_u16(),
            401,
            "{method} {path} with {header:?}"
        );
        let body: Value = response.json().await.expect("error body");
        assert_eq!(
            body["error"]["code"], "peer_unauthorized",
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn forwarding_serves_signup_and_control() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    let http = deployment.http();
    let entry = &deployment.region("us-east-1").url;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("owner@{unique}.test");
    let org_name = format!("Loja {unique}");
    let response = http
        .post(format!("{entry}/control/v1/signup"))
        .json(&serde_json::json!({"email": email, "org_name": org_name, "region": "sa-east-1"}))
        .send()
        .await
        .expect("send the signup");
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.headers()["x-synaxis-region"], "sa-east-1");
    let created: Value = response.json().await.expect("signup answer");
    assert_eq!(created["org"]["primary_region"], "sa-east-1");
    let secret = created["secret"].as_str().expect("management key secret");
    assert!(secret.starts_with("sk-syn-br-"), "{secret}");
    let org_id = created["org"]["id"].as_str().expect("org id").to_owned();

    // The owner's management key works through us-east-1 as well.
    let orgs: Value = http
        .get(format!("{entry}/control/v1/orgs"))
        .bearer_auth(secret)
        .send()
        .await
        .expect("list orgs")
        .json()
        .await
        .expect("org list");
    assert_eq!(orgs["data"][0]["id"], org_id.as_str());

    let org = uuid(&org_id);
    let home = deployment.database("sa-east-1").await;
    let sql = "SELECT count(*) FROM organizations WHERE id = $1";
    assert_eq!(count(&home, sql, org).await, 1);
    for region in ["us-east-1", "eu-west-1"] {
        let pool = deployment.database(region).await;
        assert_eq!(count(&pool, sql, org).await, 0, "{region}");
        let audit = "SELECT count(*) FROM audit_log WHERE org_id = $1";
        assert_eq!(count(&pool, audit, org).await, 0, "{region}");
    }
}

#[tokio::test]
async fn residency_check_reads_every_region() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    let (status, reply) = deployment.ctl_status("us-east-1", &["compliance", "residency-check"]);
    assert_eq!(status, 0, "{reply}");
    let reports = reply["reports"].as_array().expect("reports");
    let mut regions: Vec<&str> = reports
        .iter()
        .filter_map(|report| report["region"].as_str())
        .collect();
    regions.sort_unstable();
    assert_eq!(regions, ["eu-west-1", "sa-east-1", "us-east-1"]);
    for report in reports {
        assert_eq!(report["violations"], serde_json::json!([]), "{report}");
        assert!(report.get("error").is_none(), "{report}");
    }
}

/// Returns a TLS client configuration that trusts the deployment's CA and offers only `versions`.
fn tls_client(
    ca_file: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).expect("read the CA") {
        roots
            .add(certificate.expect("CA certificate"))
            .expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn listener_refuses_tls_1_2() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    let url: url::Url = deployment
        .region("us-east-1")
        .url
        .parse()
        .expect("region URL");
    let address = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().expect("port")
    );
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");

    static ONLY_TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static ONLY_TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    let handshake = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(tls_client(&deployment.ca_file, versions)));
        let address = address.clone();
        let name = name.clone();
        async move {
            let stream = tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect");
            connector.connect(name, stream).await
        }
    };
    let tls13 = handshake(&ONLY_TLS13)
        .await
        .expect("a TLS 1.3 handshake succeeds");
    assert_eq!(
        tls13.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let error = handshake(&ONLY_TLS12)
        .await
        .expect_err("a client that offers only TLS 1.2 is refused");
    assert!(
        error.to_string().contains("protocol version") || error.to_string().contains("alert"),
        "unexpected handshake error: {error}"
    );
}

/// Starts a stopped region again when dropped, so that a failed assertion leaves the
/// deployment whole for the tests after it.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = region_script("start", self.0);
    }
}

fn region_script(action: &str, region: &str) -> std::process::ExitStatus {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/region");
    Command::new(script)
        .args([action, region])
        .status()
        .expect("run deploy/local/region")
}

/// Polls `observer`'s own view until it reports `region` with `status`.
async fn wait_for_status(deployment: &Deployment, observer: &str, region: &str, status: &str) {
    let deadline = Instant::now() + HEALTH_VERDICT;
    loop {
        let (_, reply) = deployment.ctl_status(observer, &["region", "status"]);
        let own_view = reply["views"]
            .as_array()
            .and_then(|views| views.iter().find(|view| view["observer"] == observer))
            .cloned()
            .unwrap_or(Value::Null);
        let seen = own_view["regions"]
            .as_array()
            .and_then(|regions| regions.iter().find(|health| health["region"] == region))
            .map(|health| health["status"].clone());
        if seen.as_ref().and_then(Value::as_str) == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{observer} still reports {region} as {seen:?}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns the regions for which `pool` stores records of `request_id`, one item per record.
async fn records_of(pool: &sqlx::PgPool, request_id: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT stored_region FROM requests WHERE request_id = $1 ORDER BY stored_region",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await
    .expect("read records");
    rows.into_iter().map(|(region,)| region).collect()
}

/// Polls `pool` until it stores exactly `expected` for `request_id`, or the time is up.
async fn wait_for_records(
    pool: &sqlx::PgPool,
    request_id: &str,
    expected: &[&str],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let seen = records_of(pool, request_id).await;
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "records of {request_id}: {seen:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns the transfer record of `request_id` in `pool`: regulation, citation, from, to.
async fn transfer_of(
    pool: &sqlx::PgPool,
    request_id: &str,
) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT regulation, citation, from_region, to_region FROM transfers WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await
    .expect("read transfers")
}

/// Checks that the residency check of every region finds no violation.
fn assert_residency_clean(deployment: &Deployment) {
    let (status, reply) = deployment.ctl_status("us-east-1", &["compliance", "residency-check"]);
    assert_eq!(status, 0, "{reply}");
    for report in reply["reports"].as_array().expect("reports") {
        assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    }
}

/// Time that held records take to reach their home region once it is up: the hand-off runs
/// every second, and the rest is margin for a loaded machine.
const HAND_OFF: Duration = Duration::from_secs(30);

#[tokio::test]
async fn failover_follows_health_and_consent() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    let Some(python) = service_url(PYTHON_ENV) else {
        return;
    };
    for observer in ["us-east-1", "sa-east-1"] {
        wait_for_status(&deployment, observer, "eu-west-1", "up").await;
    }
    // Three EU users: one without any basis, one who consents, one whose org has standard
    // contractual clauses.
    let plain = deployment.tenant("eu-west-1");
    let consenting = deployment.tenant("eu-west-1");
    let clauses = deployment.tenant("eu-west-1");
    // A consenting user whose key's budget covers two small requests.
    let budgeted = deployment.tenant("eu-west-1");
    deployment.ctl(
        "eu-west-1",
        &[
            "user",
            "consent",
            "grant",
            &budgeted.user_id,
            "--justification",
            "consent form on file",
        ],
    );
    deployment.ctl(
        "eu-west-1",
        &[
            "budget",
            "set",
            "--key",
            &budgeted.key_id,
            "--max-usd",
            "0.00001",
            "--justification",
            "two small requests",
        ],
    );
    let http = deployment.http();
    let consent = http
        .post(format!(
            "{}/v1/privacy/consent",
            deployment.region("us-east-1").url
        ))
        .bearer_auth(&consenting.secret)
        .json(&serde_json::json!({"scope": "cross_border_failover"}))
        .send()
        .await
        .expect("grant consent through us-east-1");
    assert_eq!(consent.status().as_u16(), 200);
    deployment.ctl(
        "eu-west-1",
        &[
            "org",
            "update",
            &clauses.org_id,
            "--transfer-mechanism",
            "standard-contractual-clauses",
            "--justification",
            "signed SCC on file",
        ],
    );
    let us_replica = deployment.database("us-east-1").await;
    let sa_replica = deployment.database("sa-east-1").await;
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let plain_ready = replica_active(&us_replica, &plain.key_id).await == Some(true);
        let consented = replica_consent(&us_replica, &consenting.key_id).await == Some(true);
        let mechanism = replica_entry(&sa_replica, &clauses.key_id)
            .await
            .map(|entry| entry["org_transfer_mechanism"].clone());
        let clauses_ready = mechanism == Some(serde_json::json!("standard_contractual_clauses"));
        let budget = replica_entry(&us_replica, &budgeted.key_id)
            .await
            .map(|entry| entry["budgets"][0]["max_usd"].clone());
        let budget_max = budget
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|max| max.parse::<rust_decimal::Decimal>().ok());
        let budget_ready = budget_max == Some(rust_decimal::Decimal::new(1, 5))
            && replica_consent(&us_replica, &budgeted.key_id).await == Some(true);
        if plain_ready && consented && clauses_ready && budget_ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the EU keys did not reach the replicas"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let restart = Restart("eu-west-1");
    assert!(
        region_script("stop", "eu-west-1").success(),
        "stop eu-west-1"
    );
    for observer in ["us-east-1", "sa-east-1"] {
        wait_for_status(&deployment, observer, "eu-west-1", "down").await;
    }

    // Without a basis: 503 with how to consent, in English and in Portuguese.
    let url = format!("{}/v1/chat/completions", deployment.region("us-east-1").url);
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let refused = http
        .post(&url)
        .bearer_auth(&plain.secret)
        .json(&body)
        .send()
        .await
        .expect("send with the EU key");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(refused.headers()["x-synaxis-region"], "us-east-1");
    assert!(refused.headers().get("x-synaxis-cross-border").is_none());
    let error: Value = refused.json().await.expect("error body");
    assert_eq!(error["error"]["code"], "region_unavailable");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.contains("/v1/privacy/consent"), "{message}");
    let portuguese: Value = http
        .post(&url)
        .bearer_auth(&plain.secret)
        .header("accept-language", "pt-BR")
        .json(&body)
        .send()
        .await
        .expect("send with the EU key in Portuguese")
        .json()
        .await
        .expect("error body");
    assert_eq!(portuguese["error"]["code"], "region_unavailable");
    let message = portuguese["error"]["message"].as_str().expect("message");
    assert!(message.contains("consentimento"), "{message}");
    assert_eq!(
        count(
            &us_replica,
            "SELECT count(*) FROM transfers WHERE user_id = $1",
            uuid(&plain.user_id)
        )
        .await,
        0,
        "no transfer is recorded for a refused request"
    );

    // With consent: the official SDK streams from us-east-1, marked cross-border, and the
    // transfer names GDPR Art. 49(1)(a).
    let seen = sdk_stream(&deployment, &python, "us-east-1", &consenting.secret);
    assert_eq!(seen["text"], "Hello from the fake upstream.");
    assert_eq!(seen["region"], "us-east-1");
    assert_eq!(seen["cross_border"], "true");
    let consented_id = seen["request_id"].as_str().expect("request id").to_owned();
    assert_eq!(
        transfer_of(&us_replica, &consented_id).await,
        vec![(
            "GDPR".to_owned(),
            "GDPR Art. 49(1)(a)".to_owned(),
            "eu-west-1".to_owned(),
            "us-east-1".to_owned()
        )]
    );
    wait_for_records(&us_replica, &consented_id, &["eu-west-1"], PROPAGATION).await;

    // The org's contractual clauses let sa-east-1 serve its user without consent.
    let clauses_id = format!("failover-{}", uuid::Uuid::new_v4().simple());
    let served = http
        .post(format!(
            "{}/v1/chat/completions",
            deployment.region("sa-east-1").url
        ))
        .bearer_auth(&clauses.secret)
        .header("x-request-id", &clauses_id)
        .json(&body)
        .send()
        .await
        .expect("send with the EU key of an org with clauses");
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.headers()["x-synaxis-cross-border"], "true");
    assert_eq!(served.headers()["x-synaxis-region"], "sa-east-1");
    assert_eq!(
        transfer_of(&sa_replica, &clauses_id).await,
        vec![(
            "GDPR".to_owned(),
            "GDPR Art. 46(2)(c)".to_owned(),
            "eu-west-1".to_owned(),
            "sa-east-1".to_owned()
        )]
    );
    wait_for_records(&sa_replica, &clauses_id, &["eu-west-1"], PROPAGATION).await;

    // The replicated budget of $0.00001 refuses a request whose worst case is larger, admits
    // small ones, and refuses once the records held here have used it up.
    let small = serde_json::json!({
        "model": "gpt-4o-mini",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let large = serde_json::json!({
        "model": "gpt-4o-mini",
        "max_tokens": 4000,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let budget_status = |body: &Value, request_id: &str| {
        let request = http
            .post(&url)
            .bearer_auth(&budgeted.secret)
            .header("x-request-id", request_id)
            .json(body);
        async move {
            let answer = request.send().await.expect("send with the budgeted key");
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.expect("JSON body");
            (status, body)
        }
    };
    let (status, error) = budget_status(&large, "budget-large").await;
    assert_eq!(status, 402, "{error}");
    assert_eq!(error["error"]["code"], "budget_exceeded");
    let mut budget_ids = Vec::new();
    for _ in 0..2 {
        let request_id = format!("budget-{}", uuid::Uuid::new_v4().simple());
        let (status, body) = budget_status(&small, &request_id).await;
        assert_eq!(status, 200, "{body}");
        wait_for_records(&us_replica, &request_id, &["eu-west-1"], PROPAGATION).await;
        budget_ids.push(request_id);
    }
    let (status, error) = budget_status(&small, "budget-over").await;
    assert_eq!(status, 402, "{error}");
    assert_eq!(error["error"]["code"], "budget_exceeded");
    // The model list costs nothing, so a used-up budget does not refuse it.
    let models = http
        .get(format!("{}/v1/models", deployment.region("us-east-1").url))
        .bearer_auth(&budgeted.secret)
        .send()
        .await
        .expect("list models through us-east-1");
    assert_eq!(models.status().as_u16(), 200);
    assert_eq!(models.headers()["x-synaxis-cross-border"], "true");

    let unknown = http
        .post(&url)
        .bearer_auth("sk-syn-eu-0123456789abcdefghijklmnopqrstuvwxyzABCD")
        .json(&body)
        .send()
        .await
        .expect("send with an unknown EU key");
    assert_eq!(unknown.status().as_u16(), 401);

    // While it is down, `region status` exits with status 1.
    let (status, _) = deployment.ctl_status("us-east-1", &["region", "status"]);
    assert_eq!(status, 1);

    assert!(
        region_script("start", "eu-west-1").success(),
        "start eu-west-1"
    );
    for observer in ["us-east-1", "sa-east-1"] {
        wait_for_status(&deployment, observer, "eu-west-1", "up").await;
    }
    drop(restart);
    let (status, reply) = deployment.ctl_status("us-east-1", &["region", "status"]);
    assert_eq!(status, 0, "every view reads every region up: {reply}");

    // The held records land in eu-west-1 once, and the regions that held them keep none.
    let eu = deployment.database("eu-west-1").await;
    let held = [&consented_id, &clauses_id, &budget_ids[0], &budget_ids[1]];
    for request_id in held {
        wait_for_records(&eu, request_id, &["eu-west-1"], HAND_OFF).await;
    }
    for (pool, request_id) in [
        (&us_replica, &consented_id),
        (&sa_replica, &clauses_id),
        (&us_replica, &budget_ids[0]),
        (&us_replica, &budget_ids[1]),
    ] {
        wait_for_records(pool, request_id, &[], HAND_OFF).await;
    }
    for request_id in held {
        assert_eq!(records_of(&eu, request_id).await, ["eu-west-1"]);
    }
    // The handed-off records' cost now counts against the key's budget at home.
    let (spent, recorded): (i64, rust_decimal::Decimal) = sqlx::query_as(
        "SELECT (SELECT spent_micros FROM budgets WHERE scope = 'key' AND scope_id = $1),
                (SELECT sum(cost_usd) FROM requests WHERE key_id = $1)",
    )
    .bind(uuid(&budgeted.key_id))
    .fetch_one(&eu)
    .await
    .expect("read the budget and the records");
    assert!(spent > 0, "the held records cost something");
    assert_eq!(rust_decimal::Decimal::new(spent, 6), recorded);

    // New requests go home again.
    let home_id = format!("home-{}", uuid::Uuid::new_v4().simple());
    let home = http
        .post(&url)
        .bearer_auth(&consenting.secret)
        .header("x-request-id", &home_id)
        .json(&body)
        .send()
        .await
        .expect("send after eu-west-1 returned");
    assert_eq!(home.status().as_u16(), 200);
    assert_eq!(home.headers()["x-synaxis-region"], "eu-west-1");
    assert!(home.headers().get("x-synaxis-cross-border").is_none());
    wait_for_records(&eu, &home_id, &["eu-west-1"], PROPAGATION).await;
    assert!(records_of(&us_replica, &home_id).await.is_empty());
    assert!(transfer_of(&us_replica, &home_id).await.is_empty());

    assert_residency_clean(&deployment);
}

#[tokio::test]
async fn failover_drill_loses_and_duplicates_nothing() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    for observer in ["us-east-1", "sa-east-1"] {
        wait_for_status(&deployment, observer, "eu-west-1", "up").await;
    }
    let (status, report) = deployment.ctl_status(
        "us-east-1",
        &[
            "failover",
            "drill",
            "--region",
            "eu-west-1",
            "--duration",
            "3s",
            "--justification",
            "quarterly failover drill",
        ],
    );
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["region"], "eu-west-1");
    assert_eq!(report["usage"]["lost"], 0, "{report:#}");
    assert_eq!(report["usage"]["duplicated"], 0, "{report:#}");
    assert_eq!(report["usage"]["still_held"], 0, "{report:#}");
    assert_eq!(report["usage"]["expected"], report["usage"]["landed"]);
    assert_eq!(report["unexpected"], serde_json::json!([]));
    assert_eq!(report["errors"], 0);
    assert_eq!(report["restored"], true);

    // Keys of each region, with and without consent, through each region but eu-west-1.
    let traffic = report["traffic"].as_array().expect("traffic");
    assert_eq!(traffic.len(), 3 * 2 * 2, "{report:#}");
    for group in traffic {
        let sent = group["sent"].as_u64().expect("sent");
        assert!(sent > 0, "{group}");
        let drained = group["home"] == "eu-west-1";
        let outcome = match (drained, group["consent"].as_bool().expect("consent")) {
            (true, true) => "failed_over",
            (true, false) => "refused_without_consent",
            (false, _) => "served_at_home",
        };
        assert_eq!(group[outcome].as_u64(), Some(sent), "{group}");
    }
    let failed_over = report["failed_over"].as_u64().expect("failed over");
    let served = failed_over + report["served_at_home"].as_u64().expect("served at home");
    assert!(failed_over > 0);
    assert_eq!(report["usage"]["expected"].as_u64(), Some(served));

    // The drill org is revoked in every region, and the audit log records the drill.
    let slug = format!("drill-{}", report["drill_id"].as_str().expect("drill id"));
    for region in ["eu-west-1", "us-east-1", "sa-east-1"] {
        let pool = deployment.database(region).await;
        let active: Vec<(bool,)> =
            sqlx::query_as("SELECT active FROM organizations WHERE slug = $1")
                .bind(&slug)
                .fetch_all(&pool)
                .await
                .expect("read the drill org");
        assert_eq!(active, vec![(false,)], "{region}");
    }
    let us = deployment.database("us-east-1").await;
    let entry: (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT result, target_id, justification FROM audit_log
         WHERE action = 'failover.drill' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&us)
    .await
    .expect("the drill's audit entry");
    let drill_id = report["drill_id"].as_str().expect("drill id");
    assert!(drill_id.starts_with("eu-west-1-"), "{drill_id}");
    assert_eq!(
        entry,
        (
            "success".to_owned(),
            Some(drill_id.to_owned()),
            Some("quarterly failover drill".to_owned())
        )
    );

    // Of two drills started together, one runs and the other is refused with 409.
    let start = |region: &str, drilled: &str| {
        let region = deployment.region(region);
        Command::new(common::binary("synaxisctl"))
            .args(["--endpoint", &region.url, "--token", &region.operator_token])
            .args(["failover", "drill", "--region", drilled, "--duration", "2s"])
            .args(["--justification", "overlapping drills"])
            .env("SYNAXIS_CA_CERT", &deployment.ca_file)
            .env_remove("SYNAXIS_LANG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start synaxisctl")
    };
    let first = start("us-east-1", "eu-west-1");
    let second = start("sa-east-1", "us-east-1");
    let mut outcomes: Vec<(i32, String)> = [first, second]
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("wait for synaxisctl");
            let message = String::from_utf8_lossy(&output.stderr).into_owned();
            (output.status.code().unwrap_or(-1), message)
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes[0].0, 0, "one drill runs: {outcomes:?}");
    assert_eq!(outcomes[1].0, 5, "the other is refused: {outcomes:?}");
    assert!(outcomes[1].1.contains("holds the regions"), "{outcomes:?}");

    // A drill of a region that does not exist names it and the regions there are.
    let (status, message) = deployment.ctl_error(
        "us-east-1",
        &[
            "failover",
            "drill",
            "--region",
            "mars-1",
            "--duration",
            "3s",
            "--justification",
            "typo",
        ],
    );
    assert_eq!(status, 1, "{message}");
    assert!(message.contains("`mars-1`"), "{message}");
    assert!(message.contains("eu-west-1"), "{message}");

    // Every region routes to eu-west-1 again.
    let (_, status) = deployment.ctl_status("us-east-1", &["region", "status"]);
    for view in status["views"].as_array().expect("views") {
        for health in view["regions"].as_array().expect("regions") {
            assert!(health.get("drained_until").is_none(), "{health}");
        }
    }

    assert_residency_clean(&deployment);
}
