//! Budgets: spend limits in USD of keys, teams and organizations, and the bodies of the budget
//! routes. Amounts are stored in whole micro-dollars, the precision of a request's cost.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::OrgId;

/// Decimal places of a budget amount: micro-dollars.
pub const BUDGET_SCALE: u32 = 6;

/// What a budget limits: one key's spend, a team's, or an organization's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    Key,
    Team,
    Org,
}

impl BudgetScope {
    pub const ALL: [Self; 3] = [Self::Key, Self::Team, Self::Org];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Team => "team",
            Self::Org => "org",
        }
    }

    /// The scope's name in a Brazilian Portuguese sentence, with its article: "da chave".
    pub fn pt_br(self) -> &'static str {
        match self {
            Self::Key => "da chave",
            Self::Team => "da equipe",
            Self::Org => "da organização",
        }
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BudgetScope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "key" => Ok(Self::Key),
            "team" => Ok(Self::Team),
            "org" => Ok(Self::Org),
            other => Err(format!(
                "unknown budget scope `{other}`: use key, team or org"
            )),
        }
    }
}

/// One budget that applies to a request: its scope and the id of its key, team or org.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BudgetRef {
    pub scope: BudgetScope,
    pub id: Uuid,
}

/// A budget as the control API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub scope: BudgetScope,
    /// The id of the key, team or organization.
    pub id: Uuid,
    pub org_id: OrgId,
    pub max_usd: Decimal,
    /// The cost of the requests settled since the budget was set or its spend was reset.
    pub spent_usd: Decimal,
    /// The worst-case cost of the admitted requests that have not ended yet.
    pub reserved_usd: Decimal,
    /// What a new request may still reserve: `max - spent - reserved`, at least zero.
    pub remaining_usd: Decimal,
    pub updated_at: DateTime<Utc>,
}

/// The body of `PUT .../budget`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetRequest {
    pub max_usd: Decimal,
    /// Starts the spend again from zero; otherwise a changed budget keeps what was spent.
    #[serde(default)]
    pub reset_spend: bool,
}

/// Converts whole micro-dollars to USD.
pub fn from_micros(micros: i64) -> Decimal {
    Decimal::new(micros, BUDGET_SCALE)
}

/// Converts USD to whole micro-dollars, or `None` when the amount has more than
/// [`BUDGET_SCALE`] decimal places or does not fit.
pub fn to_micros(usd: Decimal) -> Option<i64> {
    let scaled = usd.checked_mul(Decimal::from(1_000_000))?;
    if scaled.fract() != Decimal::ZERO {
        return None;
    }
    i64::try_from(scaled).ok()
}

/// Converts USD to whole micro-dollars, rounding a fraction of a micro-dollar up, so that a
/// reservation is never smaller than the amount it covers. Saturates at `i64::MAX`.
pub fn to_micros_ceil(usd: Decimal) -> i64 {
    usd.checked_mul(Decimal::from(1_000_000))
        .map(|scaled| scaled.ceil())
        .and_then(|scaled| i64::try_from(scaled).ok())
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap_or_default()
    }

    #[test]
    fn micros_are_exact_or_refused() {
        assert_eq!(to_micros(usd("12.345678")), Some(12_345_678));
        assert_eq!(to_micros(usd("0.0000001")), None);
        assert_eq!(from_micros(12_345_678), usd("12.345678"));
    }

    #[test]
    fn reservations_round_up() {
        assert_eq!(to_micros_ceil(usd("0.0000001")), 1);
        assert_eq!(to_micros_ceil(usd("0.000002")), 2);
        assert_eq!(to_micros_ceil(Decimal::MAX), i64::MAX);
    }

    #[test]
    fn scopes_order_keys_before_teams_before_orgs() {
        let mut scopes = vec![BudgetScope::Org, BudgetScope::Key, BudgetScope::Team];
        scopes.sort();
        assert_eq!(scopes, BudgetScope::ALL);
    }
}
