//! Budget holds of inference requests. Admission reserves a request's worst-case cost on the
//! budgets of its key, team and org in the store, which every `synaxisd` of the region shares;
//! the request's record settles the hold to the real cost when the record writer stores it,
//! in the same transaction. A hold whose process stopped first expires and is released by the
//! sweeper of any process.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use synaxis_shared::RequestId;
use synaxis_shared::budgets::{BudgetRef, to_micros_ceil};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Prices;
use crate::http_error::{ApiError, BudgetExceeded};
use crate::store::{BudgetCharge, BudgetReservation, Store};

/// Largest amount one request reserves, in micro-dollars (USD 1,000,000,000): far above any
/// budget, and far from overflowing the sums that the store checks.
const MAX_HOLD_MICROS: i64 = 1_000_000_000_000_000;

/// Longest pause of the sweeper between two releases of expired holds.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Reserves and releases budget holds in the store.
#[derive(Debug)]
pub struct Budgets {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hold_ttl: Duration,
}

/// What an admitted request holds on its budgets until its record settles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetHold {
    pub request_id: RequestId,
    pub budgets: Vec<BudgetRef>,
}

impl BudgetHold {
    /// Returns the charge that settles the hold to `cost_usd`.
    pub fn charge(self, cost_usd: Decimal) -> BudgetCharge {
        BudgetCharge {
            request_id: self.request_id,
            budgets: self.budgets,
            cost_usd,
        }
    }
}

impl Budgets {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, hold_ttl: Duration) -> Self {
        Self {
            store,
            clock,
            hold_ttl,
        }
    }

    /// Holds `worst_case` USD on each of `budgets` (sorted, as the key's lookup lists them) for
    /// the request `request_id`, or refuses with 402 `budget_exceeded` when one has too little
    /// left. Returns `None` when none of the budgets exists any more.
    pub async fn reserve(
        &self,
        request_id: RequestId,
        budgets: &[BudgetRef],
        worst_case: Decimal,
    ) -> Result<Option<BudgetHold>, ApiError> {
        let amount = to_micros_ceil(worst_case).clamp(0, MAX_HOLD_MICROS);
        let expires_at =
            self.clock.now() + chrono::Duration::from_std(self.hold_ttl).unwrap_or_default();
        let reservation = self
            .store
            .reserve_budgets(request_id, budgets, amount, expires_at)
            .await
            .map_err(|error| {
                tracing::error!(%error, "reserving a budget failed");
                ApiError::Internal
            })?;
        match reservation {
            BudgetReservation::Held(held) if held.is_empty() => Ok(None),
            BudgetReservation::Held(held) => Ok(Some(BudgetHold {
                request_id,
                budgets: held,
            })),
            BudgetReservation::Exceeded(budget) => {
                Err(ApiError::BudgetExceeded(Box::new(BudgetExceeded {
                    budget,
                    cost_usd: worst_case,
                })))
            }
        }
    }

    /// Releases expired holds every quarter of the hold's life, at most every minute, until
    /// `stop` is cancelled.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let interval = (self.hold_ttl / 4).min(MAX_SWEEP_INTERVAL);
        loop {
            tokio::select! {
                () = self.clock.sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            match self
                .store
                .release_expired_budget_holds(self.clock.now())
                .await
            {
                Ok(0) => {}
                Ok(released) => {
                    tracing::warn!(
                        released,
                        "released expired budget holds of requests that never settled"
                    );
                }
                Err(error) => tracing::warn!(%error, "releasing expired budget holds failed"),
            }
        }
    }
}

/// Returns the most that `input_tokens` and `output_tokens` can cost at any of `prices`: the
/// highest input price and the highest output price, which a fallback may reach.
pub fn worst_case_cost<'a>(
    prices: impl IntoIterator<Item = &'a Prices>,
    input_tokens: u64,
    output_tokens: u64,
) -> Decimal {
    let (input, output) =
        prices
            .into_iter()
            .fold((Decimal::ZERO, Decimal::ZERO), |(input, output), prices| {
                (
                    input.max(prices.input_per_million),
                    output.max(prices.output_per_million),
                )
            });
    let per_million = Decimal::from(1_000_000);
    (Decimal::from(input_tokens) * input + Decimal::from(output_tokens) * output) / per_million
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn prices(input: &str, output: &str) -> Prices {
        Prices {
            input_per_million: Decimal::from_str(input).unwrap_or_default(),
            output_per_million: Decimal::from_str(output).unwrap_or_default(),
        }
    }

    #[test]
    fn worst_case_takes_the_dearest_price_of_each_kind() {
        let deployments = [prices("1", "8"), prices("3", "2")];
        // 1000 input tokens at $3/M and 500 output tokens at $8/M.
        assert_eq!(
            worst_case_cost(&deployments, 1_000, 500),
            Decimal::from_str("0.007").unwrap_or_default()
        );
    }
}
