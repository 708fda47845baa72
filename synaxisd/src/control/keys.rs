//! Virtual key routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use synaxis_shared::api::{
    CreateKeyRequest, CreatedKey, Key, List, RotateKeyRequest, UpdateKeyRequest,
};
use synaxis_shared::{KeyId, OrgId, UserId};

use super::ControlCaller;
use super::extract::{JsonBody, QueryParams, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::store::KeyFilter;

/// Creates a key; the response is the only place its secret appears.
pub async fn create(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let created = state.tenancy.create_key(&caller, request).await?;

    tracing::info!(key.id = %created.key.id, user.id = %created.key.user_id, "key created");
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    org_id: Option<OrgId>,
    user_id: Option<UserId>,
}

pub async fn list(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<Key>>, ApiError> {
    let filter = KeyFilter {
        org_id: query.org_id,
        user_id: query.user_id,
    };
    let data = state.tenancy.list_keys(&caller, filter).await?;
    Ok(Json(List { data }))
}

pub async fn show(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(key): Path<String>,
) -> Result<Json<Key>, ApiError> {
    let id: KeyId = parse_id("key", &key)?;
    Ok(Json(state.tenancy.get_key(&caller, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(key): Path<String>,
    JsonBody(request): JsonBody<UpdateKeyRequest>,
) -> Result<Json<Key>, ApiError> {
    let id: KeyId = parse_id("key", &key)?;

    let key = state.tenancy.update_key(&caller, id, request).await?;

    tracing::info!(key.id = %key.id, "key updated");
    Ok(Json(key))
}

/// Gives a key a new secret; the response is the only place the new secret appears.
pub async fn rotate(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(key): Path<String>,
    JsonBody(request): JsonBody<RotateKeyRequest>,
) -> Result<Json<CreatedKey>, ApiError> {
    let id: KeyId = parse_id("key", &key)?;

    let rotated = state.tenancy.rotate_key(&caller, id, request).await?;

    tracing::info!(key.id = %rotated.key.id, "key rotated");
    Ok(Json(rotated))
}

/// Revokes a key; it stops authenticating at once.
pub async fn revoke(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(key): Path<String>,
) -> Result<Json<Key>, ApiError> {
    let id: KeyId = parse_id("key", &key)?;

    let key = state.tenancy.revoke_key(&caller, id).await?;

    tracing::info!(key.id = %key.id, "key revoked");
    Ok(Json(key))
}
