//! The control API (`/control/v1/...`): organizations, users and keys, guarded by the operator
//! token.

mod extract;
mod keys;
mod orgs;
mod users;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::gateway::auth::bearer_token;
use crate::http_error::ApiError;
use crate::server::AppState;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/control/v1/orgs", post(orgs::create).get(orgs::list))
        .route("/control/v1/orgs/{org}", get(orgs::show))
        .route("/control/v1/orgs/{org}/revoke", post(orgs::revoke))
        .route("/control/v1/users", post(users::create).get(users::list))
        .route("/control/v1/users/{user}", get(users::show))
        .route("/control/v1/users/{user}/revoke", post(users::revoke))
        .route("/control/v1/keys", post(keys::create).get(keys::list))
        .route("/control/v1/keys/{key}", get(keys::show))
        .route("/control/v1/keys/{key}/revoke", post(keys::revoke))
        .route_layer(middleware::from_fn_with_state(state, require_operator))
}

/// Admits requests that carry the operator token, compared in constant time.
async fn require_operator(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let expected = state.operator_token.expose_secret().as_bytes();
    let presented = bearer_token(request.headers()).map(str::as_bytes);
    let valid = presented.is_some_and(|token| bool::from(token.ct_eq(expected)));
    if !valid {
        tracing::info!("control request with a missing or invalid operator token rejected");
        return ApiError::InvalidOperatorToken.into_response();
    }
    next.run(request).await
}
