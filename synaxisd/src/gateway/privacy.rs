//! `/v1/privacy/consent`: the key's user reads, gives and withdraws their consent to
//! cross-border processing.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::{Extension, Json};
use synaxis_shared::compliance::{ConsentState, GrantConsentRequest};

use super::InferenceKey;
use crate::control::ScopeQuery;
use crate::control::extract::{JsonBody, QueryParams};
use crate::http_error::ApiError;
use crate::region::Forwarded;
use crate::server::AppState;
use crate::tenancy::Caller;
use crate::tenancy::rbac::{Actor, Member};

/// Builds the caller of the key's user, from the client's address: the one a forwarding peer
/// region reports, or the connection's.
fn caller_of(
    key: &crate::store::AuthenticatedKey,
    address: SocketAddr,
    forwarded: Option<Extension<Forwarded>>,
) -> Caller {
    let client = forwarded
        .and_then(|Extension(forwarded)| forwarded.client_ip)
        .unwrap_or(address.ip());
    Caller {
        actor: Actor::Member(Member {
            user_id: key.key.user_id,
            org_id: key.key.org_id,
            role: key.role,
            team_id: key.team_id,
        }),
        source_ip: Some(client.to_string()),
        justification: None,
    }
}

pub async fn show(
    State(state): State<AppState>,
    InferenceKey(key): InferenceKey,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    forwarded: Option<Extension<Forwarded>>,
    QueryParams(query): QueryParams<ScopeQuery>,
) -> Result<Json<ConsentState>, ApiError> {
    let caller = caller_of(&key, address, forwarded);
    let scope = query.scope();
    Ok(Json(
        state
            .tenancy
            .consent(&caller, key.key.user_id, scope)
            .await?,
    ))
}

pub async fn grant(
    State(state): State<AppState>,
    InferenceKey(key): InferenceKey,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    forwarded: Option<Extension<Forwarded>>,
    JsonBody(request): JsonBody<GrantConsentRequest>,
) -> Result<Json<ConsentState>, ApiError> {
    let caller = caller_of(&key, address, forwarded);
    let consent = state
        .tenancy
        .grant_consent(&caller, key.key.user_id, request)
        .await?;
    tracing::info!(user.id = %key.key.user_id, scope = consent.scope.as_str(), "consent granted");
    Ok(Json(consent))
}

pub async fn withdraw(
    State(state): State<AppState>,
    InferenceKey(key): InferenceKey,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    forwarded: Option<Extension<Forwarded>>,
    QueryParams(query): QueryParams<ScopeQuery>,
) -> Result<Json<ConsentState>, ApiError> {
    let caller = caller_of(&key, address, forwarded);
    let scope = query.scope();
    let consent = state
        .tenancy
        .withdraw_consent(&caller, key.key.user_id, scope)
        .await?;
    tracing::info!(user.id = %key.key.user_id, scope = scope.as_str(), "consent withdrawn");
    Ok(Json(consent))
}
