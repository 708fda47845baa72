//! Table fields of each resource.

use chrono::{DateTime, SecondsFormat, Utc};
use synaxis_shared::api::{AuditEntry, AuditVerification, Key, Org, Team, User};
use synaxis_shared::budgets::Budget;
use synaxis_shared::credits::{CreditBalance, CreditEntry};
use synaxis_shared::invoices::{FxRate, Invoice};
use synaxis_shared::limits::{LimitRule, LimitSet};
use synaxis_shared::plans::{FIELDS, LifecycleReport, OrgEntitlements, ResourceCounts, Source};

use crate::config::ContextSummary;
use crate::language::Language;

/// The value shown for an absent optional field.
const NONE: &str = "-";

/// A resource shown in tables. Field names are the JSON field names, so the table and
/// `--output json` use the same words.
pub trait Record {
    /// Columns of a list table: a subset of the names that `fields` returns, in its order.
    const COLUMNS: &'static [&'static str];

    /// Returns every field as a name and a display value, for the table of a single item.
    fn fields(&self, language: Language) -> Vec<(&'static str, String)>;

    /// Returns the values of `COLUMNS`, for the row of a list table.
    fn row(&self, language: Language) -> Vec<String> {
        let mut fields = self.fields(language);
        fields.retain(|(name, _)| Self::COLUMNS.contains(name));
        fields.into_iter().map(|(_, value)| value).collect()
    }
}

impl Record for Org {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "slug",
        "name",
        "primary_region",
        "plan",
        "trial_ends_at",
        "active",
        "created_at",
    ];

    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("slug", self.slug.clone()),
            ("name", self.name.clone()),
            ("primary_region", self.primary_region.to_string()),
            ("plan", self.plan.clone()),
            ("plan_version", self.plan_version.to_string()),
            ("billing_currency", self.billing_currency.code().to_owned()),
            (
                "trial_ends_at",
                self.trial_ends_at
                    .as_ref()
                    .map_or_else(|| NONE.to_owned(), timestamp),
            ),
            ("allowed_models", models(&self.allowed_models, language)),
            (
                "transfer_mechanism",
                self.transfer_mechanism.map_or_else(
                    || NONE.to_owned(),
                    |mechanism| mechanism.as_str().to_owned(),
                ),
            ),
            ("active", self.active.to_string()),
            ("created_at", timestamp(&self.created_at)),
        ]
    }
}

impl Record for OrgEntitlements {
    const COLUMNS: &'static [&'static str] = &["plan", "plan_version"];

    /// Returns the plan, then one row per entitlement with its value and its source.
    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("plan", format!("{} ({})", self.plan_name, self.plan)),
            ("plan_version", self.plan_version.to_string()),
            ("latest_version", self.latest_version.to_string()),
        ];
        for field in &self.fields {
            let Some(name) = FIELDS.iter().find(|name| **name == field.name) else {
                continue;
            };
            let value = match &field.value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            let source = match field.source {
                Source::Plan => language.plan_source(&self.plan, self.plan_version),
                Source::Override => language.override_source(),
            };
            fields.push((name, format!("{value} ({source})")));
        }
        fields
    }
}

impl Record for CreditBalance {
    const COLUMNS: &'static [&'static str] = &["org_id", "balance_usd"];

    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("org_id", self.org_id.to_string()),
            ("balance_usd", self.balance_usd.to_string()),
            ("minimum_balance_usd", self.minimum_balance_usd.to_string()),
            ("entries", self.entries.to_string()),
            (
                "auto_topup",
                self.auto_topup.map_or_else(
                    || NONE.to_owned(),
                    |settings| {
                        let under = match language {
                            Language::En => "under",
                            Language::PtBr => "abaixo de",
                        };
                        format!(
                            "+{} USD {under} {} USD",
                            settings.amount_usd, settings.threshold_usd
                        )
                    },
                ),
            ),
        ]
    }
}

impl Record for Budget {
    const COLUMNS: &'static [&'static str] = &[
        "scope",
        "id",
        "max_usd",
        "spent_usd",
        "reserved_usd",
        "remaining_usd",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("scope", self.scope.as_str().to_owned()),
            ("id", self.id.to_string()),
            ("org_id", self.org_id.to_string()),
            ("max_usd", self.max_usd.to_string()),
            ("spent_usd", self.spent_usd.to_string()),
            ("reserved_usd", self.reserved_usd.to_string()),
            ("remaining_usd", self.remaining_usd.to_string()),
            ("updated_at", timestamp(&self.updated_at)),
        ]
    }
}

impl Record for FxRate {
    const COLUMNS: &'static [&'static str] = &["currency", "rate", "effective_at"];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("currency", self.currency.code().to_owned()),
            ("rate", self.rate.to_string()),
            ("effective_at", timestamp(&self.effective_at)),
            ("created_at", timestamp(&self.created_at)),
        ]
    }
}

impl Record for Invoice {
    const COLUMNS: &'static [&'static str] = &["id", "period", "currency", "total", "issued_at"];

    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        let information = match language {
            Language::En => "information",
            Language::PtBr => "informativo",
        };
        let lines: Vec<String> = self
            .lines
            .iter()
            .map(|line| {
                let note = if line.charged {
                    String::new()
                } else {
                    format!(" ({information})")
                };
                format!(
                    "{}: {} {} (USD {}){note}",
                    line.kind.as_str(),
                    line.amount,
                    self.currency,
                    line.amount_usd
                )
            })
            .collect();
        vec![
            ("id", self.id.to_string()),
            ("org_id", self.org_id.to_string()),
            ("period", self.period.clone()),
            ("currency", self.currency.code().to_owned()),
            ("fx_rate", self.fx_rate.to_string()),
            (
                "fx_effective_at",
                self.fx_effective_at
                    .as_ref()
                    .map_or_else(|| NONE.to_owned(), timestamp),
            ),
            ("lines", lines.join("\n")),
            ("total", format!("{} {}", self.total, self.currency)),
            ("issued_at", timestamp(&self.issued_at)),
        ]
    }
}

impl Record for LifecycleReport {
    const COLUMNS: &'static [&'static str] = &["trials_ended", "suspended", "purged"];

    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        let [teams, users, keys] = match language {
            Language::En => ["teams", "users", "keys"],
            Language::PtBr => ["equipes", "usuários", "chaves"],
        };
        let counts = |counts: &ResourceCounts| {
            format!(
                "{teams} {}, {users} {}, {keys} {}",
                counts.teams, counts.users, counts.keys
            )
        };
        vec![
            ("trials_ended", self.trials_ended.len().to_string()),
            ("suspended", counts(&self.suspended)),
            ("purged", counts(&self.purged)),
        ]
    }
}

impl Record for CreditEntry {
    const COLUMNS: &'static [&'static str] = &[
        "seq",
        "kind",
        "amount_usd",
        "balance_usd",
        "reference",
        "created_at",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("org_id", self.org_id.to_string()),
            ("seq", self.seq.to_string()),
            ("kind", self.kind.as_str().to_owned()),
            ("amount_usd", self.amount_usd.to_string()),
            ("balance_usd", self.balance_usd.to_string()),
            ("reference", optional(self.reference.as_ref())),
            ("created_at", timestamp(&self.created_at)),
        ]
    }
}

impl Record for Team {
    const COLUMNS: &'static [&'static str] = &["id", "name", "allowed_models", "created_at"];

    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("org_id", self.org_id.to_string()),
            ("name", self.name.clone()),
            ("allowed_models", models(&self.allowed_models, language)),
            ("created_at", timestamp(&self.created_at)),
        ]
    }
}

impl Record for User {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "email",
        "role",
        "team_id",
        "data_residency_region",
        "active",
        "created_at",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("org_id", self.org_id.to_string()),
            ("email", self.email.clone()),
            ("role", self.role.to_string()),
            ("team_id", optional(self.team_id.as_ref())),
            ("locale", self.locale.to_string()),
            (
                "data_residency_region",
                self.data_residency_region.to_string(),
            ),
            ("active", self.active.to_string()),
            ("created_at", timestamp(&self.created_at)),
        ]
    }
}

impl Record for Key {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "name",
        "scope",
        "region",
        "allowed_models",
        "active",
        "expires_at",
    ];

    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("org_id", self.org_id.to_string()),
            ("user_id", self.user_id.to_string()),
            ("name", self.name.clone()),
            ("scope", self.scope.to_string()),
            ("region", self.region.to_string()),
            ("allowed_models", models(&self.allowed_models, language)),
            ("rpm_limit", optional(self.rpm_limit.as_ref())),
            ("tpm_limit", optional(self.tpm_limit.as_ref())),
            ("active", self.active.to_string()),
            ("expires_at", optional_timestamp(self.expires_at.as_ref())),
            ("created_at", timestamp(&self.created_at)),
            ("rotated_at", optional_timestamp(self.rotated_at.as_ref())),
            (
                "previous_secret_expires_at",
                optional_timestamp(self.previous_secret_expires_at.as_ref()),
            ),
            ("revoked_at", optional_timestamp(self.revoked_at.as_ref())),
        ]
    }
}

impl Record for AuditEntry {
    const COLUMNS: &'static [&'static str] = &[
        "seq",
        "at",
        "actor_kind",
        "actor_id",
        "action",
        "target_kind",
        "target_id",
        "result",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("seq", self.seq.to_string()),
            ("id", self.id.to_string()),
            ("at", timestamp(&self.at)),
            ("actor_kind", self.actor_kind.as_str().to_owned()),
            ("actor_id", self.actor_id.clone()),
            ("action", self.action.clone()),
            ("target_kind", self.target_kind.clone()),
            ("target_id", optional(self.target_id.as_ref())),
            ("org_id", optional(self.org_id.as_ref())),
            ("source_ip", optional(self.source_ip.as_ref())),
            ("region", self.region.to_string()),
            ("result", self.result.as_str().to_owned()),
            ("justification", optional(self.justification.as_ref())),
            ("prev_hash", self.prev_hash.clone()),
            ("hash", self.hash.clone()),
        ]
    }
}

/// Field names of the nested `first_broken` object are written with a dot.
impl Record for AuditVerification {
    const COLUMNS: &'static [&'static str] = &[
        "valid",
        "entries_checked",
        "head_seq",
        "first_broken.seq",
        "first_broken.reason",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        let broken = self.first_broken.as_ref();
        vec![
            ("valid", self.valid.to_string()),
            ("entries_checked", self.entries_checked.to_string()),
            ("head_seq", self.head_seq.to_string()),
            ("first_broken.seq", optional(broken.map(|entry| &entry.seq))),
            (
                "first_broken.reason",
                optional(broken.map(|entry| &entry.reason)),
            ),
        ]
    }
}

/// Every limit a set may have, named by its JSON path; an absent one shows `-`.
impl Record for LimitSet {
    const COLUMNS: &'static [&'static str] = &[
        "concurrent_requests",
        "requests.per_minute",
        "requests.per_hour",
        "requests.per_day",
        "requests.per_month",
        "tokens.per_minute",
        "tokens.per_hour",
        "tokens.per_day",
        "tokens.per_month",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        let rules = [
            ("requests.per_minute", self.requests.per_minute),
            ("requests.per_hour", self.requests.per_hour),
            ("requests.per_day", self.requests.per_day),
            ("requests.per_month", self.requests.per_month),
            ("tokens.per_minute", self.tokens.per_minute),
            ("tokens.per_hour", self.tokens.per_hour),
            ("tokens.per_day", self.tokens.per_day),
            ("tokens.per_month", self.tokens.per_month),
        ];
        let mut fields = vec![(
            "concurrent_requests",
            optional(self.concurrent_requests.as_ref()),
        )];
        fields.extend(
            rules.map(|(name, rule)| (name, rule.map_or_else(|| NONE.to_owned(), limit_rule))),
        );
        fields
    }
}

/// Formats a limit as its amount, window kind and action, such as `100, sliding, throttle`.
fn limit_rule(rule: LimitRule) -> String {
    format!(
        "{}, {}, {}",
        rule.limit,
        rule.window.as_str(),
        rule.action.as_str()
    )
}

/// The `current` column marks the current context with `*`.
impl Record for ContextSummary {
    const COLUMNS: &'static [&'static str] = &["current", "name", "endpoint", "has_token"];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        let marker = if self.current { "*" } else { "" };
        vec![
            ("current", marker.to_owned()),
            ("name", self.name.clone()),
            ("endpoint", self.endpoint.clone()),
            ("has_token", self.has_token.to_string()),
        ]
    }
}

/// Formats a list of allowed models, where an empty list allows every model.
fn models(allowed_models: &[String], language: Language) -> String {
    if allowed_models.is_empty() {
        language.all_models().to_owned()
    } else {
        allowed_models.join(", ")
    }
}

fn optional(value: Option<&impl ToString>) -> String {
    value.map_or_else(|| NONE.to_owned(), ToString::to_string)
}

/// Formats a timestamp as RFC 3339 in UTC, to the second.
fn timestamp(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn optional_timestamp(value: Option<&DateTime<Utc>>) -> String {
    value.map_or_else(|| NONE.to_owned(), timestamp)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use synaxis_shared::api::{ActorKind, AuditResult, BrokenEntry, KeyScope};
    use synaxis_shared::{KeyId, Locale, OrgId, RegionId, Role, TeamId, UserId};

    use super::*;

    /// Asserts that every column names a field, in the order of the fields.
    fn assert_columns_are_ordered_fields<T: Record>(item: &T) {
        let names: Vec<&str> = item
            .fields(Language::En)
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| T::COLUMNS.contains(name))
            .collect();
        assert_eq!(names, T::COLUMNS);
    }

    fn created_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5)
            .single()
            .unwrap_or_default()
    }

    fn region() -> Result<RegionId, Box<dyn std::error::Error>> {
        Ok("eu-west-1".parse()?)
    }

    #[test]
    fn org_columns_are_fields() -> Result<(), Box<dyn std::error::Error>> {
        let org = Org {
            id: OrgId::new(),
            slug: "acme".to_owned(),
            name: "Acme".to_owned(),
            primary_region: region()?,
            allowed_models: Vec::new(),
            active: true,
            created_at: created_at(),
            plan: "free".to_owned(),
            plan_version: 1,
            plan_overrides: Default::default(),
            billing_currency: synaxis_shared::money::Currency::Usd,
            trial_ends_at: None,
            transfer_mechanism: None,
        };
        assert_columns_are_ordered_fields(&org);
        let fields = org.fields(Language::PtBr);
        assert!(fields.contains(&("allowed_models", "(todos os modelos)".to_owned())));
        Ok(())
    }

    #[test]
    fn team_columns_are_fields() {
        let team = Team {
            id: TeamId::new(),
            org_id: OrgId::new(),
            name: "platform".to_owned(),
            allowed_models: vec!["gpt-4o*".to_owned()],
            created_at: created_at(),
            suspended_at: None,
        };
        assert_columns_are_ordered_fields(&team);
        assert!(team.row(Language::En).contains(&"gpt-4o*".to_owned()));
    }

    #[test]
    fn user_columns_are_fields() -> Result<(), Box<dyn std::error::Error>> {
        let user = User {
            id: UserId::new(),
            org_id: OrgId::new(),
            team_id: None,
            email: "dev@example.com".to_owned(),
            role: Role::Developer,
            locale: Locale::PtBr,
            data_residency_region: region()?,
            active: true,
            created_at: created_at(),
        };
        assert_columns_are_ordered_fields(&user);
        let fields = user.fields(Language::En);
        assert!(fields.contains(&("team_id", NONE.to_owned())));
        assert!(fields.contains(&("locale", "pt-BR".to_owned())));
        Ok(())
    }

    #[test]
    fn key_columns_are_fields() -> Result<(), Box<dyn std::error::Error>> {
        let key = Key {
            id: KeyId::new(),
            org_id: OrgId::new(),
            user_id: UserId::new(),
            name: "ci".to_owned(),
            scope: KeyScope::Management,
            region: region()?,
            allowed_models: vec!["gpt-4o".to_owned(), "claude".to_owned()],
            rpm_limit: Some(600),
            tpm_limit: None,
            active: false,
            expires_at: None,
            created_at: created_at(),
            rotated_at: None,
            previous_secret_expires_at: None,
            revoked_at: Some(created_at()),
        };
        assert_columns_are_ordered_fields(&key);

        let row = key.row(Language::En);
        assert_eq!(row.len(), Key::COLUMNS.len());
        assert!(row.contains(&"gpt-4o, claude".to_owned()));
        assert!(row.contains(&NONE.to_owned()));
        assert!(row.contains(&"management".to_owned()));
        let fields = key.fields(Language::En);
        assert!(fields.contains(&("rpm_limit", "600".to_owned())));
        assert!(fields.contains(&("tpm_limit", NONE.to_owned())));
        Ok(())
    }

    #[test]
    fn audit_entry_columns_are_fields() -> Result<(), Box<dyn std::error::Error>> {
        let entry = AuditEntry {
            seq: 7,
            id: KeyId::new().0,
            at: created_at(),
            actor_kind: ActorKind::Operator,
            actor_id: "operator".to_owned(),
            action: "key.rotate".to_owned(),
            target_kind: "key".to_owned(),
            target_id: Some(KeyId::new().to_string()),
            org_id: None,
            source_ip: Some("127.0.0.1".to_owned()),
            region: region()?,
            result: AuditResult::Denied,
            justification: Some("ticket OPS-12".to_owned()),
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        };
        assert_columns_are_ordered_fields(&entry);

        let row = entry.row(Language::En);
        assert_eq!(row.first(), Some(&"7".to_owned()));
        assert!(row.contains(&"denied".to_owned()));
        assert!(row.contains(&"2025-01-02T03:04:05Z".to_owned()));
        Ok(())
    }

    #[test]
    fn audit_verification_shows_first_broken_entry() {
        let verification = AuditVerification {
            valid: false,
            entries_checked: 12,
            head_seq: 12,
            first_broken: Some(BrokenEntry {
                seq: 5,
                reason: "hash mismatch".to_owned(),
            }),
        };
        assert_columns_are_ordered_fields(&verification);
        let fields = verification.fields(Language::En);
        assert!(fields.contains(&("first_broken.seq", "5".to_owned())));
        assert!(fields.contains(&("first_broken.reason", "hash mismatch".to_owned())));

        let intact = AuditVerification {
            valid: true,
            first_broken: None,
            ..verification
        };
        assert!(
            intact
                .fields(Language::En)
                .contains(&("first_broken.seq", NONE.to_owned()))
        );
    }

    #[test]
    fn limit_set_shows_every_window() -> Result<(), serde_json::Error> {
        let set: LimitSet = serde_json::from_value(serde_json::json!({
            "concurrent_requests": 20,
            "requests": {"per_minute": {"limit": 100, "window": "sliding", "action": "throttle"}},
            "tokens": {"per_month": {"limit": 10000000, "action": "credit_charge"}}
        }))?;
        assert_columns_are_ordered_fields(&set);

        let fields = set.fields(Language::En);
        assert!(fields.contains(&("concurrent_requests", "20".to_owned())));
        assert!(fields.contains(&("requests.per_minute", "100, sliding, throttle".to_owned())));
        assert!(fields.contains(&("requests.per_day", NONE.to_owned())));
        assert!(fields.contains(&(
            "tokens.per_month",
            "10000000, fixed, credit_charge".to_owned()
        )));

        let empty = LimitSet::default().fields(Language::PtBr);
        assert!(empty.iter().all(|(_, value)| value == NONE), "{empty:?}");
        Ok(())
    }

    #[test]
    fn context_summary_marks_current() {
        let summary = ContextSummary {
            name: "prod".to_owned(),
            current: true,
            endpoint: "https://synaxis.example.com/".to_owned(),
            has_token: true,
        };
        assert_columns_are_ordered_fields(&summary);
        assert_eq!(summary.row(Language::En).first(), Some(&"*".to_owned()));
    }
}

/// One region in one observer's view: a row of `region status`.
#[derive(Clone, Debug)]
pub struct RegionRow {
    pub observer: String,
    pub region: String,
    pub status: String,
    pub consecutive_failures: String,
    pub consecutive_passes: String,
    pub since: String,
    pub last_probe_at: String,
    pub last_error: String,
    /// Until when the observer keeps the region out of its routing.
    pub drained_until: String,
}

impl RegionRow {
    /// Flattens every observer's view into rows; a view that could not be read is one row
    /// with its error.
    pub fn rows(status: &synaxis_shared::region::RegionsStatus) -> Vec<Self> {
        let mut rows = Vec::new();
        for view in &status.views {
            if let Some(error) = &view.error {
                rows.push(Self {
                    observer: view.observer.to_string(),
                    region: NONE.to_owned(),
                    status: NONE.to_owned(),
                    consecutive_failures: NONE.to_owned(),
                    consecutive_passes: NONE.to_owned(),
                    since: NONE.to_owned(),
                    last_probe_at: NONE.to_owned(),
                    last_error: error.clone(),
                    drained_until: NONE.to_owned(),
                });
            }
            for health in &view.regions {
                rows.push(Self {
                    observer: view.observer.to_string(),
                    region: health.region.to_string(),
                    status: health.status.to_string(),
                    consecutive_failures: health.consecutive_failures.to_string(),
                    consecutive_passes: health.consecutive_passes.to_string(),
                    since: optional_timestamp(health.since.as_ref()),
                    last_probe_at: optional_timestamp(health.last_probe_at.as_ref()),
                    last_error: health.last_error.clone().unwrap_or_else(|| NONE.to_owned()),
                    drained_until: optional_timestamp(health.drained_until.as_ref()),
                });
            }
        }
        rows
    }
}

impl Record for RegionRow {
    const COLUMNS: &'static [&'static str] = &[
        "observer",
        "region",
        "status",
        "consecutive_failures",
        "consecutive_passes",
        "since",
        "drained_until",
        "last_error",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("observer", self.observer.clone()),
            ("region", self.region.clone()),
            ("status", self.status.clone()),
            ("consecutive_failures", self.consecutive_failures.clone()),
            ("consecutive_passes", self.consecutive_passes.clone()),
            ("since", self.since.clone()),
            ("last_probe_at", self.last_probe_at.clone()),
            ("drained_until", self.drained_until.clone()),
            ("last_error", self.last_error.clone()),
        ]
    }
}

/// A user's consent: the current state and the number of changes.
impl Record for synaxis_shared::compliance::ConsentState {
    const COLUMNS: &'static [&'static str] = &["user_id", "scope", "granted", "regions"];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        let current = self.current.as_ref();
        let regions = current.map_or_else(
            || NONE.to_owned(),
            |record| {
                if record.regions.is_empty() {
                    "*".to_owned()
                } else {
                    record
                        .regions
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            },
        );
        vec![
            ("user_id", self.user_id.to_string()),
            ("scope", self.scope.as_str().to_owned()),
            ("granted", self.granted.to_string()),
            ("regions", regions),
            ("version", optional(current.map(|record| &record.version))),
            (
                "source",
                current.map_or_else(
                    || NONE.to_owned(),
                    |record| match record.source {
                        synaxis_shared::compliance::ConsentSource::User => "user".to_owned(),
                        synaxis_shared::compliance::ConsentSource::Operator => {
                            "operator".to_owned()
                        }
                    },
                ),
            ),
            (
                "recorded_at",
                optional_timestamp(current.map(|record| &record.recorded_at)),
            ),
            ("changes", self.history.len().to_string()),
        ]
    }
}

/// One region's residency report: a row of `compliance residency-check`.
impl Record for synaxis_shared::compliance::ResidencyReport {
    const COLUMNS: &'static [&'static str] = &[
        "region",
        "records_checked",
        "violations",
        "pending_transfers",
        "error",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("region", self.region.to_string()),
            ("records_checked", self.records_checked.to_string()),
            ("violations", self.violations.len().to_string()),
            ("pending_transfers", self.pending_transfers.to_string()),
            ("error", optional(self.error.as_ref())),
        ]
    }
}

/// The summary of a failover drill: `failover drill`.
impl Record for synaxis_shared::region::DrillReport {
    const COLUMNS: &'static [&'static str] = &[
        "drill_id",
        "region",
        "failed_over",
        "refused_without_consent",
        "lost",
        "duplicated",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("drill_id", self.drill_id.clone()),
            ("region", self.region.to_string()),
            ("model", self.model.clone()),
            ("started_at", timestamp(&self.started_at)),
            ("ended_at", timestamp(&self.ended_at)),
            ("failed_over", self.failed_over.to_string()),
            (
                "refused_without_consent",
                self.refused_without_consent.to_string(),
            ),
            ("served_at_home", self.served_at_home.to_string()),
            ("errors", self.errors.to_string()),
            ("records_expected", self.usage.expected.to_string()),
            ("records_landed", self.usage.landed.to_string()),
            ("lost", self.usage.lost.to_string()),
            ("duplicated", self.usage.duplicated.to_string()),
            ("still_held", self.usage.still_held.to_string()),
            ("unexpected", self.unexpected.join("; ")),
            ("restored", self.restored.to_string()),
        ]
    }
}

/// The outcome of one key's requests through one entry region: a row of `failover drill`.
impl Record for synaxis_shared::region::DrillTraffic {
    const COLUMNS: &'static [&'static str] = &[
        "home",
        "jurisdiction",
        "consent",
        "entry",
        "sent",
        "failed_over",
        "refused_without_consent",
        "served_at_home",
        "errors",
        "mislabelled",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("home", self.home.to_string()),
            ("jurisdiction", self.jurisdiction.to_string()),
            ("consent", self.consent.to_string()),
            ("entry", self.entry.to_string()),
            ("sent", self.sent.to_string()),
            ("failed_over", self.failed_over.to_string()),
            (
                "refused_without_consent",
                self.refused_without_consent.to_string(),
            ),
            ("served_at_home", self.served_at_home.to_string()),
            ("errors", self.errors.to_string()),
            ("mislabelled", self.mislabelled.to_string()),
        ]
    }
}
