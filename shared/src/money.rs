//! Currencies of invoices, and rounding to their minor unit. USD is the base: usage is priced
//! in USD, unrounded, and converted only on an invoice.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// A billing currency, by ISO 4217 code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "USD")]
    Usd,
    #[serde(rename = "EUR")]
    Eur,
    #[serde(rename = "BRL")]
    Brl,
    #[serde(rename = "GBP")]
    Gbp,
}

impl Currency {
    pub const ALL: [Self; 4] = [Self::Usd, Self::Eur, Self::Brl, Self::Gbp];

    /// Returns USD, the currency that prices and credits are kept in.
    pub fn base() -> Self {
        Self::Usd
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Usd => "USD",
            Self::Eur => "EUR",
            Self::Brl => "BRL",
            Self::Gbp => "GBP",
        }
    }

    /// Returns the decimal places of the currency's minor unit: 2 for each of the four (cent,
    /// euro cent, centavo, penny).
    pub fn minor_unit_places(self) -> u32 {
        2
    }

    /// Rounds `amount` once to the minor unit, half to even.
    pub fn round(self, amount: Decimal) -> Decimal {
        amount.round_dp_with_strategy(
            self.minor_unit_places(),
            RoundingStrategy::MidpointNearestEven,
        )
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|currency| currency.code().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown currency `{text}`: use USD, EUR, BRL or GBP"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap_or_default()
    }

    #[test]
    fn rounding_is_half_even() {
        assert_eq!(Currency::Eur.round(dec("0.125")), dec("0.12"));
        assert_eq!(Currency::Eur.round(dec("0.135")), dec("0.14"));
        assert_eq!(Currency::Brl.round(dec("0.1251")), dec("0.13"));
    }

    #[test]
    fn codes_parse_in_any_case() {
        assert_eq!("brl".parse::<Currency>(), Ok(Currency::Brl));
        assert!("JPY".parse::<Currency>().is_err());
    }
}
