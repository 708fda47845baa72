//! Contract tests of the store traits: every case runs against SQLite and PostgreSQL, each on
//! its own database.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use secrecy::SecretString;
use synaxis_shared::api::{
    AuditResult, CreateKeyRequest, CreateOrgRequest, CreateTeamRequest, CreateUserRequest, Key,
    KeyScope, Org, RotateKeyRequest, SignupRequest, Team, UpdateKeyRequest, UpdateOrgRequest,
    UpdateUserRequest, User,
};
use synaxis_shared::budgets::{BudgetRef, BudgetScope, SetBudgetRequest, to_micros};
use synaxis_shared::credits::{AddCreditRequest, CreditKind};
use synaxis_shared::invoices::{IssueInvoiceRequest, LineKind, NewFxRate, SetFxRatesRequest};
use synaxis_shared::limits::{LimitSet, MAX_AMOUNT};
use synaxis_shared::money::Currency;
use synaxis_shared::plans::MigratePlanRequest;
use synaxis_shared::{Locale, OrgId, RegionId, RequestId, Role};
use synaxis_tests::services::{DATABASE_URL_ENV, TestDatabase, service_url};
use synaxisd::audit::{AuditDraft, AuditLog};
use synaxisd::clock::{Clock, ManualClock};
use synaxisd::directory::DirectorySelector;
use synaxisd::store::postgres::PgStore;
use synaxisd::store::sqlite::SqliteStore;
use synaxisd::store::{
    AuditFilter, AuditStore, BudgetCharge, BudgetReservation, KeyFilter, KeyLimits, LimitScope,
    NewCredit, RequestFilter, RequestRecord, Store, StoreError, UserFilter,
};
use synaxisd::tenancy::budgets::BudgetOf;
use synaxisd::tenancy::keys::KeyHasher;
use synaxisd::tenancy::limits::LimitsOf;
use synaxisd::tenancy::plans::PlanCatalog;
use synaxisd::tenancy::rbac::{Actor, Member};
use synaxisd::tenancy::{Caller, Tenancy, TenancyError};

fn region() -> RegionId {
    "us-east-1".parse().expect("region id")
}

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn tenancy(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> Tenancy {
    let hasher = KeyHasher::new(&SecretString::from("p".repeat(32)));
    let plans = PlanCatalog::builtin().expect("built-in plan catalog");
    Tenancy::new(
        store,
        clock,
        hasher,
        region(),
        "us".to_owned(),
        Arc::new(plans),
    )
}

fn operator() -> Caller {
    Caller::operator()
}

fn user_request(org: &Org, email: &str, role: Role) -> CreateUserRequest {
    CreateUserRequest {
        org_id: org.id,
        email: email.to_owned(),
        role,
        team_id: None,
        locale: Locale::En,
    }
}

async fn org_user(tenancy: &Tenancy, slug: &str, email: &str) -> (Org, User) {
    let org = tenancy
        .create_org(
            &operator(),
            CreateOrgRequest {
                name: format!("Org {slug}"),
                slug: Some(slug.to_owned()),
                plan: Some("enterprise".to_owned()),
            },
        )
        .await
        .expect("create org");
    let user = tenancy
        .create_user(&operator(), user_request(&org, email, Role::Developer))
        .await
        .expect("create user");
    (org, user)
}

fn key_request(user: &User) -> CreateKeyRequest {
    CreateKeyRequest {
        user_id: user.id,
        name: Some("ci".to_owned()),
        scope: KeyScope::Inference,
        expires_at: None,
        allowed_models: vec!["GPT-4o-mini".to_owned()],
        rpm_limit: None,
        tpm_limit: None,
    }
}

fn record(key: &Key, started_at: DateTime<Utc>, cost: &str) -> RequestRecord {
    RequestRecord {
        id: RequestId::new(),
        stored_region: region(),
        request_id: uuid::Uuid::new_v4().to_string(),
        org_id: key.org_id,
        user_id: key.user_id,
        key_id: key.id,
        endpoint: "/v1/chat/completions".to_owned(),
        model: "gpt-4o-mini".to_owned(),
        stream: true,
        status_code: 200,
        error_code: None,
        prompt_tokens: 1_000,
        completion_tokens: 500,
        cost_usd: Decimal::from_str(cost).expect("decimal"),
        started_at,
        duration_ms: 42,
    }
}

async fn org_is_found_by_id_and_slug(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock);
    let (org, _) = org_user(&tenancy, "acme", "ana@acme.test").await;

    assert_eq!(store.get_org(org.id).await.expect("by id"), org);
    assert_eq!(store.get_org_by_slug("acme").await.expect("by slug"), org);
    assert_eq!(
        tenancy
            .find_org(&operator(), "acme")
            .await
            .expect("find")
            .id,
        org.id
    );
    assert_eq!(store.list_orgs().await.expect("list"), vec![org.clone()]);
    assert_eq!(org.created_at, start_time());
    assert_eq!(org.primary_region, region());
}

async fn duplicate_slug_is_conflict(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    org_user(&tenancy, "acme", "ana@acme.test").await;

    let error = tenancy
        .create_org(
            &operator(),
            CreateOrgRequest {
                name: "Other".to_owned(),
                slug: Some("acme".to_owned()),
                plan: None,
            },
        )
        .await
        .expect_err("duplicate slug");
    assert!(
        matches!(error, TenancyError::Store(StoreError::Conflict(_))),
        "{error:?}"
    );
    assert_eq!(store.list_orgs().await.expect("list").len(), 1);
}

async fn email_is_unique_ignoring_case(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, _) = org_user(&tenancy, "acme", "Ana@Acme.test").await;

    let error = tenancy
        .create_user(
            &operator(),
            user_request(&org, "ana@ACME.test", Role::Viewer),
        )
        .await
        .expect_err("same email in another case");
    assert!(
        matches!(error, TenancyError::Store(StoreError::Conflict(_))),
        "{error:?}"
    );
    let filter = UserFilter {
        org_id: Some(org.id),
        team_id: None,
    };
    assert_eq!(store.list_users(&filter).await.expect("list").len(), 1);
}

async fn missing_rows_are_not_found(store: Arc<dyn Store>) {
    let error = store.get_org(OrgId::new()).await.expect_err("no org");
    assert!(
        matches!(
            error,
            StoreError::NotFound {
                entity: "organization",
                ..
            }
        ),
        "{error:?}"
    );
    let error = store.get_org_by_slug("nobody").await.expect_err("no org");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    let draft = AuditDraft::new(start_time(), region());
    let error = store
        .revoke_key(synaxis_shared::KeyId::new(), start_time(), &draft)
        .await
        .expect_err("no key");
    assert!(
        matches!(error, StoreError::NotFound { entity: "key", .. }),
        "{error:?}"
    );
}

async fn key_authenticates_by_secret(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");

    assert!(created.secret.starts_with("sk-syn-us-"));
    assert_eq!(created.key.allowed_models, vec!["gpt-4o-mini".to_owned()]);
    let found = tenancy.authenticate(&created.secret).await.expect("lookup");
    assert_eq!(
        found.map(|found| found.key.clone()),
        Some(created.key.clone())
    );

    // The last character changed to one it is not: a fixed replacement would equal it in one
    // secret out of 62.
    let (head, last) = created.secret.split_at(created.secret.len() - 1);
    let wrong = format!("{head}{}", if last == "x" { "y" } else { "x" });
    assert_eq!(tenancy.authenticate(&wrong).await.expect("lookup"), None);

    let by_org = store
        .list_keys(&KeyFilter {
            org_id: Some(org.id),
            user_id: None,
        })
        .await
        .expect("list");
    assert_eq!(by_org, vec![created.key.clone()]);
    let by_other_org = store
        .list_keys(&KeyFilter {
            org_id: Some(OrgId::new()),
            user_id: None,
        })
        .await
        .expect("list");
    assert!(by_other_org.is_empty());
}

async fn revoked_key_stops_authenticating(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock.clone());
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");

    let revoked = tenancy
        .revoke_key(&operator(), created.key.id)
        .await
        .expect("revoke");
    assert!(!revoked.active);
    assert_eq!(revoked.revoked_at, Some(start_time()));
    assert_eq!(
        tenancy.authenticate(&created.secret).await.expect("lookup"),
        None
    );

    clock.advance(Duration::hours(1));
    let again = tenancy
        .revoke_key(&operator(), created.key.id)
        .await
        .expect("revoke again");
    assert_eq!(
        again.revoked_at,
        Some(start_time()),
        "a second revoke keeps the first time"
    );
}

async fn key_expires_by_clock(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock.clone());
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let expires_at = start_time() + Duration::hours(1);
    let created = tenancy
        .create_key(
            &operator(),
            CreateKeyRequest {
                expires_at: Some(expires_at),
                ..key_request(&user)
            },
        )
        .await
        .expect("create key");

    clock.set(expires_at - Duration::milliseconds(1));
    assert!(
        tenancy
            .authenticate(&created.secret)
            .await
            .expect("lookup")
            .is_some()
    );

    clock.set(expires_at);
    assert_eq!(
        tenancy.authenticate(&created.secret).await.expect("lookup"),
        None
    );

    let past = tenancy
        .create_key(
            &operator(),
            CreateKeyRequest {
                expires_at: Some(start_time()),
                ..key_request(&user)
            },
        )
        .await
        .expect_err("expiry in the past");
    assert!(
        matches!(&past, TenancyError::Invalid { field, .. } if field == "expires_at"),
        "{past:?}"
    );
}

async fn inactive_user_or_org_disables_keys(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");

    tenancy
        .revoke_user(&operator(), user.id)
        .await
        .expect("deactivate user");
    assert_eq!(
        tenancy.authenticate(&created.secret).await.expect("lookup"),
        None
    );
    let draft = AuditDraft::new(start_time(), region());
    let reactivated = User {
        active: true,
        ..user.clone()
    };
    store
        .update_user(&reactivated, None, &draft)
        .await
        .expect("reactivate user");
    assert!(
        tenancy
            .authenticate(&created.secret)
            .await
            .expect("lookup")
            .is_some()
    );

    let org = tenancy
        .revoke_org(&operator(), &org.slug)
        .await
        .expect("deactivate org");
    assert!(!org.active);
    assert_eq!(
        tenancy.authenticate(&created.secret).await.expect("lookup"),
        None
    );
}

async fn request_records_round_trip(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let key = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key")
        .key;

    let older = record(&key, start_time(), "0.000450");
    let newer = RequestRecord {
        status_code: 502,
        error_code: Some("upstream_error".to_owned()),
        ..record(&key, start_time() + Duration::seconds(1), "0.123456")
    };
    store.insert_request(&older).await.expect("insert older");
    store.insert_request(&newer).await.expect("insert newer");

    let by_key = store
        .list_requests(&RequestFilter {
            key_id: Some(key.id),
            ..RequestFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(by_key, vec![newer.clone(), older.clone()]);
    assert_eq!(by_key[1].cost_usd.to_string(), "0.000450");

    let by_org = store
        .list_requests(&RequestFilter {
            org_id: Some(org.id),
            limit: 1,
            ..RequestFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(by_org, vec![newer]);
}

async fn plan_org(tenancy: &Tenancy, slug: &str, plan: &str) -> Org {
    tenancy
        .create_org(
            &operator(),
            CreateOrgRequest {
                name: format!("Org {slug}"),
                slug: Some(slug.to_owned()),
                plan: Some(plan.to_owned()),
            },
        )
        .await
        .expect("create org")
}

fn team_request(org: &Org, name: &str) -> CreateTeamRequest {
    CreateTeamRequest {
        org_id: org.id,
        name: name.to_owned(),
        allowed_models: Vec::new(),
    }
}

/// Teams created at the same time never pass the plan's cap, whatever the interleaving.
async fn concurrent_teams_stop_at_plan_cap(store: Arc<dyn Store>) {
    let tenancy = tenancy(store, Arc::new(ManualClock::new(start_time())));
    let org = plan_org(&tenancy, "pro", "pro").await;

    let mut tasks = Vec::new();
    for index in 0..12 {
        let tenancy = tenancy.clone();
        let request = team_request(&org, &format!("team-{index}"));
        tasks.push(tokio::spawn(async move {
            tenancy.create_team(&operator(), request).await
        }));
    }
    let mut created = 0;
    let mut capped = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => created += 1,
            Err(TenancyError::PlanLimit(limit)) => {
                assert_eq!(limit.field, "teams");
                assert_eq!(limit.limit, Some(5));
                capped += 1;
            }
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(created, 5, "Pro allows 5 teams");
    assert_eq!(capped, 7);
}

/// Checks that the Free plan's caps on teams, users per team and keys per user name the plan
/// that lifts them, and that an override lifts one.
async fn free_plan_caps_resources(store: Arc<dyn Store>) {
    let tenancy = tenancy(store, Arc::new(ManualClock::new(start_time())));
    let org = plan_org(&tenancy, "free", "free").await;
    let team = tenancy
        .create_team(&operator(), team_request(&org, "first"))
        .await
        .expect("first team");

    let error = tenancy
        .create_team(&operator(), team_request(&org, "second"))
        .await
        .expect_err("second team of a Free org");
    let TenancyError::PlanLimit(limit) = error else {
        panic!("expected a plan limit, got {error:?}");
    };
    assert_eq!(limit.plan_name, "Free");
    assert_eq!(limit.limit, Some(1));
    let (lifter, _) = limit.lifted_by.expect("a plan lifts it");
    assert_eq!(lifter, "Pro");

    for index in 0..3 {
        let mut request = user_request(&org, &format!("u{index}@free.test"), Role::Developer);
        request.team_id = Some(team.id);
        tenancy
            .create_user(&operator(), request)
            .await
            .expect("user within the cap");
    }
    let mut fourth = user_request(&org, "u3@free.test", Role::Developer);
    fourth.team_id = Some(team.id);
    let error = tenancy
        .create_user(&operator(), fourth.clone())
        .await
        .expect_err("fourth user of a Free team");
    assert!(
        matches!(&error, TenancyError::PlanLimit(limit) if limit.field == "users_per_team"),
        "{error:?}"
    );
    // A user outside any team does not count against a team's cap, and cannot join a full one.
    fourth.team_id = None;
    let user = tenancy
        .create_user(&operator(), fourth)
        .await
        .expect("user without a team");
    let error = tenancy
        .update_user(
            &operator(),
            user.id,
            UpdateUserRequest {
                team_id: Some(team.id),
                ..UpdateUserRequest::default()
            },
        )
        .await
        .expect_err("joining a full Free team");
    assert!(
        matches!(&error, TenancyError::PlanLimit(limit) if limit.field == "users_per_team"),
        "{error:?}"
    );

    for _ in 0..2 {
        tenancy
            .create_key(&operator(), key_request(&user))
            .await
            .expect("key within the cap");
    }
    let error = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect_err("third key of a Free user");
    assert!(
        matches!(&error, TenancyError::PlanLimit(limit) if limit.field == "keys_per_user"),
        "{error:?}"
    );

    let justified = Caller {
        justification: Some("support ticket 7".to_owned()),
        ..operator()
    };
    let entitlements = tenancy
        .set_overrides(
            &justified,
            "free",
            Ok(serde_json::json!({"keys_per_user": 3})),
        )
        .await
        .expect("override");
    assert_eq!(
        entitlements.overrides.keys_per_user,
        Some(synaxis_shared::plans::Quota::Limited(3))
    );
    tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("key within the overridden cap");

    let sliding: LimitSet = serde_json::from_value(serde_json::json!({
        "requests": {"per_minute": {"limit": 10, "window": "sliding", "action": "block"}}
    }))
    .expect("limit set");
    let error = tenancy
        .set_limits(&justified, LimitsOf::Org("free"), Ok(sliding))
        .await
        .expect_err("a sliding window on the Free plan");
    let TenancyError::PlanLimit(limit) = error else {
        panic!("expected a plan limit, got {error:?}");
    };
    assert_eq!(limit.field, "rate_limit_windows");
    assert_eq!(
        limit.lifted_by.map(|(plan, _)| plan),
        Some("Pro".to_owned())
    );
    let fixed: LimitSet = serde_json::from_value(serde_json::json!({
        "requests": {"per_minute": {"limit": 10, "action": "block"}}
    }))
    .expect("limit set");
    tenancy
        .set_limits(&justified, LimitsOf::Org("free"), Ok(fixed))
        .await
        .expect("a fixed window on the Free plan");
}

/// Checks that the ledger's balance is the exact sum of its entries, also when top-ups race
/// each other.
async fn credit_ledger_sums_entries(store: Arc<dyn Store>) {
    let tenancy = tenancy(store, Arc::new(ManualClock::new(start_time())));
    plan_org(&tenancy, "ledger", "pro").await;
    let justified = Caller {
        justification: Some("invoice 17".to_owned()),
        ..operator()
    };
    let add = |kind: CreditKind, amount: &str| AddCreditRequest {
        kind,
        amount_usd: Decimal::from_str(amount).expect("amount"),
        reference: None,
    };

    let error = tenancy
        .add_credit(&operator(), "ledger", add(CreditKind::Topup, "25.00"))
        .await
        .expect_err("no justification");
    assert!(matches!(error, TenancyError::Invalid { .. }), "{error:?}");
    for (kind, amount) in [
        (CreditKind::Topup, "0"),
        (CreditKind::Refund, "-1"),
        (CreditKind::Adjustment, "0"),
        (CreditKind::Usage, "-1"),
    ] {
        let error = tenancy
            .add_credit(&justified, "ledger", add(kind, amount))
            .await
            .expect_err("invalid credit");
        assert!(
            matches!(error, TenancyError::Invalid { .. }),
            "{kind:?} {amount}: {error:?}"
        );
    }

    tenancy
        .add_credit(&justified, "ledger", add(CreditKind::Topup, "25.00"))
        .await
        .expect("top-up");
    tenancy
        .add_credit(&justified, "ledger", add(CreditKind::Refund, "5.10"))
        .await
        .expect("refund");
    let adjusted = tenancy
        .add_credit(
            &justified,
            "ledger",
            add(CreditKind::Adjustment, "-0.0000015"),
        )
        .await
        .expect("adjustment");
    assert_eq!(adjusted.seq, 3);
    assert_eq!(
        adjusted.balance_usd,
        Decimal::from_str("30.0999985").expect("decimal")
    );

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let tenancy = tenancy.clone();
        let justified = justified.clone();
        let request = add(CreditKind::Topup, "1.01");
        tasks.push(tokio::spawn(async move {
            tenancy.add_credit(&justified, "ledger", request).await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("concurrent top-up");
    }

    let balance = tenancy
        .credit_balance(&operator(), "ledger")
        .await
        .expect("balance");
    assert_eq!(
        balance.balance_usd,
        Decimal::from_str("50.2999985").expect("decimal")
    );
    assert_eq!(balance.entries, 23);
    assert_eq!(
        balance.minimum_balance_usd,
        Decimal::from_str("5.00").expect("decimal")
    );
    let history = tenancy
        .credit_history(&operator(), "ledger", 0, 1000)
        .await
        .expect("history");
    let positions: Vec<u64> = history.iter().map(|entry| entry.seq).collect();
    assert_eq!(positions, (1..=23).collect::<Vec<u64>>());
    let sum: Decimal = history.iter().map(|entry| entry.amount_usd).sum();
    assert_eq!(sum, balance.balance_usd);
    let page = tenancy
        .credit_history(&operator(), "ledger", 21, 1000)
        .await
        .expect("page");
    assert_eq!(page.len(), 2);
}

fn usd(amount: &str) -> Decimal {
    Decimal::from_str(amount).expect("decimal")
}

fn set_budget(max_usd: &str) -> SetBudgetRequest {
    SetBudgetRequest {
        max_usd: usd(max_usd),
        reset_spend: false,
    }
}

/// Reserves `amount` USD for a new request on `budgets` and returns the request's id, or
/// `None` when a budget refused.
async fn reserve(
    store: &Arc<dyn Store>,
    budgets: &[BudgetRef],
    amount: &str,
    expires_at: DateTime<Utc>,
) -> Option<(RequestId, Vec<BudgetRef>)> {
    let request = RequestId::new();
    let micros = to_micros(usd(amount)).expect("micros");
    match store
        .reserve_budgets(request, budgets, micros, expires_at)
        .await
        .expect("reserve")
    {
        BudgetReservation::Held(held) => Some((request, held)),
        BudgetReservation::Exceeded(_) => None,
    }
}

/// Checks that concurrent reservations never hold more than a budget's maximum, at the key and
/// the org, that settling replaces holds with costs, and that the key's lookup lists its
/// budgets.
async fn concurrent_reservations_stay_within_budgets(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");
    let key = created.key.id;
    let error = tenancy
        .set_budget(&operator(), BudgetOf::Key(key), set_budget("1"))
        .await
        .expect_err("no justification");
    assert!(matches!(error, TenancyError::Invalid { .. }), "{error:?}");
    for bad in ["-1", "0.0000001"] {
        let error = tenancy
            .set_budget(&justified_operator(), BudgetOf::Key(key), set_budget(bad))
            .await
            .expect_err("invalid maximum");
        assert!(
            matches!(&error, TenancyError::Invalid { field, .. } if field == "max_usd"),
            "{bad}: {error:?}"
        );
    }
    tenancy
        .set_budget(
            &justified_operator(),
            BudgetOf::Key(key),
            set_budget("1.00"),
        )
        .await
        .expect("key budget");
    tenancy
        .set_budget(
            &justified_operator(),
            BudgetOf::Org("acme"),
            set_budget("5.00"),
        )
        .await
        .expect("org budget");
    let found = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    let budgets = vec![
        BudgetRef {
            scope: BudgetScope::Key,
            id: key.0,
        },
        BudgetRef {
            scope: BudgetScope::Org,
            id: org.id.0,
        },
    ];
    assert_eq!(found.budgets, budgets);

    let expires_at = start_time() + Duration::minutes(15);
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let store = store.clone();
        let budgets = budgets.clone();
        tasks.push(tokio::spawn(async move {
            reserve(&store, &budgets, "0.10", expires_at).await
        }));
    }
    let mut held = Vec::new();
    for task in tasks {
        if let Some(hold) = task.await.expect("task") {
            held.push(hold);
        }
    }
    assert_eq!(held.len(), 10, "$1.00 holds ten reservations of $0.10");
    let shown = tenancy
        .get_budget(&operator(), BudgetOf::Org(&org.id.to_string()))
        .await
        .expect("org budget");
    assert_eq!(shown.reserved_usd, usd("1.00"));
    assert_eq!(shown.remaining_usd, usd("4.00"));

    let charges: Vec<BudgetCharge> = held
        .into_iter()
        .map(|(request_id, _)| BudgetCharge {
            request_id,
            cost_usd: usd("0.04"),
        })
        .collect();
    store.settle_budgets(&charges).await.expect("settle");
    let shown = tenancy
        .get_budget(&operator(), BudgetOf::Key(key))
        .await
        .expect("key budget");
    assert_eq!(
        (shown.spent_usd, shown.reserved_usd, shown.remaining_usd),
        (usd("0.40"), usd("0"), usd("0.60"))
    );
    let mut in_flight = Vec::new();
    while let Some((request_id, _)) = reserve(&store, &budgets, "0.10", expires_at).await {
        in_flight.push(request_id);
    }
    assert_eq!(
        in_flight.len(),
        6,
        "the settled spend leaves room for six more"
    );

    let removed = tenancy
        .remove_budget(&justified_operator(), BudgetOf::Key(key))
        .await
        .expect("remove");
    assert_eq!(removed.reserved_usd, usd("0.60"));
    let error = tenancy
        .get_budget(&operator(), BudgetOf::Key(key))
        .await
        .expect_err("removed");
    assert!(
        matches!(error, TenancyError::Store(StoreError::NotFound { .. })),
        "{error:?}"
    );

    // Requests admitted under the removed budget settle nothing on a new one.
    tenancy
        .set_budget(
            &justified_operator(),
            BudgetOf::Key(key),
            set_budget("1.00"),
        )
        .await
        .expect("new key budget");
    let charges: Vec<BudgetCharge> = in_flight
        .into_iter()
        .map(|request_id| BudgetCharge {
            request_id,
            cost_usd: usd("0.04"),
        })
        .collect();
    store.settle_budgets(&charges).await.expect("settle");
    let shown = tenancy
        .get_budget(&operator(), BudgetOf::Key(key))
        .await
        .expect("new key budget");
    assert_eq!((shown.spent_usd, shown.reserved_usd), (usd("0"), usd("0")));
    let shown = tenancy
        .get_budget(&operator(), BudgetOf::Org("acme"))
        .await
        .expect("org budget");
    assert_eq!(
        (shown.spent_usd, shown.reserved_usd),
        (usd("0.64"), usd("0"))
    );
}

/// Checks that expired holds are released without spend, that a late settlement still adds
/// its cost, and that a reset starts the spend again.
async fn expired_budget_holds_are_released(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, _) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let (team, _) = team_with_member(&tenancy, &org).await;
    tenancy
        .set_budget(
            &justified_operator(),
            BudgetOf::Team(team.id),
            set_budget("2"),
        )
        .await
        .expect("team budget");
    let budgets = [BudgetRef {
        scope: BudgetScope::Team,
        id: team.id.0,
    }];
    let expires_at = start_time() + Duration::minutes(15);
    let (request_id, _) = reserve(&store, &budgets, "1.50", expires_at)
        .await
        .expect("held");
    assert!(
        reserve(&store, &budgets, "1.00", expires_at)
            .await
            .is_none()
    );

    let released = store
        .release_expired_budget_holds(expires_at - Duration::seconds(1))
        .await
        .expect("sweep");
    assert_eq!(released, 0, "the hold has not expired yet");
    let released = store
        .release_expired_budget_holds(expires_at)
        .await
        .expect("sweep");
    assert_eq!(released, 1);
    let shown = tenancy
        .get_budget(&operator(), BudgetOf::Team(team.id))
        .await
        .expect("team budget");
    assert_eq!((shown.spent_usd, shown.reserved_usd), (usd("0"), usd("0")));

    store
        .settle_budgets(&[BudgetCharge {
            request_id,
            cost_usd: usd("0.25"),
        }])
        .await
        .expect("late settle");
    let shown = tenancy
        .get_budget(&operator(), BudgetOf::Team(team.id))
        .await
        .expect("team budget");
    assert_eq!(
        (shown.spent_usd, shown.reserved_usd),
        (usd("0.25"), usd("0"))
    );

    let reset = tenancy
        .set_budget(
            &justified_operator(),
            BudgetOf::Team(team.id),
            SetBudgetRequest {
                max_usd: usd("3"),
                reset_spend: true,
            },
        )
        .await
        .expect("reset");
    assert_eq!((reset.max_usd, reset.spent_usd), (usd("3"), usd("0")));
}

/// Checks the plan lifecycle with the settable clock. A trial that ends moves the org to Free
/// and suspends what Free does not allow, newest first. An upgrade within 30 days restores it,
/// what stays suspended 30 days is deleted, and the audit log shows each step.
async fn trial_end_suspends_then_purges(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock.clone());
    let signed = tenancy
        .signup(
            SignupRequest {
                email: "owner@trial.test".to_owned(),
                org_name: "Trial".to_owned(),
                region: None,
            },
            "pro",
            14,
            Some("203.0.113.7".to_owned()),
        )
        .await
        .expect("signup");
    let org = signed.org;
    assert_eq!(org.plan, "pro");
    let tick = || clock.advance(Duration::seconds(1));

    // Two teams; the first with four users, the second with one; one user with three keys.
    let mut teams = Vec::new();
    for name in ["first", "second"] {
        tick();
        let team = tenancy
            .create_team(&operator(), team_request(&org, name))
            .await
            .expect("team");
        teams.push(team);
    }
    let mut users = Vec::new();
    for (index, team) in [0, 0, 0, 0, 1].into_iter().enumerate() {
        tick();
        let user = tenancy
            .create_user(
                &operator(),
                CreateUserRequest {
                    team_id: Some(teams[team].id),
                    ..user_request(&org, &format!("u{index}@trial.test"), Role::Developer)
                },
            )
            .await
            .expect("user");
        users.push(user);
    }
    let mut keys = Vec::new();
    for _ in 0..3 {
        tick();
        keys.push(
            tenancy
                .create_key(&operator(), key_request(&users[0]))
                .await
                .expect("key"),
        );
    }

    // The trial ends: Free allows 1 team, 3 users per team and 2 keys per user.
    clock.advance(Duration::days(15));
    let report = tenancy.run_lifecycle(&operator()).await.expect("lifecycle");
    assert_eq!(report.trials_ended, vec![org.id]);
    assert_eq!(
        (
            report.suspended.teams,
            report.suspended.users,
            report.suspended.keys
        ),
        (1, 2, 1),
        "the second team with its user, the fourth user of the first, the third key"
    );
    let moved = store.get_org(org.id).await.expect("org");
    assert_eq!((moved.plan.as_str(), moved.trial_ends_at), ("free", None));
    assert!(!store.get_user(users[3].id).await.expect("user").active);
    assert!(!store.get_user(users[4].id).await.expect("user").active);
    assert!(store.get_user(users[2].id).await.expect("user").active);
    assert!(!store.get_key(keys[2].key.id).await.expect("key").active);
    assert_eq!(
        tenancy.authenticate(&keys[2].secret).await.expect("lookup"),
        None,
        "a suspended key does not authenticate"
    );
    assert!(
        tenancy
            .authenticate(&keys[1].secret)
            .await
            .expect("lookup")
            .is_some()
    );

    // A suspended team takes no new user.
    let refused = tenancy
        .create_user(
            &operator(),
            CreateUserRequest {
                team_id: Some(teams[1].id),
                ..user_request(&org, "late@trial.test", Role::Developer)
            },
        )
        .await
        .expect_err("suspended team");
    assert!(
        matches!(&refused, TenancyError::Invalid { field, .. } if field == "team_id"),
        "{refused:?}"
    );
    // A user revoked while suspended stays revoked.
    tenancy
        .revoke_user(&operator(), users[4].id)
        .await
        .expect("revoke");

    // An upgrade within 30 days restores the rest.
    clock.advance(Duration::days(10));
    let justified = Caller {
        justification: Some("upgrade".to_owned()),
        ..operator()
    };
    tenancy
        .migrate_plan(
            &justified,
            &org.id.to_string(),
            MigratePlanRequest {
                plan: Some("pro".to_owned()),
                version: None,
            },
        )
        .await
        .expect("upgrade");
    assert!(store.get_user(users[3].id).await.expect("user").active);
    assert!(!store.get_user(users[4].id).await.expect("user").active);
    assert!(store.get_key(keys[2].key.id).await.expect("key").active);

    // A downgrade suspends again, and 30 days later the suspended rows are gone.
    tenancy
        .migrate_plan(
            &justified,
            &org.id.to_string(),
            MigratePlanRequest {
                plan: Some("free".to_owned()),
                version: None,
            },
        )
        .await
        .expect("downgrade");
    clock.advance(Duration::days(29));
    let report = tenancy.run_lifecycle(&operator()).await.expect("lifecycle");
    assert!(report.purged.is_empty(), "29 days is not yet 30");
    clock.advance(Duration::days(1));
    let report = tenancy.run_lifecycle(&operator()).await.expect("lifecycle");
    assert_eq!(
        (report.purged.teams, report.purged.users, report.purged.keys),
        (1, 1, 1),
        "the second team, the fourth user of the first, the third key"
    );
    assert!(matches!(
        store.get_key(keys[2].key.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_team(teams[1].id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.get_user(users[2].id).await.expect("user").active);

    let actions: Vec<String> = store
        .list_audit(&AuditFilter {
            org_id: Some(org.id),
            after_seq: 0,
            limit: 1000,
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|entry| entry.action)
        .filter(|action| action.starts_with("plan."))
        .collect();
    assert_eq!(
        actions,
        [
            "plan.trial_end",
            "plan.suspend",
            "plan.migrate",
            "plan.restore",
            "plan.migrate",
            "plan.suspend",
            "plan.purge"
        ]
    );
}

/// Checks an invoice issued with the settable clock. The fee and the bought credit are charged
/// in the org's currency at the rate in force, and the overage paid from credits is only listed.
/// A month is invoiced once, after it ends.
async fn invoice_charges_fee_and_credit_once(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock.clone());
    let org = plan_org(&tenancy, "euro", "pro").await;
    let justified = justified_operator();
    tenancy
        .set_fx_rates(
            &justified,
            SetFxRatesRequest {
                rates: vec![NewFxRate {
                    currency: Currency::Eur,
                    rate: usd("0.92"),
                    effective_at: None,
                }],
            },
        )
        .await
        .expect("rate");
    tenancy
        .update_org(
            &operator(),
            "euro",
            UpdateOrgRequest {
                billing_currency: Some(Currency::Eur),
                ..UpdateOrgRequest::default()
            },
        )
        .await
        .expect("billing currency");
    tenancy
        .add_credit(
            &justified,
            "euro",
            AddCreditRequest {
                kind: CreditKind::Topup,
                amount_usd: usd("25.00"),
                reference: None,
            },
        )
        .await
        .expect("top-up");
    store
        .append_credit(
            &NewCredit {
                org_id: org.id,
                kind: CreditKind::Overage,
                amount_usd: usd("-0.0050"),
                reference: None,
                created_at: clock.now(),
            },
            None,
        )
        .await
        .expect("overage");

    let caller = operator();
    let issue = |period: &str| {
        tenancy.issue_invoice(
            &caller,
            "euro",
            IssueInvoiceRequest {
                period: period.to_owned(),
            },
        )
    };
    let error = issue("2026-01").await.expect_err("the month has not ended");
    assert!(
        matches!(&error, TenancyError::Invalid { field, .. } if field == "period"),
        "{error:?}"
    );
    let error = issue("2025-12").await.expect_err("before the org");
    assert!(
        matches!(&error, TenancyError::Invalid { field, .. } if field == "period"),
        "{error:?}"
    );

    clock.advance(Duration::days(20));
    let invoice = issue("2026-01").await.expect("invoice");
    assert_eq!(invoice.currency, Currency::Eur);
    let lines: Vec<(LineKind, Decimal, bool)> = invoice
        .lines
        .iter()
        .map(|line| (line.kind, line.amount, line.charged))
        .collect();
    // 49 * 0.92 = 45.08; 25 * 0.92 = 23.00; 0.005 * 0.92 = 0.0046, listed as 0.00.
    assert_eq!(
        lines,
        [
            (LineKind::PlanFee, usd("45.08"), true),
            (LineKind::CreditTopups, usd("23.00"), true),
            (LineKind::Overage, usd("0.00"), false),
        ]
    );
    assert_eq!(invoice.total, usd("68.08"));
    assert_eq!(invoice.total.to_string(), "68.08");
    let again = issue("2026-01").await.expect_err("invoiced once");
    assert!(
        matches!(again, TenancyError::Store(StoreError::Conflict(_))),
        "{again:?}"
    );
    let listed = tenancy
        .list_invoices(&operator(), "euro")
        .await
        .expect("list");
    assert_eq!(listed, vec![invoice.clone()]);
}

/// The key directory: entries of this region's keys as they change, and the replica of
/// another region's entries, which keeps the newest version of each key.
async fn key_directory_publishes_and_replicates(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock.clone());
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");

    let entries = store
        .directory_entries(DirectorySelector::Org(org.id), 7)
        .await
        .expect("entries");
    assert_eq!(entries.len(), 1);
    let entry = entries[0].clone();
    assert_eq!(
        (
            entry.key_id,
            entry.user_id,
            entry.home_region.clone(),
            entry.version
        ),
        (created.key.id, user.id, region(), 7)
    );
    assert!(entry.active);
    assert_eq!(entry.allowed_models.key, vec!["gpt-4o-mini".to_owned()]);
    let hash = KeyHasher::new(&SecretString::from("p".repeat(32))).hash(&created.secret);
    assert_eq!(entry.key_hash, hash);
    assert!(entry.accepts(&hash, start_time()));

    tenancy
        .revoke_user(&operator(), user.id)
        .await
        .expect("revoke user");
    let after = store
        .directory_entries(DirectorySelector::User(user.id), 8)
        .await
        .expect("entries");
    assert!(!after[0].active, "a revoked user's keys are inactive");
    assert!(!after[0].accepts(&hash, start_time()));
    assert!(
        store
            .directory_entries(DirectorySelector::Key(synaxis_shared::KeyId::new()), 9)
            .await
            .expect("entries")
            .is_empty()
    );

    // A peer's entries: the newest version of a key wins, whatever the order of arrival.
    let mut peer = entry.clone();
    peer.key_id = synaxis_shared::KeyId::new();
    peer.home_region = "sa-east-1".parse().expect("region id");
    peer.key_hash = "peer-hash".to_owned();
    peer.version = 10;
    let mut older = peer.clone();
    older.version = 5;
    older.active = false;
    let mut newer = peer.clone();
    newer.version = 20;
    newer.previous_key_hash = Some("old-peer-hash".to_owned());
    newer.previous_key_expires_at = Some(start_time() + Duration::hours(1));
    newer.key_hash = "new-peer-hash".to_owned();

    assert_eq!(
        store
            .apply_directory_entries(&[peer.clone()])
            .await
            .expect("apply"),
        1
    );
    assert_eq!(
        store
            .apply_directory_entries(&[older.clone(), peer.clone()])
            .await
            .expect("apply"),
        0,
        "an older version and a duplicate change nothing"
    );
    let found = store.find_directory_entry("peer-hash").await.expect("find");
    assert_eq!(found, Some(peer.clone()));
    assert_eq!(
        store
            .apply_directory_entries(&[newer.clone()])
            .await
            .expect("apply"),
        1
    );
    assert_eq!(
        store.find_directory_entry("peer-hash").await.expect("find"),
        None
    );
    let by_previous = store
        .find_directory_entry("old-peer-hash")
        .await
        .expect("find")
        .expect("the previous hash finds the entry");
    assert_eq!(by_previous, newer);
    assert!(by_previous.accepts("old-peer-hash", start_time()));
    assert!(!by_previous.accepts("old-peer-hash", start_time() + Duration::hours(2)));
}

/// Consent: each change is a new version, the latest decides, only the user may change it,
/// and the key directory carries the latest state.
async fn consent_is_versioned_and_reaches_the_directory(store: Arc<dyn Store>) {
    use synaxis_shared::compliance::{ConsentScope, ConsentSource, GrantConsentRequest};

    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock.clone())
        .with_regions(vec!["eu-west-1".parse().expect("region id"), region()]);
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");
    let scope = ConsentScope::CrossBorderFailover;
    let own = Caller {
        actor: Actor::Member(Member {
            user_id: user.id,
            org_id: org.id,
            role: Role::Developer,
            team_id: None,
        }),
        source_ip: None,
        justification: None,
    };

    let empty = tenancy.consent(&own, user.id, scope).await.expect("read");
    assert!(!empty.granted);
    assert!(empty.history.is_empty());

    let granted = tenancy
        .grant_consent(
            &own,
            user.id,
            GrantConsentRequest {
                scope,
                regions: vec![region(), region()],
            },
        )
        .await
        .expect("grant");
    assert!(granted.granted);
    let current = granted.current.clone().expect("a current record");
    assert_eq!(current.version, 1);
    assert_eq!(current.regions, vec![region()], "regions are deduplicated");
    assert_eq!(current.source, ConsentSource::User);
    let entries = store
        .directory_entries(DirectorySelector::User(user.id), 1)
        .await
        .expect("entries");
    assert!(entries[0].consent.cross_border_failover);
    assert_eq!(entries[0].consent.regions, vec![region()]);

    clock.advance(Duration::minutes(5));
    let unjustified = tenancy
        .withdraw_consent(&operator(), user.id, scope)
        .await
        .expect_err("the operator needs a justification");
    assert!(
        unjustified.to_string().contains("justification"),
        "{unjustified}"
    );
    let withdrawn = tenancy
        .withdraw_consent(&justified_operator(), user.id, scope)
        .await
        .expect("withdraw");
    assert!(!withdrawn.granted);
    assert_eq!(withdrawn.history.len(), 2, "the history keeps the grant");
    let last = withdrawn.current.expect("current");
    assert_eq!((last.version, last.source), (2, ConsentSource::Operator));
    assert_eq!(last.recorded_at, start_time() + Duration::minutes(5));
    let entries = store
        .directory_entries(DirectorySelector::User(user.id), 2)
        .await
        .expect("entries");
    assert!(!entries[0].consent.cross_border_failover);

    let unknown = tenancy
        .grant_consent(
            &own,
            user.id,
            GrantConsentRequest {
                scope,
                regions: vec!["ap-south-9".parse().expect("region id")],
            },
        )
        .await
        .expect_err("an unknown region is refused");
    assert!(unknown.to_string().contains("ap-south-9"), "{unknown}");

    // Another member of the org may read it as a manager, but not change it.
    let admin = tenancy
        .create_user(
            &operator(),
            user_request(&org, "root@acme.test", Role::Admin),
        )
        .await
        .expect("admin");
    let manager = Caller {
        actor: Actor::Member(Member {
            user_id: admin.id,
            org_id: org.id,
            role: Role::Admin,
            team_id: None,
        }),
        source_ip: None,
        justification: None,
    };
    assert!(tenancy.consent(&manager, user.id, scope).await.is_ok());
    let denied = tenancy
        .withdraw_consent(&manager, user.id, scope)
        .await
        .expect_err("a manager may not change another user's consent");
    assert!(matches!(denied, TenancyError::Denied(_)), "{denied:?}");
    assert_eq!(
        store
            .consent_history(user.id, scope)
            .await
            .expect("history")
            .len(),
        2,
        "refused changes store nothing"
    );

    // Standard contractual clauses: recorded on the org by the operator only.
    use synaxis_shared::compliance::{OrgTransferMechanism, TransferMechanismChange};
    let clauses = UpdateOrgRequest {
        transfer_mechanism: Some(TransferMechanismChange::StandardContractualClauses),
        ..UpdateOrgRequest::default()
    };
    let owner = Caller {
        actor: Actor::Member(Member {
            user_id: admin.id,
            org_id: org.id,
            role: Role::Owner,
            team_id: None,
        }),
        source_ip: None,
        justification: None,
    };
    let refused = tenancy
        .update_org(&owner, &org.id.to_string(), clauses.clone())
        .await
        .expect_err("only the operator records a mechanism");
    assert!(matches!(refused, TenancyError::Denied(_)), "{refused:?}");
    let unjustified = tenancy
        .update_org(&operator(), &org.id.to_string(), clauses.clone())
        .await
        .expect_err("the operator needs a justification");
    assert!(
        unjustified.to_string().contains("justification"),
        "{unjustified}"
    );
    let updated = tenancy
        .update_org(&justified_operator(), &org.id.to_string(), clauses)
        .await
        .expect("record clauses");
    assert_eq!(
        updated.transfer_mechanism,
        Some(OrgTransferMechanism::StandardContractualClauses)
    );
    let entries = store
        .directory_entries(DirectorySelector::Org(org.id), 3)
        .await
        .expect("entries");
    assert_eq!(
        entries[0].org_transfer_mechanism,
        Some(OrgTransferMechanism::StandardContractualClauses)
    );
    let cleared = tenancy
        .update_org(
            &justified_operator(),
            &org.id.to_string(),
            UpdateOrgRequest {
                transfer_mechanism: Some(TransferMechanismChange::None),
                ..UpdateOrgRequest::default()
            },
        )
        .await
        .expect("remove clauses");
    assert_eq!(cleared.transfer_mechanism, None);
}

/// Checks that a transfer recorded by the provider of the user's jurisdiction names its legal
/// basis.
async fn transfers_record_their_legal_basis(store: Arc<dyn Store>) {
    use synaxis_shared::compliance::{GdprTransferBasis, TransferBasis};
    use synaxisd::compliance::{Compliance, Transfer};

    let compliance = Compliance::default();
    let gdpr = compliance
        .provider(synaxis_shared::Jurisdiction::EU)
        .expect("GDPR provider");
    let user_id = synaxis_shared::UserId::new();
    let from: RegionId = "eu-west-1".parse().expect("region id");
    let basis = TransferBasis::Gdpr(GdprTransferBasis::ExplicitConsent);
    let record = gdpr
        .log_transfer(
            store.as_ref(),
            Transfer {
                request_id: "req-1",
                user_id,
                org_id: OrgId::new(),
                from_region: &from,
                to_region: &region(),
                basis,
                at: start_time(),
            },
        )
        .await
        .expect("log transfer");
    assert_eq!(record.citation, "GDPR Art. 49(1)(a)");
    assert_eq!(record.regulation, "GDPR");
    let listed = store
        .list_transfers(Some(user_id), 10)
        .await
        .expect("list transfers");
    assert_eq!(listed, vec![record]);
    assert!(
        store
            .list_transfers(Some(synaxis_shared::UserId::new()), 10)
            .await
            .expect("list")
            .is_empty()
    );
}

/// Checks the residency check: a record of a user this region does not have is a violation, one
/// of a local user is not, and one stored for another region is a pending transfer.
async fn residency_check_finds_foreign_records(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");
    let clean = store.check_residency(&region()).await.expect("check");
    assert_eq!((clean.records_checked, clean.violations.len()), (0, 0));

    store
        .insert_request(&record(&created.key, start_time(), "0.01"))
        .await
        .expect("local record");
    let mut foreign = record(&created.key, start_time(), "0.01");
    foreign.user_id = synaxis_shared::UserId::new();
    store
        .insert_request(&foreign)
        .await
        .expect("foreign record");
    let eu: RegionId = "eu-west-1".parse().expect("region id");
    store
        .prepare_regions(std::slice::from_ref(&eu))
        .await
        .expect("partition");
    let mut held = record(&created.key, start_time(), "0.01");
    held.stored_region = eu;
    store.insert_request(&held).await.expect("held record");

    let report = store.check_residency(&region()).await.expect("check");
    assert_eq!(report.records_checked, 3);
    assert_eq!(report.pending_transfers, 1);
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].record_id, foreign.id.0);
    assert_eq!(report.violations[0].user_region, None);
}

/// Checks the hand-off of held records: the processing region lists what it holds for a
/// region oldest first, the home region stores each record once however often it is handed,
/// and the release deletes only the handed records.
async fn held_records_are_handed_off_once(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");
    let eu: RegionId = "eu-west-1".parse().expect("region id");
    store
        .prepare_regions(std::slice::from_ref(&eu))
        .await
        .expect("partition");
    let held: Vec<RequestRecord> = (0..3)
        .map(|minute| {
            let mut record = record(
                &created.key,
                start_time() + chrono::Duration::minutes(minute),
                "0.01",
            );
            record.stored_region = eu.clone();
            record
        })
        .collect();
    let local = record(&created.key, start_time(), "0.02");
    let mut all = held.clone();
    all.push(local.clone());
    store.insert_requests(&all, &[], &[]).await.expect("insert");

    let first = store.held_requests(&eu, None, 2).await.expect("held");
    assert_eq!(first, held[..2].to_vec(), "oldest first, up to the limit");
    assert_eq!(
        store
            .held_requests(&region(), None, 10)
            .await
            .expect("held")
            .len(),
        1
    );

    // The home region's side: each record once, however often it arrives, and its cost counts
    // once against the key's and the org's budgets.
    for budget in [
        BudgetOf::Key(created.key.id),
        BudgetOf::Org(&created.key.org_id.to_string()),
    ] {
        tenancy
            .set_budget(&justified_operator(), budget, set_budget("1"))
            .await
            .expect("set budget");
    }
    let arriving: Vec<RequestRecord> = held
        .iter()
        .map(|record| RequestRecord {
            stored_region: region(),
            ..record.clone()
        })
        .collect();
    assert_eq!(
        store
            .accept_held_requests(&arriving[..2])
            .await
            .expect("accept"),
        2
    );
    assert_eq!(
        store
            .accept_held_requests(&arriving)
            .await
            .expect("accept again"),
        1
    );
    assert_eq!(
        store
            .accept_held_requests(&arriving)
            .await
            .expect("accept a third time"),
        0
    );
    for budget in [
        BudgetOf::Key(created.key.id),
        BudgetOf::Org(&created.key.org_id.to_string()),
    ] {
        let budget = tenancy
            .get_budget(&operator(), budget)
            .await
            .expect("read budget");
        assert_eq!(budget.spent_usd, usd("0.03"), "three held records of $0.01");
    }

    let ids: Vec<_> = first.iter().map(|record| record.id).collect();
    assert_eq!(
        store
            .release_held_requests(&eu, &ids)
            .await
            .expect("release"),
        2
    );
    assert_eq!(
        store
            .release_held_requests(&eu, &ids)
            .await
            .expect("release again"),
        0
    );
    assert_eq!(
        store.held_requests(&eu, None, 10).await.expect("held"),
        held[2..].to_vec()
    );
    let of_org = store
        .held_requests(&eu, Some(created.key.org_id), 10)
        .await
        .expect("held of the org");
    assert_eq!(of_org, held[2..].to_vec());
    let of_other = store
        .held_requests(&eu, Some(OrgId::new()), 10)
        .await
        .expect("held of another org");
    assert!(of_other.is_empty(), "{of_other:?}");

    let request_ids: Vec<String> = held
        .iter()
        .map(|record| record.request_id.clone())
        .collect();
    let counts = store
        .count_requests_by_id(&request_ids)
        .await
        .expect("count");
    let mut expected: Vec<(String, RegionId, i64)> = request_ids
        .iter()
        .map(|id| (id.clone(), region(), 1))
        .collect();
    expected.push((held[2].request_id.clone(), eu.clone(), 1));
    expected.sort();
    let mut counts = counts;
    counts.sort();
    assert_eq!(counts, expected);
}

macro_rules! contract_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let url = format!("sqlite://{}/store.db", dir.path().display());
                    let store = SqliteStore::connect(&url, 4).await.expect("open sqlite");
                    store.migrate().await.expect("migrate sqlite");
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
            use super::*;
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(admin_url) = service_url(DATABASE_URL_ENV) else { return };
                    let database = TestDatabase::create(&admin_url).await.expect("create database");
                    let store = PgStore::connect(&database.url, 4).await.expect("connect postgres");
                    store.migrate().await.expect("migrate postgres");
                    store.prepare_regions(&[region()]).await.expect("partitions");
                    super::$case(std::sync::Arc::new(store.clone())).await;
                    store.pool().close().await;
                    database.drop_database().await.expect("drop database");
                }
            )*
            use super::*;
        }
    };
}

async fn team_policy_reaches_authentication(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, _) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let team = tenancy
        .create_team(
            &operator(),
            CreateTeamRequest {
                org_id: org.id,
                name: "Research".to_owned(),
                allowed_models: vec!["GPT-4o*".to_owned()],
            },
        )
        .await
        .expect("create team");
    assert_eq!(team.allowed_models, vec!["gpt-4o*".to_owned()]);
    let duplicate = tenancy
        .create_team(
            &operator(),
            CreateTeamRequest {
                org_id: org.id,
                name: "Research".to_owned(),
                allowed_models: Vec::new(),
            },
        )
        .await
        .expect_err("duplicate team name");
    assert!(
        matches!(duplicate, TenancyError::Store(StoreError::Conflict(_))),
        "{duplicate:?}"
    );

    let member = tenancy
        .create_user(
            &operator(),
            CreateUserRequest {
                team_id: Some(team.id),
                locale: Locale::PtBr,
                ..user_request(&org, "bia@acme.test", Role::Developer)
            },
        )
        .await
        .expect("create user in team");
    let in_team = store
        .list_users(&UserFilter {
            org_id: Some(org.id),
            team_id: Some(team.id),
        })
        .await
        .expect("list team");
    assert_eq!(in_team, vec![member.clone()]);

    let created = tenancy
        .create_key(
            &operator(),
            CreateKeyRequest {
                allowed_models: Vec::new(),
                ..key_request(&member)
            },
        )
        .await
        .expect("create key");
    let found = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    assert_eq!(found.team_id, Some(team.id));
    assert_eq!(found.team_allowed_models, vec!["gpt-4o*".to_owned()]);
    assert_eq!(found.locale, Locale::PtBr);
    assert_eq!(found.role, Role::Developer);
}

async fn rotation_grace_follows_clock(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let tenancy = tenancy(store.clone(), clock.clone());
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let original = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");

    let rotated = tenancy
        .rotate_key(
            &operator(),
            original.key.id,
            RotateKeyRequest { grace_seconds: 60 },
        )
        .await
        .expect("rotate with grace");
    assert_eq!(rotated.key.id, original.key.id, "rotation keeps the id");
    assert_eq!(rotated.key.allowed_models, original.key.allowed_models);
    assert_ne!(rotated.secret, original.secret);
    assert_eq!(rotated.key.rotated_at, Some(start_time()));
    assert_eq!(
        rotated.key.previous_secret_expires_at,
        Some(start_time() + Duration::seconds(60))
    );

    clock.set(start_time() + Duration::seconds(59));
    assert!(
        tenancy
            .authenticate(&original.secret)
            .await
            .expect("lookup")
            .is_some(),
        "old secret inside the grace"
    );
    assert!(
        tenancy
            .authenticate(&rotated.secret)
            .await
            .expect("lookup")
            .is_some(),
        "new secret inside the grace"
    );

    clock.set(start_time() + Duration::seconds(60));
    assert_eq!(
        tenancy
            .authenticate(&original.secret)
            .await
            .expect("lookup"),
        None,
        "old secret after the grace"
    );
    assert!(
        tenancy
            .authenticate(&rotated.secret)
            .await
            .expect("lookup")
            .is_some(),
        "new secret after the grace"
    );

    let again = tenancy
        .rotate_key(
            &operator(),
            original.key.id,
            RotateKeyRequest { grace_seconds: 0 },
        )
        .await
        .expect("rotate without grace");
    assert_eq!(
        tenancy.authenticate(&rotated.secret).await.expect("lookup"),
        None,
        "no grace: old secret fails at once"
    );
    assert!(
        tenancy
            .authenticate(&again.secret)
            .await
            .expect("lookup")
            .is_some()
    );

    tenancy
        .revoke_key(&operator(), original.key.id)
        .await
        .expect("revoke");
    let error = tenancy
        .rotate_key(
            &operator(),
            original.key.id,
            RotateKeyRequest { grace_seconds: 0 },
        )
        .await
        .expect_err("rotate a revoked key");
    assert!(
        matches!(error, TenancyError::Store(StoreError::Conflict(_))),
        "{error:?}"
    );
}

async fn audit_chain_records_calls(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");
    tenancy
        .revoke_key(&operator(), created.key.id)
        .await
        .expect("revoke");

    let developer = Caller {
        actor: Actor::Member(Member {
            user_id: user.id,
            org_id: org.id,
            role: Role::Developer,
            team_id: None,
        }),
        source_ip: Some("203.0.113.7".to_owned()),
        justification: Some("testing denial".to_owned()),
    };
    let denied = tenancy
        .create_team(
            &developer,
            CreateTeamRequest {
                org_id: org.id,
                name: "Nope".to_owned(),
                allowed_models: Vec::new(),
            },
        )
        .await
        .expect_err("a developer may not create teams");
    assert!(matches!(denied, TenancyError::Denied(_)), "{denied:?}");

    let entries = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list audit");
    let actions: Vec<(&str, AuditResult)> = entries
        .iter()
        .map(|entry| (entry.action.as_str(), entry.result))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("org.create", AuditResult::Success),
            ("user.create", AuditResult::Success),
            ("key.create", AuditResult::Success),
            ("key.revoke", AuditResult::Success),
            ("team.create", AuditResult::Denied),
        ]
    );
    let seqs: Vec<i64> = entries.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(entries[2].target_id, Some(created.key.id.to_string()));
    assert_eq!(entries[4].actor_id, user.id.to_string());
    assert_eq!(entries[4].source_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(entries[4].justification.as_deref(), Some("testing denial"));
    let serialized = serde_json::to_string(&entries).expect("serialize");
    assert!(
        !serialized.contains("ana@acme.test"),
        "an audit entry holds an email"
    );
    assert!(
        !serialized.contains(&created.secret),
        "an audit entry holds a secret"
    );

    let verification = AuditLog::new(store.clone())
        .verify(&operator())
        .await
        .expect("verify");
    assert!(verification.valid, "{verification:?}");
    assert_eq!(verification.entries_checked, 5);
    assert_eq!(verification.head_seq, 5);
    let refused = AuditLog::new(store)
        .verify(&developer)
        .await
        .expect_err("members may not verify");
    assert!(matches!(refused, TenancyError::Denied(_)), "{refused:?}");
}

async fn concurrent_audit_appends_stay_chained(store: Arc<dyn Store>) {
    let mut appends = Vec::new();
    for index in 0..20 {
        let store = store.clone();
        appends.push(tokio::spawn(async move {
            let mut draft = AuditDraft::new(start_time() + Duration::seconds(index), region());
            draft.action = "test.append".to_owned();
            draft.target_kind = "test".to_owned();
            store.append_audit(&draft).await
        }));
    }
    for append in appends {
        append.await.expect("task").expect("append");
    }

    let verification = AuditLog::new(store.clone())
        .verify(&operator())
        .await
        .expect("verify");
    assert!(verification.valid, "{verification:?}");
    assert_eq!(verification.entries_checked, 20);
}

async fn request_records_insert_in_batches(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let key = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key")
        .key;

    let batch: Vec<RequestRecord> = (0..3)
        .map(|second| record(&key, start_time() + Duration::seconds(second), "0.000001"))
        .collect();
    store
        .insert_requests(&batch, &[], &[])
        .await
        .expect("insert batch");
    store
        .insert_requests(&[], &[], &[])
        .await
        .expect("an empty batch stores nothing");

    let mut stored = store
        .list_requests(&RequestFilter::default())
        .await
        .expect("list");
    stored.reverse();
    assert_eq!(stored, batch);
}

/// Returns the operator with a justification, which setting limits requires.
fn justified_operator() -> Caller {
    Caller {
        justification: Some("launch capacity".to_owned()),
        ..Caller::operator()
    }
}

/// Returns a set with one sliding requests-per-minute limit.
fn per_minute(limit: u64) -> LimitSet {
    serde_json::from_value(serde_json::json!({
        "requests": {"per_minute": {"limit": limit, "window": "sliding", "action": "throttle"}}
    }))
    .expect("limit set")
}

async fn team_with_member(tenancy: &Tenancy, org: &Org) -> (Team, User) {
    let team = tenancy
        .create_team(
            &operator(),
            CreateTeamRequest {
                org_id: org.id,
                name: "Core".to_owned(),
                allowed_models: Vec::new(),
            },
        )
        .await
        .expect("create team");
    let member = tenancy
        .create_user(
            &operator(),
            CreateUserRequest {
                team_id: Some(team.id),
                ..user_request(org, "bia@acme.test", Role::Developer)
            },
        )
        .await
        .expect("create user in team");
    (team, member)
}

async fn limit_sets_reach_authentication(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, _) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let (team, member) = team_with_member(&tenancy, &org).await;
    let created = tenancy
        .create_key(&operator(), key_request(&member))
        .await
        .expect("create key");

    let before = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    assert_eq!(before.limits, KeyLimits::default(), "no limits are set yet");

    let org_set = LimitSet {
        concurrent_requests: Some(20),
        ..per_minute(1_000)
    };
    let stored = tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::Org(&org.slug),
            Ok(org_set.clone()),
        )
        .await
        .expect("set org limits");
    assert_eq!(stored, org_set);
    tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::Team(team.id),
            Ok(per_minute(100)),
        )
        .await
        .expect("set team limits");
    tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::User(member.id),
            Ok(per_minute(10)),
        )
        .await
        .expect("set user limits");

    assert_eq!(
        store
            .get_limits(LimitScope::Org(org.id))
            .await
            .expect("get"),
        org_set
    );
    assert_eq!(
        tenancy
            .get_limits(&operator(), LimitsOf::Team(team.id))
            .await
            .expect("get team limits"),
        per_minute(100)
    );

    // The lookup above is cached; setting limits evicts it, so the new sets show at once.
    let after = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    assert_eq!(after.limits.org, org_set);
    assert_eq!(after.limits.team, per_minute(100));
    assert_eq!(after.limits.user, per_minute(10));

    tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::Team(team.id),
            Ok(LimitSet::default()),
        )
        .await
        .expect("clear team limits");
    let cleared = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    assert!(cleared.limits.team.is_empty(), "{:?}", cleared.limits.team);
    assert_eq!(cleared.limits.user, per_minute(10));
    assert!(
        store
            .get_limits(LimitScope::Team(team.id))
            .await
            .expect("get")
            .is_empty()
    );

    let error = store
        .get_limits(LimitScope::User(synaxis_shared::UserId::new()))
        .await
        .expect_err("no such user");
    assert!(
        matches!(error, StoreError::NotFound { entity: "user", .. }),
        "{error:?}"
    );
}

async fn key_without_team_has_empty_team_limits(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::Org(&org.slug),
            Ok(per_minute(50)),
        )
        .await
        .expect("set org limits");
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");

    let found = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    assert_eq!(found.team_id, None);
    assert!(found.limits.team.is_empty());
    assert!(found.limits.user.is_empty());
    assert_eq!(found.limits.org, per_minute(50));
}

async fn rejected_limit_sets_are_audited(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (org, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let (team, _) = team_with_member(&tenancy, &org).await;
    tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::User(user.id),
            Ok(per_minute(10)),
        )
        .await
        .expect("set user limits");

    let zero = tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::User(user.id),
            Ok(per_minute(0)),
        )
        .await
        .expect_err("a limit of 0");
    assert!(
        matches!(&zero, TenancyError::Invalid { field, .. } if field == "limits.requests.per_minute.limit"),
        "{zero:?}"
    );
    let cap = LimitSet {
        concurrent_requests: Some(4),
        ..LimitSet::default()
    };
    let on_team = tenancy
        .set_limits(&justified_operator(), LimitsOf::Team(team.id), Ok(cap))
        .await
        .expect_err("a concurrency cap on a team");
    assert!(
        matches!(&on_team, TenancyError::Invalid { field, .. } if field == "limits.concurrent_requests"),
        "{on_team:?}"
    );
    let unjustified = tenancy
        .set_limits(&operator(), LimitsOf::User(user.id), Ok(per_minute(99)))
        .await
        .expect_err("no justification");
    assert!(
        matches!(&unjustified, TenancyError::Invalid { field, .. } if field == "x-synaxis-justification"),
        "{unjustified:?}"
    );
    let developer = Caller {
        actor: Actor::Member(Member {
            user_id: user.id,
            org_id: org.id,
            role: Role::Developer,
            team_id: None,
        }),
        source_ip: None,
        justification: Some("need more".to_owned()),
    };
    let denied = tenancy
        .set_limits(&developer, LimitsOf::User(user.id), Ok(per_minute(1_000)))
        .await
        .expect_err("a developer raising their own limits");
    assert!(matches!(denied, TenancyError::Denied(_)), "{denied:?}");
    let unreadable = tenancy
        .set_limits(
            &justified_operator(),
            LimitsOf::User(user.id),
            Err(TenancyError::Invalid {
                field: "limits.requests.per_week".to_owned(),
                message: "unknown field".to_owned(),
            }),
        )
        .await
        .expect_err("an unreadable body");
    assert!(
        matches!(unreadable, TenancyError::Invalid { .. }),
        "{unreadable:?}"
    );

    assert_eq!(
        store
            .get_limits(LimitScope::User(user.id))
            .await
            .expect("get"),
        per_minute(10),
        "rejected sets leave the stored set as it was"
    );
    let entries = store
        .list_audit(&AuditFilter {
            org_id: Some(org.id),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    let limit_entries: Vec<(AuditResult, Option<&str>, Option<&str>)> = entries
        .iter()
        .filter(|entry| entry.action == "limits.set")
        .map(|entry| {
            (
                entry.result,
                entry.target_id.as_deref(),
                entry.justification.as_deref(),
            )
        })
        .collect();
    let user_id = user.id.to_string();
    let team_id = team.id.to_string();
    assert_eq!(
        limit_entries,
        vec![
            (
                AuditResult::Success,
                Some(user_id.as_str()),
                Some("launch capacity")
            ),
            (
                AuditResult::Failure,
                Some(user_id.as_str()),
                Some("launch capacity")
            ),
            (
                AuditResult::Failure,
                Some(team_id.as_str()),
                Some("launch capacity")
            ),
            (AuditResult::Failure, Some(user_id.as_str()), None),
            (
                AuditResult::Denied,
                Some(user_id.as_str()),
                Some("need more")
            ),
            (
                AuditResult::Failure,
                Some(user_id.as_str()),
                Some("launch capacity")
            ),
        ]
    );
}

async fn key_limits_set_and_clear(store: Arc<dyn Store>) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(
            &operator(),
            CreateKeyRequest {
                rpm_limit: Some(60),
                tpm_limit: Some(MAX_AMOUNT),
                ..key_request(&user)
            },
        )
        .await
        .expect("create key with limits");
    assert_eq!(created.key.rpm_limit, Some(60));
    assert_eq!(created.key.tpm_limit, Some(MAX_AMOUNT));
    assert_eq!(
        store.get_key(created.key.id).await.expect("get"),
        created.key
    );
    let found = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    assert_eq!(found.key.rpm_limit, Some(60));

    for (rpm_limit, tpm_limit, field) in [
        (Some(0), None, "rpm_limit"),
        (None, Some(MAX_AMOUNT + 1), "tpm_limit"),
    ] {
        let error = tenancy
            .create_key(
                &operator(),
                CreateKeyRequest {
                    rpm_limit,
                    tpm_limit,
                    ..key_request(&user)
                },
            )
            .await
            .expect_err("an out-of-range key limit");
        assert!(
            matches!(&error, TenancyError::Invalid { field: named, .. } if named == field),
            "{error:?}"
        );
    }

    let updated = tenancy
        .update_key(
            &operator(),
            created.key.id,
            UpdateKeyRequest {
                rpm_limit: Some(None),
                tpm_limit: Some(Some(5_000)),
                ..UpdateKeyRequest::default()
            },
        )
        .await
        .expect("clear rpm and change tpm");
    assert_eq!(updated.rpm_limit, None);
    assert_eq!(updated.tpm_limit, Some(5_000));
    let found = tenancy
        .authenticate(&created.secret)
        .await
        .expect("lookup")
        .expect("usable key");
    assert_eq!(
        found.key.rpm_limit, None,
        "the update evicted the cached key"
    );
    assert_eq!(found.key.tpm_limit, Some(5_000));

    let renamed = tenancy
        .update_key(
            &operator(),
            created.key.id,
            UpdateKeyRequest {
                name: Some("renamed".to_owned()),
                ..UpdateKeyRequest::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(
        renamed.tpm_limit,
        Some(5_000),
        "an absent limit keeps its value"
    );
    let zero = tenancy
        .update_key(
            &operator(),
            created.key.id,
            UpdateKeyRequest {
                rpm_limit: Some(Some(0)),
                ..UpdateKeyRequest::default()
            },
        )
        .await
        .expect_err("a zero key limit");
    assert!(
        matches!(&zero, TenancyError::Invalid { field, .. } if field == "rpm_limit"),
        "{zero:?}"
    );
}

/// Creates a user with a key, lets `poison` overwrite the user's limits column with text that
/// is no limit set, and checks that reading it names the column.
async fn corrupt_user_limits_are_named(store: Arc<dyn Store>, poison: impl AsyncFnOnce(User)) {
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let created = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key");
    poison(user.clone()).await;

    let error = store
        .get_limits(LimitScope::User(user.id))
        .await
        .expect_err("corrupt limits");
    assert!(
        matches!(&error, StoreError::Corrupt(message) if message.contains("users.limits")),
        "{error:?}"
    );
    let error = tenancy
        .authenticate(&created.secret)
        .await
        .expect_err("corrupt limits fail the lookup");
    assert!(
        matches!(&error, StoreError::Corrupt(message) if message.contains("users.limits")),
        "{error:?}"
    );
}

#[tokio::test]
async fn sqlite_corrupt_user_limits_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/store.db", dir.path().display());
    let store = SqliteStore::connect(&url, 4).await.expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    let pool = store.pool().clone();
    corrupt_user_limits_are_named(Arc::new(store), async |user: User| {
        sqlx::query("UPDATE users SET limits = '{\"requests\": 5' WHERE id = $1")
            .bind(user.id.0)
            .execute(&pool)
            .await
            .expect("poison limits");
    })
    .await;
}

#[tokio::test]
async fn postgres_corrupt_user_limits_are_named() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    let store = PgStore::connect(&database.url, 4)
        .await
        .expect("connect postgres");
    store.migrate().await.expect("migrate postgres");
    let pool = store.pool().clone();
    corrupt_user_limits_are_named(Arc::new(store), async |user: User| {
        sqlx::query("UPDATE users SET limits = '{\"requests\": {\"per_week\": 1}}' WHERE id = $1")
            .bind(user.id.0)
            .execute(&pool)
            .await
            .expect("poison limits");
    })
    .await;
    pool.close().await;
    database.drop_database().await.expect("drop database");
}

contract_tests!(
    held_records_are_handed_off_once,
    residency_check_finds_foreign_records,
    transfers_record_their_legal_basis,
    consent_is_versioned_and_reaches_the_directory,
    key_directory_publishes_and_replicates,
    request_records_insert_in_batches,
    team_policy_reaches_authentication,
    rotation_grace_follows_clock,
    audit_chain_records_calls,
    concurrent_audit_appends_stay_chained,
    org_is_found_by_id_and_slug,
    duplicate_slug_is_conflict,
    email_is_unique_ignoring_case,
    missing_rows_are_not_found,
    key_authenticates_by_secret,
    revoked_key_stops_authenticating,
    key_expires_by_clock,
    inactive_user_or_org_disables_keys,
    request_records_round_trip,
    limit_sets_reach_authentication,
    key_without_team_has_empty_team_limits,
    rejected_limit_sets_are_audited,
    key_limits_set_and_clear,
    concurrent_teams_stop_at_plan_cap,
    free_plan_caps_resources,
    credit_ledger_sums_entries,
    concurrent_reservations_stay_within_budgets,
    expired_budget_holds_are_released,
    trial_end_suspends_then_purges,
    invoice_charges_fee_and_credit_once,
);

/// PostgreSQL has no default partition, so a record of a region without one is rejected.
#[tokio::test]
async fn postgres_rejects_record_of_unknown_region() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    let store = PgStore::connect(&database.url, 2)
        .await
        .expect("connect postgres");
    store.migrate().await.expect("migrate");
    store
        .prepare_regions(&[region()])
        .await
        .expect("partitions");
    store
        .prepare_regions(&[region()])
        .await
        .expect("partitions are idempotent");
    let store: Arc<dyn Store> = Arc::new(store.clone());
    let tenancy = tenancy(store.clone(), Arc::new(ManualClock::new(start_time())));
    let (_, user) = org_user(&tenancy, "acme", "ana@acme.test").await;
    let key = tenancy
        .create_key(&operator(), key_request(&user))
        .await
        .expect("create key")
        .key;

    let foreign = RequestRecord {
        stored_region: "ap-south-1".parse().expect("region id"),
        ..record(&key, start_time(), "0")
    };
    let error = store
        .insert_request(&foreign)
        .await
        .expect_err("no partition");
    assert!(error.to_string().contains("partition"), "{error}");
    store
        .insert_request(&record(&key, start_time(), "0"))
        .await
        .expect("known region");

    database.drop_database().await.expect("drop database");
}

/// PostgreSQL rejects UPDATE, DELETE and TRUNCATE on the audit log, and moving its head back.
#[tokio::test]
async fn postgres_audit_log_is_append_only() {
    let Some(admin_url) = service_url(DATABASE_URL_ENV) else {
        return;
    };
    let database = TestDatabase::create(&admin_url)
        .await
        .expect("create database");
    let store = PgStore::connect(&database.url, 2)
        .await
        .expect("connect postgres");
    store.migrate().await.expect("migrate");
    let mut draft = AuditDraft::new(start_time(), region());
    draft.action = "test.append".to_owned();
    draft.target_kind = "test".to_owned();
    store.append_audit(&draft).await.expect("append");
    store.append_audit(&draft).await.expect("append");

    for statement in [
        "UPDATE audit_log SET action = 'forged' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log",
        "UPDATE audit_head SET seq = 1",
        "DELETE FROM audit_head",
    ] {
        let error = sqlx::query(statement)
            .execute(store.pool())
            .await
            .expect_err(statement);
        assert!(error.to_string().contains("audit"), "{statement}: {error}");
    }
    let entries = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].action, "test.append");

    store.pool().close().await;
    database.drop_database().await.expect("drop database");
}
