//! Virtual key routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use synaxis_shared::api::{CreateKeyRequest, CreatedKey, Key, List};
use synaxis_shared::{KeyId, OrgId, UserId};

use super::extract::{JsonBody, QueryParams, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::store::KeyFilter;

/// Creates a key; the response is the only place its secret appears.
pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let created = state.tenancy.create_key(request).await?;

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
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<Key>>, ApiError> {
    let filter = KeyFilter {
        org_id: query.org_id,
        user_id: query.user_id,
    };
    let data = state.tenancy.list_keys(&filter).await?;
    Ok(Json(List { data }))
}

pub async fn show(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Key>, ApiError> {
    let id: KeyId = parse_id("key", &key)?;
    Ok(Json(state.tenancy.store().get_key(id).await?))
}

/// Revokes a key; it stops authenticating at once.
pub async fn revoke(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Key>, ApiError> {
    let id: KeyId = parse_id("key", &key)?;

    let key = state.tenancy.revoke_key(id).await?;

    tracing::info!(key.id = %key.id, "key revoked");
    Ok(Json(key))
}
