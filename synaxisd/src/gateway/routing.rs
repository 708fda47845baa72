//! Routing of a call to a model's deployments: weighted choice inside a priority, fallback to
//! the next deployment on a connect error, timeout, 429 or 5xx, a bounded number of attempts
//! with jittered exponential backoff between them, and a circuit breaker per deployment.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use super::provider::{ChatRequest, ChatResponse, Endpoint, Provider, ProviderError};
use crate::config::{Prices, RoutingConfig};
use crate::server::Metrics;
use std::sync::Arc;

/// One place that serves a public model.
#[derive(Debug)]
pub struct Deployment {
    /// `upstream/model`, for logs and metrics.
    pub label: String,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: u32,
    pub prices: Prices,
    pub provider: Arc<dyn Provider>,
    pub breaker: Breaker,
}

/// A circuit breaker: after `threshold` consecutive failures the deployment is skipped for
/// `open_for`; then one trial call goes through, which closes it again or reopens it.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A trial call is under way.
    HalfOpen,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    /// Returns whether a call may go to the deployment now; an expired open state lets this
    /// one call through as the trial.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    pub fn record_success(&self) {
        *self.lock() = BreakerState::Closed { failures: 0 };
    }

    pub fn record_failure(&self, now: Instant) {
        let mut state = self.lock();
        let failures = match *state {
            BreakerState::Closed { failures } => failures + 1,
            BreakerState::Open { .. } | BreakerState::HalfOpen => self.threshold,
        };
        *state = if failures >= self.threshold {
            BreakerState::Open {
                until: now + self.open_for,
            }
        } else {
            BreakerState::Closed { failures }
        };
    }

    /// Returns whether the breaker currently keeps calls away.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), BreakerState::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        // The state is a plain value, so a panic elsewhere cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Orders deployments for one call: by priority, and inside a priority by weighted random
/// choice without replacement.
pub fn plan(deployments: &[Arc<Deployment>]) -> Vec<Arc<Deployment>> {
    let mut priorities: Vec<u32> = deployments
        .iter()
        .map(|deployment| deployment.priority)
        .collect();
    priorities.sort_unstable();
    priorities.dedup();

    let mut rng = rand::rng();
    let mut ordered = Vec::with_capacity(deployments.len());
    for priority in priorities {
        let mut group: Vec<Arc<Deployment>> = deployments
            .iter()
            .filter(|deployment| deployment.priority == priority)
            .cloned()
            .collect();
        while !group.is_empty() {
            let total: u64 = group
                .iter()
                .map(|deployment| u64::from(deployment.weight))
                .sum();
            let mut pick = rng.random_range(0..total);
            let index = group
                .iter()
                .position(|deployment| {
                    let weight = u64::from(deployment.weight);
                    if pick < weight {
                        true
                    } else {
                        pick -= weight;
                        false
                    }
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

/// Returns whether a failure may succeed on another deployment.
fn is_retryable(error: &ProviderError) -> bool {
    match error {
        ProviderError::Connect(_) | ProviderError::Timeout | ProviderError::InvalidResponse(_) => {
            true
        }
        ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
        ProviderError::Unsupported(_) => false,
    }
}

/// Calls the deployments in planned order until one succeeds, at most `config.max_attempts`
/// times. Returns the response with the deployment that produced it, which alone is billed, or
/// the last error.
pub async fn call(
    deployments: &[Arc<Deployment>],
    endpoint: Endpoint,
    request: ChatRequest,
    config: &RoutingConfig,
    metrics: &Metrics,
) -> Result<(ChatResponse, Arc<Deployment>), ProviderError> {
    let mut candidates = plan(deployments);
    // Every breaker open: try the planned order anyway rather than fail without a call.
    let now = Instant::now();
    let allowed: Vec<Arc<Deployment>> = candidates
        .iter()
        .filter(|deployment| deployment.breaker.allow(now))
        .cloned()
        .collect();
    if !allowed.is_empty() {
        candidates = allowed;
    }

    let mut last_error = ProviderError::Connect("no deployment is configured".to_owned());
    let attempts = usize::try_from(config.max_attempts).unwrap_or(usize::MAX);
    for (attempt, deployment) in candidates.into_iter().take(attempts).enumerate() {
        if attempt > 0 {
            metrics.count_fallback();
            tokio::time::sleep(backoff(config, attempt)).await;
        }

        let attempt_request = ChatRequest {
            model: deployment.upstream_model.clone(),
            ..request.clone()
        };
        match deployment.provider.call(endpoint, attempt_request).await {
            Ok(response) => {
                deployment.breaker.record_success();
                return Ok((response, deployment));
            }
            Err(error) if is_retryable(&error) => {
                deployment.breaker.record_failure(Instant::now());
                metrics.count_upstream_error(&deployment.label);
                tracing::warn!(deployment = deployment.label.as_str(), %error, attempt, "upstream attempt failed");
                last_error = error;
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error)
}

/// Returns the wait before attempt `attempt` (from 1): a random share of an exponentially
/// growing base, capped ("full jitter").
fn backoff(config: &RoutingConfig, attempt: usize) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    let ceiling = config
        .retry_backoff_ms
        .saturating_mul(1 << exponent)
        .min(config.retry_backoff_max_ms);
    Duration::from_millis(rand::rng().random_range(0..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_then_allows_trial() {
        let breaker = Breaker::new(2, Duration::from_secs(30));
        let start = Instant::now();
        assert!(breaker.allow(start));
        breaker.record_failure(start);
        assert!(breaker.allow(start), "one failure keeps it closed");
        breaker.record_failure(start);
        assert!(!breaker.allow(start), "two failures open it");

        let later = start + Duration::from_secs(31);
        assert!(
            breaker.allow(later),
            "the first call after the pause is the trial"
        );
        assert!(!breaker.allow(later), "no second call during the trial");
        breaker.record_success();
        assert!(breaker.allow(later));
    }

    #[test]
    fn backoff_stays_under_cap() {
        let config = RoutingConfig {
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 250,
            ..RoutingConfig::default()
        };
        for attempt in 1..20 {
            assert!(backoff(&config, attempt) <= Duration::from_millis(250));
        }
    }
}
