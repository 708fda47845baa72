//! Start-up safeguards of `synaxisd` on the embedded default: private data files, and a pepper
//! that no longer matches the stored keys.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use synaxis_tests::fake_upstream::{FakeConfig, FakeUpstream};

use common::{Daemon, DaemonOptions, OPERATOR_TOKEN, binary, create_tenant};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_pepper_stops_start() {
    let upstream = FakeUpstream::start(FakeConfig::default())
        .await
        .expect("fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    // The daemon creates this directory; the test harness creates only `data_dir`.
    let database_dir = data_dir.join("store");
    let database_path = database_dir.join("synaxis.db");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: format!("sqlite://{}", database_path.display()),
        upstream_base_url: upstream.base_url(),
        log_level: "info".to_owned(),
        data_dir: data_dir.clone(),
        shutdown_timeout_secs: 10,
        ..DaemonOptions::default()
    });
    tokio::task::block_in_place(|| create_tenant(&daemon, "acme"));
    tokio::task::block_in_place(|| daemon.stop());

    assert_eq!(
        mode(&database_dir),
        0o700,
        "the database directory is private"
    );
    assert_eq!(mode(&database_path), 0o600, "the database file is private");

    let output = Command::new(binary("synaxisd"))
        .arg("--config")
        .arg(data_dir.join("synaxisd.toml"))
        .arg("serve")
        .env("SYNAXIS_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env(
            "SYNAXIS_KEY_PEPPER",
            "another-pepper-0123456789abcdefghijklmnopqrstuvw",
        )
        .env_remove("RUST_LOG")
        .output()
        .expect("run synaxisd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("pepper does not match"), "{stderr}");
    assert!(
        stderr.contains("SYNAXIS_KEY_PEPPER"),
        "the error names where the pepper came from: {stderr}"
    );
}
