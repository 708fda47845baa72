//! User routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use synaxis_shared::api::{CreateUserRequest, List, UpdateUserRequest, User};
use synaxis_shared::{OrgId, TeamId, UserId};

use super::ControlCaller;
use super::extract::{JsonBody, QueryParams, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::store::UserFilter;

pub async fn create(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    JsonBody(request): JsonBody<CreateUserRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = state.tenancy.create_user(&caller, request).await?;

    tracing::info!(user.id = %user.id, org.id = %user.org_id, "user created");
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    org_id: OrgId,
    team_id: Option<TeamId>,
}

pub async fn list(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<User>>, ApiError> {
    let filter = UserFilter {
        org_id: Some(query.org_id),
        team_id: query.team_id,
    };
    let data = state.tenancy.list_users(&caller, &filter).await?;
    Ok(Json(List { data }))
}

pub async fn show(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
) -> Result<Json<User>, ApiError> {
    let id: UserId = parse_id("user", &user)?;
    Ok(Json(state.tenancy.get_user(&caller, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
    JsonBody(request): JsonBody<UpdateUserRequest>,
) -> Result<Json<User>, ApiError> {
    let id: UserId = parse_id("user", &user)?;

    let user = state.tenancy.update_user(&caller, id, request).await?;

    tracing::info!(user.id = %user.id, "user updated");
    Ok(Json(user))
}

/// Deactivates a user: none of their keys authenticate afterwards.
pub async fn revoke(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
) -> Result<Json<User>, ApiError> {
    let id: UserId = parse_id("user", &user)?;

    let user = state.tenancy.revoke_user(&caller, id).await?;

    tracing::info!(user.id = %user.id, "user revoked");
    Ok(Json(user))
}
