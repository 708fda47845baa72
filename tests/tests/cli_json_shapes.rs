//! `synaxisctl --output json` of every list and show command prints JSON of a stable shape:
//! the same field names with the same JSON types, as `synaxis_shared::api` defines them.
//!
//! A shape names the JSON type of each field:
//!
//! - `string`, `integer`, `boolean`, `null`;
//! - `uuid`: a string that parses as a UUID;
//! - `timestamp`: an RFC 3339 string;
//! - `hex64`: a string of 64 lowercase hexadecimal digits (a SHA-256 hash);
//! - `T | null`: a field that may be null;
//! - `[T]`: a non-empty array whose items all have shape `T`. The test data fills every
//!   array, so that the item shape is checked;
//! - `{...}`: an object with exactly these fields, no more and no fewer. A field marked `?` is
//!   left out when it is not set; the test data sets every one.
//!
//! The shapes:
//!
//! ```text
//! ORG    = {id: uuid, slug: string, name: string, primary_region: string,
//!           allowed_models: [string], active: boolean, created_at: timestamp}
//! TEAM   = {id: uuid, org_id: uuid, name: string, allowed_models: [string],
//!           created_at: timestamp}
//! USER   = {id: uuid, org_id: uuid, team_id: uuid | null, email: string, role: string,
//!           locale: string, data_residency_region: string, active: boolean,
//!           created_at: timestamp}
//! KEY    = {id: uuid, org_id: uuid, user_id: uuid, name: string, scope: string,
//!           region: string, allowed_models: [string], rpm_limit: integer | null,
//!           tpm_limit: integer | null, active: boolean,
//!           expires_at: timestamp | null, created_at: timestamp,
//!           rotated_at: timestamp | null, previous_secret_expires_at: timestamp | null,
//!           revoked_at: timestamp | null}
//! AUDIT  = {seq: integer, id: uuid, at: timestamp, actor_kind: string, actor_id: string,
//!           action: string, target_kind: string, target_id: string | null,
//!           org_id: uuid | null, source_ip: string | null, region: string,
//!           result: string, justification: string | null, prev_hash: hex64, hash: hex64}
//! LIMITS = {concurrent_requests?: integer, requests: WINDOWS, tokens: WINDOWS}
//! WINDOWS = {per_minute?: RULE, per_hour?: RULE, per_day?: RULE, per_month?: RULE}
//! RULE   = {limit: integer, window: string, action: string}
//!
//! org list  -> {data: [ORG]}       org show  -> ORG
//! team list -> {data: [TEAM]}      team show -> TEAM
//! user list -> {data: [USER]}      user show -> USER
//! key list  -> {data: [KEY]}       key show  -> KEY
//! key create, key rotate -> {key: KEY, secret: string}
//! limits set, limits show -> LIMITS
//! audit list   -> {data: [AUDIT]}
//! audit verify -> {valid: boolean, entries_checked: integer, head_seq: integer,
//!                  first_broken: {seq: integer, reason: string} | null}
//! ```

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use chrono::DateTime;
use serde_json::Value;

use common::{Daemon, DaemonOptions, ctl_json};

/// The JSON type expected at one place of a document.
#[derive(Debug)]
enum Shape {
    String,
    Integer,
    Boolean,
    Uuid,
    Timestamp,
    Hex64,
    /// Any value but null, such as an entitlement's, which is a number, text, a boolean or a
    /// list.
    NotNull,
    Nullable(Box<Shape>),
    Array(Box<Shape>),
    Object(Vec<(&'static str, Shape)>),
}

fn nullable(shape: Shape) -> Shape {
    Shape::Nullable(Box::new(shape))
}

fn array(item: Shape) -> Shape {
    Shape::Array(Box::new(item))
}

fn object<const N: usize>(fields: [(&'static str, Shape); N]) -> Shape {
    Shape::Object(fields.into())
}

/// `{"data": [item]}`, the body of every list response.
fn list_of(item: Shape) -> Shape {
    object([("data", array(item))])
}

fn org_shape() -> Shape {
    object([
        ("id", Shape::Uuid),
        ("slug", Shape::String),
        ("name", Shape::String),
        ("primary_region", Shape::String),
        ("allowed_models", array(Shape::String)),
        ("active", Shape::Boolean),
        ("created_at", Shape::Timestamp),
        ("plan", Shape::String),
        ("plan_version", Shape::Integer),
        ("billing_currency", Shape::String),
    ])
}

/// `org show`: the org, with its effective entitlements under `entitlements`.
fn org_details_shape() -> Shape {
    let Shape::Object(mut fields) = org_shape() else {
        unreachable!("org_shape is an object");
    };
    fields.push(("entitlements", entitlements_shape()));
    Shape::Object(fields)
}

fn entitlements_shape() -> Shape {
    object([
        ("plan", Shape::String),
        ("plan_name", Shape::String),
        ("plan_version", Shape::Integer),
        ("latest_version", Shape::Integer),
        (
            "fields",
            array(object([
                ("name", Shape::String),
                ("value", Shape::NotNull),
                ("source", Shape::String),
            ])),
        ),
        ("overrides", object([])),
    ])
}

fn team_shape() -> Shape {
    object([
        ("id", Shape::Uuid),
        ("org_id", Shape::Uuid),
        ("name", Shape::String),
        ("allowed_models", array(Shape::String)),
        ("created_at", Shape::Timestamp),
    ])
}

fn user_shape() -> Shape {
    object([
        ("id", Shape::Uuid),
        ("org_id", Shape::Uuid),
        ("team_id", nullable(Shape::Uuid)),
        ("email", Shape::String),
        ("role", Shape::String),
        ("locale", Shape::String),
        ("data_residency_region", Shape::String),
        ("active", Shape::Boolean),
        ("created_at", Shape::Timestamp),
    ])
}

fn key_shape() -> Shape {
    object([
        ("id", Shape::Uuid),
        ("org_id", Shape::Uuid),
        ("user_id", Shape::Uuid),
        ("name", Shape::String),
        ("scope", Shape::String),
        ("region", Shape::String),
        ("allowed_models", array(Shape::String)),
        ("rpm_limit", nullable(Shape::Integer)),
        ("tpm_limit", nullable(Shape::Integer)),
        ("active", Shape::Boolean),
        ("expires_at", nullable(Shape::Timestamp)),
        ("created_at", Shape::Timestamp),
        ("rotated_at", nullable(Shape::Timestamp)),
        ("previous_secret_expires_at", nullable(Shape::Timestamp)),
        ("revoked_at", nullable(Shape::Timestamp)),
    ])
}

fn limit_rule_shape() -> Shape {
    object([
        ("limit", Shape::Integer),
        ("window", Shape::String),
        ("action", Shape::String),
    ])
}

fn windows_shape() -> Shape {
    object([
        ("per_minute", limit_rule_shape()),
        ("per_hour", limit_rule_shape()),
        ("per_day", limit_rule_shape()),
        ("per_month", limit_rule_shape()),
    ])
}

/// Returns the shape of a limit set with every limit present, as the test sets the org's.
fn limits_shape() -> Shape {
    object([
        ("concurrent_requests", Shape::Integer),
        ("requests", windows_shape()),
        ("tokens", windows_shape()),
    ])
}

fn created_key_shape() -> Shape {
    object([("key", key_shape()), ("secret", Shape::String)])
}

fn audit_entry_shape() -> Shape {
    object([
        ("seq", Shape::Integer),
        ("id", Shape::Uuid),
        ("at", Shape::Timestamp),
        ("actor_kind", Shape::String),
        ("actor_id", Shape::String),
        ("action", Shape::String),
        ("target_kind", Shape::String),
        ("target_id", nullable(Shape::String)),
        ("org_id", nullable(Shape::Uuid)),
        ("source_ip", nullable(Shape::String)),
        ("region", Shape::String),
        ("result", Shape::String),
        ("justification", nullable(Shape::String)),
        ("prev_hash", Shape::Hex64),
        ("hash", Shape::Hex64),
    ])
}

fn audit_verification_shape() -> Shape {
    object([
        ("valid", Shape::Boolean),
        ("entries_checked", Shape::Integer),
        ("head_seq", Shape::Integer),
        (
            "first_broken",
            nullable(object([("seq", Shape::Integer), ("reason", Shape::String)])),
        ),
    ])
}

/// Appends to `mismatches` one line for each place where `value` does not have `shape`,
/// naming the place with a JSON path such as `$.data[0].id`.
fn check_shape(value: &Value, shape: &Shape, path: &str, mismatches: &mut Vec<String>) {
    let mut mismatch = |expected: &str| {
        mismatches.push(format!("{path}: expected {expected}, found {value}"));
    };
    match shape {
        Shape::String => {
            if !value.is_string() {
                mismatch("a string");
            }
        }
        Shape::Integer => {
            if !(value.is_i64() || value.is_u64()) {
                mismatch("an integer");
            }
        }
        Shape::Boolean => {
            if !value.is_boolean() {
                mismatch("a boolean");
            }
        }
        Shape::Uuid => {
            if value
                .as_str()
                .and_then(|text| text.parse::<uuid::Uuid>().ok())
                .is_none()
            {
                mismatch("a UUID string");
            }
        }
        Shape::Timestamp => {
            let parsed = value.as_str().map(DateTime::parse_from_rfc3339);
            if !matches!(parsed, Some(Ok(_))) {
                mismatch("an RFC 3339 timestamp");
            }
        }
        Shape::NotNull => {
            if value.is_null() {
                mismatch("a value other than null");
            }
        }
        Shape::Hex64 => {
            let is_hex64 = value.as_str().is_some_and(|text| {
                text.len() == 64
                    && text
                        .bytes()
                        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
            });
            if !is_hex64 {
                mismatch("64 lowercase hexadecimal digits");
            }
        }
        Shape::Nullable(inner) => {
            if !value.is_null() {
                check_shape(value, inner, path, mismatches);
            }
        }
        Shape::Array(item) => match value.as_array() {
            None => mismatch("an array"),
            Some(items) if items.is_empty() => mismatch("a non-empty array"),
            Some(items) => {
                for (index, item_value) in items.iter().enumerate() {
                    check_shape(item_value, item, &format!("{path}[{index}]"), mismatches);
                }
            }
        },
        Shape::Object(fields) => match value.as_object() {
            None => mismatch("an object"),
            Some(map) => {
                for (name, field_shape) in fields {
                    match map.get(*name) {
                        Some(field) => {
                            check_shape(field, field_shape, &format!("{path}.{name}"), mismatches);
                        }
                        None => mismatches.push(format!("{path}.{name}: missing")),
                    }
                }
                for name in map.keys() {
                    if !fields.iter().any(|(expected, _)| expected == name) {
                        mismatches.push(format!("{path}.{name}: unexpected field"));
                    }
                }
            }
        },
    }
}

/// Fails the test, listing every mismatch, unless `value` has `shape`.
fn assert_shape(command: &str, value: &Value, shape: &Shape) {
    let mut mismatches = Vec::new();
    check_shape(value, shape, "$", &mut mismatches);
    assert!(
        mismatches.is_empty(),
        "`synaxisctl {command} --output json` changed shape:\n{}\nOutput: {value:#}",
        mismatches.join("\n")
    );
}

fn string_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

/// An org's limit set with every limit.
const FULL_LIMITS: &str = r#"
concurrent_requests = 20

[requests]
per_minute = { limit = 100, window = "sliding", action = "throttle" }
per_hour   = { limit = 1000, window = "fixed", action = "throttle" }
per_day    = { limit = 10000, window = "fixed", action = "block" }
per_month  = { limit = 100000, window = "fixed", action = "block" }

[tokens]
per_minute = { limit = 10000, window = "sliding", action = "throttle" }
per_hour   = { limit = 100000, window = "fixed", action = "throttle" }
per_day    = { limit = 1000000, window = "fixed", action = "block" }
per_month  = { limit = 10000000, window = "fixed", action = "credit_charge" }
"#;

#[test]
fn json_output_has_stable_shapes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(&DaemonOptions {
        database_url: format!("sqlite://{}/synaxis.db", dir.path().display()),
        // The test makes no inference call, so the upstream URL points where nothing listens.
        upstream_base_url: "http://127.0.0.1:9/v1".to_owned(),
        log_level: "info".to_owned(),
        data_dir: dir.path().to_owned(),
        shutdown_timeout_secs: 10,
        ..DaemonOptions::default()
    });
    let ctl = |args: &[&str]| ctl_json(&daemon, args);

    // One of each resource, with every array non-empty and every optional field set where
    // the CLI can set it.
    let org = ctl(&[
        "org",
        "create",
        "--name",
        "Shape Labs",
        "--slug",
        "shapes",
        "--plan",
        "enterprise",
    ]);
    let org_id = string_at(&org, "/id").to_owned();
    ctl(&["org", "update", "shapes", "--allow-model", "gpt-4o*"]);
    let team = ctl(&[
        "team",
        "create",
        "--org",
        &org_id,
        "--name",
        "platform",
        "--allow-model",
        "gpt-4o-mini",
    ]);
    let team_id = string_at(&team, "/id").to_owned();
    let user = ctl(&[
        "user",
        "create",
        "--org",
        &org_id,
        "--email",
        "dev@shapes.test",
        "--team",
        &team_id,
        "--locale",
        "pt-BR",
    ]);
    let user_id = string_at(&user, "/id").to_owned();
    ctl(&["user", "update", &user_id, "--role", "admin"]);
    let created = ctl(&[
        "key",
        "create",
        "--user",
        &user_id,
        "--name",
        "ci",
        "--scope",
        "management",
        "--expires-at",
        "2099-01-01T00:00:00Z",
        "--allow-model",
        "gpt-4o-mini",
        "--rpm-limit",
        "600",
        "--tpm-limit",
        "100000",
    ]);
    assert_shape("key create", &created, &created_key_shape());
    let key_id = string_at(&created, "/key/id").to_owned();
    ctl(&[
        "key",
        "update",
        &key_id,
        "--name",
        "ci-renamed",
        "--justification",
        "shape check",
    ]);
    let rotated = ctl(&["key", "rotate", &key_id, "--grace", "1h"]);
    assert_shape("key rotate", &rotated, &created_key_shape());
    assert_eq!(string_at(&rotated, "/key/id"), key_id);
    assert_ne!(
        string_at(&rotated, "/secret"),
        string_at(&created, "/secret")
    );

    let limits_file = dir.path().join("limits.toml");
    std::fs::write(&limits_file, FULL_LIMITS).expect("write limits file");
    let limits_path = limits_file.to_str().expect("UTF-8 path");
    let stored = ctl(&[
        "limits",
        "set",
        "--org",
        "shapes",
        "--file",
        limits_path,
        "--justification",
        "shape check",
    ]);
    assert_shape("limits set", &stored, &limits_shape());

    let cases: [(&[&str], Shape); 9] = [
        (&["org", "list"], list_of(org_shape())),
        (&["org", "show", "shapes"], org_details_shape()),
        (&["team", "list", "--org", &org_id], list_of(team_shape())),
        (&["team", "show", &team_id], team_shape()),
        (&["user", "list", "--org", &org_id], list_of(user_shape())),
        (&["user", "show", &user_id], user_shape()),
        (&["key", "list", "--org", &org_id], list_of(key_shape())),
        (&["key", "show", &key_id], key_shape()),
        (&["limits", "show", "--org", &org_id], limits_shape()),
    ];
    for (args, shape) in cases {
        assert_shape(&args.join(" "), &ctl(args), &shape);
    }

    let audit = ctl(&["audit", "list", "--org", &org_id]);
    assert_shape("audit list", &audit, &list_of(audit_entry_shape()));
    let entries = audit["data"].as_array().expect("audit entries");
    assert!(
        entries
            .iter()
            .any(|entry| entry["justification"] == "shape check"),
        "no audit entry has the justification sent with `key update`: {audit:#}"
    );

    let verification = ctl(&["audit", "verify"]);
    assert_shape("audit verify", &verification, &audit_verification_shape());
    assert_eq!(verification["valid"], true, "{verification:#}");
}

#[test]
fn check_shape_reports_each_mismatch() {
    let shape = object([
        ("id", Shape::Uuid),
        ("hash", Shape::Hex64),
        ("expires_at", nullable(Shape::Timestamp)),
        ("models", array(Shape::String)),
        ("count", Shape::Integer),
    ]);
    let value = serde_json::json!({
        "id": "not-a-uuid",
        "hash": "ABC",
        "expires_at": null,
        "models": [],
        "extra": true
    });

    let mut mismatches = Vec::new();
    check_shape(&value, &shape, "$", &mut mismatches);

    assert_eq!(
        mismatches,
        [
            "$.id: expected a UUID string, found \"not-a-uuid\"",
            "$.hash: expected 64 lowercase hexadecimal digits, found \"ABC\"",
            "$.models: expected a non-empty array, found []",
            "$.count: missing",
            "$.extra: unexpected field",
        ]
    );
}

#[test]
fn check_shape_accepts_matching_value() {
    let value = serde_json::json!({
        "data": [{"seq": 1, "at": "2025-01-02T03:04:05Z", "target_id": null}]
    });
    let shape = list_of(object([
        ("seq", Shape::Integer),
        ("at", Shape::Timestamp),
        ("target_id", nullable(Shape::String)),
    ]));

    let mut mismatches = Vec::new();
    check_shape(&value, &shape, "$", &mut mismatches);

    assert!(mismatches.is_empty(), "{mismatches:?}");
}
