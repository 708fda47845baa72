//! Runs synaxisctl in a pseudo-terminal, where a missing required flag is asked for.
//!
//! rexpect turns each byte of the output into one `char`, so the expected strings are ASCII
//! parts of the messages.

#![cfg(unix)]

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

type TestResult = Result<(), Box<dyn Error>>;

/// Maximum wait for each expected output, in milliseconds.
const EXPECT_TIMEOUT_MS: u64 = 5_000;

/// Maximum wait for the process to exit after its output ends.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// An endpoint that refuses connections: port 9 (discard) on loopback, where nothing listens.
const UNREACHABLE_ENDPOINT: &str = "http://127.0.0.1:9";

/// Starts the binary in a pseudo-terminal with an empty environment, so that no token,
/// language or config file of the machine running the tests leaks in.
fn spawn(args: &[&str], language: &str) -> Result<PtySession, rexpect::error::Error> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_synaxisctl"));
    command
        .env_clear()
        .env("TERM", "dumb")
        .env("SYNAXIS_LANG", language)
        .args(args);
    rexpect::session::spawn_command(command, Some(EXPECT_TIMEOUT_MS))
}

/// Waits for the process to exit, at most `EXIT_TIMEOUT`, and returns its exit code.
fn exit_code(session: &PtySession) -> Result<i32, Box<dyn Error>> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match session.process().status() {
            Some(WaitStatus::Exited(_, code)) => return Ok(code),
            Some(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            status => return Err(format!("synaxisctl did not exit in time: {status:?}").into()),
        }
    }
}

#[test]
fn org_create_prompts_for_missing_name() -> TestResult {
    let mut session = spawn(
        &[
            "org",
            "create",
            "--endpoint",
            UNREACHABLE_ENDPOINT,
            "--token",
            "t",
        ],
        "en",
    )?;

    session.exp_string("Organization name")?;
    session.send_line("Acme Labs")?;

    // The command sends the request only after it accepted the typed name, and the request
    // fails because nothing listens on the endpoint.
    session.exp_string("synaxisctl: cannot connect to http://127.0.0.1:9")?;
    session.exp_eof()?;
    assert_eq!(exit_code(&session)?, 1);
    Ok(())
}

#[test]
fn user_create_reprompts_invalid_org_id() -> TestResult {
    let mut session = spawn(
        &[
            "user",
            "create",
            "--endpoint",
            UNREACHABLE_ENDPOINT,
            "--token",
            "t",
        ],
        "pt-BR",
    )?;

    session.exp_string("Id da organiza")?;
    session.send_line("not-a-uuid")?;
    session.exp_string("invalid UUID")?;
    session.send_line("5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11")?;
    session.exp_string("E-mail do usu")?;
    session.send_line("dev@example.com")?;

    session.exp_string("conectar a http://127.0.0.1:9")?;
    session.exp_eof()?;
    assert_eq!(exit_code(&session)?, 1);
    Ok(())
}

#[test]
fn limits_set_prompts_for_justification() -> TestResult {
    let mut session = spawn(
        &[
            "limits",
            "set",
            "--org",
            "acme",
            "--file",
            "/dev/null",
            "--endpoint",
            UNREACHABLE_ENDPOINT,
            "--token",
            "t",
        ],
        "en",
    )?;

    session.exp_string("Justification, kept in the audit log")?;
    session.send_line("ticket OPS-7")?;

    session.exp_string("synaxisctl: cannot connect to http://127.0.0.1:9")?;
    session.exp_eof()?;
    assert_eq!(exit_code(&session)?, 1);
    Ok(())
}
