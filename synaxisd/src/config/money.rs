//! Money in config is written as a decimal string and parsed into `Decimal` directly, because a
//! TOML float such as `0.1` has already lost exactness before any code reads it.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserializer;
use serde::de::{self, Visitor};

/// Deserializes a decimal amount that must be written as a string, such as `"0.15"`.
pub fn deserialize_money<'de, D>(deserializer: D) -> Result<Decimal, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_any(MoneyVisitor)
}

/// Deserializes an optional decimal amount written as a string.
pub fn deserialize_optional_money<'de, D>(deserializer: D) -> Result<Option<Decimal>, D::Error>
where
    D: Deserializer<'de>,
{
    deserialize_money(deserializer).map(Some)
}

struct MoneyVisitor;

const HINT: &str = "write amounts as strings, for example \"0.15\", so that they are never rounded through a floating-point number";

impl Visitor<'_> for MoneyVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a decimal amount as a string, such as \"0.15\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Decimal, E> {
        Decimal::from_str(value.trim())
            .map_err(|_| E::custom(format!("`{value}` is not a decimal amount; {HINT}")))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Decimal, E> {
        Err(E::custom(format!(
            "the amount {value} is a floating-point number; {HINT}"
        )))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Decimal, E> {
        Err(E::custom(format!("the amount {value} is a number; {HINT}")))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Decimal, E> {
        Err(E::custom(format!("the amount {value} is a number; {HINT}")))
    }
}
