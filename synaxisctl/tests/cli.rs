//! Runs the synaxisctl binary without a server: help, usage errors and a refused connection.

use std::error::Error;
use std::process::Output;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;

type TestResult = Result<(), Box<dyn Error>>;

/// An endpoint that refuses connections: port 9 (discard) on loopback, where nothing listens.
const UNREACHABLE_ENDPOINT: &str = "http://127.0.0.1:9";

/// Builds a command for the binary with an empty environment, so that no token, language or
/// proxy setting of the machine running the tests leaks in.
fn synaxisctl() -> Command {
    let mut command = cargo_bin_cmd!("synaxisctl");
    command.env_clear();
    command
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_exits_zero_and_lists_exit_codes() -> TestResult {
    let output = synaxisctl().arg("--help").output()?;

    assert_eq!(output.status.code(), Some(0));
    let help = stdout_of(&output);
    assert!(help.contains("Exit codes:"), "{help}");
    for line in [
        "0  Success.",
        "1  Failure",
        "2  Usage error",
        "3  Not found (HTTP 404)",
        "4  Denied",
        "5  Conflict or limit",
    ] {
        assert!(help.contains(line), "missing `{line}` in:\n{help}");
    }
    assert!(help.contains("SYNAXIS_TOKEN"), "{help}");
    assert!(help.contains("SYNAXIS_LANG"), "{help}");
    Ok(())
}

#[test]
fn help_hides_token_value() -> TestResult {
    let output = synaxisctl()
        .env("SYNAXIS_TOKEN", "op-secret-token")
        .arg("--help")
        .output()?;

    assert_eq!(output.status.code(), Some(0));
    assert!(!stdout_of(&output).contains("op-secret-token"));
    Ok(())
}

#[test]
fn missing_token_is_usage_error() -> TestResult {
    let output = synaxisctl()
        .args(["--endpoint", UNREACHABLE_ENDPOINT, "org", "list"])
        .output()?;

    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.starts_with("synaxisctl: "), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(stderr.contains("SYNAXIS_TOKEN"), "{stderr}");
    Ok(())
}

#[test]
fn missing_token_speaks_portuguese() -> TestResult {
    let output = synaxisctl()
        .env("SYNAXIS_LANG", "pt-BR")
        .args(["org", "list"])
        .output()?;

    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("token de operador ausente"), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
    Ok(())
}

#[test]
fn unreachable_endpoint_exits_one() -> TestResult {
    let output = synaxisctl()
        .args(["--endpoint", UNREACHABLE_ENDPOINT, "--token", "op-token"])
        .args(["org", "list"])
        .output()?;

    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with("synaxisctl: cannot connect to "),
        "{stderr}"
    );
    assert!(stderr.contains(UNREACHABLE_ENDPOINT), "{stderr}");
    assert!(stdout_of(&output).is_empty());
    Ok(())
}

#[test]
fn unreachable_endpoint_from_environment() -> TestResult {
    let output = synaxisctl()
        .env("SYNAXIS_ENDPOINT", UNREACHABLE_ENDPOINT)
        .env("SYNAXIS_TOKEN", "op-token")
        .env("LANG", "pt_BR.UTF-8")
        .args(["key", "list", "--output", "json"])
        .output()?;

    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("não foi possível conectar a"), "{stderr}");
    assert!(stderr.contains(UNREACHABLE_ENDPOINT), "{stderr}");
    Ok(())
}

#[test]
fn yaml_output_is_usage_error() -> TestResult {
    let output = synaxisctl()
        .args(["--token", "op-token", "--output", "yaml", "org", "list"])
        .output()?;

    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("yaml"));
    Ok(())
}

#[test]
fn invalid_arguments_are_usage_errors() -> TestResult {
    let cases: [&[&str]; 5] = [
        &["user", "show", "not-a-uuid"],
        &["user", "list"],
        &["org", "create"],
        &[
            "key",
            "create",
            "--user",
            "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "--expires-at",
            "tomorrow",
        ],
        &["--endpoint", "ftp://127.0.0.1:9", "org", "list"],
    ];
    for args in cases {
        let output = synaxisctl()
            .args(["--token", "op-token"])
            .args(args)
            .output()?;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
    Ok(())
}
