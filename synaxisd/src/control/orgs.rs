//! Organization routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use synaxis_shared::api::{CreateOrgRequest, List, Org, UpdateOrgRequest};
use synaxis_shared::plans::{MigratePlanRequest, OrgEntitlements};

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
