//! Authentication of control calls: the operator token, or a management key whose user's role
//! then limits the call.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use synaxis_shared::api::{JUSTIFICATION_HEADER, KeyScope};

use crate::gateway::auth::bearer_token;
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::tenancy::Caller;
use crate::tenancy::rbac::{Actor, Member};

/// Longest accepted justification, in bytes.
const MAX_JUSTIFICATION_BYTES: usize = 1024;

/// The authenticated caller of a control route.
#[derive(Clone, Debug)]
pub struct ControlCaller(pub Caller);

impl FromRequestParts<AppState> for ControlCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(presented) = bearer_token(&parts.headers) else {
            tracing::info!(
                reason = "missing",
                "control call without credentials rejected"
            );
            return Err(ApiError::InvalidOperatorToken);
        };

        let expected = state.operator_token.expose_secret().as_bytes();
        let actor = if bool::from(presented.as_bytes().ct_eq(expected)) {
            Actor::Operator
        } else {
            member_of_key(state, presented).await?
        };

        let justification = match parts.headers.get(JUSTIFICATION_HEADER) {
            None => None,
            Some(value) => Some(parse_justification(value)?),
        };
        // A call forwarded by a peer region carries the client's address as that region saw it.
        let forwarded = parts
            .extensions
            .get::<crate::region::Forwarded>()
            .and_then(|forwarded| forwarded.client_ip);
        let source_ip = forwarded
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(address)| address.ip())
            })
            .map(|ip| ip.to_string());

        Ok(Self(Caller {
            actor,
            source_ip,
            justification,
        }))
    }
}

async fn member_of_key(state: &AppState, presented: &str) -> Result<Actor, ApiError> {
    let Some(authenticated) = state.tenancy.authenticate(presented).await? else {
        tracing::info!(
            reason = "invalid",
            "control call with invalid credentials rejected"
        );
        return Err(ApiError::InvalidOperatorToken);
    };
    if authenticated.key.scope != KeyScope::Management {
        tracing::info!(key.id = %authenticated.key.id, "control call with an inference key rejected");
        return Err(ApiError::WrongKeyScope {
            scope: authenticated.key.scope,
        });
    }
    Ok(Actor::Member(Member {
        user_id: authenticated.key.user_id,
        org_id: authenticated.key.org_id,
        role: authenticated.role,
        team_id: authenticated.team_id,
    }))
}

fn parse_justification(value: &axum::http::HeaderValue) -> Result<String, ApiError> {
    let text = value.to_str().map_err(|_| {
        ApiError::invalid(
            JUSTIFICATION_HEADER,
            "the justification must be visible ASCII text",
        )
    })?;
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_JUSTIFICATION_BYTES {
        return Err(ApiError::invalid(
            JUSTIFICATION_HEADER,
            format!("the justification must have 1 to {MAX_JUSTIFICATION_BYTES} bytes"),
        ));
    }
    Ok(text.to_owned())
}
