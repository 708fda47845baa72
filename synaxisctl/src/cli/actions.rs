//! The actions of each resource and their flags.
//!
//! Flags that a command requires are `Option`s here, so that a missing one can be asked for
//! on a terminal: [`crate::prompt::Prompter`] resolves them.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand};
use synaxis_shared::api::KeyScope;
use synaxis_shared::money::Currency;
use synaxis_shared::{InvoiceId, KeyId, Locale, OrgId, Role, TeamId, UserId};

use super::parse::{
    locale_parser, parse_context_name, parse_grace, parse_key_limit, parse_key_limit_change,
    parse_org_reference, parse_timestamp, role_parser, scope_parser,
};
use crate::messages::LIMITS_FILE_HELP;

#[derive(Debug, Subcommand)]
pub enum OrgAction {
    /// Create an organization.
    Create {
        /// Display name of the organization. Required.
        #[arg(long)]
        name: Option<String>,
        /// Unique short name. The server derives it from the name when omitted.
        #[arg(long)]
        slug: Option<String>,
        /// Plan to join, at its newest version, such as free, pro or enterprise. The server's
        /// default plan when omitted.
        #[arg(long)]
        plan: Option<String>,
    },
    /// List all organizations.
    List,
    /// Show one organization with its effective entitlements and where each comes from.
    Show {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
    },
    /// Change the name, the allowed models, the billing currency or the transfer mechanism of
    /// an organization.
    #[command(group(changes(&["name", "allowed_models", "allow_all_models", "billing_currency", "transfer_mechanism"])))]
    Update {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        models: ModelsUpdate,
        /// Currency of the organization's invoices: USD, EUR, BRL or GBP, among those its plan
        /// allows.
        #[arg(long, value_name = "CURRENCY")]
        billing_currency: Option<Currency>,
        /// Transfer mechanism for all the organization's users (operator only):
        /// `standard-contractual-clauses`, or `none` to remove it.
        #[arg(long, value_enum, value_name = "MECHANISM")]
        transfer_mechanism: Option<TransferMechanismArg>,
    },
    /// Deactivate an organization, so that none of its keys authenticate.
    Revoke {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
    },
    /// Set or remove per-field overrides of an organization's plan. Overrides survive plan
    /// changes and migrations. Requires --justification.
    #[command(group(clap::ArgGroup::new("overrides").required(true).multiple(true).args(["set", "unset"])))]
    Override {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
        /// FIELD=VALUE, such as teams=3, keys_per_user=unlimited or sso=true. Repeatable.
        #[arg(long, value_name = "FIELD=VALUE", value_parser = parse_override)]
        set: Vec<(String, serde_json::Value)>,
        /// A field whose override to remove, so that the plan's value applies again.
        /// Repeatable.
        #[arg(long, value_name = "FIELD")]
        unset: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CreditsAction {
    /// Add bought credit to an organization's ledger. Requires --justification.
    Topup(CreditArgs),
    /// Give credit back to an organization. Requires --justification.
    Refund(CreditArgs),
    /// Correct an organization's balance by a positive or negative amount. Requires
    /// --justification.
    Adjust(CreditArgs),
    /// Top up an organization's credits through the payment provider whenever overage takes
    /// its balance under a threshold, or turn that off with --off. Plans with the auto_topup
    /// entitlement (Enterprise) allow it; the default provider adds each top-up to the next
    /// invoice.
    #[command(name = "auto-topup")]
    AutoTopup {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
        /// Balance in USD under which to top up, such as 20.00.
        #[arg(
            long,
            value_name = "USD",
            value_parser = parse_price,
            allow_negative_numbers = true,
            required_unless_present = "off",
            requires = "amount",
            conflicts_with = "off"
        )]
        threshold: Option<rust_decimal::Decimal>,
        /// Credit in USD that each top-up adds, such as 100.00.
        #[arg(
            long,
            value_name = "USD",
            value_parser = parse_price,
            allow_negative_numbers = true,
            requires = "threshold"
        )]
        amount: Option<rust_decimal::Decimal>,
        /// Turn auto top-up off.
        #[arg(long)]
        off: bool,
    },
    /// Show an organization's credit balance and its plan's minimum balance.
    Show {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
    },
    /// List an organization's ledger entries, oldest first.
    History {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
        /// Only entries after this position; pass the last `seq` of the previous page.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Entries at most, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

/// The organization, amount and reference of a new ledger entry.
#[derive(Debug, Args)]
pub struct CreditArgs {
    /// Organization id (a UUID) or slug.
    #[arg(value_parser = parse_org_reference)]
    pub org: String,
    /// Amount in USD, such as 25.00, or -3.50 for an adjustment that takes credit away.
    #[arg(long, value_name = "USD", value_parser = parse_amount, allow_negative_numbers = true)]
    pub amount: rust_decimal::Decimal,
    /// An invoice, payment or ticket that the entry refers to.
    #[arg(long)]
    pub reference: Option<String>,
}

/// Parses a USD amount that is not meant to be negative, such as `25.00`, as a decimal. A
/// negative one parses, so that the server's message names the rule.
fn parse_price(text: &str) -> Result<rust_decimal::Decimal, String> {
    text.trim()
        .parse::<rust_decimal::Decimal>()
        .map_err(|_| format!("`{text}` is not an amount in USD: write it as 25.00"))
}

/// Parses a USD amount such as `25.00` as a decimal, never as a float.
fn parse_amount(text: &str) -> Result<rust_decimal::Decimal, String> {
    text.trim()
        .parse::<rust_decimal::Decimal>()
        .map_err(|_| format!("`{text}` is not an amount in USD: write it as 25.00 or -3.50"))
}

#[derive(Debug, Subcommand)]
pub enum FxAction {
    /// Set the rate of a currency, in units per USD, from now or from --effective-at.
    /// Requires --justification.
    Set {
        /// EUR, BRL or GBP.
        currency: Currency,
        /// Units of the currency per USD, such as 0.92.
        #[arg(value_parser = parse_amount)]
        rate: rust_decimal::Decimal,
        /// When the rate takes effect (RFC 3339); now when omitted.
        #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
        effective_at: Option<DateTime<Utc>>,
    },
    /// Set rates from a CSV file with the header `currency,rate,effective_at` (the last column
    /// may be empty for now). All rates are stored, or none. Requires --justification.
    Import {
        /// CSV file, or `-` for standard input.
        #[arg(value_name = "PATH")]
        file: PathBuf,
    },
    /// List rates, newest first.
    List {
        /// Only this currency's rates.
        #[arg(long)]
        currency: Option<Currency>,
    },
}

#[derive(Debug, Subcommand)]
pub enum InvoiceAction {
    /// Issue an organization's invoice of a calendar month (UTC): the plan fee and the credit
    /// bought in the month, in its billing currency at the rate in force now. Usage and overage
    /// paid from credits are listed and not charged.
    Issue {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
        /// The month, such as 2026-11.
        #[arg(long, value_name = "YYYY-MM")]
        period: String,
    },
    /// Show an invoice with its lines.
    Show {
        /// Invoice id (a UUID).
        invoice_id: InvoiceId,
    },
    /// List an organization's invoices, newest first.
    List {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BudgetAction {
    /// Set the spend limit in USD of a key, team or organization, creating it when missing.
    /// Requests whose worst-case cost does not fit in what is left get 402 budget_exceeded.
    /// Requires --justification.
    Set {
        #[command(flatten)]
        owner: BudgetOwner,
        /// Maximum spend in USD, such as 25.00, with at most 6 decimal places.
        #[arg(long, value_name = "USD", value_parser = parse_price, allow_negative_numbers = true)]
        max_usd: rust_decimal::Decimal,
        /// Start the spend again from zero; a changed budget otherwise keeps what was spent.
        #[arg(long)]
        reset_spend: bool,
    },
    /// Show a budget: its maximum, spend, reservations of requests in flight and what is left.
    Show {
        #[command(flatten)]
        owner: BudgetOwner,
    },
    /// Remove a budget, so that new requests are no longer limited by it, and print it as it
    /// was last. Requires --justification.
    Remove {
        #[command(flatten)]
        owner: BudgetOwner,
    },
}

/// The owner of a budget: exactly one of a key, a team and an organization.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct BudgetOwner {
    /// Key id (a UUID).
    #[arg(long = "key", value_name = "KEY_ID")]
    key_id: Option<KeyId>,
    /// Team id (a UUID).
    #[arg(long = "team", value_name = "TEAM_ID")]
    team_id: Option<TeamId>,
    /// Organization id (a UUID) or slug.
    #[arg(long, value_name = "ORG", value_parser = parse_org_reference)]
    org: Option<String>,
}

impl BudgetOwner {
    /// Returns the path of the budget under `/control/v1`, such as
    /// `["keys", "0b7e6c1a-...", "budget"]`.
    pub fn path(&self) -> [String; 3] {
        let (resource, id) = match (self.key_id, self.team_id, &self.org) {
            (Some(key_id), _, _) => ("keys", key_id.to_string()),
            (None, Some(team_id), _) => ("teams", team_id.to_string()),
            (None, None, Some(org)) => ("orgs", org.clone()),
            // clap's group requires one of the three flags.
            (None, None, None) => unreachable!("the owner group requires --key, --team or --org"),
        };
        [resource.to_owned(), id, "budget".to_owned()]
    }
}

#[derive(Debug, Subcommand)]
pub enum PlanAction {
    /// Run the plan lifecycle now, as synaxisd does every hour: trials that are over move to
    /// the default plan, resources past their plan's caps are suspended newest first, and
    /// those suspended for 30 days are deleted.
    #[command(name = "run-lifecycle")]
    RunLifecycle,
    /// Move an organization to a plan version: the newest version of its own plan by default.
    /// Its overrides stay. Requires --justification.
    Migrate {
        /// Organization id (a UUID) or slug.
        #[arg(value_parser = parse_org_reference)]
        org: String,
        /// Plan to move to, such as pro. The organization's own plan when omitted.
        #[arg(long)]
        plan: Option<String>,
        /// Version to move to. The plan's newest when omitted.
        #[arg(long)]
        version: Option<u32>,
    },
}

/// Parses `FIELD=VALUE` of `org override --set`. The value is read as JSON when it is a
/// number, a boolean or a JSON array, and as text otherwise.
fn parse_override(text: &str) -> Result<(String, serde_json::Value), String> {
    let Some((field, value)) = text.split_once('=') else {
        return Err(format!(
            "`{text}` is not FIELD=VALUE: write it as teams=3 or sso=true"
        ));
    };
    let field = field.trim();
    if field.is_empty() {
        return Err(format!("`{text}` names no field: write it as teams=3"));
    }
    let value = value.trim();
    // USD amounts travel as decimal strings, so that they never pass through a float.
    if field.ends_with("_usd") {
        return Ok((
            field.to_owned(),
            serde_json::Value::String(value.to_owned()),
        ));
    }
    let parsed = serde_json::from_str::<serde_json::Value>(value)
        .ok()
        .filter(|parsed| parsed.is_number() || parsed.is_boolean() || parsed.is_array())
        .unwrap_or_else(|| serde_json::Value::String(value.to_owned()));
    Ok((field.to_owned(), parsed))
}

#[derive(Debug, Subcommand)]
pub enum TeamAction {
    /// Create a team in an organization.
    Create {
        /// Id of the organization (a UUID). Required.
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: Option<OrgId>,
        /// Name of the team. Required.
        #[arg(long)]
        name: Option<String>,
        /// Model the team's keys may call, by exact name or glob such as `gpt-4o*`. Repeat
        /// the flag for more models. Without it, the team may call every model that the
        /// organization allows.
        #[arg(long = "allow-model", value_name = "MODEL")]
        allowed_models: Vec<String>,
    },
    /// List the teams of an organization.
    List {
        /// Id of the organization (a UUID). Required.
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: Option<OrgId>,
    },
    /// Show one team.
    Show {
        /// Id of the team (a UUID).
        team_id: TeamId,
    },
    /// Change the name or the allowed models of a team.
    #[command(group(changes(&["name", "allowed_models", "allow_all_models"])))]
    Update {
        /// Id of the team (a UUID).
        team_id: TeamId,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        models: ModelsUpdate,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create a user in an organization.
    Create {
        /// Id of the organization (a UUID). Required.
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: Option<OrgId>,
        /// Email address of the user. Required.
        #[arg(long)]
        email: Option<String>,
        /// Role of the user in the organization.
        #[arg(long, default_value_t = Role::Developer, value_parser = role_parser())]
        role: Role,
        /// Id of the team the user joins (a UUID).
        #[arg(long = "team", value_name = "TEAM_ID")]
        team_id: Option<TeamId>,
        /// Language of the messages the user receives.
        #[arg(long, default_value_t = Locale::En, value_parser = locale_parser())]
        locale: Locale,
    },
    /// List the users of an organization, optionally only those of one team.
    List {
        /// Id of the organization (a UUID). Required.
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: Option<OrgId>,
        /// Only users of this team (a UUID).
        #[arg(long = "team", value_name = "TEAM_ID")]
        team_id: Option<TeamId>,
    },
    /// Show one user.
    Show {
        /// Id of the user (a UUID).
        user_id: UserId,
    },
    /// Change the role, team or locale of a user.
    #[command(group(changes(&["role", "team_id", "locale"])))]
    Update {
        /// Id of the user (a UUID).
        user_id: UserId,
        /// New role in the organization.
        #[arg(long, value_parser = role_parser())]
        role: Option<Role>,
        /// Id of the team the user moves to (a UUID).
        #[arg(long = "team", value_name = "TEAM_ID")]
        team_id: Option<TeamId>,
        /// New language of the messages the user receives.
        #[arg(long, value_parser = locale_parser())]
        locale: Option<Locale>,
    },
    /// Deactivate a user, so that none of their keys authenticate.
    Revoke {
        /// Id of the user (a UUID).
        user_id: UserId,
    },
    /// Show, record or withdraw a user's consent to have requests processed in another
    /// region while their home region is down. Users give it themselves with
    /// `POST /v1/privacy/consent`; the operator records it on the user's documented request.
    Consent {
        #[command(subcommand)]
        action: ConsentAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsentAction {
    /// Show the user's current consent and its history.
    Show {
        /// Id of the user (a UUID).
        user_id: UserId,
    },
    /// Record the user's consent, for the named regions or, without --region, every region.
    Grant {
        /// Id of the user (a UUID).
        user_id: UserId,
        /// A region the consent allows, such as `us-east-1`; repeat for more.
        #[arg(long = "region", value_name = "REGION")]
        regions: Vec<synaxis_shared::RegionId>,
    },
    /// Record the withdrawal of the user's consent.
    Withdraw {
        /// Id of the user (a UUID).
        user_id: UserId,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create a key for a user and print its secret once.
    Create {
        /// Id of the user who owns the key (a UUID). Required.
        #[arg(long = "user", value_name = "USER_ID")]
        user_id: Option<UserId>,
        /// Name of the key, to tell keys apart.
        #[arg(long)]
        name: Option<String>,
        /// What the key may call: the inference API, or the control API with the
        /// permissions of the user's role.
        #[arg(long, default_value_t = KeyScope::Inference, value_parser = scope_parser())]
        scope: KeyScope,
        /// Time after which the key stops authenticating, as an RFC 3339 timestamp.
        #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
        expires_at: Option<DateTime<Utc>>,
        /// Model the key may call, by exact name or glob such as `gpt-4o*`. Repeat the flag
        /// for more models. Without it, the key may call every model that its team and
        /// organization allow.
        #[arg(long = "allow-model", value_name = "MODEL")]
        allowed_models: Vec<String>,
        /// Requests per minute that the key may make, from 1 to 2^53 - 1. Without it, only
        /// the limits of the key's user, team and organization apply.
        #[arg(long, value_name = "N", value_parser = parse_key_limit)]
        rpm_limit: Option<u64>,
        /// Tokens per minute, input and output together, that the key may use, from 1 to
        /// 2^53 - 1. Without it, only the limits of the key's user, team and organization
        /// apply.
        #[arg(long, value_name = "N", value_parser = parse_key_limit)]
        tpm_limit: Option<u64>,
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
    /// Change the name, allowed models, expiry or per-minute limits of a key.
    #[command(group(changes(&[
        "name",
        "allowed_models",
        "allow_all_models",
        "expires_at",
        "rpm_limit",
        "tpm_limit",
    ])))]
    Update {
        /// Id of the key (a UUID).
        key_id: KeyId,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        models: ModelsUpdate,
        /// New time after which the key stops authenticating, as an RFC 3339 timestamp.
        #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
        expires_at: Option<DateTime<Utc>>,
        /// New requests-per-minute limit of the key, from 1 to 2^53 - 1, or `none` to
        /// remove it.
        #[arg(long, value_name = "N|none", value_parser = parse_key_limit_change)]
        rpm_limit: Option<LimitChange>,
        /// New tokens-per-minute limit of the key, from 1 to 2^53 - 1, or `none` to remove
        /// it.
        #[arg(long, value_name = "N|none", value_parser = parse_key_limit_change)]
        tpm_limit: Option<LimitChange>,
    },
    /// Replace the secret of a key and print the new secret once. The key keeps its id.
    Rotate {
        /// Id of the key (a UUID).
        key_id: KeyId,
        /// How long the previous secret keeps working, such as 60s, 15m, 1h or 0. With 0,
        /// the previous secret stops working at once.
        #[arg(
            long = "grace",
            value_name = "DURATION",
            default_value = "0",
            value_parser = parse_grace
        )]
        grace_seconds: u64,
    },
    /// Revoke a key. It stops authenticating at once.
    Revoke {
        /// Id of the key (a UUID).
        key_id: KeyId,
    },
}

#[derive(Debug, Subcommand)]
pub enum LimitsAction {
    /// Replace the limit set of an organization, team or user with the set in a TOML file,
    /// and print the stored set. Requires --justification, which the audit log keeps.
    #[command(after_help = LIMITS_FILE_HELP)]
    Set {
        #[command(flatten)]
        scope: LimitsScope,
        /// TOML file with the limit set, or `-` to read it from standard input. A file
        /// without limits removes the scope's own set, so that synaxisd's configured limits
        /// for such scopes apply.
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
    },
    /// Show the limit set of an organization, team or user.
    Show {
        #[command(flatten)]
        scope: LimitsScope,
    },
}

/// The owner of a limit set: exactly one of an organization, a team and a user.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct LimitsScope {
    /// Organization id (a UUID) or slug.
    #[arg(long, value_name = "ORG", value_parser = parse_org_reference)]
    org: Option<String>,
    /// Team id (a UUID).
    #[arg(long = "team", value_name = "TEAM_ID")]
    team_id: Option<TeamId>,
    /// User id (a UUID).
    #[arg(long = "user", value_name = "USER_ID")]
    user_id: Option<UserId>,
}

impl LimitsScope {
    /// Returns the path of the scope's limit set under `/control/v1`, such as
    /// `["orgs", "acme", "limits"]`.
    pub fn path(&self) -> [String; 3] {
        let (resource, id) = match (&self.org, self.team_id, self.user_id) {
            (Some(org), _, _) => ("orgs", org.clone()),
            (None, Some(team_id), _) => ("teams", team_id.to_string()),
            (None, None, Some(user_id)) => ("users", user_id.to_string()),
            // clap's group requires one of the three flags.
            (None, None, None) => unreachable!("the scope group requires --org, --team or --user"),
        };
        [resource.to_owned(), id, "limits".to_owned()]
    }
}

/// The value of `--rpm-limit` or `--tpm-limit` of `key update`: a new limit, or `None` to
/// remove the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitChange(pub Option<u64>);

#[derive(Debug, Subcommand)]
pub enum ComplianceAction {
    /// Read every region's store through the region this command calls, and report each
    /// request record whose user belongs to another region. Usage held for another region
    /// after a failover is counted apart, as pending transfers. Exits with 1 when a region has
    /// a violation or cannot be read.
    ResidencyCheck,
}

#[derive(Debug, Subcommand)]
pub enum FailoverAction {
    /// Drain a region from every region's routing, send synthetic requests from test keys of
    /// every region, with and without consent to cross-border failover, through the other
    /// regions for DURATION, then restore the region. Prints what failed over, what was refused
    /// for lack of consent, and how many usage records were lost or stored twice. Exits with 1
    /// when an outcome breaks the transfer rules, a request fails, a record is lost,
    /// duplicated or still held, or a region was not restored, and with 5 when another drill
    /// is running. The drill runs to its end in the server even when this command is
    /// interrupted. Requires --justification.
    Drill {
        /// The region to drain, such as `eu-west-1`.
        #[arg(long, value_name = "REGION")]
        region: synaxis_shared::RegionId,
        /// How long synthetic traffic runs: seconds, or a duration such as `30s`, `2m` or
        /// `1m 30s`; from 1s to 1h.
        #[arg(long, value_name = "DURATION", value_parser = super::parse::parse_duration_secs)]
        duration: u64,
        /// The model that synthetic requests call; the region's first model when omitted.
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegionAction {
    /// Show each region's view of every region: up, down or unknown, from its health probes.
    /// Exits with 1 when a region reports another one down or a view cannot be read.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// List audit log entries in ascending sequence order.
    List {
        /// Only entries of this organization (a UUID).
        #[arg(long = "org", value_name = "ORG_ID")]
        org_id: Option<OrgId>,
        /// Only entries whose sequence number is greater than SEQ. Pass the last `seq` of a
        /// page to get the next page.
        #[arg(long = "after", value_name = "SEQ", value_parser = clap::value_parser!(i64).range(0..))]
        after_seq: Option<i64>,
        /// Maximum number of entries. The server applies its own default and maximum.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Check the hash chain of the audit log. Exits with 1 when the chain is broken.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum ContextAction {
    /// Save a context: the endpoint given by --endpoint (required) and the token given by
    /// --token. SYNAXIS_ENDPOINT and SYNAXIS_TOKEN are not saved. The first context saved
    /// becomes the current one.
    Add {
        /// Name of the context: ASCII letters, digits, `.`, `_` and `-`.
        #[arg(value_parser = parse_context_name)]
        name: String,
        /// Replace a context of the same name instead of failing.
        #[arg(long)]
        replace: bool,
    },
    /// Make a context the current one, used when no flag or environment variable sets the
    /// endpoint or the token.
    Use {
        /// Name of the context.
        name: String,
    },
    /// List the contexts and mark the current one. Tokens are never shown.
    List,
    /// Remove a context. Removing the current context leaves no context current.
    Remove {
        /// Name of the context.
        name: String,
    },
}

/// The flags that replace or clear the list of allowed models of an update.
#[derive(Debug, Args)]
pub struct ModelsUpdate {
    /// Model to allow, by exact name or glob such as `gpt-4o*`. The flags replace the whole
    /// list. Repeat the flag for more models.
    #[arg(
        long = "allow-model",
        value_name = "MODEL",
        conflicts_with = "allow_all_models"
    )]
    allowed_models: Vec<String>,
    /// Clear the list. An empty list allows every model that the levels above allow: for an
    /// organization, every configured model.
    #[arg(long)]
    allow_all_models: bool,
}

impl ModelsUpdate {
    /// Returns the `allowed_models` field of the update request: `None` keeps the list.
    pub fn into_request(self) -> Option<Vec<String>> {
        if self.allow_all_models {
            Some(Vec::new())
        } else if self.allowed_models.is_empty() {
            None
        } else {
            Some(self.allowed_models)
        }
    }
}

/// A group that requires at least one of the flags of an update, so that an update without
/// any change is a usage error.
fn changes(args: &[&'static str]) -> ArgGroup {
    ArgGroup::new("changes")
        .args(args)
        .required(true)
        .multiple(true)
}

/// The values of `org update --transfer-mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransferMechanismArg {
    StandardContractualClauses,
    None,
}

impl From<TransferMechanismArg> for synaxis_shared::compliance::TransferMechanismChange {
    fn from(arg: TransferMechanismArg) -> Self {
        match arg {
            TransferMechanismArg::StandardContractualClauses => Self::StandardContractualClauses,
            TransferMechanismArg::None => Self::None,
        }
    }
}
