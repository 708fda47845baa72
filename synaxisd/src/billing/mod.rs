//! Prices and costs. Amounts are `Decimal` in USD; floats never touch money.

pub mod budgets;
pub mod invoices;
pub mod payments;
pub mod tokens;

use rust_decimal::{Decimal, RoundingStrategy};

use crate::config::Prices;

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// Decimal places of a stored cost.
pub const COST_SCALE: u32 = 6;

/// Returns the USD cost of `usage` at per-million `prices`, rounded half-even to
/// [`COST_SCALE`] places.
pub fn cost(prices: &Prices, usage: Usage) -> Decimal {
    let per_million = Decimal::from(1_000_000);
    let input = Decimal::from(usage.prompt_tokens) * prices.input_per_million / per_million;
    let output = Decimal::from(usage.completion_tokens) * prices.output_per_million / per_million;
    (input + output).round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointNearestEven)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn model(input: &str, output: &str) -> Prices {
        Prices {
            input_per_million: Decimal::from_str(input).expect("decimal"),
            output_per_million: Decimal::from_str(output).expect("decimal"),
        }
    }

    #[test]
    fn cost_uses_per_million_prices() {
        let usage = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 500,
        };
        // 1000 * 0.15 / 1e6 + 500 * 0.60 / 1e6 = 0.00015 + 0.0003
        assert_eq!(
            cost(&model("0.15", "0.60"), usage),
            Decimal::from_str("0.00045").expect("decimal")
        );
    }

    #[test]
    fn cost_rounds_half_even_to_six_places() {
        let usage = Usage {
            prompt_tokens: 5,
            completion_tokens: 0,
        };
        // 5 * 0.1 / 1e6 = 0.0000005, exactly half of the sixth place: rounds to even (0).
        assert_eq!(cost(&model("0.1", "0"), usage), Decimal::ZERO);
        // 15 * 0.1 / 1e6 = 0.0000015: rounds to even (0.000002).
        let usage = Usage {
            prompt_tokens: 15,
            completion_tokens: 0,
        };
        assert_eq!(
            cost(&model("0.1", "0"), usage),
            Decimal::from_str("0.000002").expect("decimal")
        );
    }
}
