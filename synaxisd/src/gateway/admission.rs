//! Admission of inference requests: the rate limits of the key, its user, team and org, and the
//! org's cap on concurrent requests, all checked in one call to the [`Limiter`].
//!
//! One call takes the request's concurrency lease, when its org has a cap, and charges every
//! limit: 1 to request limits, and an estimate (input tokens plus `max_tokens`, or
//! `limits.output_tokens_estimate`) to token limits. It does all of that or nothing. When a
//! `throttle` limit or the cap has no room, the request waits for it up to
//! `limits.throttle_wait_ms`, and a `block` limit refuses at once. An admitted request keeps a
//! [`Reservation`] until its record is finished. Then a finisher task settles the token
//! estimate to the real usage and releases the lease, for all requests that ended since its last
//! call in one limiter call. A lease keeper task renews every held lease in batched calls.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use synaxis_shared::OrgId;
use synaxis_shared::limits::MAX_AMOUNT;
use synaxis_shared::limits::{Action, LimitSet};
use synaxis_shared::plans::{Quota, default_minimum_balance, default_overage_per_token};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::billing::payments::AutoTopups;
use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::http_error::{ApiError, InsufficientCredits, RateLimitKind, RateLimited};
use crate::limits::{
    Adjustment, Counter, Decision, Finish, HeldLease, LeaseRequest, LeasedDecision, LimitCheck,
    LimitError, LimitStatus, Limiter, Metric, Rejection, Window, WindowKind,
};
use crate::metrics::Metrics;
use crate::store::{AuthenticatedKey, Store};
use crate::tenancy::plans::PlanCatalog;

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
    /// Hands finished requests' settles and lease releases to the finisher task.
    finisher: mpsc::UnboundedSender<Finish>,
    finisher_task: Mutex<Option<JoinHandle<()>>>,
    /// Held leases, by id to scope, which the lease keeper renews.
    leases: Arc<Mutex<HashMap<String, String>>>,
    /// The plan catalog whose quotas apply to each org; none without it.
    plans: Option<Arc<PlanCatalog>>,
    /// The credit ledgers that pay for `credit_charge` overage. Without them, such limits
    /// refuse like `block`.
    credits: Option<Arc<dyn Store>>,
    /// Tops up an org's credits that are too low for a request, when the org has auto top-up.
    auto_topups: Option<Arc<AutoTopups>>,
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
    /// The terms on which the org's credits pay for use past `credit_charge` limits; read only
    /// when such a limit applies, so that other requests skip the catalog lookup.
    credit: Option<CreditTerms>,
}

/// The org whose credits pay for overage, the price of an overage token, and the balance under
/// which overage is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditTerms {
    pub org_id: OrgId,
    pub overage_per_token_usd: Decimal,
    pub minimum_balance_usd: Decimal,
}

/// A `credit_charge` limit that a request was admitted past: its count before the request.
#[derive(Clone, Debug)]
struct Overdrawn {
    metric: Metric,
    limit: u64,
    used_before: u64,
}

/// Tokens of a finished request to charge to its org's credits at the overage price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overage {
    pub org_id: OrgId,
    pub tokens: u64,
    pub per_token_usd: Decimal,
}

impl Overage {
    /// Returns the charge, unrounded: the tokens at the overage price.
    pub fn amount_usd(&self) -> Decimal {
        Decimal::from(self.tokens) * self.per_token_usd
    }
}

/// Why [`Admission::charge`] did not admit a request.
enum Refused {
    /// A refusal to return to the client.
    Api(ApiError),
    /// The `credit_charge` limit at this index has no room: credits may pay for the request.
    CreditCharge(usize),
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
    pub headers: RateHeaders,
    pub reservation: Option<Reservation>,
}

/// The `x-ratelimit-*` headers of an admitted request, kept as the statuses of its counters
/// until they are written into the response.
#[derive(Debug, Default)]
pub struct RateHeaders {
    statuses: Vec<LimitStatus>,
    /// Time of the admission, from which the reset headers count.
    now: DateTime<Utc>,
}

impl RateHeaders {
    /// Writes the headers of the scope and window closest to its limit, for requests and for
    /// tokens, into `headers`.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        if !self.statuses.is_empty() {
            headers.reserve(8);
        }
        write_rate_headers(&self.statuses, self.now, headers);
    }

    /// Returns the headers in a map of their own.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(8);
        self.write_to(&mut headers);
        headers
    }
}

/// The token charges and concurrency lease of an admitted request, kept until it ends. Ending
/// it, or dropping it, settles the charges and releases the lease: in the limiter where it can,
/// and otherwise through the admission's finisher task.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<dyn Limiter>,
    finisher: mpsc::UnboundedSender<Finish>,
    leases: Arc<Mutex<HashMap<String, String>>>,
    token_counters: Vec<Counter>,
    estimate: u64,
    charged_at: DateTime<Utc>,
    lease: Option<HeldLease>,
    ended: bool,
    /// The `credit_charge` limits that the request was admitted past, and who pays.
    overdrawn: Vec<Overdrawn>,
    credit: Option<CreditTerms>,
}

impl Reservation {
    /// Corrects the token limits from the estimate to `tokens`, the real usage, and releases the
    /// lease. Returns the overage to charge when the request went past a `credit_charge` limit:
    /// the tokens that fall past the limit, counting from where the limit stood when the request
    /// was admitted, or all of them past a request limit.
    pub fn finish(mut self, tokens: u64) -> Option<Overage> {
        self.end(tokens);
        let credit = self.credit.take()?;
        let overage = self
            .overdrawn
            .iter()
            .map(|limit| match limit.metric {
                Metric::Tokens => tokens.min(
                    limit
                        .used_before
                        .saturating_add(tokens)
                        .saturating_sub(limit.limit),
                ),
                Metric::Requests if limit.used_before >= limit.limit => tokens,
                Metric::Requests => 0,
            })
            .max()
            .unwrap_or(0);
        (overage > 0).then_some(Overage {
            org_id: credit.org_id,
            tokens: overage,
            per_token_usd: credit.overage_per_token_usd,
        })
    }

    fn end(&mut self, tokens: u64) {
        self.ended = true;
        let delta = i64::try_from(tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.estimate).unwrap_or(i64::MAX));
        let adjustments: Vec<Adjustment> = if delta == 0 {
            Vec::new()
        } else {
            std::mem::take(&mut self.token_counters)
                .into_iter()
                .map(|counter| Adjustment { counter, delta })
                .collect()
        };
        let lease = self.lease.take();
        if let Some(lease) = &lease {
            lock(&self.leases).remove(&lease.id);
        }
        if adjustments.is_empty() && lease.is_none() {
            return;
        }
        let end = Finish {
            adjustments,
            charged_at: self.charged_at,
            lease,
        };
        // What the limiter finishes in the process never wakes the finisher task.
        let Some(end) = self.limiter.finish_locally(end) else {
            return;
        };
        if self.finisher.send(end).is_err() {
            tracing::warn!("the limiter's finisher has stopped; a settle or lease release is lost");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.ended {
            self.end(self.estimate);
        }
    }
}

fn lock(leases: &Mutex<HashMap<String, String>>) -> MutexGuard<'_, HashMap<String, String>> {
    // Each change is one insert or remove, so a panic elsewhere cannot leave the map half-changed.
    leases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Requests finished or released at most per limiter call of the finisher.
const MAX_FINISH_BATCH: usize = 512;

/// Settles and releases what finished requests hand over, all that arrived since the last call
/// in one limiter call, until every sender is dropped.
async fn run_finisher(
    limiter: Arc<dyn Limiter>,
    clock: Arc<dyn Clock>,
    mut receiver: mpsc::UnboundedReceiver<Finish>,
) {
    let mut batch = Vec::with_capacity(MAX_FINISH_BATCH);
    while receiver.recv_many(&mut batch, MAX_FINISH_BATCH).await > 0 {
        if let Err(error) = limiter.finish(&batch, clock.now()).await {
            tracing::warn!(%error, requests = batch.len(), "settling token limits and releasing leases failed; leases expire by themselves");
        }
        batch.clear();
    }
}

/// Leases renewed at most per limiter call.
const MAX_RENEW_BATCH: usize = 512;

/// Renews every held lease each third of `ttl`, in batched limiter calls, while the map of held
/// leases exists.
async fn run_lease_keeper(
    limiter: Arc<dyn Limiter>,
    clock: Arc<dyn Clock>,
    leases: Weak<Mutex<HashMap<String, String>>>,
    ttl: Duration,
) {
    loop {
        clock.sleep(ttl / 3).await;
        let Some(leases) = leases.upgrade() else {
            return;
        };
        let held: Vec<HeldLease> = lock(&leases)
            .iter()
            .map(|(id, scope)| HeldLease {
                scope: scope.clone(),
                id: id.clone(),
            })
            .collect();
        drop(leases);
        for chunk in held.chunks(MAX_RENEW_BATCH) {
            match limiter.renew_leases(chunk, clock.now(), ttl).await {
                Ok(renewed) => {
                    for (lease, _) in chunk.iter().zip(renewed).filter(|(_, renewed)| !renewed) {
                        tracing::debug!(lease = %lease.id, "a concurrency lease ended before its renewal");
                    }
                }
                Err(error) => tracing::warn!(%error, "renewing concurrency leases failed"),
            }
        }
    }
}

impl Admission {
    /// Creates the admission and starts its finisher and lease-renewing tasks, which stop once
    /// it is dropped.
    pub fn new(
        limiter: Arc<dyn Limiter>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: &LimitsConfig,
    ) -> Self {
        let lease_ttl = Duration::from_secs(config.lease_ttl_secs);
        let (finisher, receiver) = mpsc::unbounded_channel();
        let finisher_task = tokio::spawn(run_finisher(limiter.clone(), clock.clone(), receiver));
        let leases = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(run_lease_keeper(
            limiter.clone(),
            clock.clone(),
            Arc::downgrade(&leases),
            lease_ttl,
        ));
        Self {
            limiter,
            clock,
            metrics,
            throttle_wait: Duration::from_millis(config.throttle_wait_ms),
            lease_ttl,
            output_tokens_estimate: config.output_tokens_estimate,
            defaults: Defaults {
                org: config.org.clone(),
                team: config.team.clone(),
                user: config.user.clone(),
            },
            finisher,
            finisher_task: Mutex::new(Some(finisher_task)),
            leases,
            plans: None,
            credits: None,
            auto_topups: None,
        }
    }

    /// Lets an org's auto top-up add credit when a request's overage would take the balance
    /// under the minimum, before the request is refused.
    pub fn with_auto_topups(mut self, auto_topups: Arc<AutoTopups>) -> Self {
        self.auto_topups = Some(auto_topups);
        self
    }

    /// Lets `credit_charge` limits admit requests past them while the org's credits pay for
    /// the overage.
    pub fn with_credits(mut self, credits: Arc<dyn Store>) -> Self {
        self.credits = Some(credits);
        self
    }

    /// Returns the finisher task, once. It ends when the admission and every reservation are
    /// dropped, after its last settles and releases, so that shutdown can wait for it.
    pub fn take_finisher(&self) -> Option<JoinHandle<()>> {
        self.finisher_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Returns the estimate of output tokens for a request whose `max_tokens` is `max_tokens`.
    pub fn output_estimate(&self, max_tokens: Option<u64>) -> u64 {
        max_tokens.unwrap_or(self.output_tokens_estimate)
    }

    /// Lists the limits that apply to requests of `key`.
    /// Enforces the quotas of each org's plan: its requests per day, tokens per month and
    /// concurrent requests.
    pub fn with_plans(mut self, plans: Arc<PlanCatalog>) -> Self {
        self.plans = Some(plans);
        self
    }

    /// Adds the quotas of the key's org plan to `limits`, and returns the plan's cap on
    /// concurrent requests. Quotas count in counters of their own (`plan:<org id>`), apart from
    /// the org's limit set. An org whose plan or version the catalog lacks gets no quotas.
    fn plan_quotas(&self, key: &AuthenticatedKey, limits: &mut Vec<Planned>) -> Option<u64> {
        let catalog = self.plans.as_ref()?;
        let org_plan = &key.org_plan;
        let entitlements = catalog.version(&org_plan.plan, org_plan.version)?;
        let overrides = &org_plan.overrides;
        let mut scope = None;
        // Tokens past the monthly quota are paid from credits; requests past the daily one
        // wait for the next day.
        for (metric, window, quota, action) in [
            (
                Metric::Requests,
                Window::Day,
                overrides
                    .requests_per_day
                    .unwrap_or(entitlements.requests_per_day),
                Action::Block,
            ),
            (
                Metric::Tokens,
                Window::Month,
                overrides
                    .tokens_per_month
                    .unwrap_or(entitlements.tokens_per_month),
                Action::CreditCharge,
            ),
        ] {
            if let Quota::Limited(limit) = quota {
                let scope: &mut Arc<str> =
                    scope.get_or_insert_with(|| format!("plan:{}", key.key.org_id).into());
                limits.push(Planned {
                    check: LimitCheck {
                        counter: Counter::new(scope.clone(), metric, window, WindowKind::Fixed),
                        limit,
                        cost: 0,
                    },
                    action,
                    scope: "plan",
                });
            }
        }
        overrides
            .concurrent_requests
            .unwrap_or(entitlements.concurrent_requests)
            .limit()
    }

    pub fn plan(&self, key: &AuthenticatedKey) -> Plan {
        // Room for the limits that a request usually has, without growing.
        let mut limits = Vec::with_capacity(8);
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

        let team_id = key.team_id.as_ref().map(|team| team as &dyn fmt::Display);
        let scopes: [(&'static str, &str, Option<&dyn fmt::Display>, &LimitSet); 3] = [
            (
                "user",
                "user",
                Some(&own.user_id),
                or_default(&key.limits.user, &self.defaults.user),
            ),
            (
                "team",
                "team",
                team_id,
                or_default(&key.limits.team, &self.defaults.team),
            ),
            (
                "organization",
                "org",
                Some(&own.org_id),
                or_default(&key.limits.org, &self.defaults.org),
            ),
        ];
        let mut concurrency = None;
        for (scope, prefix, id, set) in scopes {
            let Some(id) = id else { continue };
            let cap = if scope == "organization" {
                set.concurrent_requests
            } else {
                None
            };
            // Most scopes have no limits, and then the counter name is not built.
            if set.rules().next().is_none() && cap.is_none() {
                continue;
            }
            let name: Arc<str> = format!("{prefix}:{id}").into();
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
            if let Some(cap) = cap {
                concurrency = Some((name.to_string(), cap));
            }
        }
        if let Some(plan_cap) = self.plan_quotas(key, &mut limits) {
            let name = format!("org:{}", own.org_id);
            let cap = concurrency.map_or(plan_cap, |(_, cap)| cap.min(plan_cap));
            concurrency = Some((name, cap));
        }
        let credit = limits
            .iter()
            .any(|planned| planned.action == Action::CreditCharge)
            .then(|| self.credit_terms(key));
        Plan {
            limits,
            concurrency,
            credit,
        }
    }

    /// Returns the overage price and minimum balance of the key's org: its plan's, with its
    /// overrides, or the defaults when the catalog lacks the plan.
    fn credit_terms(&self, key: &AuthenticatedKey) -> CreditTerms {
        let org_plan = &key.org_plan;
        let plan = self
            .plans
            .as_ref()
            .and_then(|catalog| catalog.version(&org_plan.plan, org_plan.version));
        let (rate, minimum) = plan.map_or_else(
            || (default_overage_per_token(), default_minimum_balance()),
            |entitlements| {
                (
                    entitlements.overage_per_token_usd,
                    entitlements.minimum_balance_usd,
                )
            },
        );
        let overrides = &org_plan.overrides;
        CreditTerms {
            org_id: key.key.org_id,
            overage_per_token_usd: overrides.overage_per_token_usd.unwrap_or(rate),
            minimum_balance_usd: overrides.minimum_balance_usd.unwrap_or(minimum),
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
            credit,
        } = plan;
        for planned in &mut limits {
            planned.check.cost = match planned.check.counter.metric {
                Metric::Requests => 1,
                Metric::Tokens => tokens,
            };
        }
        let mut checks: Vec<LimitCheck> =
            limits.iter().map(|planned| planned.check.clone()).collect();
        let lease = concurrency.map(|(scope, cap)| LeaseRequest {
            scope,
            cap,
            id: lease_id.to_owned(),
            ttl: self.lease_ttl,
        });

        // A `credit_charge` limit without room is lifted once credits can pay for the whole
        // request, and the call is repeated.
        let mut lifted = Vec::new();
        let (charged_at, statuses) = loop {
            match self.charge(&limits, &checks, lease.as_ref()).await {
                Ok(charged) => break charged,
                Err(Refused::Api(error)) => return Err(error),
                Err(Refused::CreditCharge(index)) => {
                    let Some(terms) = &credit else {
                        // A plan with a `credit_charge` limit always has terms.
                        tracing::error!(limit = %limits[index].check.counter.scope, "a credit_charge limit has no credit terms");
                        return Err(ApiError::Internal);
                    };
                    self.check_credits(&limits[index], terms, tokens).await?;
                    checks[index].limit = MAX_AMOUNT;
                    lifted.push(index);
                }
            }
        };
        let overdrawn: Vec<Overdrawn> = lifted
            .iter()
            .filter_map(|&index| {
                let check = &checks[index];
                let status = statuses
                    .iter()
                    .find(|status| status.counter == check.counter)?;
                let used_after = MAX_AMOUNT.saturating_sub(status.remaining);
                Some(Overdrawn {
                    metric: check.counter.metric,
                    limit: limits[index].check.limit,
                    used_before: used_after.saturating_sub(check.cost),
                })
            })
            .collect();

        let lease = lease.map(|lease| {
            lock(&self.leases).insert(lease.id.clone(), lease.scope.clone());
            HeldLease {
                scope: lease.scope,
                id: lease.id,
            }
        });
        let token_counters = limits
            .into_iter()
            .filter(|planned| planned.check.counter.metric == Metric::Tokens)
            .map(|planned| planned.check.counter)
            .collect();
        Ok(Grant {
            headers: RateHeaders {
                statuses,
                now: charged_at,
            },
            reservation: Some(Reservation {
                limiter: self.limiter.clone(),
                finisher: self.finisher.clone(),
                leases: self.leases.clone(),
                token_counters,
                estimate: tokens,
                charged_at,
                lease,
                ended: false,
                credit: credit.filter(|_| !overdrawn.is_empty()),
                overdrawn,
            }),
        })
    }

    /// Refuses with 402 `insufficient_credits` unless the org's balance, less the overage
    /// charge of all `tokens` of the request, stays at or above the minimum balance.
    async fn check_credits(
        &self,
        planned: &Planned,
        terms: &CreditTerms,
        tokens: u64,
    ) -> Result<(), ApiError> {
        let Some(credits) = &self.credits else {
            return Err(ApiError::InsufficientCredits(Box::new(
                InsufficientCredits {
                    limit_name: limit_name(&planned.check.counter),
                    scope: planned.scope,
                    balance_usd: Decimal::ZERO,
                    charge_usd: Decimal::ZERO,
                    minimum_balance_usd: terms.minimum_balance_usd,
                },
            )));
        };
        let (balance, _) = credits
            .credit_balance(terms.org_id)
            .await
            .map_err(|error| {
                tracing::error!(%error, org.id = %terms.org_id, "reading the credit balance failed");
                ApiError::Internal
            })?;
        let charge = Decimal::from(tokens) * terms.overage_per_token_usd;
        if balance - charge >= terms.minimum_balance_usd {
            return Ok(());
        }
        let mut balance = balance;
        if let Some(auto_topups) = &self.auto_topups
            && auto_topups.top_up_to_cover(terms.org_id, charge).await
        {
            balance = credits
                .credit_balance(terms.org_id)
                .await
                .map_err(|error| {
                    tracing::error!(%error, org.id = %terms.org_id, "reading the credit balance failed");
                    ApiError::Internal
                })?
                .0;
            if balance - charge >= terms.minimum_balance_usd {
                return Ok(());
            }
        }
        self.metrics.count_limit_refusal("insufficient_credits");
        Err(ApiError::InsufficientCredits(Box::new(
            InsufficientCredits {
                limit_name: limit_name(&planned.check.counter),
                scope: planned.scope,
                balance_usd: balance,
                charge_usd: charge,
                minimum_balance_usd: terms.minimum_balance_usd,
            },
        )))
    }

    /// Takes the lease, when there is one, and charges every limit in one limiter call. Waits
    /// while the cap or a `throttle` limit lacks room and the wait ends within the throttle wait.
    async fn charge(
        &self,
        limits: &[Planned],
        checks: &[LimitCheck],
        lease: Option<&LeaseRequest>,
    ) -> Result<(DateTime<Utc>, Vec<LimitStatus>), Refused> {
        let deadline =
            self.clock.now() + chrono::Duration::from_std(self.throttle_wait).unwrap_or_default();
        let mut waited = false;
        loop {
            let now = self.clock.now();
            let decision = match lease {
                Some(lease) => self.limiter.acquire_leased(checks, lease, now).await,
                None => self
                    .limiter
                    .acquire(checks, now)
                    .await
                    .map(LeasedDecision::Decided),
            };
            let left = (deadline - now).to_std().unwrap_or_default();
            let wait = match decision.map_err(|error| Refused::Api(limiter_failed(error)))? {
                LeasedDecision::Decided(Decision::Admitted(admission)) => {
                    return Ok((now, admission.statuses));
                }
                LeasedDecision::LeaseRejected { retry_after, .. } => {
                    let wait = retry_after.unwrap_or(POLL).min(POLL).min(left);
                    if wait.is_zero() {
                        self.metrics
                            .count_limit_refusal(RateLimitKind::Concurrency.code());
                        let cap = lease.map_or(0, |lease| lease.cap);
                        return Err(Refused::Api(ApiError::RateLimited(Box::new(RateLimited {
                            kind: RateLimitKind::Concurrency,
                            scope: "organization",
                            limit_name: "concurrent requests".to_owned(),
                            limit: cap,
                            // A slot frees whenever a request of the org ends, usually long
                            // before the earliest lease expires.
                            retry_after: Some(CONCURRENCY_RETRY),
                            headers: HeaderMap::new(),
                        }))));
                    }
                    wait
                }
                LeasedDecision::Decided(Decision::Rejected(rejection)) => {
                    let planned = &limits[rejection.index];
                    if planned.action == Action::CreditCharge {
                        return Err(Refused::CreditCharge(rejection.index));
                    }
                    let counter = &planned.check.counter;
                    let throttled = planned.action == Action::Throttle;
                    let wait = match rejection.retry_after {
                        // Request limits free only as the window moves; token limits also when
                        // an earlier request settles below its estimate.
                        Some(retry) if throttled && counter.metric == Metric::Tokens => {
                            retry.min(POLL).min(left)
                        }
                        Some(retry) if throttled && retry <= left => retry,
                        _ => Duration::ZERO,
                    };
                    if wait.is_zero() {
                        return Err(Refused::Api(self.refusal(planned, &rejection, now)));
                    }
                    wait
                }
            };
            if !waited {
                self.metrics.count_limit_wait();
                waited = true;
            }
            self.clock.sleep(wait).await;
        }
    }

    /// Builds the 429 of a limit that refused a request.
    fn refusal(&self, planned: &Planned, rejection: &Rejection, now: DateTime<Utc>) -> ApiError {
        let kind = if planned.action == Action::Throttle {
            RateLimitKind::Throttled
        } else {
            RateLimitKind::Blocked
        };
        self.metrics.count_limit_refusal(kind.code());
        let counter = &planned.check.counter;
        let status = &rejection.status;
        ApiError::RateLimited(Box::new(RateLimited {
            kind,
            scope: planned.scope,
            limit_name: limit_name(counter),
            limit: status.limit,
            retry_after: rejection.retry_after,
            headers: rate_headers(std::slice::from_ref(status), now),
        }))
    }
}

/// Names a limit in errors, such as `tokens per month`.
fn limit_name(counter: &Counter) -> String {
    format!(
        "{} per {}",
        counter.metric.as_str(),
        counter.window.as_str()
    )
}

fn or_default<'a>(stored: &'a LimitSet, default: &'a LimitSet) -> &'a LimitSet {
    if stored.is_empty() { default } else { stored }
}

/// Turns a limiter error that is not an outage, such as an amount above the maximum, into a 500,
/// so that the request fails rather than go unlimited.
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
    let mut headers = HeaderMap::with_capacity(8);
    write_rate_headers(statuses, now, &mut headers);
    headers
}

/// Writes the `x-ratelimit-*` headers of [`rate_headers`] into `headers`.
fn write_rate_headers(statuses: &[LimitStatus], now: DateTime<Utc>, headers: &mut HeaderMap) {
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
    // The values are written into one buffer that the header values share, so that they take
    // one allocation instead of one each.
    let mut text = String::with_capacity(96);
    let mut digits = itoa::Buffer::new();
    let mut spans = [(&LIMIT_REQUESTS, 0, 0); 6];
    let mut count = 0;
    for (metric, [limit, remaining, reset, scope]) in names {
        let Some(status) = crate::limits::closest_to_limit(statuses, metric) else {
            continue;
        };
        for (name, number) in [(limit, status.limit), (remaining, status.remaining)] {
            let start = text.len();
            text.push_str(digits.format(number));
            spans[count] = (name, start, text.len());
            count += 1;
        }
        let start = text.len();
        push_reset(
            (status.reset_at - now).to_std().unwrap_or_default(),
            &mut text,
        );
        spans[count] = (reset, start, text.len());
        count += 1;
        if let Some(value) = scope_value(&status.counter) {
            headers.insert(scope.clone(), value);
        }
    }
    let text = Bytes::from(text);
    for &(name, start, end) in &spans[..count] {
        if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
            headers.insert(name.clone(), value);
        }
    }
}

/// Returns the `x-ratelimit-scope-*` value of a counter, such as `org/minute`, from a table of
/// static values, so that building it allocates nothing.
fn scope_value(counter: &Counter) -> Option<HeaderValue> {
    const VALUES: [(&str, [&str; 4]); 5] = [
        ("key", ["key/minute", "key/hour", "key/day", "key/month"]),
        (
            "user",
            ["user/minute", "user/hour", "user/day", "user/month"],
        ),
        (
            "team",
            ["team/minute", "team/hour", "team/day", "team/month"],
        ),
        ("org", ["org/minute", "org/hour", "org/day", "org/month"]),
        (
            "plan",
            ["plan/minute", "plan/hour", "plan/day", "plan/month"],
        ),
    ];
    let kind = counter.scope.split(':').next().unwrap_or_default();
    let (_, values) = VALUES.iter().find(|(name, _)| *name == kind)?;
    let value = match counter.window {
        Window::Minute => values[0],
        Window::Hour => values[1],
        Window::Day => values[2],
        Window::Month => values[3],
    };
    Some(HeaderValue::from_static(value))
}

/// Appends a time until reset to `text` as OpenAI's headers write it: `250ms`, `1.5s`, `6m0s`,
/// `2h5m0s`.
fn push_reset(until: Duration, text: &mut String) {
    let millis = until.as_millis();
    let mut digits = itoa::Buffer::new();
    if millis < 1_000 {
        text.push_str(digits.format(millis));
        text.push_str("ms");
        return;
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let seconds = millis % 60_000 / 1_000;
    let fraction = millis % 1_000;
    if hours > 0 {
        text.push_str(digits.format(hours));
        text.push('h');
    }
    if hours > 0 || minutes > 0 {
        text.push_str(digits.format(minutes));
        text.push('m');
    }
    text.push_str(digits.format(seconds));
    if fraction > 0 {
        // The fraction's three digits, with leading zeros, come from 1000 + fraction. Trailing
        // zeros are cut, which stops at the fraction's last non-zero digit.
        text.push('.');
        text.push_str(&digits.format(1_000 + fraction)[1..]);
        text.truncate(text.trim_end_matches('0').len());
    }
    text.push('s');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_reset(until: Duration) -> String {
        let mut text = String::new();
        push_reset(until, &mut text);
        text
    }

    #[test]
    fn reset_times_read_like_openai_headers() {
        assert_eq!(format_reset(Duration::from_millis(250)), "250ms");
        assert_eq!(format_reset(Duration::from_secs(12)), "12s");
        assert_eq!(format_reset(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(7_500)), "2h5m0s");
        assert_eq!(format_reset(Duration::from_millis(61_040)), "1m1.04s");
        assert_eq!(format_reset(Duration::ZERO), "0ms");
        assert_eq!(format_reset(Duration::from_millis(999)), "999ms");
        assert_eq!(format_reset(Duration::from_millis(1_001)), "1.001s");
        assert_eq!(format_reset(Duration::from_secs(3_600)), "1h0m0s");
    }

    #[test]
    fn scope_values_name_kind_and_window() {
        let counter = |scope: &str, window| {
            Counter::new(scope, Metric::Requests, window, WindowKind::Sliding)
        };
        let value = scope_value(&counter("org:1", Window::Minute));
        assert_eq!(value, Some(HeaderValue::from_static("org/minute")));
        let value = scope_value(&counter("plan:1", Window::Month));
        assert_eq!(value, Some(HeaderValue::from_static("plan/month")));
        assert_eq!(scope_value(&counter("other:1", Window::Day)), None);
    }
}
