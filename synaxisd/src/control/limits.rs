//! Limit set routes of organizations, teams and users.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use synaxis_shared::limits::LimitSet;
use synaxis_shared::{TeamId, UserId};

use super::ControlCaller;
use super::extract::parse_id;
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::tenancy::TenancyError;
use crate::tenancy::limits::{LIMITS_PREFIX, LimitsOf};

/// A limit set request body, or the error that names its bad field by its path under
/// `limits`, such as `limits.requests.per_week`. An invalid body reaches the domain call,
/// which audits it.
#[derive(Debug)]
pub struct LimitSetBody(Result<LimitSet, TenancyError>);

impl<S: Send + Sync> FromRequest<S> for LimitSetBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::InvalidRequest {
                param: None,
                message: format!("cannot read the request body: {}", rejection.body_text()),
            })?;
        Ok(Self(parse_limit_set(&bytes)))
    }
}

fn parse_limit_set(bytes: &[u8]) -> Result<LimitSet, TenancyError> {
    let invalid_body = |message: String| TenancyError::invalid(LIMITS_PREFIX, message);
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|error| invalid_body(format!("invalid JSON body: {error}")))?;
    // A struct would also deserialize from an array of its fields in order.
    if !value.is_object() {
        return Err(invalid_body(
            "the body must be a JSON object such as {\"requests\": {\"per_minute\": {\"limit\": 100, \"action\": \"throttle\"}}}".to_owned(),
        ));
    }

    serde_path_to_error::deserialize(value).map_err(|error| {
        let key = match error.path().iter().len() {
            0 => LIMITS_PREFIX.to_owned(),
            _ => format!("{LIMITS_PREFIX}.{}", error.path()),
        };
        let message = format!("invalid limit set at `{key}`: {}", error.inner());
        TenancyError::invalid(key, message)
    })
}

pub async fn show_org(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
) -> Result<Json<LimitSet>, ApiError> {
    let limits = state
        .tenancy
        .get_limits(&caller, LimitsOf::Org(&org))
        .await?;
    Ok(Json(limits))
}

/// Replaces an organization's limit set, which also contains its cap on concurrent requests.
pub async fn set_org(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    LimitSetBody(body): LimitSetBody,
) -> Result<Json<LimitSet>, ApiError> {
    let of = LimitsOf::Org(&org);

    let limits = state.tenancy.set_limits(&caller, of, body).await?;

    tracing::info!(org = %org, "organization limits set");
    Ok(Json(limits))
}

pub async fn show_team(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(team): Path<String>,
) -> Result<Json<LimitSet>, ApiError> {
    let id: TeamId = parse_id("team", &team)?;
    let limits = state
        .tenancy
        .get_limits(&caller, LimitsOf::Team(id))
        .await?;
    Ok(Json(limits))
}

pub async fn set_team(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(team): Path<String>,
    LimitSetBody(body): LimitSetBody,
) -> Result<Json<LimitSet>, ApiError> {
    let id: TeamId = parse_id("team", &team)?;

    let limits = state
        .tenancy
        .set_limits(&caller, LimitsOf::Team(id), body)
        .await?;

    tracing::info!(team.id = %id, "team limits set");
    Ok(Json(limits))
}

pub async fn show_user(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
) -> Result<Json<LimitSet>, ApiError> {
    let id: UserId = parse_id("user", &user)?;
    let limits = state
        .tenancy
        .get_limits(&caller, LimitsOf::User(id))
        .await?;
    Ok(Json(limits))
}

pub async fn set_user(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(user): Path<String>,
    LimitSetBody(body): LimitSetBody,
) -> Result<Json<LimitSet>, ApiError> {
    let id: UserId = parse_id("user", &user)?;

    let limits = state
        .tenancy
        .set_limits(&caller, LimitsOf::User(id), body)
        .await?;

    tracing::info!(user.id = %id, "user limits set");
    Ok(Json(limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_key(body: &str) -> String {
        match parse_limit_set(body.as_bytes()) {
            Err(TenancyError::Invalid { field, .. }) => field,
            other => format!("not an invalid-field error: {other:?}"),
        }
    }

    #[test]
    fn parse_names_unknown_field_by_path() {
        assert_eq!(
            invalid_key(r#"{"requests": {"per_week": {"limit": 1, "action": "block"}}}"#),
            "limits.requests.per_week"
        );
        assert_eq!(
            invalid_key(r#"{"tokens": {"per_day": {"limit": "many", "action": "block"}}}"#),
            "limits.tokens.per_day.limit"
        );
        assert_eq!(invalid_key(r#"{"budget": 5}"#), "limits.budget");
        assert_eq!(invalid_key("[]"), "limits");
        assert_eq!(invalid_key("{} {}"), "limits");
    }

    #[test]
    fn parse_accepts_documented_form() {
        let body = r#"{"concurrent_requests": 20,
                       "requests": {"per_minute": {"limit": 100, "window": "sliding", "action": "throttle"}},
                       "tokens": {"per_month": {"limit": 10000000, "action": "credit_charge"}}}"#;
        let set = parse_limit_set(body.as_bytes()).expect("valid body");
        assert_eq!(set.concurrent_requests, Some(20));
        assert_eq!(set.rules().count(), 2);
        assert!(parse_limit_set(b"{}").expect("empty set").is_empty());
    }
}
