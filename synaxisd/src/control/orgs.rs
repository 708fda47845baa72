//! Organization routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use synaxis_shared::api::{CreateOrgRequest, List, Org};

use super::extract::JsonBody;
use crate::http_error::ApiError;
use crate::server::AppState;

pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateOrgRequest>,
) -> Result<(StatusCode, Json<Org>), ApiError> {
    let org = state.tenancy.create_org(request).await?;

    tracing::info!(org.id = %org.id, "organization created");
    Ok((StatusCode::CREATED, Json(org)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<List<Org>>, ApiError> {
    let data = state.tenancy.store().list_orgs().await?;
    Ok(Json(List { data }))
}

/// Shows an organization by id or slug.
pub async fn show(
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<Org>, ApiError> {
    Ok(Json(state.tenancy.find_org(&org).await?))
}

/// Deactivates an organization: none of its keys authenticate afterwards.
pub async fn revoke(
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<Org>, ApiError> {
    let org = state.tenancy.find_org(&org).await?;

    let org = state.tenancy.store().set_org_active(org.id, false).await?;

    tracing::info!(org.id = %org.id, "organization revoked");
    Ok(Json(org))
}
