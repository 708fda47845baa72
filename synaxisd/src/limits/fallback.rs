//! The production limiter: Redis while it responds, and local counters while it does not, so
//! that an outage never leaves requests unlimited.
//!
//! While Redis is unreachable, each process enforces its share of every limit and concurrency
//! cap on its own: the limit divided by `limits.processes`, rounded down, and at least 1. The
//! region as a whole then admits at most `limit` per window (or `processes` when the limit is
//! smaller than that), plus, in the window in which the outage starts, what Redis had counted
//! before it, because local counters start empty. A task pings Redis every second, and the
//! limiter returns to Redis as soon as it responds. The local counters are then dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::memory::MemoryLimiter;
use super::redis::RedisLimiter;
use super::{
    Adjustment, Decision, Finish, HeldLease, LeaseDecision, LeaseRequest, LeasedDecision,
    LimitCheck, LimitError, Limiter,
};

/// Time between checks of an unreachable Redis.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The metrics of the fallback limiter's state.
#[derive(Clone, Debug, Default)]
pub struct FallbackMetrics {
    /// 1 while local limits apply, else 0.
    pub active: Gauge,
    /// Switches from Redis to local limits.
    pub switches: Counter,
    /// Calls decided by local limits.
    pub local_calls: Counter,
}

#[derive(Debug)]
pub struct FallbackLimiter {
    /// Set once the first connection succeeds; it reconnects by itself afterwards.
    redis: OnceLock<RedisLimiter>,
    url: String,
    key_prefix: String,
    timeout: Duration,
    local: MemoryLimiter,
    processes: u64,
    degraded: AtomicBool,
    metrics: FallbackMetrics,
}

impl FallbackLimiter {
    /// Connects to Redis at `url` and starts the task that watches it. When Redis cannot be
    /// reached now, the limiter starts on local limits and moves to Redis once it responds.
    pub async fn start(
        url: &str,
        key_prefix: &str,
        timeout: Duration,
        processes: u64,
        metrics: FallbackMetrics,
    ) -> Result<Arc<Self>, LimitError> {
        // An unparsable URL is a config error, not an outage.
        redis::Client::open(url).map_err(LimitError::InvalidUrl)?;
        let limiter = Arc::new(Self {
            redis: OnceLock::new(),
            url: url.to_owned(),
            key_prefix: key_prefix.to_owned(),
            timeout,
            local: MemoryLimiter::new(),
            processes: processes.max(1),
            degraded: AtomicBool::new(false),
            metrics,
        });
        match RedisLimiter::connect(url, key_prefix, timeout).await {
            Ok(redis) => {
                let _ = limiter.redis.set(redis);
            }
            Err(error) => limiter.fall_back(&error),
        }
        tokio::spawn(watch(Arc::downgrade(&limiter)));
        Ok(limiter)
    }

    /// Returns whether local limits apply now.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Returns Redis when it is the store in use.
    fn healthy_redis(&self) -> Option<&RedisLimiter> {
        if self.is_degraded() {
            None
        } else {
            self.redis.get()
        }
    }

    fn fall_back(&self, error: &LimitError) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %error,
                processes = self.processes,
                "Redis is unreachable; enforcing this process's share of every limit locally"
            );
            self.metrics.switches.inc();
            self.metrics.active.set(1);
        }
    }

    fn recover(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis responds again, so limits are enforced on Redis");
            self.metrics.active.set(0);
            self.local.clear();
        }
    }

    /// Returns this process's share of `limit`.
    fn share(&self, limit: u64) -> u64 {
        (limit / self.processes).max(1)
    }

    fn local_checks(&self, checks: &[LimitCheck]) -> Vec<LimitCheck> {
        checks
            .iter()
            .map(|check| LimitCheck {
                limit: self.share(check.limit),
                ..check.clone()
            })
            .collect()
    }

    /// Makes `call` on Redis while Redis is in use. Returns `None` when local limits must
    /// apply instead, because Redis was already out or the call found it unreachable.
    async fn on_redis<'a, T, F>(
        &'a self,
        call: impl FnOnce(&'a RedisLimiter) -> F,
    ) -> Option<Result<T, LimitError>>
    where
        F: Future<Output = Result<T, LimitError>>,
    {
        match call(self.healthy_redis()?).await {
            Err(error) if is_outage(&error) => {
                self.fall_back(&error);
                None
            }
            other => Some(other),
        }
    }
}

/// Returns whether an error means that Redis is unreachable now, rather than a bad call.
fn is_outage(error: &LimitError) -> bool {
    matches!(
        error,
        LimitError::Connect { .. } | LimitError::Redis { .. } | LimitError::UnexpectedReply { .. }
    )
}

/// Checks Redis every [`PROBE_INTERVAL`] while the limiter is degraded, until the limiter is
/// dropped.
async fn watch(limiter: Weak<FallbackLimiter>) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        if !limiter.is_degraded() {
            continue;
        }
        let responded = match limiter.redis.get() {
            Some(redis) => redis.ping().await.is_ok(),
            None => {
                match RedisLimiter::connect(&limiter.url, &limiter.key_prefix, limiter.timeout)
                    .await
                {
                    Ok(redis) => {
                        let _ = limiter.redis.set(redis);
                        true
                    }
                    Err(_) => false,
                }
            }
        };
        if responded {
            limiter.recover();
        }
    }
}

#[async_trait]
impl Limiter for FallbackLimiter {
    async fn acquire(
        &self,
        checks: &[LimitCheck],
        now: DateTime<Utc>,
    ) -> Result<Decision, LimitError> {
        if let Some(result) = self.on_redis(|redis| redis.acquire(checks, now)).await {
            return result;
        }
        self.metrics.local_calls.inc();
        self.local.acquire(&self.local_checks(checks), now).await
    }

    async fn settle(
        &self,
        adjustments: &[Adjustment],
        charged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LimitError> {
        if let Some(result) = self
            .on_redis(|redis| redis.settle(adjustments, charged_at, now))
            .await
        {
            return result;
        }
        self.local.settle(adjustments, charged_at, now).await
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        cap: u64,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseDecision, LimitError> {
        if let Some(result) = self
            .on_redis(|redis| redis.acquire_lease(scope, cap, lease_id, now, ttl))
            .await
        {
            return result;
        }
        self.metrics.local_calls.inc();
        self.local
            .acquire_lease(scope, self.share(cap), lease_id, now, ttl)
            .await
    }

    async fn renew_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool, LimitError> {
        if let Some(result) = self
            .on_redis(|redis| redis.renew_lease(scope, lease_id, now, ttl))
            .await
        {
            return result;
        }
        self.local.renew_lease(scope, lease_id, now, ttl).await
    }

    async fn release_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitError> {
        if let Some(result) = self
            .on_redis(|redis| redis.release_lease(scope, lease_id, now))
            .await
        {
            return result;
        }
        self.local.release_lease(scope, lease_id, now).await
    }

    async fn acquire_leased(
        &self,
        checks: &[LimitCheck],
        lease: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> Result<LeasedDecision, LimitError> {
        if let Some(result) = self
            .on_redis(|redis| redis.acquire_leased(checks, lease, now))
            .await
        {
            return result;
        }
        self.metrics.local_calls.inc();
        let local_lease = LeaseRequest {
            cap: self.share(lease.cap),
            ..lease.clone()
        };
        self.local
            .acquire_leased(&self.local_checks(checks), &local_lease, now)
            .await
    }

    async fn finish(&self, ends: &[Finish], now: DateTime<Utc>) -> Result<(), LimitError> {
        if let Some(result) = self.on_redis(|redis| redis.finish(ends, now)).await {
            return result;
        }
        self.local.finish(ends, now).await
    }

    async fn renew_leases(
        &self,
        leases: &[HeldLease],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<bool>, LimitError> {
        if let Some(result) = self
            .on_redis(|redis| redis.renew_leases(leases, now, ttl))
            .await
        {
            return result;
        }
        self.local.renew_leases(leases, now, ttl).await
    }
}
