//! Exchange rates and invoices: the bodies of the `fx` and invoice routes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Currency;
use crate::{InvoiceId, OrgId};

/// Units of a currency per USD, in force from `effective_at` until a later rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxRate {
    pub currency: Currency,
    pub rate: Decimal,
    pub effective_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// One rate of `POST /control/v1/fx`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFxRate {
    pub currency: Currency,
    pub rate: Decimal,
    /// When the rate takes effect; the time of the call when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

/// The body of `POST /control/v1/fx`: rates stored together, all or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFxRatesRequest {
    pub rates: Vec<NewFxRate>,
}

/// The body of `POST /control/v1/orgs/{org}/invoices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueInvoiceRequest {
    /// The calendar month in UTC, such as `2026-11`.
    pub period: String,
}

/// Kind of an invoice line: the charge or the information it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The plan's monthly fee: charged.
    PlanFee,
    /// Credit bought in the period, by hand or by auto top-up: charged.
    CreditTopups,
    /// Requests paid from credits: information.
    Usage,
    /// Overage paid from credits: information.
    Overage,
    /// Refunds and adjustments of credit: information.
    CreditCorrections,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlanFee => "plan_fee",
            Self::CreditTopups => "credit_topups",
            Self::Usage => "usage",
            Self::Overage => "overage",
            Self::CreditCorrections => "credit_corrections",
        }
    }

    /// Reports whether the line adds to the total. The other lines show what credits paid.
    pub fn is_charged(self) -> bool {
        matches!(self, Self::PlanFee | Self::CreditTopups)
    }
}

impl std::str::FromStr for LineKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [
            Self::PlanFee,
            Self::CreditTopups,
            Self::Usage,
            Self::Overage,
            Self::CreditCorrections,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| format!("unknown invoice line kind `{text}`"))
    }
}

/// A line of an issued invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub kind: LineKind,
    /// The line's USD amount, unrounded.
    pub amount_usd: Decimal,
    /// The USD amount converted at the invoice's rate and rounded once to the currency's minor
    /// unit, half to even.
    pub amount: Decimal,
    pub charged: bool,
}

/// An org's invoice for one calendar month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: InvoiceId,
    pub org_id: OrgId,
    /// The month, such as `2026-11`.
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: Currency,
    /// Units of `currency` per USD; 1 for USD.
    pub fx_rate: Decimal,
    /// When the rate took effect; `None` for USD.
    pub fx_effective_at: Option<DateTime<Utc>>,
    pub lines: Vec<InvoiceLine>,
    /// The sum of the charged lines' rounded amounts.
    pub total: Decimal,
    pub issued_at: DateTime<Utc>,
}
