//! Organization routes.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use synaxis_shared::api::{CreateOrgRequest, List, Org, UpdateOrgRequest};
use synaxis_shared::credits::{AddCreditRequest, AutoTopup, CreditBalance, CreditEntry};
use synaxis_shared::plans::{LifecycleReport, MigratePlanRequest, OrgEntitlements};

use super::ControlCaller;
use super::extract::JsonBody;
use crate::http_error::ApiError;
use crate::server::AppState;

pub async fn create(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    JsonBody(request): JsonBody<CreateOrgRequest>,
) -> Result<(StatusCode, Json<Org>), ApiError> {
    let org = state.tenancy.create_org(&caller, request).await?;

    tracing::info!(org.id = %org.id, "organization created");
    Ok((StatusCode::CREATED, Json(org)))
}

/// Lists every organization for the operator, and a member's own.
pub async fn list(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
) -> Result<Json<List<Org>>, ApiError> {
    let data = state.tenancy.list_orgs(&caller).await?;
    Ok(Json(List { data }))
}

/// Shows an organization by id or slug.
pub async fn show(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
) -> Result<Json<Org>, ApiError> {
    Ok(Json(state.tenancy.find_org(&caller, &org).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    JsonBody(request): JsonBody<UpdateOrgRequest>,
) -> Result<Json<Org>, ApiError> {
    let org = state.tenancy.update_org(&caller, &org, request).await?;

    tracing::info!(org.id = %org.id, "organization updated");
    Ok(Json(org))
}

/// Deactivates an organization: none of its keys authenticate afterwards.
pub async fn revoke(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
) -> Result<Json<Org>, ApiError> {
    let org = state.tenancy.revoke_org(&caller, &org).await?;

    tracing::info!(org.id = %org.id, "organization revoked");
    Ok(Json(org))
}

/// Shows an organization's effective entitlements and where each comes from.
pub async fn entitlements(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
) -> Result<Json<OrgEntitlements>, ApiError> {
    Ok(Json(state.tenancy.org_entitlements(&caller, &org).await?))
}

/// Sets or removes per-field overrides of an organization's plan; `null` removes one.
pub async fn set_overrides(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    JsonBody(changes): JsonBody<serde_json::Value>,
) -> Result<Json<OrgEntitlements>, ApiError> {
    let entitlements = state
        .tenancy
        .set_overrides(&caller, &org, Ok(changes))
        .await?;

    tracing::info!(org = %org, "organization plan overrides set");
    Ok(Json(entitlements))
}

/// Runs the plan lifecycle now: ends trials that are over, suspends resources past the new
/// caps, and deletes those suspended for 30 days.
pub async fn run_lifecycle(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
) -> Result<Json<LifecycleReport>, ApiError> {
    let report = state.tenancy.run_lifecycle(&caller).await?;

    tracing::info!(
        trials_ended = report.trials_ended.len(),
        "plan lifecycle run"
    );
    Ok(Json(report))
}

/// Moves an organization to a plan version.
pub async fn migrate_plan(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    JsonBody(request): JsonBody<MigratePlanRequest>,
) -> Result<Json<OrgEntitlements>, ApiError> {
    let entitlements = state.tenancy.migrate_plan(&caller, &org, request).await?;

    tracing::info!(
        org = %org,
        plan = %entitlements.plan,
        version = entitlements.plan_version,
        "organization moved to a plan version"
    );
    Ok(Json(entitlements))
}

/// Shows an organization's credit balance.
pub async fn credits(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
) -> Result<Json<CreditBalance>, ApiError> {
    Ok(Json(state.tenancy.credit_balance(&caller, &org).await?))
}

/// Sets an organization's auto top-up and returns its credits.
pub async fn set_auto_topup(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    JsonBody(settings): JsonBody<AutoTopup>,
) -> Result<Json<CreditBalance>, ApiError> {
    let balance = state
        .tenancy
        .set_auto_topup(&caller, &org, Some(settings))
        .await?;

    tracing::info!(org = %org, "auto top-up set");
    Ok(Json(balance))
}

/// Turns an organization's auto top-up off and returns its credits.
pub async fn remove_auto_topup(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
) -> Result<Json<CreditBalance>, ApiError> {
    let balance = state.tenancy.set_auto_topup(&caller, &org, None).await?;

    tracing::info!(org = %org, "auto top-up turned off");
    Ok(Json(balance))
}

/// Adds a top-up, refund or adjustment to an organization's credit ledger.
pub async fn add_credit(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    JsonBody(request): JsonBody<AddCreditRequest>,
) -> Result<(StatusCode, Json<CreditEntry>), ApiError> {
    let entry = state.tenancy.add_credit(&caller, &org, request).await?;

    tracing::info!(
        org = %org,
        kind = entry.kind.as_str(),
        seq = entry.seq,
        "credit ledger entry added"
    );
    Ok((StatusCode::CREATED, Json(entry)))
}

/// Query of `GET /control/v1/orgs/{org}/credits/history`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    after_seq: u64,
    #[serde(default = "default_history_limit")]
    limit: u64,
}

fn default_history_limit() -> u64 {
    100
}

/// Lists an organization's credit ledger, oldest first.
pub async fn credit_history(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<List<CreditEntry>>, ApiError> {
    let data = state
        .tenancy
        .credit_history(&caller, &org, query.after_seq, query.limit)
        .await?;
    Ok(Json(List { data }))
}
