//! Command-line syntax: global flags, then a resource and an action.

mod actions;
mod parse;

use std::fmt;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use actions::{
    AuditAction, BudgetAction, ComplianceAction, ConsentAction, ContextAction, CreditArgs,
    CreditsAction, FailoverAction, FxAction, InvoiceAction, KeyAction, LimitsAction, OrgAction,
    PlanAction, RegionAction, TeamAction, UserAction,
};
pub use parse::{parse_endpoint, parse_justification};

use crate::messages::AFTER_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "synaxisctl",
    version,
    about = "Manage organizations, teams, users, keys, limits and the audit log through the Synaxis control API.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub resource: Resource,
}

// Flags accepted before or after the resource and action. A doc comment here would replace
// the `about` text of `synaxisctl --help`, because clap copies it to the parent command.
//
// `--endpoint` and `--token` contain only what the command line gives, because `context add`
// saves exactly those values. `crate::settings` applies the environment variables and the
// current context to them.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Base URL of the synaxisd control API. When omitted: SYNAXIS_ENDPOINT, then the current
    /// context, then http://127.0.0.1:8080. For an https URL whose certificate a private CA
    /// signed, set SYNAXIS_CA_CERT to the CA's PEM file.
    #[arg(long, value_name = "URL", value_parser = parse::parse_endpoint, global = true)]
    pub endpoint: Option<Url>,

    /// Operator token or management key (`sk-syn-...`), sent as `Authorization: Bearer TOKEN`.
    /// When omitted: SYNAXIS_TOKEN, then the current context.
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<BearerToken>,

    /// Reason for the call, sent in the `x-synaxis-justification` header and stored in the
    /// audit log.
    #[arg(
        long,
        env = "SYNAXIS_JUSTIFICATION",
        value_name = "TEXT",
        value_parser = parse::parse_justification,
        global = true
    )]
    pub justification: Option<Justification>,

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

/// The bearer token: the operator token or a user's management key. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for BearerToken {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        parse::parse_token(value).map(Self)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

/// The config file stores the token as a plain string.
impl Serialize for BearerToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BearerToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

/// The text of `--justification`, already checked to be a valid header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Justification(HeaderValue);

impl Justification {
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

#[derive(Debug, Subcommand)]
pub enum Resource {
    /// Manage organizations (tenants).
    Org {
        #[command(subcommand)]
        action: OrgAction,
    },
    /// Manage the teams of an organization.
    Team {
        #[command(subcommand)]
        action: TeamAction,
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
    /// Show and add to the prepaid credit of organizations.
    Credits {
        #[command(subcommand)]
        action: CreditsAction,
    },
    /// Set and show the spend limits in USD of keys, teams and organizations.
    Budget {
        #[command(subcommand)]
        action: BudgetAction,
    },
    /// Set and list the exchange rates of billing currencies.
    Fx {
        #[command(subcommand)]
        action: FxAction,
    },
    /// Issue and read the monthly invoices of organizations.
    Invoice {
        #[command(subcommand)]
        action: InvoiceAction,
    },
    /// Move organizations between plan versions.
    Plan {
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Set and show the rate limits of organizations, teams and users.
    Limits {
        #[command(subcommand)]
        action: LimitsAction,
    },
    /// Check that every region holds only its own users' records.
    Compliance {
        #[command(subcommand)]
        action: ComplianceAction,
    },
    /// Rehearse the failover of a region.
    Failover {
        #[command(subcommand)]
        action: FailoverAction,
    },
    /// Show the health of every region in each region's view.
    Region {
        #[command(subcommand)]
        action: RegionAction,
    },
    /// Read and verify the audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print the completion script of a shell: `synaxisctl completions bash >
    /// ~/.local/share/bash-completion/completions/synaxisctl`. The repository's `completions/`
    /// folder contains the scripts of bash, zsh and fish.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Manage named endpoint and token pairs in the config file.
    Context {
        #[command(subcommand)]
        action: ContextAction,
    },
}

impl Resource {
    /// Reports whether the command changes something that the server accepts only with a
    /// justification.
    pub fn requires_justification(&self) -> bool {
        matches!(
            self,
            Self::Limits {
                action: LimitsAction::Set { .. }
            } | Self::Org {
                action: OrgAction::Override { .. }
            } | Self::Plan {
                action: PlanAction::Migrate { .. }
            } | Self::Budget {
                action: BudgetAction::Set { .. } | BudgetAction::Remove { .. }
            } | Self::Fx {
                action: FxAction::Set { .. } | FxAction::Import { .. }
            } | Self::Credits {
                action: CreditsAction::Topup(_)
                    | CreditsAction::Refund(_)
                    | CreditsAction::Adjust(_)
            } | Self::Failover {
                action: FailoverAction::Drill { .. }
            }
        )
    }

    /// Returns the shortest time that the command's request needs, when it is longer than
    /// requests usually take: a drill lasts its duration, plus its preparation and the wait
    /// for its records.
    pub fn minimum_timeout(&self) -> Option<u64> {
        match self {
            Self::Failover {
                action: FailoverAction::Drill { duration, .. },
            } => Some(duration.saturating_add(180)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use synaxis_shared::Role;

    use super::*;

    const ORG_ID: &str = "5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11";
    const KEY_ID: &str = "0b7e6c1a-3c1e-4a55-8f5e-0a1f2b3c4d5e";

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn committed_completions_are_current() {
        use clap_complete::Shell;
        let committed = [
            (
                Shell::Bash,
                "synaxisctl.bash",
                include_str!("../../../completions/synaxisctl.bash"),
            ),
            (
                Shell::Zsh,
                "_synaxisctl",
                include_str!("../../../completions/_synaxisctl"),
            ),
            (
                Shell::Fish,
                "synaxisctl.fish",
                include_str!("../../../completions/synaxisctl.fish"),
            ),
        ];
        for (shell, file, text) in committed {
            let mut generated = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "synaxisctl", &mut generated);
            assert!(
                generated == text.as_bytes(),
                "completions/{file} is out of date: run `synaxisctl completions {shell} > completions/{file}`"
            );
        }
    }

    #[test]
    fn user_create_defaults_to_developer() -> Result<(), Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from([
            "synaxisctl",
            "user",
            "create",
            "--org",
            ORG_ID,
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
            ORG_ID,
            "--email",
            "dev@example.com",
            "--role",
            "root",
        ]);
        assert!(result.is_err());
    }

    #[test]
    fn required_flags_may_be_omitted() -> Result<(), clap::Error> {
        // The prompt helper asks for them, or rejects the command, after parsing.
        Cli::try_parse_from(["synaxisctl", "org", "create"])?;
        Cli::try_parse_from(["synaxisctl", "user", "create"])?;
        Cli::try_parse_from(["synaxisctl", "team", "create"])?;
        Cli::try_parse_from(["synaxisctl", "key", "create"])?;
        Ok(())
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
            "--justification",
            "ticket OPS-12",
        ])?;
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert!(cli.global.token.is_some());
        assert!(cli.global.justification.is_some());
        Ok(())
    }

    #[test]
    fn update_requires_a_change() {
        let cases: [&[&str]; 4] = [
            &["synaxisctl", "org", "update", "acme"],
            &["synaxisctl", "team", "update", ORG_ID],
            &["synaxisctl", "user", "update", ORG_ID],
            &["synaxisctl", "key", "update", KEY_ID],
        ];
        for args in cases {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn update_rejects_both_model_flags() {
        let result = Cli::try_parse_from([
            "synaxisctl",
            "org",
            "update",
            "acme",
            "--allow-model",
            "gpt-4o",
            "--allow-all-models",
        ]);
        assert!(result.is_err());
    }

    #[test]
    fn models_update_replaces_or_clears_list() -> Result<(), Box<dyn std::error::Error>> {
        let cases: [(&[&str], Option<Vec<String>>); 3] = [
            (&["--name", "Acme"], None),
            (
                &["--allow-model", "gpt-4o*", "--allow-model", "claude"],
                Some(vec!["gpt-4o*".to_owned(), "claude".to_owned()]),
            ),
            (&["--allow-all-models"], Some(Vec::new())),
        ];
        for (flags, expected) in cases {
            let mut args = vec!["synaxisctl", "org", "update", "acme"];
            args.extend_from_slice(flags);
            let cli = Cli::try_parse_from(args)?;
            let Resource::Org {
                action: OrgAction::Update { models, .. },
            } = cli.resource
            else {
                return Err("expected `org update`".into());
            };
            assert_eq!(models.into_request(), expected, "{flags:?}");
        }
        Ok(())
    }

    #[test]
    fn key_rotate_parses_grace() -> Result<(), Box<dyn std::error::Error>> {
        let cases: [(&[&str], u64); 3] =
            [(&[], 0), (&["--grace", "15m"], 900), (&["--grace", "0"], 0)];
        for (flags, expected) in cases {
            let mut args = vec!["synaxisctl", "key", "rotate", KEY_ID];
            args.extend_from_slice(flags);
            let cli = Cli::try_parse_from(args)?;
            let Resource::Key {
                action: KeyAction::Rotate { grace_seconds, .. },
            } = cli.resource
            else {
                return Err("expected `key rotate`".into());
            };
            assert_eq!(grace_seconds, expected, "{flags:?}");
        }
        Ok(())
    }

    #[test]
    fn limits_scope_takes_exactly_one_owner() -> Result<(), Box<dyn std::error::Error>> {
        let cases: [(&[&str], Option<[&str; 3]>); 5] = [
            (&["--org", "acme"], Some(["orgs", "acme", "limits"])),
            (&["--team", ORG_ID], Some(["teams", ORG_ID, "limits"])),
            (&["--user", KEY_ID], Some(["users", KEY_ID, "limits"])),
            (&[], None),
            (&["--org", "acme", "--team", ORG_ID], None),
        ];
        for (flags, expected) in cases {
            let mut args = vec!["synaxisctl", "limits", "show"];
            args.extend_from_slice(flags);
            let parsed = Cli::try_parse_from(&args);
            let Some(expected) = expected else {
                assert!(parsed.is_err(), "{flags:?}");
                continue;
            };
            let Resource::Limits {
                action: LimitsAction::Show { scope },
            } = parsed?.resource
            else {
                return Err("expected `limits show`".into());
            };
            assert_eq!(scope.path(), expected.map(str::to_owned), "{flags:?}");
        }
        Ok(())
    }

    #[test]
    fn only_limits_set_requires_justification() -> Result<(), clap::Error> {
        let set = Cli::try_parse_from([
            "synaxisctl",
            "limits",
            "set",
            "--org",
            "acme",
            "--file",
            "-",
        ])?;
        assert!(set.resource.requires_justification());
        let show = Cli::try_parse_from(["synaxisctl", "limits", "show", "--org", "acme"])?;
        assert!(!show.resource.requires_justification());
        let update =
            Cli::try_parse_from(["synaxisctl", "key", "update", KEY_ID, "--rpm-limit", "none"])?;
        assert!(!update.resource.requires_justification());
        Ok(())
    }

    #[test]
    fn token_debug_is_redacted() -> Result<(), String> {
        let token: BearerToken = "op-secret".parse()?;
        assert!(!format!("{token:?}").contains("op-secret"));
        Ok(())
    }
}
