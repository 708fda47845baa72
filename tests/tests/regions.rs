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

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/regions_stream.py");
    let output = Command::new(python)
        .arg(script)
        .env(
            "SYNAXIS_BASE_URL",
            format!("{}/v1", deployment.region("us-east-1").url),
        )
        .env("SYNAXIS_KEY", &tenant.secret)
        .env("SYNAXIS_MODEL", "gpt-4o-mini")
        .env("SYNAXIS_CA_CERT", &deployment.ca_file)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "the SDK stream failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("script prints JSON");
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

#[tokio::test]
async fn health_follows_stopped_region() {
    let Some(deployment) = Deployment::load() else {
        return;
    };
    for observer in ["us-east-1", "sa-east-1"] {
        wait_for_status(&deployment, observer, "eu-west-1", "up").await;
    }
    // Two EU keys that us-east-1's replica holds; the second one's user consents to failover.
    let tenant = deployment.tenant("eu-west-1");
    let consenting = deployment.tenant("eu-west-1");
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
    let replica = deployment.database("us-east-1").await;
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let plain = replica_active(&replica, &tenant.key_id).await == Some(true);
        let consented = replica_consent(&replica, &consenting.key_id).await == Some(true);
        if plain && consented {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the EU keys did not reach us-east-1's replica"
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
    // Meanwhile us-east-1 answers the EU key, whose region cannot serve it, with 503, and an
    // unknown key with 401.
    let url = format!("{}/v1/chat/completions", deployment.region("us-east-1").url);
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let known = http
        .post(&url)
        .bearer_auth(&tenant.secret)
        .json(&body)
        .send()
        .await
        .expect("send with the EU key");
    assert_eq!(known.status().as_u16(), 503);
    assert_eq!(known.headers()["retry-after"], "5");
    assert_eq!(known.headers()["x-synaxis-region"], "us-east-1");
    let error: Value = known.json().await.expect("error body");
    assert_eq!(error["error"]["code"], "region_unavailable");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.contains("/v1/privacy/consent"), "{message}");
    let portuguese: Value = http
        .post(&url)
        .bearer_auth(&tenant.secret)
        .header("accept-language", "pt-BR")
        .json(&body)
        .send()
        .await
        .expect("send with the EU key in Portuguese")
        .json()
        .await
        .expect("error body");
    let message = portuguese["error"]["message"].as_str().expect("message");
    assert!(message.contains("consentimento"), "{message}");
    // The message for a user who consented does not ask for consent.
    let consented: Value = http
        .post(&url)
        .bearer_auth(&consenting.secret)
        .json(&body)
        .send()
        .await
        .expect("send with the consenting EU key")
        .json()
        .await
        .expect("error body");
    let message = consented["error"]["message"].as_str().expect("message");
    assert!(!message.contains("/v1/privacy/consent"), "{message}");
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
}
