//! `synaxisd` refuses an invalid config: it exits non-zero and names the bad key.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

use std::process::Command;

const VALID: &str = include_str!("../../config/synaxisd.toml");

/// Runs `synaxisd check-config` on `text` and returns its exit code and standard error.
fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("synaxisd.toml");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_synaxisd"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_remove("SYNAXIS_SERVER__LISTEN")
        .env_remove("SYNAXIS_DATABASE__URL")
        .output()
        .expect("run synaxisd");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_rejected(text: &str, key: &str) {
    let (code, stderr) = check(text);
    assert_eq!(
        code,
        Some(78),
        "exit code for an invalid config; stderr: {stderr}"
    );
    assert!(stderr.contains(key), "the error names `{key}`: {stderr}");
}

#[test]
fn shipped_config_is_valid() {
    let (code, stderr) = check(VALID);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn unknown_key_is_rejected() {
    let text = VALID.replace("[log]\n", "[log]\nverbosity = 3\n");
    assert_rejected(&text, "verbosity");
}

#[test]
fn bad_region_is_rejected() {
    let text = VALID.replace("region = \"us-east-1\"", "region = \"moon-base-1\"");
    assert_rejected(&text, "server.region");
}

#[test]
fn malformed_url_is_rejected() {
    let text = VALID.replace("https://api.openai.com/v1", "api.openai.com without scheme");
    assert_rejected(&text, "base_url");
}

#[test]
fn float_price_is_rejected() {
    let text = VALID.replace("input_per_million = \"0.15\"", "input_per_million = 0.15");
    assert_rejected(&text, "input_per_million");
}

#[test]
fn environment_override_is_validated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("synaxisd.toml");
    std::fs::write(&path, VALID).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_synaxisd"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("SYNAXIS_SERVER__LISTEN", "not-an-address")
        .output()
        .expect("run synaxisd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.to_lowercase().contains("server.listen"), "{stderr}");
}

#[test]
fn missing_file_is_rejected() {
    let output = Command::new(env!("CARGO_BIN_EXE_synaxisd"))
        .args(["--config", "/nonexistent/synaxisd.toml", "check-config"])
        .output()
        .expect("run synaxisd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78));
    assert!(stderr.contains("/nonexistent/synaxisd.toml"), "{stderr}");
}

#[test]
fn postgres_without_secrets_is_rejected() {
    let text = VALID.replace(
        "sqlite://./data/synaxis.db",
        "postgres://synaxis@127.0.0.1:1/synaxis",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("synaxisd.toml");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_synaxisd"))
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .env_remove("SYNAXIS_KEY_PEPPER")
        .env_remove("SYNAXIS_OPERATOR_TOKEN")
        .output()
        .expect("run synaxisd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("SYNAXIS_KEY_PEPPER"), "{stderr}");
    assert_eq!(
        stderr.matches("is not set").count(),
        1,
        "the error is printed once: {stderr}"
    );
}
