//! Authentication of inference requests by virtual key.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use synaxis_shared::api::Key;

use crate::http_error::ApiError;
use crate::server::AppState;

/// The usable key that authenticated the request.
#[derive(Clone, Debug)]
pub struct InferenceKey(pub Key);

impl FromRequestParts<AppState> for InferenceKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(presented) = bearer_token(&parts.headers) else {
            state.metrics.count_rejected_key();
            tracing::info!(
                reason = "missing",
                "inference request without a key rejected"
            );
            return Err(ApiError::MissingKey);
        };

        match state.tenancy.authenticate(presented).await? {
            Some(key) => Ok(Self(key)),
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
