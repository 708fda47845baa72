//! Runs the synaxisctl binary without a server: help, usage errors, a refused connection,
//! and the contexts of the config file.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn Error>>;

/// An endpoint that refuses connections: port 9 (discard) on loopback, where nothing listens.
const UNREACHABLE_ENDPOINT: &str = "http://127.0.0.1:9";

/// More endpoints that refuse connections, each with its own address, so that an error
/// message shows which one was used. Linux routes all of 127.0.0.0/8 to the loopback
/// interface.
const CONTEXT_ENDPOINT: &str = "http://127.0.0.2:9";
const ENVIRONMENT_ENDPOINT: &str = "http://127.0.0.3:9";

const ORG_ID: &str = "5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11";

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

/// A temporary `XDG_CONFIG_HOME`, deleted when dropped.
struct ConfigHome {
    directory: TempDir,
}

impl ConfigHome {
    fn new() -> Result<Self, Box<dyn Error>> {
        Ok(Self {
            directory: tempfile::tempdir()?,
        })
    }

    fn config_file(&self) -> PathBuf {
        self.directory.path().join("synaxis").join("config.toml")
    }

    /// Builds a command whose config file is in this directory.
    fn synaxisctl(&self) -> Command {
        let mut command = synaxisctl();
        command.env("XDG_CONFIG_HOME", self.directory.path());
        command
    }

    /// Runs the command and fails unless it exits with `expected`.
    fn run(&self, args: &[&str], expected: i32) -> Result<Output, Box<dyn Error>> {
        let output = self.synaxisctl().args(args).output()?;
        assert_eq!(
            output.status.code(),
            Some(expected),
            "{args:?}: {}",
            stderr_of(&output)
        );
        Ok(output)
    }

    fn add_context(&self, name: &str, endpoint: &str, token: &str) -> TestResult {
        self.run(
            &[
                "context",
                "add",
                name,
                "--endpoint",
                endpoint,
                "--token",
                token,
            ],
            0,
        )?;
        Ok(())
    }
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Result<u32, Box<dyn Error>> {
    use std::os::unix::fs::PermissionsExt;

    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

#[test]
fn help_exits_zero_and_lists_exit_codes() -> TestResult {
    let output = synaxisctl().arg("--help").output()?;

    assert_eq!(output.status.code(), Some(0));
    let help = stdout_of(&output);
    assert!(help.starts_with("Manage organizations, teams"), "{help}");
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
    assert!(stderr.contains("token ausente"), "{stderr}");
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
    let cases: [&[&str]; 14] = [
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
        &["org", "update", "acme"],
        &[
            "org",
            "update",
            "acme",
            "--allow-model",
            "a",
            "--allow-all-models",
        ],
        &["user", "update", ORG_ID, "--locale", "fr"],
        &["key", "create", "--user", ORG_ID, "--scope", "admin"],
        &["key", "rotate", ORG_ID, "--grace", "60"],
        &["key", "rotate", ORG_ID, "--grace", "500ms"],
        &["audit", "list", "--limit", "0"],
        &["audit", "list", "--after", "-1"],
        &["--justification", "two\nlines", "org", "list"],
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

#[test]
fn missing_required_flag_names_flag() -> TestResult {
    let cases: [(&[&str], &str); 7] = [
        (&["org", "create"], "missing --name: pass --name NAME"),
        (
            &["user", "create", "--email", "a@b.c"],
            "missing --org: pass --org ORG_ID",
        ),
        (
            &["user", "create", "--org", ORG_ID],
            "missing --email: pass --email EMAIL",
        ),
        (&["user", "list"], "missing --org: pass --org ORG_ID"),
        (
            &["team", "create", "--org", ORG_ID],
            "missing --name: pass --name NAME",
        ),
        (&["team", "list"], "missing --org: pass --org ORG_ID"),
        (&["key", "create"], "missing --user: pass --user USER_ID"),
    ];
    for (args, message) in cases {
        let output = synaxisctl()
            .args(["--endpoint", UNREACHABLE_ENDPOINT, "--token", "op-token"])
            .args(args)
            .output()?;

        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr_of(&output),
            format!("synaxisctl: {message}\n"),
            "{args:?}"
        );
        assert!(stdout_of(&output).is_empty(), "{args:?}");
    }
    Ok(())
}

#[test]
fn missing_required_flag_speaks_portuguese() -> TestResult {
    let output = synaxisctl()
        .env("SYNAXIS_LANG", "pt-BR")
        .args(["--endpoint", UNREACHABLE_ENDPOINT, "--token", "op-token"])
        .args(["org", "create"])
        .output()?;

    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr_of(&output),
        "synaxisctl: --name ausente: use --name NAME\n"
    );
    Ok(())
}

#[test]
fn invalid_token_variable_is_usage_error() -> TestResult {
    let output = synaxisctl()
        .env("SYNAXIS_TOKEN", "has space")
        .args(["--endpoint", UNREACHABLE_ENDPOINT, "org", "list"])
        .output()?;

    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("invalid SYNAXIS_TOKEN"), "{stderr}");
    assert!(!stderr.contains("has space"), "{stderr}");
    Ok(())
}

#[cfg(unix)]
#[test]
fn context_round_trip() -> TestResult {
    let home = ConfigHome::new()?;

    home.add_context("prod", CONTEXT_ENDPOINT, "ctx-secret-token")?;
    home.add_context("local", UNREACHABLE_ENDPOINT, "local-secret-token")?;

    let path = home.config_file();
    assert_eq!(file_mode(&path)?, 0o600);
    let text = fs::read_to_string(&path)?;
    assert!(text.contains("current = \"prod\""), "{text}");
    assert!(text.contains("[contexts.prod]"), "{text}");
    assert!(text.contains("token = \"ctx-secret-token\""), "{text}");

    let output = home.run(&["context", "use", "local"], 0)?;
    assert!(stdout_of(&output).contains("`local`"));
    assert_eq!(file_mode(&path)?, 0o600);

    let output = home.run(&["context", "list"], 0)?;
    let table = stdout_of(&output);
    assert!(!table.contains("secret-token"), "{table}");
    let local_row = table
        .lines()
        .find(|line| line.contains("local"))
        .ok_or("no row for local")?;
    assert!(local_row.contains('*'), "{table}");
    let prod_row = table
        .lines()
        .find(|line| line.contains("prod"))
        .ok_or("no row for prod")?;
    assert!(!prod_row.contains('*'), "{table}");

    let output = home.run(&["context", "list", "--output", "json"], 0)?;
    assert!(!stdout_of(&output).contains("secret-token"));
    let listing: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(listing["current"], "local");
    assert_eq!(listing["data"][0]["name"], "local");
    assert_eq!(listing["data"][0]["current"], true);
    assert_eq!(listing["data"][0]["has_token"], true);
    assert_eq!(listing["data"][1]["name"], "prod");
    assert_eq!(listing["data"][1]["current"], false);
    Ok(())
}

#[test]
fn context_supplies_endpoint_and_token() -> TestResult {
    let home = ConfigHome::new()?;
    home.add_context("prod", CONTEXT_ENDPOINT, "ctx-token")?;

    let output = home.run(&["org", "list"], 1)?;

    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("cannot connect to http://127.0.0.2:9"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn endpoint_flag_beats_environment_and_context() -> TestResult {
    let home = ConfigHome::new()?;
    home.add_context("prod", CONTEXT_ENDPOINT, "ctx-token")?;

    let flag = home
        .synaxisctl()
        .env("SYNAXIS_ENDPOINT", ENVIRONMENT_ENDPOINT)
        .args(["--endpoint", UNREACHABLE_ENDPOINT, "org", "list"])
        .output()?;
    let environment = home
        .synaxisctl()
        .env("SYNAXIS_ENDPOINT", ENVIRONMENT_ENDPOINT)
        .args(["org", "list"])
        .output()?;

    assert_eq!(flag.status.code(), Some(1));
    assert!(
        stderr_of(&flag).contains("http://127.0.0.1:9:"),
        "{}",
        stderr_of(&flag)
    );
    assert_eq!(environment.status.code(), Some(1));
    assert!(
        stderr_of(&environment).contains("http://127.0.0.3:9:"),
        "{}",
        stderr_of(&environment)
    );
    Ok(())
}

#[test]
fn context_without_token_needs_token() -> TestResult {
    let home = ConfigHome::new()?;
    home.run(
        &[
            "context",
            "add",
            "local",
            "--endpoint",
            UNREACHABLE_ENDPOINT,
        ],
        0,
    )?;

    let output = home.run(&["org", "list"], 2)?;

    assert!(stderr_of(&output).contains("missing token"));
    Ok(())
}

#[test]
fn context_add_ignores_environment() -> TestResult {
    let home = ConfigHome::new()?;

    let output = home
        .synaxisctl()
        .env("SYNAXIS_ENDPOINT", ENVIRONMENT_ENDPOINT)
        .env("SYNAXIS_TOKEN", "env-secret-token")
        .args(["context", "add", "prod"])
        .output()?;

    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr_of(&output),
        "synaxisctl: missing --endpoint: pass --endpoint URL\n"
    );
    assert!(!home.config_file().exists());

    home.synaxisctl()
        .env("SYNAXIS_TOKEN", "env-secret-token")
        .args(["context", "add", "prod", "--endpoint", CONTEXT_ENDPOINT])
        .assert()
        .code(0);
    let text = fs::read_to_string(home.config_file())?;
    assert!(!text.contains("env-secret-token"), "{text}");
    Ok(())
}

#[test]
fn context_add_existing_name_conflicts() -> TestResult {
    let home = ConfigHome::new()?;
    home.add_context("prod", CONTEXT_ENDPOINT, "old-token")?;

    let output = home.run(
        &["context", "add", "prod", "--endpoint", UNREACHABLE_ENDPOINT],
        5,
    )?;
    assert!(stderr_of(&output).contains("--replace"));
    assert!(fs::read_to_string(home.config_file())?.contains("old-token"));

    home.run(
        &[
            "context",
            "add",
            "prod",
            "--replace",
            "--endpoint",
            UNREACHABLE_ENDPOINT,
            "--token",
            "new-token",
        ],
        0,
    )?;
    let text = fs::read_to_string(home.config_file())?;
    assert!(text.contains("new-token"), "{text}");
    assert!(!text.contains("old-token"), "{text}");
    Ok(())
}

#[test]
fn context_use_unknown_name_is_not_found() -> TestResult {
    let home = ConfigHome::new()?;
    home.add_context("prod", CONTEXT_ENDPOINT, "ctx-token")?;

    let output = home.run(&["context", "use", "staging"], 3)?;

    let stderr = stderr_of(&output);
    assert!(stderr.contains("`staging`"), "{stderr}");
    assert!(
        stderr.contains(&home.config_file().display().to_string()),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn context_remove_current_leaves_none_current() -> TestResult {
    let home = ConfigHome::new()?;
    home.add_context("prod", CONTEXT_ENDPOINT, "ctx-token")?;

    home.run(&["context", "remove", "prod"], 0)?;

    let output = home.run(&["context", "list", "--output", "json"], 0)?;
    let listing: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(listing["current"], Value::Null);
    assert_eq!(listing["data"], Value::Array(Vec::new()));
    home.run(&["org", "list"], 2)?;
    home.run(&["context", "remove", "prod"], 3)?;
    Ok(())
}

#[test]
fn config_falls_back_to_home() -> TestResult {
    let home = tempfile::tempdir()?;

    synaxisctl()
        .env("HOME", home.path())
        .args(["context", "add", "prod", "--endpoint", CONTEXT_ENDPOINT])
        .assert()
        .code(0);

    assert!(home.path().join(".config/synaxis/config.toml").is_file());
    Ok(())
}

#[test]
fn corrupt_config_is_reported_and_unchanged() -> TestResult {
    let home = ConfigHome::new()?;
    let path = home.config_file();
    fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    let corrupt = b"current = \"prod\"\n[contexts.prod\nendpoint = \"http://x\"\n".to_vec();
    fs::write(&path, &corrupt)?;

    let cases: [(&[&str], i32); 4] = [
        (&["org", "list"], 2),
        (&["context", "list"], 2),
        (&["context", "use", "prod"], 2),
        (
            &[
                "context",
                "add",
                "new",
                "--endpoint",
                UNREACHABLE_ENDPOINT,
                "--token",
                "t",
            ],
            2,
        ),
    ];
    for (args, code) in cases {
        let output = home.run(args, code)?;

        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&path.display().to_string()),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("invalid"), "{args:?}: {stderr}");
        assert_eq!(fs::read(&path)?, corrupt, "{args:?} changed the file");
    }
    Ok(())
}

#[test]
fn flags_skip_corrupt_config() -> TestResult {
    let home = ConfigHome::new()?;
    let path = home.config_file();
    fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    fs::write(&path, "not toml [")?;

    let output = home.run(
        &[
            "--endpoint",
            UNREACHABLE_ENDPOINT,
            "--token",
            "t",
            "org",
            "list",
        ],
        1,
    )?;

    assert!(stderr_of(&output).contains("cannot connect to"));
    Ok(())
}

#[cfg(unix)]
#[test]
fn token_from_readable_config_warns() -> TestResult {
    use std::os::unix::fs::PermissionsExt;

    let home = ConfigHome::new()?;
    home.add_context("prod", CONTEXT_ENDPOINT, "ctx-token")?;
    let path = home.config_file();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;

    let output = home.run(&["org", "list"], 1)?;

    let stderr = stderr_of(&output);
    assert!(stderr.contains("warning: other users may read"), "{stderr}");
    assert!(stderr.contains("(mode 644)"), "{stderr}");
    Ok(())
}
