//! Admission of inference requests: the rate limits of the key, its user, team and org, and the
//! org's cap on concurrent requests, all checked in one call to the [`Limiter`].
//!
//! A request takes a concurrency lease first, when its org has a cap, and then charges every
//! limit at once: 1 to request limits, and an estimate (input tokens plus `max_tokens`, or
//! `limits.output_tokens_estimate`) to token limits. When a `throttle` limit or the cap has no
//! room, the request waits for it up to `limits.throttle_wait_ms`; a `block` limit refuses at
//! once. A refused request gives its lease back and charges nothing. An admitted one keeps a
//! [`Reservation`] until its record is finished, which settles the token estimate to the real usage
//! and releases the lease.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use synaxis_shared::limits::{Action, LimitSet};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::http_error::{ApiError, RateLimitKind, RateLimited};
use crate::limits::{
    Adjustment, Counter, Decision, LeaseDecision, LimitCheck, LimitError, LimitStatus, Limiter,
    Metric, Window, WindowKind,
};
use crate::metrics::Metrics;
use crate::store::AuthenticatedKey;

/// Maximum sleep between two checks of a token limit or a concurrency cap, which a settled
/// estimate or a released lease can free before the window moves.
const POLL: Duration = Duration::from_millis(100);

/// `Retry-After` of a request refused for the org's concurrency cap.
const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

/// The rate limits and concurrency caps of the gateway.
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<dyn Limiter>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    throttle_wait: Duration,
    lease_ttl: Duration,
    output_tokens_estimate: u64,
    defaults: Defaults,
}

/// The limit sets of scopes that have none stored.
#[derive(Debug)]
struct Defaults {
    org: LimitSet,
    team: LimitSet,
    user: LimitSet,
}

/// One limit that applies to a request, with its action and the scope named in errors.
#[derive(Debug)]
struct Planned {
    check: LimitCheck,
    action: Action,
    scope: &'static str,
}

/// The limits that apply to one request, before its token estimate is known.
#[derive(Debug)]
pub struct Plan {
    limits: Vec<Planned>,
    /// The org's lease scope and cap, when the org has one.
    concurrency: Option<(String, u64)>,
}

impl Plan {
    /// Returns whether a token limit applies, so that the input needs counting.
    pub fn counts_tokens(&self) -> bool {
        self.limits
            .iter()
            .any(|planned| planned.check.counter.metric == Metric::Tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.concurrency.is_none()
    }
}

/// An admitted request: its `x-ratelimit-*` headers, and its reservation until it ends.
#[derive(Debug, Default)]
pub struct Grant {
    pub headers: HeaderMap,
    pub reservation: Option<Reservation>,
}

/// The token charges and concurrency lease of an admitted request, kept until it ends.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<dyn Limiter>,
    clock: Arc<dyn Clock>,
    token_counters: Vec<Counter>,
    estimate: u64,
    charged_at: DateTime<Utc>,
    /// Dropped when the request ends; the lease's task then releases it.
    lease: Option<DropGuard>,
}

impl Reservation {
    /// Corrects the token limits from the estimate to `tokens`, the real usage, and releases the
    /// lease, in a task of its own.
    pub fn finish(self, tokens: u64) {
        drop(self.lease);
        let delta = i64::try_from(tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.estimate).unwrap_or(i64::MAX));
        if self.token_counters.is_empty() || delta == 0 {
            return;
        }
        let adjustments: Vec<Adjustment> = self
            .token_counters
            .into_iter()
            .map(|counter| Adjustment { counter, delta })
            .collect();
        let (limiter, clock, charged_at) = (self.limiter, self.clock, self.charged_at);
        spawn(async move {
            if let Err(error) = limiter.settle(&adjustments, charged_at, clock.now()).await {
                tracing::warn!(%error, "settling token limits failed");
            }
        });
    }
}

/// Spawns `task` when a runtime runs, as it does everywhere but in a drop at shutdown.
fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

impl Admission {
    pub fn new(
        limiter: Arc<dyn Limiter>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: &LimitsConfig,
    ) -> Self {
        Self {
            limiter,
            clock,
            metrics,
            throttle_wait: Duration::from_millis(config.throttle_wait_ms),
            lease_ttl: Duration::from_secs(config.lease_ttl_secs),
            output_tokens_estimate: config.output_tokens_estimate,
            defaults: Defaults {
                org: config.org.clone(),
                team: config.team.clone(),
                user: config.user.clone(),
            },
        }
    }

    /// Returns the estimate of output tokens for a request whose `max_tokens` is `max_tokens`.
    pub fn output_estimate(&self, max_tokens: Option<u64>) -> u64 {
        max_tokens.unwrap_or(self.output_tokens_estimate)
    }

    /// Lists the limits that apply to requests of `key`.
    pub fn plan(&self, key: &AuthenticatedKey) -> Plan {
        let mut limits = Vec::new();
        let own = &key.key;
        for (metric, limit) in [
            (Metric::Requests, own.rpm_limit),
            (Metric::Tokens, own.tpm_limit),
        ] {
            if let Some(limit) = limit {
                limits.push(Planned {
                    check: LimitCheck {
                        counter: Counter::new(
                            format!("key:{}", own.id),
                            metric,
                            Window::Minute,
                            WindowKind::Sliding,
                        ),
                        limit,
                        cost: 0,
                    },
                    action: Action::Throttle,
                    scope: "key",
                });
            }
        }

        let team_set = key.team_id.map(|team| {
            let set = or_default(&key.limits.team, &self.defaults.team);
            (format!("team:{team}"), set)
        });
        let scopes = [
            (
                "user",
                Some((
                    format!("user:{}", own.user_id),
                    or_default(&key.limits.user, &self.defaults.user),
                )),
            ),
            ("team", team_set),
            (
                "organization",
                Some((
                    format!("org:{}", own.org_id),
                    or_default(&key.limits.org, &self.defaults.org),
                )),
            ),
        ];
        let mut concurrency = None;
        for (scope, set) in scopes {
            let Some((name, set)) = set else { continue };
            for (metric, window, rule) in set.rules() {
                limits.push(Planned {
                    check: LimitCheck {
                        counter: Counter::new(name.clone(), metric, window, rule.window),
                        limit: rule.limit,
                        cost: 0,
                    },
                    action: rule.action,
                    scope,
                });
            }
            if scope == "organization"
                && let Some(cap) = set.concurrent_requests
            {
                concurrency = Some((name, cap));
            }
        }
        Plan {
            limits,
            concurrency,
        }
    }

    /// Admits a request under `plan`, charging `tokens` to token limits, or refuses it with 429.
    /// `lease_id` names the request's concurrency lease.
    pub async fn admit(&self, plan: Plan, tokens: u64, lease_id: &str) -> Result<Grant, ApiError> {
        if plan.is_empty() {
            return Ok(Grant::default());
        }
        let Plan {
            mut limits,
            concurrency,
        } = plan;
        for planned in &mut limits {
            planned.check.cost = match planned.check.counter.metric {
                Metric::Requests => 1,
                Metric::Tokens => tokens,
            };
        }
        let checks: Vec<LimitCheck> = limits.iter().map(|planned| planned.check.clone()).collect();
        let deadline =
            self.clock.now() + chrono::Duration::from_std(self.throttle_wait).unwrap_or_default();

        // NOTE: the lease and the limits are two limiter calls, so two round trips to Redis.
        let lease = match &concurrency {
            Some((scope, cap)) => Some(self.lease(scope, *cap, lease_id, deadline).await?),
            None => None,
        };
        let admitted = match self.charge(&limits, &checks, deadline).await {
            Ok(admitted) => admitted,
            Err(error) => {
                if let (Some((scope, _)), Some(_)) = (&concurrency, &lease) {
                    self.release(scope.clone(), lease_id.to_owned());
                }
                return Err(error);
            }
        };
        let (charged_at, statuses) = admitted;

        let lease = match (concurrency, lease) {
            (Some((scope, _)), Some(())) => Some(self.keep_lease(scope, lease_id.to_owned())),
            _ => None,
        };
        let token_counters = limits
            .into_iter()
            .filter(|planned| planned.check.counter.metric == Metric::Tokens)
            .map(|planned| planned.check.counter)
            .collect();
        Ok(Grant {
            headers: rate_headers(&statuses, charged_at),
            reservation: Some(Reservation {
                limiter: self.limiter.clone(),
                clock: self.clock.clone(),
                token_counters,
                estimate: tokens,
                charged_at,
                lease,
            }),
        })
    }

    /// Charges every limit, waiting while the limit that refuses is `throttle` and the wait
    /// ends before `deadline`.
    async fn charge(
        &self,
        limits: &[Planned],
        checks: &[LimitCheck],
        deadline: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, Vec<LimitStatus>), ApiError> {
        let mut waited = false;
        loop {
            let now = self.clock.now();
            let rejection = match self
                .limiter
                .acquire(checks, now)
                .await
                .map_err(limiter_failed)?
            {
                Decision::Admitted(admission) => return Ok((now, admission.statuses)),
                Decision::Rejected(rejection) => rejection,
            };
            let planned = &limits[rejection.index];
            let counter = &planned.check.counter;
            let throttled = planned.action == Action::Throttle;
            let left = (deadline - now).to_std().unwrap_or_default();
            let wait = match rejection.retry_after {
                // Request limits free only as the window moves; token limits also when an
                // earlier request settles below its estimate.
                Some(retry) if throttled && counter.metric == Metric::Tokens => {
                    Some(retry.min(POLL).min(left))
                }
                Some(retry) if throttled && retry <= left => Some(retry),
                _ => None,
            };
            match wait {
                Some(wait) if !wait.is_zero() => {
                    if !waited {
                        self.metrics.count_limit_wait();
                        waited = true;
                    }
                    self.clock.sleep(wait).await;
                }
                _ => {
                    let kind = if throttled {
                        RateLimitKind::Throttled
                    } else {
                        RateLimitKind::Blocked
                    };
                    self.metrics.count_limit_refusal(kind.code());
                    let status = &rejection.status;
                    let error = RateLimited {
                        kind,
                        scope: planned.scope,
                        limit_name: format!(
                            "{} per {}",
                            counter.metric.as_str(),
                            counter.window.as_str()
                        ),
                        limit: status.limit,
                        retry_after: rejection.retry_after,
                        headers: rate_headers(std::slice::from_ref(status), now),
                    };
                    return Err(ApiError::RateLimited(Box::new(error)));
                }
            }
        }
    }

    /// Takes a concurrency lease of `scope`, waiting for a free slot until `deadline`.
    async fn lease(
        &self,
        scope: &str,
        cap: u64,
        lease_id: &str,
        deadline: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let mut waited = false;
        loop {
            let now = self.clock.now();
            let decision = self
                .limiter
                .acquire_lease(scope, cap, lease_id, now, self.lease_ttl)
                .await
                .map_err(limiter_failed)?;
            let LeaseDecision::Rejected { retry_after, .. } = decision else {
                return Ok(());
            };
            let left = (deadline - now).to_std().unwrap_or_default();
            let wait = retry_after.unwrap_or(POLL).min(POLL).min(left);
            if wait.is_zero() {
                self.metrics
                    .count_limit_refusal(RateLimitKind::Concurrency.code());
                return Err(ApiError::RateLimited(Box::new(RateLimited {
                    kind: RateLimitKind::Concurrency,
                    scope: "organization",
                    limit_name: "concurrent requests".to_owned(),
                    limit: cap,
                    // A slot frees whenever a request of the org ends, usually long before the
                    // earliest lease expires.
                    retry_after: Some(CONCURRENCY_RETRY),
                    headers: HeaderMap::new(),
                })));
            }
            if !waited {
                self.metrics.count_limit_wait();
                waited = true;
            }
            self.clock.sleep(wait).await;
        }
    }

    /// Renews the lease every third of its life until the returned token is cancelled, then
    /// releases it.
    fn keep_lease(&self, scope: String, lease_id: String) -> DropGuard {
        let done = CancellationToken::new();
        let (limiter, clock, ttl) = (self.limiter.clone(), self.clock.clone(), self.lease_ttl);
        let stop = done.clone();
        spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = clock.sleep(ttl / 3) => {}
                }
                match limiter
                    .renew_lease(&scope, &lease_id, clock.now(), ttl)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = %lease_id, "a concurrency lease expired while its request ran")
                    }
                    Err(error) => tracing::warn!(%error, "renewing a concurrency lease failed"),
                }
            }
            if let Err(error) = limiter.release_lease(&scope, &lease_id, clock.now()).await {
                tracing::warn!(%error, "releasing a concurrency lease failed; it expires by itself");
            }
        });
        done.drop_guard()
    }

    fn release(&self, scope: String, lease_id: String) {
        let (limiter, clock) = (self.limiter.clone(), self.clock.clone());
        spawn(async move {
            if let Err(error) = limiter.release_lease(&scope, &lease_id, clock.now()).await {
                tracing::warn!(%error, "releasing a concurrency lease failed; it expires by itself");
            }
        });
    }
}

fn or_default<'a>(stored: &'a LimitSet, default: &'a LimitSet) -> &'a LimitSet {
    if stored.is_empty() { default } else { stored }
}

/// A limiter error that is not an outage, such as an amount above the maximum: the request
/// fails rather than go unlimited.
fn limiter_failed(error: LimitError) -> ApiError {
    tracing::error!(%error, "the limiter failed");
    ApiError::Internal
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static SCOPE_REQUESTS: HeaderName = HeaderName::from_static("x-synaxis-ratelimit-scope-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
static SCOPE_TOKENS: HeaderName = HeaderName::from_static("x-synaxis-ratelimit-scope-tokens");

/// Builds the `x-ratelimit-*` headers of the request and token limits closest to their limit.
/// `x-synaxis-ratelimit-scope-*` names that limit's scope and window, such as `org/minute`.
fn rate_headers(statuses: &[LimitStatus], now: DateTime<Utc>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let admission = crate::limits::Admission {
        statuses: statuses.to_vec(),
    };
    let names = [
        (
            Metric::Requests,
            [
                &LIMIT_REQUESTS,
                &REMAINING_REQUESTS,
                &RESET_REQUESTS,
                &SCOPE_REQUESTS,
            ],
        ),
        (
            Metric::Tokens,
            [
                &LIMIT_TOKENS,
                &REMAINING_TOKENS,
                &RESET_TOKENS,
                &SCOPE_TOKENS,
            ],
        ),
    ];
    for (metric, [limit, remaining, reset, scope]) in names {
        let Some(status) = admission.closest_to_limit(metric) else {
            continue;
        };
        headers.insert(limit.clone(), HeaderValue::from(status.limit));
        headers.insert(remaining.clone(), HeaderValue::from(status.remaining));
        let until = (status.reset_at - now).to_std().unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&format_reset(until)) {
            headers.insert(reset.clone(), value);
        }
        let counter = &status.counter;
        let kind = counter.scope.split(':').next().unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&format!("{kind}/{}", counter.window.as_str())) {
            headers.insert(scope.clone(), value);
        }
    }
    headers
}

/// Formats a time to reset as OpenAI's headers do: `250ms`, `12s`, `1.5s`, `6m0s`, `2h5m0s`.
fn format_reset(until: Duration) -> String {
    let millis = until.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let seconds = millis % 60_000;
    let seconds = if seconds.is_multiple_of(1_000) {
        format!("{}s", seconds / 1_000)
    } else {
        let text = format!("{:.3}", seconds as f64 / 1_000.0);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, minutes) => format!("{minutes}m{seconds}"),
        (hours, minutes) => format!("{hours}h{minutes}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_times_read_like_openai_headers() {
        assert_eq!(format_reset(Duration::from_millis(250)), "250ms");
        assert_eq!(format_reset(Duration::from_secs(12)), "12s");
        assert_eq!(format_reset(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(7_500)), "2h5m0s");
    }
}
