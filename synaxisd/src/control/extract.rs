//! Extractors whose rejections are OpenAI-shaped errors that name the bad input.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::http_error::ApiError;

/// A JSON request body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::InvalidRequest {
                param: None,
                message: format!("cannot read the request body: {}", rejection.body_text()),
            })?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses a JSON body, naming the field of a value that does not fit in `param`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::InvalidRequest {
                param: None,
                message: format!("the body is not valid JSON: {inner}; send a JSON object"),
            };
        }
        let param = (path != ".").then_some(path);
        let message = match &param {
            Some(field) => format!("invalid value of `{field}`: {inner}"),
            None => format!("invalid JSON body: {inner}"),
        };
        ApiError::InvalidRequest { param, message }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::InvalidRequest {
            param: None,
            message: format!("the body is not valid JSON: {error}; send one JSON object"),
        })?;
    Ok(value)
}

/// Query string parameters.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::InvalidRequest {
        param: None,
        message: format!("invalid query string: {}", rejection.body_text()),
    }
}

/// Parses a path segment as an id, naming the parameter when it is not one.
pub fn parse_id<T: std::str::FromStr>(param: &'static str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid(
            param,
            format!("`{value}` is not a valid {param} id (a UUID)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use synaxis_shared::api::SignupRequest;

    use super::*;

    fn rejection(body: &str) -> (Option<String>, String) {
        match parse_json::<SignupRequest>(body.as_bytes()) {
            Err(ApiError::InvalidRequest { param, message }) => (param, message),
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let (param, message) =
            rejection(r#"{"email": "a@b.test", "org_name": "x", "region": "EU"}"#);
        assert_eq!(param.as_deref(), Some("region"));
        assert!(message.contains("invalid region id `EU`"), "{message}");

        let (param, message) = rejection(r#"{"email": "a@b.test"}"#);
        assert_eq!(param, None);
        assert!(message.contains("missing field `org_name`"), "{message}");

        let (param, message) = rejection(r#"{"email": "#);
        assert_eq!(param, None);
        assert!(
            message.starts_with("the body is not valid JSON"),
            "{message}"
        );

        let (_, message) = rejection(r#"{"email": "a@b.test", "org_name": "x"} trailing"#);
        assert!(
            message.starts_with("the body is not valid JSON"),
            "{message}"
        );
    }
}
