//! Contract tests of the limiter: every case runs against the in-process limiter and against
//! Redis, each Redis case under its own key prefix, and against local allowances in front of
//! each. Time moves only through the `now` values
//! that the cases pass.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synaxis_tests::services::{REDIS_URL_ENV, redis_key_prefix, service_url};
use synaxisd::clock::ManualClock;
use synaxisd::limits::allowance::AllowanceLimiter;
use synaxisd::limits::memory::MemoryLimiter;
use synaxisd::limits::redis::RedisLimiter;
use synaxisd::limits::{
    Adjustment, Admission, Counter, Decision, Finish, HeldLease, LeaseDecision, LeaseRequest,
    LeasedDecision, LimitCheck, LimitError, Limiter, Metric, Rejection, Window, WindowKind,
};
use tokio::sync::Barrier;

/// Bound on connecting to Redis and on each of its replies.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("RFC 3339 time")
}

fn millis(milliseconds: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(milliseconds)
}

fn check(
    scope: &str,
    metric: Metric,
    window: Window,
    kind: WindowKind,
    limit: u64,
    cost: u64,
) -> LimitCheck {
    LimitCheck {
        counter: Counter::new(scope, metric, window, kind),
        limit,
        cost,
    }
}

fn with_cost(check: &LimitCheck, cost: u64) -> LimitCheck {
    LimitCheck {
        cost,
        ..check.clone()
    }
}

fn admitted(decision: Decision) -> Admission {
    match decision {
        Decision::Admitted(admission) => admission,
        Decision::Rejected(rejection) => panic!("expected admission, got {rejection:?}"),
    }
}

fn rejected(decision: Decision) -> Rejection {
    match decision {
        Decision::Rejected(rejection) => rejection,
        Decision::Admitted(admission) => panic!("expected rejection, got {admission:?}"),
    }
}

async fn acquire(limiter: &dyn Limiter, checks: &[LimitCheck], now: DateTime<Utc>) -> Decision {
    limiter.acquire(checks, now).await.expect("acquire")
}

/// Returns the remaining amount of each limit at `now`, charging nothing.
async fn remaining(limiter: &dyn Limiter, checks: &[LimitCheck], now: DateTime<Utc>) -> Vec<u64> {
    let free: Vec<LimitCheck> = checks.iter().map(|check| with_cost(check, 0)).collect();
    let admission = admitted(acquire(limiter, &free, now).await);
    admission
        .statuses
        .iter()
        .map(|status| status.remaining)
        .collect()
}

async fn settle(
    limiter: &dyn Limiter,
    check: &LimitCheck,
    delta: i64,
    charged_at: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    let adjustment = Adjustment {
        counter: check.counter.clone(),
        delta,
    };
    limiter
        .settle(&[adjustment], charged_at, now)
        .await
        .expect("settle");
}

async fn fixed_minute_resets_at_boundary(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let start = at("2026-01-15T12:00:10Z");
    let limit = [check(
        "key:k",
        Metric::Requests,
        Window::Minute,
        WindowKind::Fixed,
        3,
        1,
    )];

    for expected in [2, 1, 0] {
        let admission = admitted(acquire(limiter, &limit, start).await);
        assert_eq!(admission.statuses.len(), 1);
        assert_eq!(admission.statuses[0].counter, limit[0].counter);
        assert_eq!(admission.statuses[0].limit, 3);
        assert_eq!(admission.statuses[0].remaining, expected);
        assert_eq!(admission.statuses[0].reset_at, at("2026-01-15T12:01:00Z"));
    }

    let rejection = rejected(acquire(limiter, &limit, start).await);
    assert_eq!(rejection.index, 0);
    assert_eq!(rejection.status.counter, limit[0].counter);
    assert_eq!(rejection.status.remaining, 0);
    assert_eq!(rejection.status.reset_at, at("2026-01-15T12:01:00Z"));
    assert_eq!(rejection.retry_after, Some(Duration::from_secs(50)));

    let last_millisecond = at("2026-01-15T12:00:59.999Z");
    let rejection = rejected(acquire(limiter, &limit, last_millisecond).await);
    assert_eq!(rejection.retry_after, Some(Duration::from_millis(1)));

    let next_minute = at("2026-01-15T12:01:00Z");
    let admission = admitted(acquire(limiter, &limit, next_minute).await);
    assert_eq!(admission.statuses[0].remaining, 2);
    assert_eq!(admission.statuses[0].reset_at, at("2026-01-15T12:02:00Z"));
}

async fn fixed_month_resets_on_first_of_month(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let limit = [check(
        "org:o",
        Metric::Tokens,
        Window::Month,
        WindowKind::Fixed,
        2_000,
        1_000,
    )];

    let end_of_january = at("2026-01-31T23:59:59Z");
    for expected in [1_000, 0] {
        let admission = admitted(acquire(limiter, &limit, end_of_january).await);
        assert_eq!(admission.statuses[0].remaining, expected);
        assert_eq!(admission.statuses[0].reset_at, at("2026-02-01T00:00:00Z"));
    }
    let rejection = rejected(acquire(limiter, &limit, end_of_january).await);
    assert_eq!(rejection.retry_after, Some(Duration::from_secs(1)));

    let february = at("2026-02-01T00:00:00Z");
    let admission = admitted(acquire(limiter, &limit, february).await);
    assert_eq!(admission.statuses[0].remaining, 1_000);
    assert_eq!(admission.statuses[0].reset_at, at("2026-03-01T00:00:00Z"));

    let mid_february = at("2026-02-15T08:30:00Z");
    let admission = admitted(acquire(limiter, &limit, mid_february).await);
    assert_eq!(admission.statuses[0].remaining, 0);

    let end_of_february = at("2026-02-28T23:59:59.999Z");
    let rejection = rejected(acquire(limiter, &limit, end_of_february).await);
    assert_eq!(rejection.retry_after, Some(Duration::from_millis(1)));
    assert_eq!(rejection.status.reset_at, at("2026-03-01T00:00:00Z"));
}

async fn cost_above_limit_is_never_admitted(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let now = at("2026-01-15T12:00:00Z");
    let tokens = check(
        "key:k",
        Metric::Tokens,
        Window::Minute,
        WindowKind::Sliding,
        100,
        101,
    );

    let rejection = rejected(acquire(limiter, std::slice::from_ref(&tokens), now).await);
    assert_eq!(rejection.retry_after, None);
    assert_eq!(rejection.status.remaining, 100);

    let admission = admitted(acquire(limiter, &[with_cost(&tokens, 100)], now).await);
    assert_eq!(admission.statuses[0].remaining, 0);
}

/// Drives attempts at random times for 10 minutes against a sliding limit, then checks that no
/// window of one minute contains more than the limit, and that each rejection's `retry_after` is
/// exact: no attempt before it is admitted, and the first attempt at or after it is.
async fn sliding_never_exceeds_limit_in_any_window(limiter: Arc<dyn Limiter>) {
    const LIMIT: usize = 5;
    const WINDOW_MS: i64 = 60_000;
    let limiter = limiter.as_ref();
    let limit = [check(
        "user:u",
        Metric::Requests,
        Window::Minute,
        WindowKind::Sliding,
        LIMIT as u64,
        1,
    )];
    let mut rng = StdRng::seed_from_u64(20_260_115);
    let mut now = at("2026-01-15T11:59:58.766Z");
    let end = now + chrono::Duration::minutes(10);

    // (time, admitted, retry_after) of every attempt, in order.
    let mut attempts: Vec<(DateTime<Utc>, bool, Option<Duration>)> = Vec::new();
    while now < end {
        now += millis(rng.random_range(0..=2_500));
        for _ in 0..rng.random_range(1..=3) {
            match acquire(limiter, &limit, now).await {
                Decision::Admitted(_) => attempts.push((now, true, None)),
                Decision::Rejected(rejection) => {
                    let retry_after = rejection.retry_after.expect("cost fits the limit");
                    attempts.push((now, false, Some(retry_after)));
                }
            }
        }
    }

    let admitted_ms: Vec<i64> = attempts
        .iter()
        .filter(|(_, admitted, _)| *admitted)
        .map(|(time, _, _)| time.timestamp_millis())
        .collect();
    assert!(admitted_ms.len() > 4 * LIMIT, "admitted {admitted_ms:?}");
    let mut fullest = 0;
    for start in &admitted_ms {
        let in_window = admitted_ms
            .iter()
            .filter(|time| (*start..=start + WINDOW_MS).contains(*time))
            .count();
        assert!(
            in_window <= LIMIT,
            "{in_window} admitted in the minute from {start} ms"
        );
        fullest = fullest.max(in_window);
    }
    assert_eq!(fullest, LIMIT);

    for (position, (rejected_at, _, retry_after)) in attempts.iter().enumerate() {
        let Some(retry_after) = retry_after else {
            continue;
        };
        let retry_at = *rejected_at + chrono::Duration::from_std(*retry_after).expect("duration");
        let later = &attempts[position + 1..];
        let early_admission = later
            .iter()
            .find(|(time, admitted, _)| *admitted && *time < retry_at);
        assert_eq!(early_admission, None, "rejected at {rejected_at}");
        if let Some((time, admitted, _)) = later.iter().find(|(time, _, _)| *time >= retry_at) {
            assert!(*admitted, "rejected at {rejected_at}, retried at {time}");
        }
    }
}

async fn sliding_retry_waits_for_old_buckets(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    // 12:00:00 starts a bucket, because buckets of 6 s are aligned to the Unix epoch.
    let start = at("2026-01-15T12:00:00Z");
    let limit = check(
        "key:k",
        Metric::Requests,
        Window::Minute,
        WindowKind::Sliding,
        5,
        1,
    );
    let limits = std::slice::from_ref(&limit);
    for _ in 0..3 {
        admitted(acquire(limiter, limits, start + millis(1_000)).await);
    }
    for _ in 0..2 {
        admitted(acquire(limiter, limits, start + millis(31_000)).await);
    }

    // The 3 charges of the first bucket leave the counted span when the bucket from 66 s starts.
    let rejection = rejected(acquire(limiter, limits, start + millis(40_000)).await);
    assert_eq!(rejection.retry_after, Some(Duration::from_secs(26)));
    assert_eq!(rejection.status.remaining, 0);
    assert_eq!(rejection.status.reset_at, start + millis(96_000));

    let rejection = rejected(acquire(limiter, limits, start + millis(65_999)).await);
    assert_eq!(rejection.retry_after, Some(Duration::from_millis(1)));

    let admission = admitted(acquire(limiter, limits, start + millis(66_000)).await);
    assert_eq!(admission.statuses[0].remaining, 2);
    assert_eq!(admission.statuses[0].reset_at, start + millis(132_000));

    // Two more fit. Then the 2 charges at 31 s hold the limit until their bucket leaves at 96 s.
    for expected in [1, 0] {
        let admission = admitted(acquire(limiter, limits, start + millis(70_000)).await);
        assert_eq!(admission.statuses[0].remaining, expected);
    }
    let rejection = rejected(acquire(limiter, limits, start + millis(70_000)).await);
    assert_eq!(rejection.retry_after, Some(Duration::from_secs(26)));
}

async fn rejected_call_charges_no_scope(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let now = at("2026-01-15T12:00:00Z");
    let key = check(
        "key:k",
        Metric::Requests,
        Window::Minute,
        WindowKind::Sliding,
        10,
        1,
    );
    let user = check(
        "user:u",
        Metric::Requests,
        Window::Hour,
        WindowKind::Fixed,
        20,
        1,
    );
    let team = check(
        "team:t",
        Metric::Tokens,
        Window::Day,
        WindowKind::Fixed,
        1_000,
        250,
    );
    let org = check(
        "org:o",
        Metric::Requests,
        Window::Day,
        WindowKind::Fixed,
        2,
        1,
    );
    for _ in 0..2 {
        admitted(acquire(limiter, std::slice::from_ref(&org), now).await);
    }
    let all = [key.clone(), user.clone(), team.clone(), org.clone()];
    assert_eq!(remaining(limiter, &all, now).await, vec![10, 20, 1_000, 0]);

    let rejection = rejected(acquire(limiter, &all, now).await);
    assert_eq!(rejection.index, 3);
    assert_eq!(rejection.status.counter, org.counter);
    assert_eq!(rejection.retry_after, Some(Duration::from_secs(12 * 3_600)));
    assert_eq!(remaining(limiter, &all, now).await, vec![10, 20, 1_000, 0]);

    let admission = admitted(acquire(limiter, &all[..3], now).await);
    let left: Vec<u64> = admission.statuses.iter().map(|s| s.remaining).collect();
    assert_eq!(left, vec![9, 19, 750]);
    let requests = admission
        .closest_to_limit(Metric::Requests)
        .expect("requests");
    assert_eq!(requests.counter, key.counter);
    let tokens = admission.closest_to_limit(Metric::Tokens).expect("tokens");
    assert_eq!(tokens.counter, team.counter);
    assert_eq!(remaining(limiter, &all, now).await, vec![9, 19, 750, 0]);
}

async fn repeated_counter_counts_every_cost(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let now = at("2026-01-15T12:00:00Z");
    let fixed = check(
        "key:k",
        Metric::Tokens,
        Window::Minute,
        WindowKind::Fixed,
        3,
        2,
    );
    let sliding = check(
        "key:k",
        Metric::Tokens,
        Window::Minute,
        WindowKind::Sliding,
        3,
        2,
    );

    for limit in [fixed, sliding] {
        let twice = [limit.clone(), limit.clone()];
        let rejection = rejected(acquire(limiter, &twice, now).await);
        assert_eq!(rejection.index, 1);
        assert_eq!(remaining(limiter, &twice[..1], now).await, vec![3]);
    }
}

async fn settle_moves_token_counters(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let charged_at = at("2026-01-15T12:00:00Z");
    let now = charged_at + millis(5_000);
    let tokens = check(
        "key:k",
        Metric::Tokens,
        Window::Day,
        WindowKind::Fixed,
        1_000,
        100,
    );
    let limits = std::slice::from_ref(&tokens);

    let admission = admitted(acquire(limiter, limits, charged_at).await);
    assert_eq!(admission.statuses[0].remaining, 900);

    settle(limiter, &tokens, 50, charged_at, now).await;
    assert_eq!(remaining(limiter, limits, now).await, vec![850]);
    settle(limiter, &tokens, -120, charged_at, now).await;
    assert_eq!(remaining(limiter, limits, now).await, vec![970]);
    settle(limiter, &tokens, -5_000, charged_at, now).await;
    assert_eq!(remaining(limiter, limits, now).await, vec![1_000]);

    // A counter taken below zero would admit more than the limit here.
    let admission = admitted(acquire(limiter, &[with_cost(&tokens, 1_000)], now).await);
    assert_eq!(admission.statuses[0].remaining, 0);
    rejected(acquire(limiter, &[with_cost(&tokens, 1)], now).await);

    // A charge of the previous day no longer counts, so settling it changes nothing.
    let yesterday = at("2026-01-14T23:00:00Z");
    settle(limiter, &tokens, -400, yesterday, now).await;
    assert_eq!(remaining(limiter, limits, now).await, vec![0]);

    // A negative adjustment of an empty counter leaves it at zero.
    let other = check(
        "key:other",
        Metric::Tokens,
        Window::Day,
        WindowKind::Fixed,
        1_000,
        100,
    );
    settle(limiter, &other, -300, charged_at, now).await;
    assert_eq!(
        remaining(limiter, std::slice::from_ref(&other), now).await,
        vec![1_000]
    );
    settle(limiter, &other, 300, charged_at, now).await;
    assert_eq!(
        remaining(limiter, std::slice::from_ref(&other), now).await,
        vec![700]
    );
}

async fn settle_reaches_charged_sliding_bucket(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let start = at("2026-01-15T12:00:00Z");
    let tokens = check(
        "team:t",
        Metric::Tokens,
        Window::Minute,
        WindowKind::Sliding,
        100,
        40,
    );
    let limits = std::slice::from_ref(&tokens);

    admitted(acquire(limiter, limits, start).await);
    let later = start + millis(30_000);
    admitted(acquire(limiter, &[with_cost(&tokens, 10)], later).await);
    settle(limiter, &tokens, 30, start, start + millis(31_000)).await;
    assert_eq!(
        remaining(limiter, limits, start + millis(31_000)).await,
        vec![20]
    );

    // The adjusted bucket of `start` leaves the span at 66 s, and its adjustment with it.
    let after_first_bucket = start + millis(66_000);
    assert_eq!(
        remaining(limiter, limits, after_first_bucket).await,
        vec![90]
    );
    settle(limiter, &tokens, 500, start, after_first_bucket).await;
    assert_eq!(
        remaining(limiter, limits, after_first_bucket).await,
        vec![90]
    );

    settle(limiter, &tokens, -1_000, later, after_first_bucket).await;
    assert_eq!(
        remaining(limiter, limits, after_first_bucket).await,
        vec![100]
    );
}

async fn concurrent_acquires_admit_exactly_limit(limiter: Arc<dyn Limiter>) {
    const CALLS: usize = 500;
    let now = at("2026-01-15T12:00:30Z");
    let limit = check(
        "org:o",
        Metric::Requests,
        Window::Minute,
        WindowKind::Fixed,
        100,
        1,
    );
    let barrier = Arc::new(Barrier::new(CALLS));

    let mut tasks = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let limiter = limiter.clone();
        let barrier = barrier.clone();
        let checks = [limit.clone()];
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            limiter.acquire(&checks, now).await.expect("acquire")
        }));
    }
    let mut remaining_after = Vec::new();
    let mut rejections = 0;
    for task in tasks {
        match task.await.expect("task") {
            Decision::Admitted(admission) => remaining_after.push(admission.statuses[0].remaining),
            Decision::Rejected(_) => rejections += 1,
        }
    }

    assert_eq!(remaining_after.len(), 100);
    assert_eq!(rejections, CALLS - 100);
    // Each admitted call saw its own count, so the remaining amounts are 99 down to 0.
    remaining_after.sort_unstable();
    assert_eq!(remaining_after, (0..100).collect::<Vec<u64>>());
    assert_eq!(remaining(limiter.as_ref(), &[limit], now).await, vec![0]);
}

async fn leases_cap_release_and_expire(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let start = at("2026-01-15T12:00:00Z");
    let ttl = Duration::from_secs(30);
    let seconds = |s: i64| start + chrono::Duration::seconds(s);
    let lease = |id: &'static str, now: DateTime<Utc>| async move {
        limiter
            .acquire_lease("org:o", 2, id, now, ttl)
            .await
            .expect("acquire lease")
    };
    let full = |active: u64, retry_after: u64| LeaseDecision::Rejected {
        active,
        retry_after: Some(Duration::from_secs(retry_after)),
    };

    assert_eq!(
        lease("l1", start).await,
        LeaseDecision::Acquired {
            expires_at: seconds(30)
        }
    );
    assert!(matches!(
        lease("l2", start).await,
        LeaseDecision::Acquired { .. }
    ));
    assert_eq!(lease("l3", seconds(1)).await, full(2, 29));

    let released = limiter.release_lease("org:o", "l1", seconds(2)).await;
    assert!(released.expect("release"));
    assert_eq!(
        lease("l3", seconds(2)).await,
        LeaseDecision::Acquired {
            expires_at: seconds(32)
        }
    );
    assert_eq!(lease("l4", seconds(3)).await, full(2, 27));

    // l3 is renewed; l2 is not and expires at 30 s.
    let renewed = limiter.renew_lease("org:o", "l3", seconds(20), ttl).await;
    assert!(renewed.expect("renew"));
    assert!(matches!(
        lease("l4", seconds(30)).await,
        LeaseDecision::Acquired { .. }
    ));
    assert_eq!(lease("l5", seconds(31)).await, full(2, 19));
    let renewed = limiter.renew_lease("org:o", "l2", seconds(31), ttl).await;
    assert!(!renewed.expect("renew"));
    let released = limiter.release_lease("org:o", "l2", seconds(31)).await;
    assert!(!released.expect("release"));

    // Acquiring a held lease renews it, even when the cap is reached.
    assert_eq!(
        lease("l4", seconds(40)).await,
        LeaseDecision::Acquired {
            expires_at: seconds(70)
        }
    );
    assert_eq!(lease("l5", seconds(49)).await, full(2, 1));
    assert!(matches!(
        lease("l5", seconds(50)).await,
        LeaseDecision::Acquired { .. }
    ));

    let other_scope = limiter
        .acquire_lease("org:other", 2, "l1", seconds(50), ttl)
        .await
        .expect("acquire lease");
    assert!(matches!(other_scope, LeaseDecision::Acquired { .. }));
    let no_cap = limiter
        .acquire_lease("org:none", 0, "l1", seconds(50), ttl)
        .await
        .expect("acquire lease");
    assert_eq!(
        no_cap,
        LeaseDecision::Rejected {
            active: 0,
            retry_after: None
        }
    );
}

async fn leased_acquire_takes_both_or_neither(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let now = at("2026-01-15T12:00:10Z");
    let requests = check(
        "org:o",
        Metric::Requests,
        Window::Minute,
        WindowKind::Fixed,
        2,
        1,
    );
    let lease = |id: &str| LeaseRequest {
        scope: "org:o".to_owned(),
        cap: 2,
        id: id.to_owned(),
        ttl: Duration::from_secs(30),
    };
    let leased = |id: &'static str, checks: Vec<LimitCheck>| async move {
        limiter
            .acquire_leased(&checks, &lease(id), now)
            .await
            .expect("acquire leased")
    };

    let first = leased("a", vec![requests.clone()]).await;
    assert!(matches!(
        first,
        LeasedDecision::Decided(Decision::Admitted(_))
    ));

    // The token limit rejects: neither the request nor the lease counts.
    let tokens = check(
        "org:o",
        Metric::Tokens,
        Window::Minute,
        WindowKind::Fixed,
        10,
        11,
    );
    let rejected = leased("b", vec![requests.clone(), tokens]).await;
    assert!(matches!(
        rejected,
        LeasedDecision::Decided(Decision::Rejected(_))
    ));
    assert_eq!(
        remaining(limiter, std::slice::from_ref(&requests), now).await,
        vec![1]
    );

    let second = leased("b", vec![requests.clone()]).await;
    assert!(matches!(
        second,
        LeasedDecision::Decided(Decision::Admitted(_))
    ));

    // The cap is reached: nothing is charged, even though the request limit is full anyway.
    let third = leased("c", vec![with_cost(&requests, 0)]).await;
    assert_eq!(
        third,
        LeasedDecision::LeaseRejected {
            active: 2,
            retry_after: Some(Duration::from_secs(30)),
        }
    );
}

async fn batched_finish_settles_and_releases(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let charged_at = at("2026-01-15T12:00:10Z");
    let later = charged_at + chrono::Duration::seconds(5);
    let ttl = Duration::from_secs(30);
    let tokens = check(
        "org:o",
        Metric::Tokens,
        Window::Hour,
        WindowKind::Sliding,
        1_000,
        600,
    );
    admitted(acquire(limiter, std::slice::from_ref(&tokens), charged_at).await);
    for id in ["a", "b"] {
        let lease = limiter.acquire_lease("org:o", 2, id, charged_at, ttl).await;
        assert!(matches!(
            lease.expect("lease"),
            LeaseDecision::Acquired { .. }
        ));
    }

    let ends = [
        Finish {
            adjustments: vec![Adjustment {
                counter: tokens.counter.clone(),
                delta: -400,
            }],
            charged_at,
            lease: Some(HeldLease {
                scope: "org:o".to_owned(),
                id: "a".to_owned(),
            }),
        },
        Finish {
            adjustments: Vec::new(),
            charged_at,
            lease: Some(HeldLease {
                scope: "org:o".to_owned(),
                id: "b".to_owned(),
            }),
        },
    ];
    limiter.finish(&ends, later).await.expect("finish");

    assert_eq!(remaining(limiter, &[tokens], later).await, vec![800]);
    let renewed = limiter
        .renew_leases(
            &[HeldLease {
                scope: "org:o".to_owned(),
                id: "a".to_owned(),
            }],
            later,
            ttl,
        )
        .await
        .expect("renew");
    assert_eq!(renewed, vec![false], "the finished lease is released");
}

async fn batched_renewal_keeps_leases(limiter: Arc<dyn Limiter>) {
    let limiter = limiter.as_ref();
    let start = at("2026-01-15T12:00:00Z");
    let ttl = Duration::from_secs(30);
    for (scope, id) in [("org:o", "a"), ("org:p", "b")] {
        let lease = limiter.acquire_lease(scope, 1, id, start, ttl).await;
        assert!(matches!(
            lease.expect("lease"),
            LeaseDecision::Acquired { .. }
        ));
    }
    let held = |scope: &str, id: &str| HeldLease {
        scope: scope.to_owned(),
        id: id.to_owned(),
    };
    let renewed = limiter
        .renew_leases(
            &[
                held("org:o", "a"),
                held("org:p", "b"),
                held("org:o", "gone"),
            ],
            start + chrono::Duration::seconds(20),
            ttl,
        )
        .await
        .expect("renew");
    assert_eq!(renewed, vec![true, true, false]);

    // Renewed at 20 s, the leases hold their slots at 45 s, past the first expiry.
    let at_45 = start + chrono::Duration::seconds(45);
    let taken = limiter.acquire_lease("org:o", 1, "c", at_45, ttl).await;
    assert!(matches!(
        taken.expect("lease"),
        LeaseDecision::Rejected { .. }
    ));
}

/// Calls that arrive together, with leases and limits in several scopes, are decided one after
/// another: the Redis limiter sends them to Redis in shared calls, and each must still count
/// the charges and leases of the ones admitted before it.
async fn concurrent_leased_acquires_share_counts(limiter: Arc<dyn Limiter>) {
    const CALLS: usize = 60;
    let now = at("2026-01-15T12:00:30Z");
    let tokens = check(
        "org:o",
        Metric::Tokens,
        Window::Minute,
        WindowKind::Sliding,
        1_000,
        30,
    );
    let requests = check(
        "user:u",
        Metric::Requests,
        Window::Day,
        WindowKind::Fixed,
        40,
        1,
    );
    let checks = [tokens.clone(), requests.clone()];
    let round = |cap: u64, round: usize| {
        let limiter = limiter.clone();
        let checks = checks.to_vec();
        async move {
            let barrier = Arc::new(Barrier::new(CALLS));
            let mut tasks = Vec::with_capacity(CALLS);
            for call in 0..CALLS {
                let limiter = limiter.clone();
                let barrier = barrier.clone();
                let checks = checks.clone();
                let lease = LeaseRequest {
                    scope: "org:o".to_owned(),
                    cap,
                    id: format!("lease-{round}-{call}"),
                    ttl: Duration::from_secs(30),
                };
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let decision = limiter.acquire_leased(&checks, &lease, now).await;
                    (lease.id, decision.expect("acquire leased"))
                }));
            }
            let mut admitted_leases = Vec::new();
            let mut rejections = Vec::new();
            let mut lease_rejections = 0;
            for task in tasks {
                match task.await.expect("task") {
                    (id, LeasedDecision::Decided(Decision::Admitted(_))) => {
                        admitted_leases.push(id)
                    }
                    (_, LeasedDecision::Decided(Decision::Rejected(rejection))) => {
                        rejections.push(rejection);
                    }
                    (_, LeasedDecision::LeaseRejected { active, .. }) => {
                        assert_eq!(active, cap, "a rejected lease reports the full cap");
                        lease_rejections += 1;
                    }
                }
            }
            (admitted_leases, rejections, lease_rejections)
        }
    };

    // The cap binds first: 20 of 60 are admitted, charging 600 tokens and 20 requests.
    let (admitted_leases, rejections, lease_rejections) = round(20, 1).await;
    assert_eq!(admitted_leases.len(), 20);
    assert_eq!(rejections.len(), 0);
    assert_eq!(lease_rejections, 40);
    assert_eq!(
        remaining(limiter.as_ref(), &checks, now).await,
        vec![400, 20]
    );

    // With the leases released and a higher cap, the tokens bind: 13 more fit in 400.
    let ends: Vec<Finish> = admitted_leases
        .into_iter()
        .map(|id| Finish {
            adjustments: Vec::new(),
            charged_at: now,
            lease: Some(HeldLease {
                scope: "org:o".to_owned(),
                id,
            }),
        })
        .collect();
    limiter.finish(&ends, now).await.expect("finish");
    let (admitted_leases, rejections, lease_rejections) = round(100, 2).await;
    assert_eq!(admitted_leases.len(), 13);
    assert_eq!(rejections.len(), 47);
    assert_eq!(lease_rejections, 0);
    for rejection in &rejections {
        assert_eq!(rejection.index, 0, "the token limit rejects");
        assert_eq!(
            rejection.status.remaining, 10,
            "rejections see every admitted charge"
        );
    }
    assert_eq!(remaining(limiter.as_ref(), &checks, now).await, vec![10, 7]);
}

macro_rules! contract_tests {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(Arc::new(MemoryLimiter::new())).await;
                }
            )*
            use super::*;
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(url) = service_url(REDIS_URL_ENV) else { return };
                    let prefix = redis_key_prefix();
                    let limiter = connect_redis(&url, &prefix).await;
                    super::$case(Arc::new(limiter)).await;
                    super::check_and_delete_keys(&url, &prefix).await;
                }
            )*
            use super::*;
        }

        mod allowance_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(with_allowances(Arc::new(MemoryLimiter::new()))).await;
                }
            )*
            use super::*;
        }

        mod allowance_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(url) = service_url(REDIS_URL_ENV) else { return };
                    let prefix = redis_key_prefix();
                    let limiter = connect_redis(&url, &prefix).await;
                    super::$case(with_allowances(Arc::new(limiter))).await;
                    super::check_and_delete_keys(&url, &prefix).await;
                }
            )*
            use super::*;
        }
    };
}

/// Connects a limiter to the Redis at `url`, with keys under `prefix`.
async fn connect_redis(url: &str, prefix: &str) -> RedisLimiter {
    RedisLimiter::connect(url, prefix, REDIS_TIMEOUT)
        .await
        .expect("connect redis")
}

/// Puts local allowances in front of `store`, with a clock that never moves, so that only the
/// cases' own calls return allowances.
fn with_allowances(store: Arc<dyn Limiter>) -> Arc<dyn Limiter> {
    AllowanceLimiter::start(store, Arc::new(ManualClock::new(DateTime::UNIX_EPOCH)))
}

contract_tests!(
    fixed_minute_resets_at_boundary,
    fixed_month_resets_on_first_of_month,
    cost_above_limit_is_never_admitted,
    sliding_never_exceeds_limit_in_any_window,
    sliding_retry_waits_for_old_buckets,
    rejected_call_charges_no_scope,
    repeated_counter_counts_every_cost,
    settle_moves_token_counters,
    settle_reaches_charged_sliding_bucket,
    concurrent_acquires_admit_exactly_limit,
    concurrent_leased_acquires_share_counts,
    leases_cap_release_and_expire,
    leased_acquire_takes_both_or_neither,
    batched_finish_settles_and_releases,
    batched_renewal_keeps_leases,
);

/// Checks that every key under `prefix` expires, then deletes them.
async fn check_and_delete_keys(url: &str, prefix: &str) {
    let client = ::redis::Client::open(url).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect redis");

    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    for _ in 0..100_000 {
        let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut connection)
            .await
            .expect("scan");
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "SCAN did not finish");

    for key in &keys {
        let ttl_ms: i64 = ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("pttl");
        assert!(ttl_ms > 0, "key {key} has no expiry (PTTL {ttl_ms})");
    }
    if !keys.is_empty() {
        let _: i64 = ::redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .expect("del");
    }
}

#[tokio::test]
async fn redis_connect_failure_names_address() {
    let error = RedisLimiter::connect("redis://127.0.0.1:1", "unused:", Duration::from_secs(2))
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(error, LimitError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("connecting the limiter to Redis at 127.0.0.1:1 failed: "),
        "{message}"
    );

    let error = RedisLimiter::connect("http://127.0.0.1:6379", "unused:", Duration::from_secs(2))
        .await
        .expect_err("not a Redis URL");
    assert!(matches!(error, LimitError::InvalidUrl(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("invalid Redis URL for the limiter: "),
        "{error}"
    );
}

/// Two limiters on one Redis, as two gateway processes are, send rounds of concurrent attempts
/// at a sliding limit over ten minutes of simulated time. Every round shares one time, and time
/// moves between rounds. No minute may contain more admissions than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_limiters_share_sliding_bound() {
    const LIMIT: usize = 20;
    const WINDOW_MS: i64 = 60_000;
    let Some(url) = service_url(REDIS_URL_ENV) else {
        return;
    };
    let prefix = redis_key_prefix();
    let mut limiters = Vec::new();
    for _ in 0..2 {
        let limiter = connect_redis(&url, &prefix).await;
        limiters.push(Arc::new(limiter));
    }
    let limit = check(
        "org:o",
        Metric::Requests,
        Window::Minute,
        WindowKind::Sliding,
        LIMIT as u64,
        1,
    );
    let mut rng = StdRng::seed_from_u64(20_261_205);
    let mut now = at("2026-01-15T11:59:57.250Z");
    let end = now + chrono::Duration::minutes(10);

    let mut admitted_ms = Vec::new();
    while now < end {
        now += millis(rng.random_range(0..=4_000));
        let attempts = rng.random_range(1..=12);
        let mut tasks = Vec::with_capacity(attempts);
        for attempt in 0..attempts {
            let limiter = limiters[attempt % 2].clone();
            let checks = [limit.clone()];
            tasks.push(tokio::spawn(async move {
                limiter.acquire(&checks, now).await.expect("acquire")
            }));
        }
        for task in tasks {
            if task.await.expect("task").is_admitted() {
                admitted_ms.push(now.timestamp_millis());
            }
        }
    }

    assert!(
        admitted_ms.len() > 5 * LIMIT,
        "admitted {}",
        admitted_ms.len()
    );
    let mut fullest = 0;
    for start in &admitted_ms {
        let in_window = admitted_ms
            .iter()
            .filter(|time| (*start..=start + WINDOW_MS).contains(*time))
            .count();
        assert!(
            in_window <= LIMIT,
            "{in_window} admitted in the minute from {start} ms"
        );
        fullest = fullest.max(in_window);
    }
    assert_eq!(fullest, LIMIT, "some minute reaches the limit");
    check_and_delete_keys(&url, &prefix).await;
}

/// Two limiters with local allowances on one Redis, as two busy gateway processes are, take
/// concurrent rounds of requests at one limit until a round admits none. Allowances never let
/// them admit more than the limit, and the units that one has are used by its own requests, so
/// together they admit exactly the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_limiters_with_allowances_admit_exactly_limit() {
    const LIMIT: u64 = 12_000;
    const ROUND: usize = 200;
    let Some(url) = service_url(REDIS_URL_ENV) else {
        return;
    };
    let prefix = redis_key_prefix();
    let mut limiters = Vec::new();
    for _ in 0..2 {
        let limiter = connect_redis(&url, &prefix).await;
        limiters.push(with_allowances(Arc::new(limiter)));
    }
    let limit = check(
        "org:o",
        Metric::Requests,
        Window::Minute,
        WindowKind::Sliding,
        LIMIT,
        1,
    );
    let now = at("2026-01-15T12:00:01Z");

    let mut admitted = 0;
    loop {
        let mut tasks = Vec::with_capacity(ROUND);
        for attempt in 0..ROUND {
            let limiter = limiters[attempt % 2].clone();
            let checks = [limit.clone()];
            tasks.push(tokio::spawn(async move {
                limiter.acquire(&checks, now).await.expect("acquire")
            }));
        }
        let mut round = 0;
        for task in tasks {
            if task.await.expect("task").is_admitted() {
                round += 1;
            }
        }
        if round == 0 {
            break;
        }
        admitted += round;
    }
    assert_eq!(admitted, LIMIT);
    let store = connect_redis(&url, &prefix).await;
    assert_eq!(remaining(&store, &[limit], now).await, vec![0]);
    check_and_delete_keys(&url, &prefix).await;
}
