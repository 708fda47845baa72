//! Plans and entitlements: the catalog of versioned plans, the per-org overrides of single
//! fields, and the effective entitlements of an org with the source of each value.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A count that a plan allows, or no bound at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    Limited(u64),
    Unlimited,
}

impl Quota {
    /// Returns whether `count` more of the resource fit when `used` already exist.
    pub fn allows(self, used: u64, count: u64) -> bool {
        match self {
            Self::Limited(limit) => used.saturating_add(count) <= limit,
            Self::Unlimited => true,
        }
    }

    /// Returns the bound, or `None` when there is none.
    pub fn limit(self) -> Option<u64> {
        match self {
            Self::Limited(limit) => Some(limit),
            Self::Unlimited => None,
        }
    }

    /// Returns whether this quota allows more than `other`.
    pub fn exceeds(self, other: Self) -> bool {
        match (self, other) {
            (Self::Unlimited, Self::Limited(_)) => true,
            (Self::Limited(mine), Self::Limited(theirs)) => mine > theirs,
            _ => false,
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limited(limit) => write!(f, "{limit}"),
            Self::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for Quota {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Limited(limit) => serializer.serialize_u64(*limit),
            Self::Unlimited => serializer.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Word(String),
            Other(serde_json::Value),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(limit) => Ok(Self::Limited(limit)),
            Raw::Word(word) if word == "unlimited" => Ok(Self::Unlimited),
            Raw::Word(word) => Err(serde::de::Error::custom(format!(
                "invalid quota `{word}`: use a whole number such as 5, or \"unlimited\""
            ))),
            Raw::Other(value) => Err(serde::de::Error::custom(format!(
                "invalid quota {value}: use a whole number such as 5, or \"unlimited\""
            ))),
        }
    }
}

/// The rate-limit window kinds that an org's limit sets may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKinds {
    FixedOnly,
    FixedAndSliding,
    Custom,
}

impl WindowKinds {
    pub fn allows_sliding(self) -> bool {
        !matches!(self, Self::FixedOnly)
    }
}

/// The entitlements of one plan version, or the effective ones of an org.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entitlements {
    pub teams: Quota,
    pub users_per_team: Quota,
    pub keys_per_user: Quota,
    pub concurrent_requests: Quota,
    pub requests_per_day: Quota,
    pub tokens_per_month: Quota,
    pub rate_limit_windows: WindowKinds,
    /// Currencies that invoices may use, as ISO 4217 codes.
    pub billing_currencies: Vec<String>,
    pub audit_log_access: bool,
    pub sso: bool,
    /// Plan fee per month in USD.
    pub monthly_fee_usd: Decimal,
    /// Price of a token beyond the monthly quota, in USD.
    #[serde(default = "default_overage_per_token")]
    pub overage_per_token_usd: Decimal,
    /// Credit balance in USD under which overage stops being charged.
    #[serde(default = "default_minimum_balance")]
    pub minimum_balance_usd: Decimal,
    /// Whether the org may have its credits topped up through the payment provider when its
    /// balance falls under a threshold.
    #[serde(default)]
    pub auto_topup: bool,
}

/// Returns the default overage price, $0.0001 per token.
pub fn default_overage_per_token() -> Decimal {
    Decimal::new(1, 4)
}

/// Returns the default minimum credit balance, $5.00.
pub fn default_minimum_balance() -> Decimal {
    Decimal::new(500, 2)
}

/// Per-org values that replace single fields of the plan. Absent fields follow the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_per_team: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_per_user: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_windows: Option<WindowKinds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_currencies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_fee_usd: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_per_token_usd: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_balance_usd: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_topup: Option<bool>,
}

/// Applies `$apply` to each field name of [`Entitlements`] and [`Overrides`].
macro_rules! for_each_field {
    ($apply:ident) => {
        $apply!(
            teams,
            users_per_team,
            keys_per_user,
            concurrent_requests,
            requests_per_day,
            tokens_per_month,
            rate_limit_windows,
            billing_currencies,
            audit_log_access,
            sso,
            monthly_fee_usd,
            overage_per_token_usd,
            minimum_balance_usd,
            auto_topup
        )
    };
}

/// The names of the entitlement fields, in the order `org show` prints them.
pub const FIELDS: &[&str] = &[
    "teams",
    "users_per_team",
    "keys_per_user",
    "concurrent_requests",
    "requests_per_day",
    "tokens_per_month",
    "rate_limit_windows",
    "billing_currencies",
    "audit_log_access",
    "sso",
    "monthly_fee_usd",
    "overage_per_token_usd",
    "minimum_balance_usd",
    "auto_topup",
];

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Returns the names of the fields that are set.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        macro_rules! collect {
            ($($field:ident),*) => {
                $(if self.$field.is_some() {
                    names.push(stringify!($field));
                })*
            };
        }
        for_each_field!(collect);
        names
    }

    /// Sets the fields that `changes` sets, and removes the ones it names with `null`.
    /// `changes` is a JSON object from field name to value or `null`.
    pub fn apply(&mut self, changes: &serde_json::Value) -> Result<(), String> {
        let Some(changes) = changes.as_object() else {
            return Err(
                "the overrides must be a JSON object such as {\"teams\": 3, \"sso\": null}"
                    .to_owned(),
            );
        };
        let mut current = serde_json::to_value(&*self).map_err(|error| error.to_string())?;
        let Some(fields) = current.as_object_mut() else {
            return Err("the stored overrides are not an object".to_owned());
        };
        for (name, value) in changes {
            if !FIELDS.contains(&name.as_str()) {
                return Err(format!(
                    "unknown entitlement `{name}`: use one of {}",
                    FIELDS.join(", ")
                ));
            }
            if value.is_null() {
                fields.remove(name);
                continue;
            }
            // Each field alone first, so that an error names the field.
            let single = serde_json::json!({ name.clone(): value.clone() });
            let parsed: Self = serde_json::from_value(single)
                .map_err(|error| format!("invalid value for `{name}`: {error}"))?;
            for (field, amount) in [
                ("monthly_fee_usd", parsed.monthly_fee_usd),
                ("overage_per_token_usd", parsed.overage_per_token_usd),
                ("minimum_balance_usd", parsed.minimum_balance_usd),
            ] {
                if let Some(amount) = amount.filter(|amount| amount.is_sign_negative()) {
                    return Err(format!(
                        "invalid value for `{field}`: {amount} is negative; give 0 or more USD"
                    ));
                }
            }
            fields.insert(name.clone(), value.clone());
        }
        *self = serde_json::from_value(current).map_err(|error| error.to_string())?;
        Ok(())
    }
}

impl Entitlements {
    /// Returns these entitlements with the fields that `overrides` sets replaced.
    pub fn with_overrides(&self, overrides: &Overrides) -> Self {
        let mut effective = self.clone();
        macro_rules! overlay {
            ($($field:ident),*) => {
                $(if let Some(value) = &overrides.$field {
                    effective.$field = value.clone();
                })*
            };
        }
        for_each_field!(overlay);
        effective
    }

    /// Returns each field's value as JSON, keyed by field name.
    pub fn to_fields(&self) -> BTreeMap<&'static str, serde_json::Value> {
        let mut fields = BTreeMap::new();
        macro_rules! collect {
            ($($field:ident),*) => {
                $(fields.insert(
                    stringify!($field),
                    serde_json::to_value(&self.$field).unwrap_or(serde_json::Value::Null),
                );)*
            };
        }
        for_each_field!(collect);
        fields
    }
}

/// The source of an effective entitlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Plan,
    Override,
}

/// One effective entitlement of an org.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveField {
    pub name: String,
    pub value: serde_json::Value,
    pub source: Source,
}

/// The effective entitlements of an org: its plan version's, with its overrides applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgEntitlements {
    pub plan: String,
    pub plan_name: String,
    pub plan_version: u32,
    /// The newest version of the plan; `plan migrate` moves the org to it.
    pub latest_version: u32,
    /// Every field, in the order of [`FIELDS`].
    pub fields: Vec<EffectiveField>,
    pub overrides: Overrides,
}

impl OrgEntitlements {
    pub fn new(
        plan: &str,
        plan_name: &str,
        plan_version: u32,
        latest_version: u32,
        entitlements: &Entitlements,
        overrides: &Overrides,
    ) -> Self {
        let values = entitlements.with_overrides(overrides).to_fields();
        let overridden = overrides.fields();
        let fields = FIELDS
            .iter()
            .map(|name| EffectiveField {
                name: (*name).to_owned(),
                value: values.get(name).cloned().unwrap_or(serde_json::Value::Null),
                source: if overridden.contains(name) {
                    Source::Override
                } else {
                    Source::Plan
                },
            })
            .collect();
        Self {
            plan: plan.to_owned(),
            plan_name: plan_name.to_owned(),
            plan_version,
            latest_version,
            fields,
            overrides: overrides.clone(),
        }
    }
}

/// The body of `PUT /control/v1/orgs/{org}/plan`: moves an org to a plan version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigratePlanRequest {
    /// The plan to move to; the org's current plan when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The version to move to; the plan's newest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// Resources suspended, restored or purged by one step of the plan lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceCounts {
    pub teams: u64,
    pub users: u64,
    pub keys: u64,
}

impl ResourceCounts {
    pub fn is_empty(self) -> bool {
        self == Self::default()
    }

    /// Adds `more` to these counts.
    pub fn add(&mut self, more: Self) {
        self.teams += more.teams;
        self.users += more.users;
        self.keys += more.keys;
    }
}

/// Report of one run of the plan lifecycle, the response of `POST /control/v1/plans/lifecycle`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleReport {
    /// Orgs whose trial ended and that moved to the default plan.
    pub trials_ended: Vec<crate::OrgId>,
    pub suspended: ResourceCounts,
    pub purged: ResourceCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free() -> Entitlements {
        Entitlements {
            teams: Quota::Limited(1),
            users_per_team: Quota::Limited(3),
            keys_per_user: Quota::Limited(2),
            concurrent_requests: Quota::Limited(10),
            requests_per_day: Quota::Limited(1_000),
            tokens_per_month: Quota::Limited(100_000),
            rate_limit_windows: WindowKinds::FixedOnly,
            billing_currencies: vec!["USD".to_owned()],
            audit_log_access: false,
            sso: false,
            monthly_fee_usd: Decimal::ZERO,
            overage_per_token_usd: Decimal::new(1, 4),
            minimum_balance_usd: Decimal::new(500, 2),
            auto_topup: false,
        }
    }

    #[test]
    fn quota_reads_count_or_unlimited() {
        let five: Quota = serde_json::from_str("5").expect("count");
        assert_eq!(five, Quota::Limited(5));
        let unlimited: Quota = serde_json::from_str("\"unlimited\"").expect("word");
        assert_eq!(unlimited, Quota::Unlimited);
        let error = serde_json::from_str::<Quota>("\"many\"").expect_err("unknown word");
        assert!(error.to_string().contains("`many`"), "{error}");
    }

    #[test]
    fn overrides_replace_only_their_fields() {
        let mut overrides = Overrides::default();
        overrides
            .apply(&serde_json::json!({"teams": 3, "sso": true}))
            .expect("apply");
        let effective = OrgEntitlements::new("free", "Free", 1, 1, &free(), &overrides);
        let teams = &effective.fields[0];
        assert_eq!(teams.value, serde_json::json!(3));
        assert_eq!(teams.source, Source::Override);
        let keys = &effective.fields[2];
        assert_eq!(keys.value, serde_json::json!(2));
        assert_eq!(keys.source, Source::Plan);

        overrides
            .apply(&serde_json::json!({"teams": null}))
            .expect("remove");
        assert_eq!(overrides.fields(), vec!["sso"]);
    }

    #[test]
    fn overrides_reject_unknown_field() {
        let mut overrides = Overrides::default();
        let error = overrides
            .apply(&serde_json::json!({"team": 3}))
            .expect_err("unknown field");
        assert!(error.contains("unknown entitlement `team`"), "{error}");
        assert!(overrides.is_empty());
    }

    #[test]
    fn overrides_name_the_bad_field() {
        let mut overrides = Overrides::default();
        for (changes, named) in [
            (
                serde_json::json!({"tokens_per_month": -5}),
                "`tokens_per_month`",
            ),
            (serde_json::json!({"teams": 1.5}), "`teams`"),
            (
                serde_json::json!({"overage_per_token_usd": "-0.5"}),
                "`overage_per_token_usd`",
            ),
            (
                serde_json::json!({"minimum_balance_usd": "-100"}),
                "`minimum_balance_usd`",
            ),
        ] {
            let error = overrides.apply(&changes).expect_err("invalid value");
            assert!(error.contains(named), "{changes}: {error}");
        }
        assert!(overrides.is_empty(), "nothing is stored on error");
        overrides
            .apply(&serde_json::json!({"overage_per_token_usd": "0.0002"}))
            .expect("a valid amount");
        assert_eq!(overrides.overage_per_token_usd, Some(Decimal::new(2, 4)));
    }
}
