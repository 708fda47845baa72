//! `POST /v1/chat/completions`, `POST /v1/completions` and `POST /v1/embeddings`, streaming over
//! SSE and not. The three share authentication, validation, routing, usage and records; they
//! differ in the field that carries the input and in where the output text is.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::provider::{ChatRequest, ChatResponse, Endpoint, ProviderError};
use super::record::{Outcome, PendingRecord};
use super::routing;
use super::{InferenceKey, ModelRoute, blocking_policy};
use crate::billing::{Usage, tokens};
use crate::http_error::{ApiError, Locale};
use crate::server::{AppState, RequestContext, UserLocale};
use crate::store::AuthenticatedKey;

/// Header with the USD cost of a non-streaming call.
const COST_HEADER: &str = "x-synaxis-cost-usd";

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, context, key, body, Endpoint::ChatCompletions).await
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, context, key, body, Endpoint::Completions).await
}

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, context, key, body, Endpoint::Embeddings).await
}

async fn handle(
    state: AppState,
    context: RequestContext,
    key: AuthenticatedKey,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let mut record = state
        .gateway
        .recorder
        .start(&key.key, &context.request_id, endpoint.route());
    let user_locale = UserLocale(key.locale);

    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let error = body_rejection(&rejection, state.max_body_bytes);
            return fail(record, error, user_locale).await;
        }
    };

    let prepared = match prepare(&state, &key, &body, endpoint, &mut record) {
        Ok(prepared) => prepared,
        Err(error) => return fail(record, error, user_locale).await,
    };

    record.set_prompt_estimate(prompt_estimate(endpoint, &prepared.upstream_body));
    let request = ChatRequest {
        body: prepared.upstream_body,
        stream: prepared.stream,
    };
    let upstream_started = Instant::now();
    let gateway = &state.gateway;
    let upstream_call = routing::call(
        &prepared.route.deployments,
        endpoint,
        request,
        &gateway.routing,
        &state.metrics,
    );
    let result = tokio::select! {
        result = upstream_call => result,
        () = state.shutdown.cancelled() => {
            return fail(record, ApiError::ShuttingDown, user_locale).await;
        }
    };
    let upstream_seconds = upstream_started.elapsed().as_secs_f64();
    let (response, deployment) = match result {
        Ok(answer) => answer,
        Err(error) => return fail(record, upstream_error(error), user_locale).await,
    };
    let mut record = record;
    record.set_prices(deployment.prices);

    let response = match response {
        ChatResponse::Complete(body) => complete(record, body).await,
        ChatResponse::Stream(chunks) => stream(
            record,
            chunks,
            prepared.client_wants_usage,
            context.locale,
            state.shutdown.clone(),
        ),
    };
    let total_seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .observe_latency(endpoint.route(), total_seconds, upstream_seconds);
    response
}

fn body_rejection(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge { limit }
    } else {
        ApiError::InvalidRequest {
            param: None,
            message: format!(
                "the request body could not be read: {}",
                rejection.body_text()
            ),
        }
    }
}

/// A validated request, ready to go upstream.
struct Prepared {
    route: Arc<ModelRoute>,
    upstream_body: Map<String, Value>,
    stream: bool,
    client_wants_usage: bool,
}

fn prepare(
    state: &AppState,
    key: &AuthenticatedKey,
    body: &[u8],
    endpoint: Endpoint,
    record: &mut PendingRecord,
) -> Result<Prepared, ApiError> {
    let body = parse_body(body)?;

    let model = match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "model",
                "`model` must be a non-empty string",
            ));
        }
        None => return Err(ApiError::invalid("model", "`model` is required")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(ApiError::invalid("stream", "`stream` must be a boolean")),
    };
    record.set_model(&model, stream);

    check_input(&body, endpoint, stream)?;

    let route = state
        .gateway
        .model(&model)
        .cloned()
        .ok_or_else(|| ApiError::ModelNotFound(model.clone()))?;
    if let Some(policy) = blocking_policy(key, &route.name) {
        return Err(ApiError::ModelNotAllowed {
            model: route.name.clone(),
            policy,
        });
    }

    let client_wants_usage = body
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Prepared {
        route,
        upstream_body: body,
        stream,
        client_wants_usage,
    })
}

/// Checks the field that carries the endpoint's input: `messages` for chat completions,
/// `prompt` for completions, `input` for embeddings, which do not stream.
fn check_input(
    body: &Map<String, Value>,
    endpoint: Endpoint,
    stream: bool,
) -> Result<(), ApiError> {
    let field = match endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
    };
    let valid = match (endpoint, body.get(field)) {
        (_, None) => return Err(ApiError::invalid(field, format!("`{field}` is required"))),
        (Endpoint::ChatCompletions, Some(Value::Array(messages))) => !messages.is_empty(),
        (Endpoint::ChatCompletions, Some(_)) => {
            return Err(ApiError::invalid(
                field,
                "`messages` must be a non-empty array",
            ));
        }
        (_, Some(Value::String(_) | Value::Array(_))) => true,
        (_, Some(_)) => false,
    };
    if !valid {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be a non-empty string or array"),
        ));
    }
    if endpoint == Endpoint::Embeddings && stream {
        return Err(ApiError::invalid("stream", "embeddings do not stream"));
    }
    Ok(())
}

/// Counts the tokens of a request's input with the tokenizer.
fn prompt_estimate(endpoint: Endpoint, body: &Map<String, Value>) -> i64 {
    match endpoint {
        Endpoint::ChatCompletions => tokens::count_messages(body.get("messages")),
        Endpoint::Completions | Endpoint::Embeddings => {
            let field = if endpoint == Endpoint::Completions {
                "prompt"
            } else {
                "input"
            };
            let mut text = String::new();
            match body.get(field) {
                Some(Value::String(input)) => text.push_str(input),
                Some(Value::Array(items)) => {
                    for item in items {
                        if let Value::String(input) = item {
                            text.push_str(input);
                        }
                    }
                }
                _ => {}
            }
            tokens::count(&text)
        }
    }
}

/// Parses the body as a JSON object, naming what is wrong when it is not one.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if let Err(error) = std::str::from_utf8(body) {
        return Err(ApiError::InvalidRequest {
            param: None,
            message: format!(
                "the request body is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ),
        });
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidRequest {
            param: None,
            message: "the request body must be a JSON object".to_owned(),
        }),
        Err(error) => Err(ApiError::InvalidRequest {
            param: None,
            message: format!("the request body is not valid JSON: {error}"),
        }),
    }
}

fn upstream_error(error: ProviderError) -> ApiError {
    match error {
        ProviderError::Timeout => ApiError::UpstreamTimeout,
        ProviderError::Unsupported(message) => ApiError::InvalidRequest {
            param: Some("model".to_owned()),
            message,
        },
        ProviderError::Status { status, message } if matches!(status, 400 | 404 | 422) => {
            ApiError::UpstreamRejected {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            }
        }
        other => ApiError::Upstream(other.to_string()),
    }
}

async fn fail(record: PendingRecord, error: ApiError, user_locale: UserLocale) -> Response {
    record.finish(Outcome::failed(error.status(), error.code()));
    let mut response = error.into_response();
    response.extensions_mut().insert(user_locale);
    response
}

async fn complete(mut record: PendingRecord, body: Value) -> Response {
    let usage = match usage_of(&body) {
        Some(reported) => reported,
        None => {
            let mut text = String::new();
            tokens::collect_completion(&body, &mut text);
            record.push_delivered(&text);
            record.counted_usage()
        }
    };
    let cost = record.cost_of(usage);
    record.finish(Outcome {
        status: StatusCode::OK,
        error_code: None,
        usage,
        cost_usd: cost,
    });

    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&cost.normalize().to_string()) {
        response.headers_mut().insert(COST_HEADER, value);
    }
    response
}

/// Streams the upstream's chunks to the client as SSE. The upstream's usage chunk is read for
/// the record and forwarded only when the client requested it. The record is finished before the
/// final `[DONE]` and stored by the record writer shortly after.
fn stream(
    mut record: PendingRecord,
    mut chunks: BoxStream<'static, Result<Value, ProviderError>>,
    client_wants_usage: bool,
    locale: Locale,
    shutdown: CancellationToken,
) -> Response {
    let events = async_stream::stream! {
        let mut usage = None;
        let mut failure = None;

        loop {
            let next = tokio::select! {
                next = chunks.next() => next,
                () = shutdown.cancelled() => {
                    failure = Some(ApiError::ShuttingDown);
                    break;
                }
            };
            let Some(chunk) = next else { break };
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    failure = Some(upstream_error(error));
                    break;
                }
            };
            if let Some(reported) = usage_of(&chunk) {
                usage = Some(reported);
            }
            let mut delivered = String::new();
            tokens::collect_delta(&chunk, &mut delivered);
            record.push_delivered(&delivered);
            if !client_wants_usage {
                if is_usage_only(&chunk) {
                    continue;
                }
                if let Value::Object(fields) = &mut chunk {
                    fields.remove("usage");
                }
            }
            yield Ok::<Bytes, Infallible>(sse_data(&chunk.to_string()));
        }

        // A reported usage, an explicit zero included, wins over the tokenizer's count.
        let usage = usage.unwrap_or_else(|| record.counted_usage());
        let cost = record.cost_of(usage);
        match failure {
            None => {
                record.finish(Outcome { status: StatusCode::OK, error_code: None, usage, cost_usd: cost });
                yield Ok(sse_data("[DONE]"));
            }
            Some(error) => {
                tracing::warn!(%error, "stream ended early");
                record.finish(Outcome { status: error.status(), error_code: Some(error.code()), usage, cost_usd: cost });
                let body = serde_json::to_string(&error.body(locale)).unwrap_or_default();
                yield Ok(sse_data(&body));
            }
        }
    };

    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| ApiError::Internal.into_response())
}

fn sse_data(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// Reads the `usage` object of a completion or chunk; `None` when absent or null.
fn usage_of(body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?.as_object()?;
    let count = |field: &str| usage.get(field).and_then(Value::as_i64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
    })
}

/// Returns whether a chunk exists only to report usage: a usage object and no choices.
fn is_usage_only(chunk: &Value) -> bool {
    let no_choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    no_choices && chunk.get("usage").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn usage_only_chunk_is_detected() {
        let usage_chunk =
            json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}});
        let content_chunk = json!({"choices": [{"delta": {"content": "hi"}}], "usage": null});
        assert!(is_usage_only(&usage_chunk));
        assert!(!is_usage_only(&content_chunk));
        assert_eq!(usage_of(&content_chunk), None);
        assert_eq!(
            usage_of(&usage_chunk),
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2
            })
        );
    }

    #[test]
    fn body_errors_name_the_problem() {
        let invalid_utf8 = parse_body(b"{\"model\": \"\xff\"}").expect_err("invalid UTF-8");
        assert!(invalid_utf8.to_string().contains("UTF-8"), "{invalid_utf8}");
        let not_json = parse_body(b"{\"model\": ").expect_err("truncated JSON");
        assert!(
            not_json.to_string().contains("not valid JSON"),
            "{not_json}"
        );
        let not_object = parse_body(b"[1]").expect_err("array body");
        assert!(
            not_object.to_string().contains("JSON object"),
            "{not_object}"
        );
    }
}
