//! The in-process limiter of the embedded single node. One mutex guards all counters and leases,
//! so every call is atomic and exact under concurrency. Its counts live only as long as the
//! process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::window::{self, Cell};
use super::{
    Adjustment, Counter, Decision, LeaseDecision, LimitCheck, LimitError, Limiter, duration_millis,
    validate_adjustments, validate_checks,
};

/// Interval between sweeps of counters and leases that no longer count, in `now` milliseconds.
const SWEEP_INTERVAL_MS: i64 = 60_000;

#[derive(Debug, Default)]
pub struct MemoryLimiter {
    state: Mutex<State>,
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every counter and lease.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a single assignment to a count or a map, so a holder
        // that panicked cannot have left it half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Default)]
struct State {
    /// Counts of fixed windows, by counter and window start in milliseconds.
    fixed: HashMap<(Counter, i64), FixedCount>,
    /// Counts of sliding windows, by counter and then by bucket index.
    sliding: HashMap<Counter, BTreeMap<i64, u64>>,
    /// Lease expiry times in milliseconds, by scope and then by lease id.
    leases: HashMap<String, HashMap<String, i64>>,
    next_sweep_ms: i64,
}

#[derive(Debug)]
struct FixedCount {
    end_ms: i64,
    used: u64,
}

impl State {
    /// Returns the counts of `counter` in `cell`, oldest bucket first, dropping sliding buckets
    /// that have left the counted span.
    fn counts(&mut self, counter: &Counter, cell: &Cell) -> Vec<u64> {
        match *cell {
            Cell::Fixed { start_ms, .. } => {
                let used = self
                    .fixed
                    .get(&(counter.clone(), start_ms))
                    .map_or(0, |count| count.used);
                vec![used]
            }
            Cell::Sliding { index, .. } => {
                let oldest = index - i64::from(window::BUCKETS);
                let mut counts = vec![0; cell.span_len()];
                if let Some(buckets) = self.sliding.get_mut(counter) {
                    buckets.retain(|bucket, _| *bucket >= oldest);
                    for (bucket, count) in buckets.range(oldest..=index) {
                        counts[(bucket - oldest) as usize] = *count;
                    }
                }
                counts
            }
        }
    }

    /// Adds `delta` to the count of `counter` in `cell`, keeping it at zero or above. A negative
    /// delta creates no count.
    fn add(&mut self, counter: &Counter, cell: &Cell, delta: i64) {
        let apply = |count: &mut u64| {
            *count = count.saturating_add_signed(delta);
        };
        match *cell {
            Cell::Fixed { start_ms, end_ms } => {
                let key = (counter.clone(), start_ms);
                if delta < 0 {
                    if let Some(count) = self.fixed.get_mut(&key) {
                        apply(&mut count.used);
                    }
                } else {
                    let count = self
                        .fixed
                        .entry(key)
                        .or_insert(FixedCount { end_ms, used: 0 });
                    apply(&mut count.used);
                }
            }
            Cell::Sliding { index, .. } => {
                if delta < 0 {
                    let bucket = self
                        .sliding
                        .get_mut(counter)
                        .and_then(|buckets| buckets.get_mut(&index));
                    if let Some(count) = bucket {
                        apply(count);
                    }
                } else {
                    let buckets = self.sliding.entry(counter.clone()).or_default();
                    apply(buckets.entry(index).or_insert(0));
                }
            }
        }
    }

    /// Drops counts and leases that no longer count at `now_ms`, at most once per
    /// [`SWEEP_INTERVAL_MS`], so that scopes which stop sending requests do not keep memory.
    fn sweep_if_due(&mut self, now_ms: i64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now_ms.saturating_add(SWEEP_INTERVAL_MS);

        self.fixed.retain(|_, count| count.end_ms > now_ms);
        self.sliding.retain(|counter, buckets| {
            let bucket_ms = window::sliding_bucket_ms(counter.window);
            buckets.retain(|index, _| {
                let cell = Cell::Sliding {
                    index: *index,
                    bucket_ms,
                };
                cell.counts_at(now_ms)
            });
            !buckets.is_empty()
        });
        self.leases.retain(|_, leases| {
            leases.retain(|_, expires_ms| *expires_ms > now_ms);
            !leases.is_empty()
        });
    }

    /// Returns the unexpired leases of `scope`, after dropping the expired ones.
    fn active_leases(&mut self, scope: &str, now_ms: i64) -> &mut HashMap<String, i64> {
        let leases = self.leases.entry(scope.to_owned()).or_default();
        leases.retain(|_, expires_ms| *expires_ms > now_ms);
        leases
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn acquire(
        &self,
        checks: &[LimitCheck],
        now: DateTime<Utc>,
    ) -> Result<Decision, LimitError> {
        validate_checks(checks)?;
        let cells = checks
            .iter()
            .map(|check| Cell::locate(&check.counter, now))
            .collect::<Result<Vec<_>, _>>()?;
        let now_ms = now.timestamp_millis();

        let mut state = self.lock();
        state.sweep_if_due(now_ms);
        let mut counts = Vec::with_capacity(checks.len());
        for (index, (check, cell)) in checks.iter().zip(&cells).enumerate() {
            let mut current = state.counts(&check.counter, cell);
            // A counter listed twice in one call includes the cost of its earlier entries.
            let earlier_cost = checks[..index]
                .iter()
                .filter(|earlier| earlier.counter == check.counter)
                .fold(0_u64, |sum, earlier| sum.saturating_add(earlier.cost));
            if let Some(last) = current.last_mut() {
                *last = last.saturating_add(earlier_cost);
            }
            counts.push(current);
        }
        if window::all_have_room(checks, &counts) {
            for (check, cell) in checks.iter().zip(&cells) {
                if check.cost > 0 {
                    // Costs are at most MAX_AMOUNT, checked above, so they fit in i64.
                    let cost = i64::try_from(check.cost).unwrap_or(i64::MAX);
                    state.add(&check.counter, cell, cost);
                }
            }
        }
        drop(state);

        window::decide(checks, &cells, &counts, now)
    }

    async fn settle(
        &self,
        adjustments: &[Adjustment],
        charged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LimitError> {
        validate_adjustments(adjustments)?;
        let now_ms = now.timestamp_millis();
        let mut cells = Vec::with_capacity(adjustments.len());
        for adjustment in adjustments {
            cells.push(Cell::locate(&adjustment.counter, charged_at)?);
        }

        let mut state = self.lock();
        for (adjustment, cell) in adjustments.iter().zip(&cells) {
            if adjustment.delta != 0 && cell.counts_at(now_ms) {
                state.add(&adjustment.counter, cell, adjustment.delta);
            }
        }
        Ok(())
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        cap: u64,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseDecision, LimitError> {
        let now_ms = now.timestamp_millis();
        let expires_ms = now_ms.saturating_add(duration_millis(ttl));
        let expires_at = window::instant(expires_ms)?;

        let mut state = self.lock();
        state.sweep_if_due(now_ms);
        let leases = state.active_leases(scope, now_ms);
        let active = leases.len() as u64;
        if leases.contains_key(lease_id) || active < cap {
            leases.insert(lease_id.to_owned(), expires_ms);
            return Ok(LeaseDecision::Acquired { expires_at });
        }

        let retry_after = leases
            .values()
            .min()
            .map(|earliest| Duration::from_millis(u64::try_from(earliest - now_ms).unwrap_or(0)));
        Ok(LeaseDecision::Rejected {
            active,
            retry_after,
        })
    }

    async fn renew_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool, LimitError> {
        let now_ms = now.timestamp_millis();
        let expires_ms = now_ms.saturating_add(duration_millis(ttl));
        window::instant(expires_ms)?;

        let mut state = self.lock();
        let leases = state.active_leases(scope, now_ms);
        match leases.get_mut(lease_id) {
            Some(expiry) => {
                *expiry = expires_ms;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitError> {
        let now_ms = now.timestamp_millis();
        let mut state = self.lock();
        let Some(leases) = state.leases.get_mut(scope) else {
            return Ok(false);
        };
        let removed = leases.remove(lease_id);
        if leases.is_empty() {
            state.leases.remove(scope);
        }
        Ok(removed.is_some_and(|expires_ms| expires_ms > now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Metric, Window, WindowKind};

    #[tokio::test]
    async fn sweep_drops_counters_that_no_longer_count() {
        let limiter = MemoryLimiter::new();
        let start: DateTime<Utc> = "2026-01-15T12:00:00Z".parse().expect("time");
        let checks = [
            LimitCheck {
                counter: Counter::new("key:a", Metric::Requests, Window::Minute, WindowKind::Fixed),
                limit: 10,
                cost: 1,
            },
            LimitCheck {
                counter: Counter::new(
                    "key:a",
                    Metric::Requests,
                    Window::Minute,
                    WindowKind::Sliding,
                ),
                limit: 10,
                cost: 1,
            },
        ];
        limiter.acquire(&checks, start).await.expect("acquire");
        let lease = limiter
            .acquire_lease("org:a", 1, "l1", start, Duration::from_secs(30))
            .await
            .expect("lease");
        assert!(matches!(lease, LeaseDecision::Acquired { .. }));
        {
            let state = limiter.lock();
            assert_eq!(state.fixed.len(), 1);
            assert_eq!(state.sliding.len(), 1);
            assert_eq!(state.leases.len(), 1);
        }

        // The sliding bucket of `start` counts until 66 s later, the fixed window until 60 s.
        limiter
            .acquire(&[], start + chrono::Duration::seconds(61))
            .await
            .expect("acquire");
        {
            let state = limiter.lock();
            assert_eq!(state.fixed.len(), 0);
            assert_eq!(state.sliding.len(), 1);
            assert_eq!(state.leases.len(), 0);
        }

        limiter
            .acquire(&[], start + chrono::Duration::seconds(122))
            .await
            .expect("acquire");
        assert_eq!(limiter.lock().sliding.len(), 0);
    }
}
