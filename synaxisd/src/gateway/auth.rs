//! Authentication of inference requests by virtual key.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use synaxis_shared::api::KeyScope;

use crate::http_error::ApiError;
use crate::region::failover::FailedOver;
use crate::server::AppState;
use crate::store::AuthenticatedKey;

/// The usable inference key that authenticated the request, shared with the auth cache.
#[derive(Clone, Debug)]
pub struct InferenceKey(pub Arc<AuthenticatedKey>);

impl FromRequestParts<AppState> for InferenceKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // A request served during failover was authenticated against the key directory replica.
        if let Some(failover) = parts.extensions.get::<FailedOver>() {
            return Ok(Self(failover.key.clone()));
        }
        let Some(presented) = bearer_token(&parts.headers) else {
            state.metrics.count_rejected_key();
            tracing::info!(
                reason = "missing",
                "inference request without a key rejected"
            );
            return Err(ApiError::MissingKey);
        };

        match state.tenancy.authenticate(presented).await? {
            Some(key) if key.key.scope == KeyScope::Inference => Ok(Self(key)),
            Some(key) => {
                tracing::info!(key.id = %key.key.id, "inference request with a management key rejected");
                Err(ApiError::WrongKeyScope {
                    scope: key.key.scope,
                })
            }
            None => {
                state.metrics.count_rejected_key();
                tracing::info!(
                    reason = "invalid",
                    "inference request with an invalid key rejected"
                );
                Err(ApiError::InvalidKey)
            }
        }
    }
}

/// Returns the token of an `Authorization: Bearer TOKEN` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}
