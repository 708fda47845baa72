//! Budget holds of inference requests. At admission, a request reserves its worst-case cost on
//! the budgets of its key, team and org. The budgets are in the store, which every `synaxisd` of
//! the region shares. When the record writer stores the request's record, the same transaction
//! settles the hold to the real cost. A hold whose record is never stored, for example because
//! its process stopped, expires, and the sweeper of any process releases it.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use synaxis_shared::RequestId;
use synaxis_shared::budgets::{BudgetRef, from_micros, to_micros_ceil};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Prices;
use crate::http_error::{ApiError, BudgetExceeded};
use crate::store::{BudgetCharge, BudgetReservation, Store};

/// Maximum amount that one request reserves, in micro-dollars (USD 1,000,000,000). It is far
/// above any realistic budget, and it keeps the store's `spent + reserved + amount` check far
/// from `i64` overflow unless a budget's maximum is near `i64::MAX`.
const MAX_HOLD_MICROS: i64 = 1_000_000_000_000_000;

/// Maximum interval between two sweeps of expired holds.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Service that reserves budget holds in the store and releases the expired ones.
#[derive(Debug)]
pub struct Budgets {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Time after which a hold expires unless its record settled it first; the config keeps it
    /// between one second and one day.
    hold_ttl: Duration,
}

/// Hold of an admitted request on its budgets, kept until the request ends and settles it.
#[derive(Clone, Debug)]
pub struct BudgetHold {
    pub request_id: RequestId,
    /// The budgets that the hold is on.
    pub budgets: Vec<BudgetRef>,
    /// The store where the hold is kept and settled.
    store: Arc<dyn Store>,
}

impl BudgetHold {
    /// Converts the hold into the charge that settles it at `cost_usd`.
    pub fn charge(&self, cost_usd: Decimal) -> BudgetCharge {
        BudgetCharge {
            request_id: self.request_id,
            cost_usd,
        }
    }

    /// Settles the hold at `cost_usd` at once, so that the next request of the same client sees
    /// the budget without it. On failure, returns the charge, for the record writer to settle
    /// with the record.
    pub async fn settle(self, cost_usd: Decimal) -> Option<BudgetCharge> {
        let charge = self.charge(cost_usd);
        match self
            .store
            .settle_budgets(std::slice::from_ref(&charge))
            .await
        {
            Ok(()) => None,
            Err(error) => {
                tracing::warn!(%error, request.id = %self.request_id, "settling a budget hold failed; the record writer retries");
                Some(charge)
            }
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

    /// Reserves `worst_case` USD for `request_id` on each of `budgets`, all or none. The amount
    /// is rounded up to whole micro-dollars and capped at [`MAX_HOLD_MICROS`]. `budgets` must be
    /// sorted, as the key lookup lists them, because the store locks them in that order.
    ///
    /// Returns `None` when none of the budgets exists any more. Fails with 402
    /// `budget_exceeded` when a budget has too little left, and with 500 when the store fails.
    pub async fn reserve(
        &self,
        request_id: RequestId,
        budgets: &[BudgetRef],
        worst_case: Decimal,
    ) -> Result<Option<BudgetHold>, ApiError> {
        let amount_micros = to_micros_ceil(worst_case).clamp(0, MAX_HOLD_MICROS);
        let expires_at =
            self.clock.now() + chrono::Duration::from_std(self.hold_ttl).unwrap_or_default();
        let reservation = self
            .store
            .reserve_budgets(request_id, budgets, amount_micros, expires_at)
            .await
            .map_err(|error| {
                tracing::error!(%error, "reserving a budget hold failed");
                ApiError::Internal
            })?;
        match reservation {
            BudgetReservation::Held(held) if held.is_empty() => Ok(None),
            BudgetReservation::Held(held) => Ok(Some(BudgetHold {
                request_id,
                budgets: held,
                store: self.store.clone(),
            })),
            BudgetReservation::Exceeded(budget) => {
                Err(ApiError::BudgetExceeded(Box::new(BudgetExceeded {
                    budget,
                    cost_usd: from_micros(amount_micros),
                })))
            }
        }
    }

    /// Releases expired holds every quarter of the hold TTL, or every minute when that is
    /// shorter, until `stop` is cancelled.
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
                        "released expired budget holds of requests not settled within the hold TTL"
                    );
                }
                Err(error) => tracing::warn!(%error, "releasing expired budget holds failed"),
            }
        }
    }
}

/// Computes the maximum cost of `input_tokens` and `output_tokens` at any of `prices`, which are
/// the deployments that a fallback may reach. It combines the highest input price with the
/// highest output price, so the result is an upper bound. Returns zero when `prices` is empty.
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
    fn worst_case_uses_highest_prices() {
        let deployments = [prices("1", "8"), prices("3", "2")];
        // 1000 input tokens at $3/M and 500 output tokens at $8/M.
        assert_eq!(
            worst_case_cost(&deployments, 1_000, 500),
            Decimal::from_str("0.007").unwrap_or_default()
        );
    }
}
