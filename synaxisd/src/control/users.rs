//! User routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use synaxis_shared::api::{CreateUserRequest, List, User};
use synaxis_shared::{OrgId, UserId};

use super::extract::{JsonBody, QueryParams, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;

pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateUserRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = state.tenancy.create_user(request).await?;

    tracing::info!(user.id = %user.id, org.id = %user.org_id, "user created");
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    org_id: OrgId,
}

pub async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<User>>, ApiError> {
    let data = state.tenancy.store().list_users(query.org_id).await?;
    Ok(Json(List { data }))
}

pub async fn show(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<User>, ApiError> {
    let id: UserId = parse_id("user", &user)?;
    Ok(Json(state.tenancy.store().get_user(id).await?))
}

/// Deactivates a user: none of their keys authenticate afterwards.
pub async fn revoke(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<User>, ApiError> {
    let id: UserId = parse_id("user", &user)?;

    let user = state.tenancy.store().set_user_active(id, false).await?;

    tracing::info!(user.id = %user.id, "user revoked");
    Ok(Json(user))
}
