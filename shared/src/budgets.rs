//! Budgets, the USD spend limits of keys, teams and organizations, and the bodies of the budget
//! routes. Amounts are stored as whole micro-dollars because request costs are rounded to 6
//! decimal places.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::OrgId;

/// Number of decimal places of a stored budget amount, which makes the unit a micro-dollar.
pub const BUDGET_SCALE: u32 = 6;

/// Kind of owner whose spend a budget limits: a key, a team or an organization.
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

    /// Returns the scope's name with its article for Brazilian Portuguese messages, such as
    /// "da chave".
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

/// Reference to one budget: its scope and the id of the key, team or organization that owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BudgetRef {
    pub scope: BudgetScope,
    pub id: Uuid,
}

/// Budget as the control API returns it, with its spend and reservations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub scope: BudgetScope,
    /// Id of the key, team or organization that owns the budget.
    pub id: Uuid,
    pub org_id: OrgId,
    pub max_usd: Decimal,
    /// Cost of the requests settled since the budget was created or its spend was last reset.
    pub spent_usd: Decimal,
    /// Sum of the worst-case costs of admitted requests whose holds are not settled or expired.
    pub reserved_usd: Decimal,
    /// Amount that new requests may still reserve, `max - spent - reserved` but at least zero.
    pub remaining_usd: Decimal,
    pub updated_at: DateTime<Utc>,
}

/// Body of `PUT .../budget`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetRequest {
    pub max_usd: Decimal,
    /// Whether to restart the spend from zero. When false, a changed budget keeps its spend.
    #[serde(default)]
    pub reset_spend: bool,
}

/// Converts whole micro-dollars to USD.
pub fn from_micros(micros: i64) -> Decimal {
    Decimal::new(micros, BUDGET_SCALE)
}

/// Converts USD to whole micro-dollars. Returns `None` when the amount contains a fraction of a
/// micro-dollar or does not fit in an `i64`.
pub fn to_micros(usd: Decimal) -> Option<i64> {
    let scaled = usd.checked_mul(Decimal::from(1_000_000))?;
    if scaled.fract() != Decimal::ZERO {
        return None;
    }
    i64::try_from(scaled).ok()
}

/// Converts USD to whole micro-dollars and rounds a fraction of a micro-dollar up, so that a
/// hold is never smaller than the amount it covers. Returns `i64::MAX` for any amount that does
/// not fit in an `i64`, even a negative one.
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
    fn to_micros_exact_or_none() {
        assert_eq!(to_micros(usd("12.345678")), Some(12_345_678));
        assert_eq!(to_micros(usd("0.0000001")), None);
        assert_eq!(from_micros(12_345_678), usd("12.345678"));
    }

    #[test]
    fn to_micros_ceil_rounds_up_and_saturates() {
        assert_eq!(to_micros_ceil(usd("0.0000001")), 1);
        assert_eq!(to_micros_ceil(usd("0.000002")), 2);
        assert_eq!(to_micros_ceil(Decimal::MAX), i64::MAX);
    }

    #[test]
    fn scopes_sort_key_team_org() {
        let mut scopes = vec![BudgetScope::Org, BudgetScope::Key, BudgetScope::Team];
        scopes.sort();
        assert_eq!(scopes, BudgetScope::ALL);
    }
}
