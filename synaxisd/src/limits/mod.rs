//! Rate limits and concurrency leases behind the [`Limiter`] trait, with one module per store:
//! [`redis`] for production and [`memory`] for the embedded single node. The contract tests in
//! `synaxisd/tests/limits.rs` run the same cases against both.
//!
//! [`allowance`] sits in front of the Redis limiter and serves most charges of a busy process
//! from units it took ahead.
//!
//! One [`Limiter::acquire`] call checks every limit that applies to a request, across scopes,
//! metrics and windows, and charges all of them or none. Token limits are charged with an
//! estimate and corrected later by [`Limiter::settle`]. Every method takes the current time from
//! the caller and never reads a clock. `docs/limits.md` describes the windows and the bound of
//! sliding windows.

pub mod allowance;
pub mod fallback;
pub mod memory;
pub mod redis;
mod window;

use std::cmp::Ordering;
use std::fmt::{self, Debug, Display};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use synaxis_shared::limits::{
    Action, LimitRule, LimitSet, MAX_AMOUNT, Metric, MetricLimits, Window, WindowKind,
};
pub use window::BUCKETS;

/// The identity of one counter: a scope such as `key:<uuid>`, `user:<uuid>`, `team:<uuid>` or
/// `org:<uuid>`, with a metric, a window and a window kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Counter {
    /// Shared, because every request clones the counters of its limits several times.
    pub scope: Arc<str>,
    pub metric: Metric,
    pub window: Window,
    pub kind: WindowKind,
}

impl Counter {
    pub fn new(
        scope: impl Into<Arc<str>>,
        metric: Metric,
        window: Window,
        kind: WindowKind,
    ) -> Self {
        Self {
            scope: scope.into(),
            metric,
            window,
            kind,
        }
    }
}

impl Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} per {} ({}) of `{}`",
            self.metric.as_str(),
            self.window.as_str(),
            self.kind.as_str(),
            self.scope
        )
    }
}

/// One limit to check, with the amount that the request charges to it: 1 for requests, an
/// estimate for tokens. A check with cost 0 charges nothing and only reports the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitCheck {
    pub counter: Counter,
    pub limit: u64,
    pub cost: u64,
}

/// A signed correction to the charge of one counter, such as real tokens minus the estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjustment {
    pub counter: Counter,
    pub delta: i64,
}

/// The state of one limit after a call: the amount still free in the window and the time at
/// which everything counted so far has left the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    pub counter: Counter,
    pub limit: u64,
    pub remaining: u64,
    pub reset_at: DateTime<Utc>,
}

/// The outcome of [`Limiter::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Admitted(Admission),
    Rejected(Rejection),
}

impl Decision {
    pub fn is_admitted(&self) -> bool {
        matches!(self, Self::Admitted(_))
    }
}

/// An admitted call: every limit was charged. `statuses` follows the order of the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub statuses: Vec<LimitStatus>,
}

impl Admission {
    /// Returns the status of `metric` with the smallest remaining share of its limit, the one
    /// that `x-ratelimit-*` headers report. Ties go to the fewer remaining, then to the earlier
    /// check.
    pub fn closest_to_limit(&self, metric: Metric) -> Option<&LimitStatus> {
        closest_to_limit(&self.statuses, metric)
    }
}

/// Returns the status of `metric` among `statuses` with the smallest remaining share of its
/// limit, as [`Admission::closest_to_limit`] does.
pub fn closest_to_limit(statuses: &[LimitStatus], metric: Metric) -> Option<&LimitStatus> {
    statuses
        .iter()
        .filter(|status| status.counter.metric == metric)
        .min_by(|a, b| compare_remaining_share(a, b).then(a.remaining.cmp(&b.remaining)))
}

/// Compares `remaining / limit` of two statuses exactly, by cross-multiplying. A limit of 0 has
/// a share of 0.
fn compare_remaining_share(a: &LimitStatus, b: &LimitStatus) -> Ordering {
    let fraction = |status: &LimitStatus| match status.limit {
        0 => (0_u128, 1_u128),
        limit => (u128::from(status.remaining), u128::from(limit)),
    };
    let (a_remaining, a_limit) = fraction(a);
    let (b_remaining, b_limit) = fraction(b);
    (a_remaining * b_limit).cmp(&(b_remaining * a_limit))
}

/// A rejected call: nothing was charged in any scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Position of the rejecting limit in the checks. When several limits lack room, it is the
    /// one that has room last.
    pub index: usize,
    /// The rejecting limit, without this call's cost.
    pub status: LimitStatus,
    /// Time until the rejecting limit has room for the cost, if nothing else is charged. `None`
    /// when the cost exceeds the limit itself, so the call can never be admitted.
    pub retry_after: Option<Duration>,
}

/// The outcome of [`Limiter::acquire_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    Acquired {
        expires_at: DateTime<Utc>,
    },
    Rejected {
        /// Unexpired leases of the scope.
        active: u64,
        /// Time until the earliest of them expires unless renewed. `None` when the cap is 0.
        retry_after: Option<Duration>,
    },
}

/// A concurrency lease that [`Limiter::acquire_leased`] takes together with the charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    pub scope: String,
    pub cap: u64,
    pub id: String,
    pub ttl: Duration,
}

/// A lease that a request holds: its scope and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLease {
    pub scope: String,
    pub id: String,
}

/// The outcome of [`Limiter::acquire_leased`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeasedDecision {
    /// The cap had room: the lease is held exactly when the decision admits.
    Decided(Decision),
    /// The cap had no room; nothing was charged and no lease taken.
    LeaseRejected {
        active: u64,
        retry_after: Option<Duration>,
    },
}

/// The end of one request: the corrections of its token charges and the lease to release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub adjustments: Vec<Adjustment>,
    /// The time of the charges that the adjustments correct.
    pub charged_at: DateTime<Utc>,
    pub lease: Option<HeldLease>,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("invalid Redis URL for the limiter: {0}")]
    InvalidUrl(#[source] ::redis::RedisError),
    #[error("connecting the limiter to Redis at {address} failed: {source}")]
    Connect {
        address: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("the limiter's {operation} script failed on Redis: {source}")]
    Redis {
        operation: &'static str,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("the limiter's {operation} script returned an unexpected reply: {detail}")]
    UnexpectedReply {
        operation: &'static str,
        detail: String,
    },
    #[error("{field} {value} of {counter} is larger than the maximum {MAX_AMOUNT}")]
    AmountTooLarge {
        counter: String,
        field: &'static str,
        value: i128,
    },
    #[error("time {millis} ms since the Unix epoch is outside the range of limit windows")]
    TimeOutOfRange { millis: i64 },
}

/// A store of rate-limit counters and concurrency leases, shared by every gateway process that
/// uses it.
#[async_trait]
pub trait Limiter: Send + Sync + Debug {
    /// Checks every limit in `checks` at `now` and charges each its cost when all have room.
    /// When any limit lacks room, charges nothing and names the rejecting limit. A limit has room
    /// when its counted amount plus the cost is at most the limit.
    async fn acquire(
        &self,
        checks: &[LimitCheck],
        now: DateTime<Utc>,
    ) -> Result<Decision, LimitError>;

    /// Adds each adjustment to the fixed window or sliding bucket that a charge at `charged_at`
    /// went to, never taking a counter below zero. Counters whose window or bucket no longer
    /// counts at `now` are left alone, because the charge no longer affects any limit.
    async fn settle(
        &self,
        adjustments: &[Adjustment],
        charged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LimitError>;

    /// Acquires lease `lease_id` of `scope`, expiring at `now + ttl`, when fewer than `cap`
    /// unexpired leases exist. Acquiring a lease that is already held renews it.
    async fn acquire_lease(
        &self,
        scope: &str,
        cap: u64,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseDecision, LimitError>;

    /// Moves the expiry of an unexpired lease to `now + ttl`. Returns `false` when the lease has
    /// expired or was never acquired, and then the holder must acquire it again.
    async fn renew_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool, LimitError>;

    /// Removes a lease. Returns whether it was still unexpired at `now`.
    async fn release_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitError>;

    /// Acquires `lease` and charges `checks` as [`Limiter::acquire`] does, both or neither.
    /// The default takes the lease first and releases it when the charges are rejected; the
    /// Redis limiter does both in one script.
    async fn acquire_leased(
        &self,
        checks: &[LimitCheck],
        lease: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> Result<LeasedDecision, LimitError> {
        let taken = self
            .acquire_lease(&lease.scope, lease.cap, &lease.id, now, lease.ttl)
            .await?;
        if let LeaseDecision::Rejected {
            active,
            retry_after,
        } = taken
        {
            return Ok(LeasedDecision::LeaseRejected {
                active,
                retry_after,
            });
        }
        let decision = self.acquire(checks, now).await;
        if !matches!(decision, Ok(Decision::Admitted(_))) {
            self.release_lease(&lease.scope, &lease.id, now).await?;
        }
        decision.map(LeasedDecision::Decided)
    }

    /// Finishes what the process can finish without the store, such as settles and releases
    /// that local allowances absorb, and returns the rest for [`Limiter::finish`], or `None`
    /// when nothing is left. The default leaves everything to [`Limiter::finish`].
    fn finish_locally(&self, end: Finish) -> Option<Finish> {
        Some(end)
    }

    /// Settles the adjustments and releases the leases of many finished requests. The default
    /// makes one call per request and lease; the Redis limiter makes one in all.
    async fn finish(&self, ends: &[Finish], now: DateTime<Utc>) -> Result<(), LimitError> {
        for end in ends {
            self.settle(&end.adjustments, end.charged_at, now).await?;
            if let Some(lease) = &end.lease {
                self.release_lease(&lease.scope, &lease.id, now).await?;
            }
        }
        Ok(())
    }

    /// Renews many leases as [`Limiter::renew_lease`] does, returning for each whether it was
    /// still held. The default makes one call per lease; the Redis limiter makes one in all.
    async fn renew_leases(
        &self,
        leases: &[HeldLease],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<bool>, LimitError> {
        let mut renewed = Vec::with_capacity(leases.len());
        for lease in leases {
            renewed.push(self.renew_lease(&lease.scope, &lease.id, now, ttl).await?);
        }
        Ok(renewed)
    }
}

/// Rejects limits and costs that the Redis scripts cannot add exactly, so that both
/// implementations accept the same input.
fn validate_checks(checks: &[LimitCheck]) -> Result<(), LimitError> {
    for check in checks {
        for (field, value) in [("limit", check.limit), ("cost", check.cost)] {
            if value > MAX_AMOUNT {
                return Err(LimitError::AmountTooLarge {
                    counter: check.counter.to_string(),
                    field,
                    value: i128::from(value),
                });
            }
        }
    }
    Ok(())
}

fn validate_adjustments(adjustments: &[Adjustment]) -> Result<(), LimitError> {
    for adjustment in adjustments {
        if adjustment.delta.unsigned_abs() > MAX_AMOUNT {
            return Err(LimitError::AmountTooLarge {
                counter: adjustment.counter.to_string(),
                field: "adjustment",
                value: i128::from(adjustment.delta),
            });
        }
    }
    Ok(())
}

/// Converts a duration to milliseconds, saturating at `i64::MAX`.
fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(metric: Metric, window: Window, limit: u64, remaining: u64) -> LimitStatus {
        LimitStatus {
            counter: Counter::new("org:a", metric, window, WindowKind::Fixed),
            limit,
            remaining,
            reset_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn closest_to_limit_picks_smallest_share() {
        let admission = Admission {
            statuses: vec![
                status(Metric::Requests, Window::Minute, 100, 40),
                status(Metric::Requests, Window::Day, 1_000, 300),
                status(Metric::Tokens, Window::Minute, 10, 1),
                status(Metric::Requests, Window::Hour, 10, 4),
            ],
        };

        let requests = admission.closest_to_limit(Metric::Requests);
        assert_eq!(requests.map(|s| s.counter.window), Some(Window::Day));
        let tokens = admission.closest_to_limit(Metric::Tokens);
        assert_eq!(tokens.map(|s| s.remaining), Some(1));
    }

    #[test]
    fn closest_to_limit_breaks_ties_by_remaining() {
        let admission = Admission {
            statuses: vec![
                status(Metric::Requests, Window::Day, 1_000, 500),
                status(Metric::Requests, Window::Minute, 10, 5),
                status(Metric::Requests, Window::Hour, 0, 0),
            ],
        };
        let closest = admission.closest_to_limit(Metric::Requests);
        assert_eq!(closest.map(|s| s.counter.window), Some(Window::Hour));

        let admission = Admission {
            statuses: admission.statuses[..2].to_vec(),
        };
        let closest = admission.closest_to_limit(Metric::Requests);
        assert_eq!(closest.map(|s| s.counter.window), Some(Window::Minute));
        assert_eq!(admission.closest_to_limit(Metric::Tokens), None);
    }

    #[test]
    fn amounts_above_maximum_are_rejected() {
        let counter = Counter::new("key:k", Metric::Tokens, Window::Day, WindowKind::Fixed);
        let check = LimitCheck {
            counter: counter.clone(),
            limit: MAX_AMOUNT + 1,
            cost: 1,
        };
        let error = validate_checks(&[check]).expect_err("limit above maximum");
        assert_eq!(
            error.to_string(),
            "limit 9007199254740992 of tokens per day (fixed) of `key:k` is larger than the \
             maximum 9007199254740991"
        );

        let adjustment = Adjustment {
            counter,
            delta: -(1 << 60),
        };
        assert!(validate_adjustments(&[adjustment]).is_err());
        let fine = Adjustment {
            counter: Counter::new("key:k", Metric::Tokens, Window::Day, WindowKind::Fixed),
            delta: -(MAX_AMOUNT as i64),
        };
        assert!(validate_adjustments(&[fine]).is_ok());
    }
}
