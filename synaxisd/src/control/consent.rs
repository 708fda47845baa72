//! `/control/v1/users/{user}/consent`: a user's consent to cross-border processing, read by the
//! user and the org's managers, and recorded by the operator on the user's documented request.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use synaxis_shared::UserId;
use synaxis_shared::compliance::{ConsentScope, ConsentState, GrantConsentRequest};

use super::ControlCaller;
use super::extract::{JsonBody, QueryParams, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;

/// The `?scope=` of a consent route; `cross_border_failover` when absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    scope: Option<ConsentScope>,
}

impl ScopeQuery {
    pub fn scope(&self) -> ConsentScope {
        self.scope.unwrap_or(ConsentScope::CrossBorderFailover)
    }
}

pub async fn show(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
    QueryParams(query): QueryParams<ScopeQuery>,
) -> Result<Json<ConsentState>, ApiError> {
    let user_id: UserId = parse_id("user", &user)?;
    let scope = query.scope();
    Ok(Json(state.tenancy.consent(&caller, user_id, scope).await?))
}

pub async fn grant(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
    JsonBody(request): JsonBody<GrantConsentRequest>,
) -> Result<Json<ConsentState>, ApiError> {
    let user_id: UserId = parse_id("user", &user)?;
    let consent = state
        .tenancy
        .grant_consent(&caller, user_id, request)
        .await?;
    tracing::info!(user.id = %user_id, scope = consent.scope.as_str(), "consent granted");
    Ok(Json(consent))
}

pub async fn withdraw(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
    QueryParams(query): QueryParams<ScopeQuery>,
) -> Result<Json<ConsentState>, ApiError> {
    let user_id: UserId = parse_id("user", &user)?;
    let scope = query.scope();
    let consent = state
        .tenancy
        .withdraw_consent(&caller, user_id, scope)
        .await?;
    tracing::info!(user.id = %user_id, scope = scope.as_str(), "consent withdrawn");
    Ok(Json(consent))
}
