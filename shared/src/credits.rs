//! Prepaid credits: the entries of an org's ledger and the bodies of the credits routes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::OrgId;

/// The kind of a ledger entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// Credit bought by the org.
    Topup,
    /// The cost of requests paid from credit.
    Usage,
    /// Tokens past the plan's monthly quota, at the plan's overage price.
    Overage,
    /// Credit given back to the org.
    Refund,
    /// A correction by an operator, of either sign.
    Adjustment,
    /// Credit added by the payment provider when the balance fell under the threshold.
    AutoTopup,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topup => "topup",
            Self::Usage => "usage",
            Self::Overage => "overage",
            Self::Refund => "refund",
            Self::Adjustment => "adjustment",
            Self::AutoTopup => "auto_topup",
        }
    }
}

impl std::str::FromStr for CreditKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "topup" => Ok(Self::Topup),
            "usage" => Ok(Self::Usage),
            "overage" => Ok(Self::Overage),
            "refund" => Ok(Self::Refund),
            "adjustment" => Ok(Self::Adjustment),
            "auto_topup" => Ok(Self::AutoTopup),
            other => Err(format!(
                "unknown credit kind `{other}`: use topup, usage, overage, refund, adjustment or auto_topup"
            )),
        }
    }
}

/// One entry of an org's credit ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditEntry {
    pub org_id: OrgId,
    /// Position in the org's ledger, from 1.
    pub seq: u64,
    pub kind: CreditKind,
    /// USD, signed: positive adds credit, negative spends it.
    pub amount_usd: Decimal,
    /// The balance after this entry.
    pub balance_usd: Decimal,
    /// A request id, an invoice or a ticket that the entry refers to.
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /control/v1/orgs/{org}/credits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCreditRequest {
    /// `topup`, `refund` or `adjustment`; the gateway writes the other kinds.
    pub kind: CreditKind,
    pub amount_usd: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// The response of `GET /control/v1/orgs/{org}/credits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBalance {
    pub org_id: OrgId,
    pub balance_usd: Decimal,
    /// The plan's minimum balance, under which overage is no longer charged to credit.
    pub minimum_balance_usd: Decimal,
    /// Entries in the ledger.
    pub entries: u64,
    /// The org's auto top-up, when it has one.
    #[serde(default)]
    pub auto_topup: Option<AutoTopup>,
}

/// Auto top-up of an org's credits: when the balance falls under `threshold_usd`, the payment
/// provider adds `amount_usd`. The body of `PUT /control/v1/orgs/{org}/credits/auto-topup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTopup {
    pub threshold_usd: Decimal,
    pub amount_usd: Decimal,
}
