//! Tests of the gateway's admission of requests against rate limits and the concurrency cap,
//! on the in-process limiter and a clock that only the test moves: throttled requests wait on
//! that clock, so the tests decide when capacity frees.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use synaxis_shared::api::{Key, KeyScope};
use synaxis_shared::limits::{Action, LimitRule, LimitSet, MetricLimits, WindowKind};
use synaxis_shared::{KeyId, Locale, OrgId, Role, UserId};
use synaxisd::clock::ManualClock;
use synaxisd::config::LimitsConfig;
use synaxisd::gateway::admission::{Admission, Grant};
use synaxisd::http_error::{ApiError, RateLimitKind, RateLimited};
use synaxisd::limits::memory::MemoryLimiter;
use synaxisd::metrics::Metrics;
use synaxisd::store::{AuthenticatedKey, KeyLimits, OrgPlan};
use synaxisd::tenancy::plans::PlanCatalog;

/// Returns the time one second before a UTC minute ends.
fn start() -> DateTime<Utc> {
    "2026-03-01T12:00:59Z".parse().expect("RFC 3339 time")
}

fn rule(limit: u64, window: WindowKind, action: Action) -> Option<LimitRule> {
    Some(LimitRule {
        limit,
        window,
        action,
    })
}

fn key_with(org: LimitSet) -> AuthenticatedKey {
    AuthenticatedKey {
        key: Key {
            id: KeyId::new(),
            org_id: OrgId::new(),
            user_id: UserId::new(),
            name: "test".to_owned(),
            scope: KeyScope::Inference,
            region: "eu".parse().expect("region id"),
            allowed_models: Vec::new(),
            rpm_limit: None,
            tpm_limit: None,
            active: true,
            expires_at: None,
            created_at: start(),
            rotated_at: None,
            previous_secret_expires_at: None,
            revoked_at: None,
        },
        role: Role::Developer,
        team_id: None,
        locale: Locale::En,
        team_allowed_models: Vec::new(),
        org_allowed_models: Vec::new(),
        limits: KeyLimits {
            org,
            ..KeyLimits::default()
        },
        org_plan: OrgPlan::default(),
        budgets: Vec::new(),
    }
}

fn requests_per_minute(limit: u64, action: Action) -> LimitSet {
    LimitSet {
        requests: MetricLimits {
            per_minute: rule(limit, WindowKind::Fixed, action),
            ..MetricLimits::default()
        },
        ..LimitSet::default()
    }
}

struct Setup {
    admission: Arc<Admission>,
    clock: Arc<ManualClock>,
}

fn setup(throttle_wait_ms: u64) -> Setup {
    let clock = Arc::new(ManualClock::new(start()));
    let config = LimitsConfig {
        throttle_wait_ms,
        lease_ttl_secs: 30,
        ..LimitsConfig::default()
    };
    let admission = Admission::new(
        Arc::new(MemoryLimiter::new()),
        clock.clone(),
        Arc::new(Metrics::default()),
        &config,
    );
    Setup {
        admission: Arc::new(admission),
        clock,
    }
}

async fn admit(setup: &Setup, key: &AuthenticatedKey, tokens: u64) -> Result<Grant, ApiError> {
    let plan = setup.admission.plan(key);
    setup
        .admission
        .admit(plan, tokens, &uuid::Uuid::new_v4().to_string())
        .await
}

fn refusal(result: Result<Grant, ApiError>) -> RateLimited {
    match result {
        Err(ApiError::RateLimited(limited)) => *limited,
        Err(other) => panic!("expected a 429, got {other:?}"),
        Ok(grant) => panic!(
            "expected a 429, got admitted with {:?}",
            grant.headers.to_header_map()
        ),
    }
}

fn header(grant: &Grant, name: &str) -> String {
    let headers = grant.headers.to_header_map();
    headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} in {headers:?}"))
        .to_str()
        .expect("ASCII header")
        .to_owned()
}

/// Polls `task` until it finishes, letting other tasks run in between, for at most 1,000 turns.
async fn finish<T>(task: &mut tokio::task::JoinHandle<T>) -> T {
    for _ in 0..1_000 {
        if let Some(result) = (&mut *task).now_or_never() {
            return result.expect("the task ran to its end");
        }
        tokio::task::yield_now().await;
    }
    panic!("the task did not finish");
}

/// Lets spawned tasks run until none of them has work left, within 100 turns.
async fn settle_tasks() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn throttle_waits_and_succeeds_when_the_window_frees() {
    let setup = setup(2_000);
    let key = key_with(requests_per_minute(1, Action::Throttle));
    let first = admit(&setup, &key, 0).await.expect("first request fits");
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&first, "x-ratelimit-reset-requests"), "1s");

    let admission = setup.admission.clone();
    let second_key = key.clone();
    let mut second = tokio::spawn(async move {
        let plan = admission.plan(&second_key);
        admission.admit(plan, 0, "second").await
    });
    settle_tasks().await;
    assert!(
        (&mut second).now_or_never().is_none(),
        "the throttled request waits instead of answering"
    );

    setup.clock.advance(chrono::Duration::seconds(1));
    let grant = finish(&mut second)
        .await
        .expect("admitted once the minute ended");
    assert_eq!(header(&grant, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&grant, "x-ratelimit-limit-requests"), "1");
    assert_eq!(
        header(&grant, "x-synaxis-ratelimit-scope-requests"),
        "org/minute"
    );
}

#[tokio::test]
async fn throttle_rejects_when_reset_follows_wait() {
    let setup = setup(2_000);
    setup
        .clock
        .set("2026-03-01T12:00:30Z".parse().expect("RFC 3339 time"));
    let key = key_with(requests_per_minute(1, Action::Throttle));
    admit(&setup, &key, 0).await.expect("first request fits");

    let limited = refusal(
        admit(&setup, &key, 0)
            .now_or_never()
            .expect("no wait: 30 s to the reset is longer than the 2 s wait"),
    );
    assert_eq!(limited.kind, RateLimitKind::Throttled);
    assert_eq!(limited.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(limited.scope, "organization");
    assert_eq!(limited.limit_name, "requests per minute");
}

#[tokio::test]
async fn block_refuses_without_waiting_until_the_reset() {
    let setup = setup(2_000);
    setup
        .clock
        .set("2026-03-01T12:00:59.500Z".parse().expect("RFC 3339 time"));
    let key = key_with(requests_per_minute(2, Action::Block));
    admit(&setup, &key, 0).await.expect("first fits");
    admit(&setup, &key, 0).await.expect("second fits");

    // The window frees in 0.5 s, inside the wait, and still a block limit does not wait.
    let limited = refusal(
        admit(&setup, &key, 0)
            .now_or_never()
            .expect("a block limit answers at once"),
    );
    assert_eq!(limited.kind, RateLimitKind::Blocked);
    assert_eq!(limited.retry_after, Some(Duration::from_millis(500)));
    let response =
        axum::response::IntoResponse::into_response(ApiError::RateLimited(Box::new(limited)));
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["retry-after-ms"], "500");
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "0");

    setup.clock.advance(chrono::Duration::milliseconds(500));
    admit(&setup, &key, 0)
        .await
        .expect("the next minute has room");
}

#[tokio::test]
async fn credit_charge_without_credits_refuses() {
    let setup = setup(2_000);
    let key = key_with(requests_per_minute(1, Action::CreditCharge));
    admit(&setup, &key, 0).await.expect("first fits");
    let refused = admit(&setup, &key, 0).now_or_never().expect("no wait");
    match refused {
        Err(ApiError::InsufficientCredits(refused)) => {
            assert_eq!(refused.limit_name, "requests per minute");
            assert_eq!(refused.scope, "organization");
        }
        other => panic!("expected 402 insufficient_credits, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_request_charges_no_scope() {
    let setup = setup(0);
    let mut org = requests_per_minute(10, Action::Block);
    org.tokens.per_minute = rule(1_000, WindowKind::Sliding, Action::Block);
    let mut key = key_with(org);
    key.key.rpm_limit = Some(5);

    let first = admit(&setup, &key, 600).await.expect("600 of 1,000 tokens");
    assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), "400");
    // The key's 5 per minute is closer to its limit than the org's 10.
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "4");
    assert_eq!(
        header(&first, "x-synaxis-ratelimit-scope-requests"),
        "key/minute"
    );

    let limited = refusal(admit(&setup, &key, 600).await);
    assert_eq!(limited.limit_name, "tokens per minute");

    let next = admit(&setup, &key, 100).await.expect("100 tokens fit");
    assert_eq!(
        header(&next, "x-ratelimit-remaining-requests"),
        "3",
        "the refused request charged no request"
    );
    assert_eq!(header(&next, "x-ratelimit-remaining-tokens"), "300");
}

#[tokio::test]
async fn token_estimate_settles_to_real_usage() {
    let setup = setup(0);
    let mut org = LimitSet::default();
    org.tokens.per_hour = rule(1_000, WindowKind::Fixed, Action::Block);
    let key = key_with(org);

    let grant = admit(&setup, &key, 900).await.expect("estimate fits");
    assert_eq!(header(&grant, "x-ratelimit-remaining-tokens"), "100");
    grant
        .reservation
        .expect("a token charge is reserved")
        .finish(250);

    // The settle runs in a task of its own: poll until a request reads its result.
    let mut remaining = String::new();
    for _ in 0..100 {
        settle_tasks().await;
        let probe = admit(&setup, &key, 0).await.expect("a zero estimate fits");
        remaining = header(&probe, "x-ratelimit-remaining-tokens");
        if remaining == "750" {
            break;
        }
    }
    assert_eq!(
        remaining, "750",
        "250 real tokens count, not the 900 estimated"
    );
}

#[tokio::test]
async fn concurrency_cap_waits_for_a_released_lease() {
    let setup = setup(2_000);
    let org = LimitSet {
        concurrent_requests: Some(1),
        ..LimitSet::default()
    };
    let key = key_with(org);
    let first = admit(&setup, &key, 0).await.expect("one slot");

    let admission = setup.admission.clone();
    let second_key = key.clone();
    let mut second = tokio::spawn(async move {
        let plan = admission.plan(&second_key);
        admission.admit(plan, 0, "second").await
    });
    settle_tasks().await;
    assert!((&mut second).now_or_never().is_none(), "the second waits");

    // Ending the first request releases its lease; the waiting one then takes the slot.
    first.reservation.expect("the lease is reserved").finish(0);
    let mut admitted = None;
    for _ in 0..50 {
        settle_tasks().await;
        setup.clock.advance(chrono::Duration::milliseconds(100));
        if let Some(result) = (&mut second).now_or_never() {
            admitted = Some(result.expect("the task ran"));
            break;
        }
    }
    let grant = admitted
        .expect("admitted after the release")
        .expect("a slot");

    // With the slot taken, a third request waits out the 2 s and is refused.
    let admission = setup.admission.clone();
    let mut third = tokio::spawn(async move {
        let plan = admission.plan(&key);
        admission.admit(plan, 0, "third").await
    });
    for _ in 0..25 {
        settle_tasks().await;
        setup.clock.advance(chrono::Duration::milliseconds(100));
    }
    let limited = refusal(finish(&mut third).await);
    assert_eq!(limited.kind, RateLimitKind::Concurrency);
    drop(grant);
}

#[tokio::test]
async fn oversized_request_gets_no_retry_after() {
    let setup = setup(2_000);
    let mut org = LimitSet::default();
    org.tokens.per_minute = rule(1_000, WindowKind::Fixed, Action::Block);
    let key = key_with(org);

    let limited = refusal(admit(&setup, &key, 5_000).await);
    assert_eq!(limited.kind, RateLimitKind::Blocked);
    assert_eq!(limited.retry_after, None, "waiting never lets it fit");
    let response =
        axum::response::IntoResponse::into_response(ApiError::RateLimited(Box::new(limited)));
    assert!(response.headers().get("retry-after").is_none());
}

/// A catalog with one plan whose version 1 allows 2 requests per day, 1,000 tokens per month and
/// 5 concurrent requests.
fn small_plan_catalog() -> Arc<PlanCatalog> {
    let text = r#"
default_plan = "small"

[plans.small]
name = "Small"
rank = 1

[plans.small.versions.1]
teams = 1
users_per_team = 1
keys_per_user = 1
concurrent_requests = 5
requests_per_day = 2
tokens_per_month = 1000
rate_limit_windows = "fixed_only"
billing_currencies = ["USD"]
audit_log_access = false
sso = false
monthly_fee_usd = "0"
"#;
    Arc::new(PlanCatalog::parse(text, "test").expect("catalog"))
}

fn key_on_small_plan() -> AuthenticatedKey {
    let mut key = key_with(LimitSet::default());
    key.org_plan = OrgPlan {
        plan: "small".to_owned(),
        version: 1,
        overrides: Default::default(),
    };
    key
}

fn setup_with_plans() -> Setup {
    let clock = Arc::new(ManualClock::new(start()));
    // Without a wait, a full cap refuses at once, and the clock never needs to move.
    let config = LimitsConfig {
        throttle_wait_ms: 0,
        ..LimitsConfig::default()
    };
    let admission = Admission::new(
        Arc::new(MemoryLimiter::new()),
        clock.clone(),
        Arc::new(Metrics::default()),
        &config,
    )
    .with_plans(small_plan_catalog());
    Setup {
        admission: Arc::new(admission),
        clock,
    }
}

#[tokio::test]
async fn plan_quota_blocks_past_requests_per_day() {
    let setup = setup_with_plans();
    let key = key_on_small_plan();
    for _ in 0..2 {
        admit(&setup, &key, 10)
            .await
            .expect("within the daily quota");
    }

    let limited = refusal(admit(&setup, &key, 10).await);
    assert_eq!(limited.kind, RateLimitKind::Blocked);
    assert_eq!(limited.scope, "plan");
    assert_eq!(limited.limit, 2);
    assert_eq!(
        ApiError::RateLimited(Box::new(limited.clone())).message(Locale::PtBr),
        format!(
            "O limite de 2 requisições por dia do plano foi atingido. Tente de novo em {} s.",
            limited.retry_after.expect("retry after").as_secs()
        )
    );
}

#[tokio::test]
async fn plan_override_lifts_quota_and_sets_cap() {
    let setup = setup_with_plans();
    let mut key = key_on_small_plan();
    key.org_plan
        .overrides
        .apply(&serde_json::json!({"requests_per_day": "unlimited", "concurrent_requests": 1}))
        .expect("overrides");
    let first = admit(&setup, &key, 10).await.expect("one slot");
    let second = refusal(admit(&setup, &key, 10).await);
    assert_eq!(
        second.kind,
        RateLimitKind::Concurrency,
        "the overridden cap is 1"
    );
    assert_eq!(second.limit, 1);

    first.reservation.expect("the lease is reserved").finish(0);
    settle_tasks().await;
    for _ in 0..3 {
        let grant = admit(&setup, &key, 10).await.expect("no daily quota");
        grant.reservation.expect("reserved").finish(0);
        settle_tasks().await;
    }
}
