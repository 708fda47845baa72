//! Shared helpers of the end-to-end tests: the daemon started as a real process, and the CLI.

// Each test binary uses a part of these helpers, and they fail a test by panicking.
#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdefghijklmnop";
pub const PEPPER: &str = "test-pepper-0123456789abcdefghijklmnopqrstuvwxyz";
pub const UPSTREAM_KEY: &str = "sk-upstream-test-key";
pub const UPSTREAM_KEY_ENV: &str = "SYNAXIS_TEST_UPSTREAM_KEY";

/// Path of a binary of this workspace, built next to the test executables.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Settings of a daemon started for a test.
#[derive(Debug)]
pub struct DaemonOptions {
    pub database_url: String,
    pub upstream_base_url: String,
    /// A `tracing` filter; it must keep info events, which carry the listening address.
    pub log_level: String,
    pub data_dir: PathBuf,
    pub shutdown_timeout_secs: u64,
    /// TOML appended to the generated config, such as more upstreams and models.
    pub extra_config: String,
    /// Environment variables set for the daemon besides the secrets.
    pub extra_env: Vec<(String, String)>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            upstream_base_url: String::new(),
            log_level: "info".to_owned(),
            data_dir: PathBuf::new(),
            shutdown_timeout_secs: 10,
            extra_config: String::new(),
            extra_env: Vec::new(),
        }
    }
}

/// A `synaxisd serve` process with JSON logs on standard error, collected as they arrive.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub address: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub fn start(options: &DaemonOptions) -> Self {
        std::fs::create_dir_all(&options.data_dir).expect("data dir");
        let config_path = options.data_dir.join("synaxisd.toml");
        std::fs::write(&config_path, config_text(options)).expect("write config");

        let mut child = Command::new(binary("synaxisd"))
            .args(["--config"])
            .arg(&config_path)
            .args(["serve"])
            .env("SYNAXIS_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("SYNAXIS_KEY_PEPPER", PEPPER)
            .env(UPSTREAM_KEY_ENV, UPSTREAM_KEY)
            .envs(options.extra_env.iter().map(|(name, value)| (name, value)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start synaxisd");

        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr pipe");
        let stdout = child.stdout.take().expect("stdout pipe");
        let readers = vec![
            collect_lines(stderr, logs.clone(), Some(address_tx)),
            collect_lines(stdout, logs.clone(), None),
        ];

        let address = match address_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let logs = logs
                    .lock()
                    .map(|lines| lines.join("\n"))
                    .unwrap_or_default();
                panic!("synaxisd did not report a listening address; its output:\n{logs}");
            }
        };
        Self {
            child,
            address,
            logs,
            readers,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends SIGTERM, waits for the process to exit, and returns its whole output.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let exit = self.child.wait().expect("wait for synaxisd");
        assert!(exit.success(), "synaxisd exited with {exit} after SIGTERM");
        for reader in self.readers.drain(..) {
            reader.join().expect("log reader");
        }
        self.logs
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// Sends SIGKILL, so that the process ends as in a crash without releasing anything, and
    /// waits for it to exit.
    pub fn kill(mut self) {
        self.child.kill().expect("send SIGKILL to synaxisd");
        self.child.wait().expect("wait for synaxisd");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    address_tx: Option<mpsc::Sender<SocketAddr>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &address_tx
                && let Some(address) = listening_address(&line)
            {
                let _ = tx.send(address);
            }
            if let Ok(mut lines) = logs.lock() {
                lines.push(line);
            }
        }
    })
}

/// Reads the address of the `listening` event of a JSON log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let event: Value = serde_json::from_str(line).ok()?;
    if event.get("message")?.as_str()? != "listening" {
        return None;
    }
    event.get("address")?.as_str()?.parse().ok()
}

fn config_text(options: &DaemonOptions) -> String {
    format!(
        r#"
[server]
region = "us-east-1"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
shutdown_timeout_secs = {shutdown_timeout_secs}

[log]
level = "{log_level}"
format = "json"

[database]
url = "{database_url}"
max_connections = 4

[regions.eu-west-1]
key_prefix = "eu"
jurisdiction = "EU"
peer_url = "https://eu-west-1.synaxis.test"

[regions.us-east-1]
key_prefix = "us"
jurisdiction = "US"
peer_url = "https://us-east-1.synaxis.test"

[regions.sa-east-1]
key_prefix = "br"
jurisdiction = "BR"
peer_url = "https://sa-east-1.synaxis.test"

[upstreams.fake]
kind = "openai"
base_url = "{upstream}"
api_key_env = "{UPSTREAM_KEY_ENV}"

[models.gpt-4o-mini]
upstream = "fake"
upstream_model = "fake-small"
input_per_million = "0.15"
output_per_million = "0.60"

[models.gpt-4o]
upstream = "fake"
input_per_million = "2.50"
output_per_million = "10.00"

# Nothing listens on the discard port of the loopback address.
[upstreams.down]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
connect_timeout_secs = 2

[models.unreachable]
upstream = "down"
input_per_million = "1"
output_per_million = "1"
"#,
        data_dir = options.data_dir.display(),
        log_level = options.log_level,
        database_url = options.database_url,
        upstream = options.upstream_base_url,
        shutdown_timeout_secs = options.shutdown_timeout_secs,
    ) + &options.extra_config
}

/// Runs `synaxisctl --output json ARGS` against the daemon and returns its parsed output.
pub fn ctl_json(daemon: &Daemon, args: &[&str]) -> Value {
    let output = Command::new(binary("synaxisctl"))
        .args([
            "--endpoint",
            &daemon.url(),
            "--token",
            OPERATOR_TOKEN,
            "--output",
            "json",
        ])
        .args(args)
        .env_remove("SYNAXIS_LANG")
        .output()
        .expect("run synaxisctl");
    assert!(
        output.status.success(),
        "synaxisctl {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "synaxisctl {args:?} printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// An org, a user and a key made through the CLI.
#[derive(Debug)]
pub struct Tenant {
    pub org_id: String,
    pub user_id: String,
    pub key_id: String,
    pub secret: String,
}

pub fn create_tenant(daemon: &Daemon, slug: &str) -> Tenant {
    let org = ctl_json(
        daemon,
        &[
            "org",
            "create",
            "--name",
            "Acme Labs",
            "--slug",
            slug,
            "--plan",
            "enterprise",
        ],
    );
    let org_id = org["id"].as_str().expect("org id").to_owned();
    let email = format!("dev@{slug}.test");
    let user = ctl_json(
        daemon,
        &["user", "create", "--org", &org_id, "--email", &email],
    );
    let user_id = user["id"].as_str().expect("user id").to_owned();
    let created = ctl_json(
        daemon,
        &["key", "create", "--user", &user_id, "--name", "e2e"],
    );
    Tenant {
        org_id,
        user_id,
        key_id: created["key"]["id"].as_str().expect("key id").to_owned(),
        secret: created["secret"].as_str().expect("secret").to_owned(),
    }
}
