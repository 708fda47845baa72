//! Command-line syntax: global flags, then a resource and an action.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;
use synaxis_shared::{KeyId, OrgId, Role, UserId};

use crate::messages::AFTER_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "synaxisctl",
    version,
    about = "Manage organizations, users and keys through the Synaxis control API.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub resource: Resource,
}

/// Flags accepted before or after the resource and action.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Base URL of the synaxisd control API.
    #[arg(
        long,
        env = "SYNAXIS_ENDPOINT",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_endpoint,
        global = true
    )]
    pub endpoint: Url,

    /// Operator token, sent as `Authorization: Bearer TOKEN`. Every command requires it.
    #[arg(long, env = "SYNAXIS_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<OperatorToken>,

    /// Output format: a table for people, or the server's JSON for scripts.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = OutputFormat::Table,
        global = true
    )]
    pub output: OutputFormat,

    /// Maximum duration of each request, in seconds, including the connection.
    #[arg(
        long,
        env = "SYNAXIS_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// The operator token. `Debug` redacts it.
#[derive(Clone)]
pub struct OperatorToken(String);

impl OperatorToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for OperatorToken {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        parse_token(value)
    }
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken([redacted])")
    }
}

#[derive(Debug, Subcommand)]
pub enum Resource {
    /// Manage organizations (tenants).
    Org {
        #[command(subcommand)]
        action: OrgAction,
    },
    /// Manage the users of an organization.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage virtual API keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgAction {
    /// Create an organization.
    Create {
        /// Display name of the organization.
        #[arg(long)]
        name: String,
        /// Unique short name. The server derives it from the name when omitted.
        #[arg(long)]
        slug: Option<String>,
    },
    /// List all organizations.
    List,
    /// Show one organization.
    Show {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
    },
    /// Deactivate an organization, so that none of its keys authenticate.
    Revoke {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create a user in an organization.
    Create {
        /// Id of the organization (a UUID).
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: OrgId,
        /// Email address of the user.
        #[arg(long)]
        email: String,
        /// Role of the user in the organization.
        #[arg(long, default_value_t = Role::Developer, value_parser = role_parser())]
        role: Role,
    },
    /// List the users of an organization.
    List {
        /// Id of the organization (a UUID).
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: OrgId,
    },
    /// Show one user.
    Show {
        /// Id of the user (a UUID).
        user_id: UserId,
    },
    /// Deactivate a user, so that none of their keys authenticate.
    Revoke {
        /// Id of the user (a UUID).
        user_id: UserId,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create a key for a user and print its secret once.
    Create {
        /// Id of the user who owns the key (a UUID).
        #[arg(long = "user", value_name = "USER_ID")]
        user_id: UserId,
        /// Name of the key, to tell keys apart.
        #[arg(long)]
        name: Option<String>,
        /// Time after which the key stops authenticating, as an RFC 3339 timestamp.
        #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
        expires_at: Option<DateTime<Utc>>,
        /// Model the key may call. Repeat the flag for more models. Without it, the key may
        /// call every configured model.
        #[arg(long = "allow-model", value_name = "MODEL")]
        allowed_models: Vec<String>,
    },
    /// List keys, optionally only those of one organization or user.
    List {
        /// Only keys of this organization (a UUID).
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: Option<OrgId>,
        /// Only keys of this user (a UUID).
        #[arg(long = "user", value_name = "USER_ID")]
        user_id: Option<UserId>,
    },
    /// Show one key. The secret is never shown again after creation.
    Show {
        /// Id of the key (a UUID).
        key_id: KeyId,
    },
    /// Revoke a key. It stops authenticating at once.
    Revoke {
        /// Id of the key (a UUID).
        key_id: KeyId,
    },
}

fn parse_endpoint(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|error| format!("invalid URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("use an http:// or https:// URL".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("remove the query string and fragment from the URL".to_owned());
    }
    Ok(url)
}

/// Accepts a token that fits a bearer `Authorization` header: visible ASCII without spaces.
fn parse_token(value: &str) -> Result<OperatorToken, String> {
    if value.is_empty() {
        return Err("the token is empty".to_owned());
    }
    if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("the token must be visible ASCII characters without spaces".to_owned());
    }
    Ok(OperatorToken(value.to_owned()))
}

/// Rejects values that cannot be a single URL path segment. The URL builder drops `.` and
/// `..` segments, so they would reach another route.
fn parse_org_reference(value: &str) -> Result<String, String> {
    if matches!(value, "" | "." | "..") {
        return Err("expected an organization id or slug".to_owned());
    }
    Ok(value.to_owned())
}

fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|timestamp| timestamp.with_timezone(&Utc))
        .map_err(|error| format!("{error}: use an RFC 3339 timestamp such as 2030-12-31T23:59:59Z"))
}

/// Parses a role and lists the valid roles in `--help` and in errors.
fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::as_str)).try_map(|value| value.parse::<Role>())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parse_endpoint_accepts_http_and_https() {
        assert!(parse_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(parse_endpoint("https://gateway.example.com/synaxis/").is_ok());
    }

    #[test]
    fn parse_endpoint_rejects_other_urls() {
        assert!(parse_endpoint("127.0.0.1:8080").is_err());
        assert!(parse_endpoint("ftp://example.com").is_err());
        assert!(parse_endpoint("http://example.com/?a=b").is_err());
    }

    #[test]
    fn parse_token_rejects_invalid_header_values() {
        assert!(parse_token("").is_err());
        assert!(parse_token("has space").is_err());
        assert!(parse_token("line\nbreak").is_err());
        assert!(parse_token("op-token_123").is_ok());
    }

    #[test]
    fn parse_timestamp_requires_rfc3339() {
        assert!(parse_timestamp("2030-12-31T23:59:59Z").is_ok());
        assert!(parse_timestamp("2030-12-31T20:59:59-03:00").is_ok());
        assert!(parse_timestamp("2030-12-31").is_err());
    }

    #[test]
    fn user_create_defaults_to_developer() -> Result<(), Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from([
            "synaxisctl",
            "user",
            "create",
            "--org",
            "5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11",
            "--email",
            "dev@example.com",
        ])?;
        let Resource::User {
            action: UserAction::Create { role, .. },
        } = cli.resource
        else {
            return Err("expected `user create`".into());
        };
        assert_eq!(role, Role::Developer);
        Ok(())
    }

    #[test]
    fn role_rejects_unknown_roles() {
        let result = Cli::try_parse_from([
            "synaxisctl",
            "user",
            "create",
            "--org",
            "5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11",
            "--email",
            "dev@example.com",
            "--role",
            "root",
        ]);
        assert!(result.is_err());
    }

    #[test]
    fn global_flags_follow_the_action() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "synaxisctl",
            "org",
            "list",
            "--output",
            "json",
            "--token",
            "secret",
        ])?;
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert!(cli.global.token.is_some());
        Ok(())
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = OperatorToken("op-secret".to_owned());
        assert!(!format!("{token:?}").contains("op-secret"));
    }
}
