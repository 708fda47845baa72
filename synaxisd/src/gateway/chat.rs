//! `POST /v1/chat/completions`, `POST /v1/completions` and `POST /v1/embeddings`, streaming over
//! SSE and not. The three share authentication, validation, routing, usage and records; they
//! differ in the field that carries the input and in where the output text is.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::admission::Grant;
use super::provider::{
    ChatRequest, ChatResponse, Chunk, Completion, Endpoint, Fields, ProviderError,
};
use super::record::{Outcome, PendingRecord, input_tokens};
use super::routing;
use super::{InferenceKey, ModelRoute, blocking_policy};
use crate::billing::budgets::worst_case_cost;
use crate::http_error::{ApiError, BudgetExceeded, Locale};
use crate::region::failover::FailedOver;
use crate::server::{AppState, RequestContext, UserLocale};
use crate::store::AuthenticatedKey;

/// Header with the USD cost of a non-streaming call.
const COST_HEADER: &str = "x-synaxis-cost-usd";

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    failover: Option<Extension<FailedOver>>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let failover = failover.map(|Extension(failover)| failover);
    handle(
        state,
        context,
        key,
        failover,
        body,
        Endpoint::ChatCompletions,
    )
    .await
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    failover: Option<Extension<FailedOver>>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let failover = failover.map(|Extension(failover)| failover);
    handle(state, context, key, failover, body, Endpoint::Completions).await
}

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    failover: Option<Extension<FailedOver>>,
    InferenceKey(key): InferenceKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let failover = failover.map(|Extension(failover)| failover);
    handle(state, context, key, failover, body, Endpoint::Embeddings).await
}

/// Serves one request through [`serve`], whose future is boxed: it is several kilobytes, and
/// unboxed it would be copied each time a future that contains it moves.
fn handle(
    state: AppState,
    context: RequestContext,
    key: Arc<AuthenticatedKey>,
    failover: Option<FailedOver>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> BoxFuture<'static, Response> {
    Box::pin(serve(state, context, key, failover, body, endpoint))
}

/// Serves one request. `failover` is set for a user of another region served here during
/// failover. This region then keeps the request's record for the user's home region until that
/// region takes it, and checks the replicated budgets instead of reserving on stored ones.
async fn serve(
    state: AppState,
    context: RequestContext,
    key: Arc<AuthenticatedKey>,
    failover: Option<FailedOver>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let mut record = state
        .gateway
        .recorder
        .start(&key.key, &context.request_id, endpoint.route());
    let replicated_budgets = match failover {
        Some(FailedOver { home, budgets, .. }) => {
            record.hold_for(home);
            budgets
        }
        None => Vec::new(),
    };
    let user_locale = UserLocale(key.locale);

    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let error = body_rejection(&rejection, state.max_body_bytes);
            return fail(record, error, user_locale).await;
        }
    };

    let admission = &state.gateway.admission;
    let plan = admission.plan(&key);
    let has_budgets = !key.budgets.is_empty() || !replicated_budgets.is_empty();
    let counts_tokens = plan.counts_tokens() || has_budgets;
    let prepared = match prepare(&state, &key, &body, endpoint, counts_tokens, &mut record) {
        Ok(prepared) => prepared,
        Err(error) => return fail(record, error, user_locale).await,
    };

    let (input_tokens, output_tokens) = if counts_tokens {
        let output = match endpoint {
            Endpoint::Embeddings => 0,
            _ => admission.output_estimate(prepared.max_tokens),
        };
        (prepared.input_tokens, output)
    } else {
        (0, 0)
    };
    let Some(request_id) = record.request_id() else {
        return fail(record, ApiError::Internal, user_locale).await;
    };
    if has_budgets {
        let prices = prepared
            .route
            .deployments
            .iter()
            .map(|deployment| &deployment.prices);
        let worst_case = worst_case_cost(prices, input_tokens, output_tokens);
        if let Some(budget) = replicated_budgets
            .iter()
            .find(|budget| budget.remaining_usd.is_zero() || budget.remaining_usd < worst_case)
        {
            let error = ApiError::BudgetExceeded(Box::new(BudgetExceeded {
                budget: budget.clone(),
                cost_usd: worst_case,
            }));
            return fail(record, error, user_locale).await;
        }
        if !key.budgets.is_empty() {
            let reserve = state
                .gateway
                .budgets
                .reserve(request_id, &key.budgets, worst_case);
            match Box::pin(reserve).await {
                Ok(Some(hold)) => record.hold_budget(hold),
                Ok(None) => {}
                Err(error) => return fail(record, error, user_locale).await,
            }
        }
    }
    let tokens = if plan.counts_tokens() {
        input_tokens + output_tokens
    } else {
        0
    };
    let grant = if plan.is_empty() {
        Grant::default()
    } else {
        let lease_id = request_id.to_string();
        // Boxed: the limiter's future is large, and requests without limits skip it.
        let admit = Box::pin(admission.admit(plan, tokens, &lease_id));
        let admitted = tokio::select! {
            admitted = admit => admitted,
            () = state.shutdown.cancelled() => Err(ApiError::ShuttingDown),
        };
        match admitted {
            Ok(grant) => grant,
            Err(error) => return fail(record, error, user_locale).await,
        }
    };
    if let Some(reservation) = grant.reservation {
        record.reserve(reservation);
    }

    record.set_prompt(endpoint, body.clone());
    let request = ChatRequest {
        body,
        model: String::new(),
        stream: prepared.stream,
        body_model: prepared.body_model,
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

    let mut response = match response {
        ChatResponse::Complete(body) => complete(record, body).await,
        ChatResponse::Stream(chunks) => stream(
            record,
            chunks,
            prepared.client_wants_usage,
            context.locale,
            state.shutdown.clone(),
        ),
    };
    grant.headers.write_to(response.headers_mut());
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
    stream: bool,
    client_wants_usage: bool,
    /// `max_tokens`, or else `max_completion_tokens`, when the request sets one.
    max_tokens: Option<u64>,
    /// The tokens of the input, counted only when `prepare` was asked to count them.
    input_tokens: u64,
    /// See [`ChatRequest::body_model`].
    body_model: Option<Arc<str>>,
}

/// Checks a request's body and resolves its model, and counts its input tokens when
/// `count_input` is set.
fn prepare(
    state: &AppState,
    key: &AuthenticatedKey,
    body: &[u8],
    endpoint: Endpoint,
    count_input: bool,
    record: &mut PendingRecord,
) -> Result<Prepared, ApiError> {
    let fields = parse_body(body)?;

    let model = match fields.get("model").map(value_of) {
        Some(Value::String(model)) if !model.is_empty() => model,
        Some(_) => {
            return Err(ApiError::invalid(
                "model",
                "`model` must be a non-empty string",
            ));
        }
        None => return Err(ApiError::invalid("model", "`model` is required")),
    };
    let stream = match fields.get("stream").map(value_of) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => stream,
        Some(_) => return Err(ApiError::invalid("stream", "`stream` must be a boolean")),
    };
    record.set_model(&model, stream);

    check_input(&fields, endpoint, stream)?;

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

    let client_wants_usage = fields
        .get("stream_options")
        .map(value_of)
        .and_then(|options| options.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .into_iter()
        .find_map(|field| fields.get(field))
        .map(|value| match value_of(value) {
            Value::Null => Ok(None),
            Value::Number(number) if number.as_u64().is_some() => Ok(number.as_u64()),
            _ => Err(ApiError::invalid(
                "max_tokens",
                "`max_tokens` must be a non-negative integer",
            )),
        })
        .transpose()?
        .flatten();
    let input_tokens = if count_input {
        u64::try_from(input_tokens(endpoint, &fields)).unwrap_or(0)
    } else {
        0
    };
    let body_model =
        (fields.has_unique_names() && (!stream || client_wants_usage)).then(|| Arc::from(model));
    Ok(Prepared {
        route,
        stream,
        client_wants_usage,
        max_tokens,
        input_tokens,
        body_model,
    })
}

/// Reads a field's value, which [`parse_body`] has already checked as JSON.
fn value_of(value: &RawValue) -> Value {
    serde_json::from_str(value.get()).unwrap_or_default()
}

/// Checks the field that carries the endpoint's input: `messages` for chat completions,
/// `prompt` for completions, `input` for embeddings, which do not stream.
fn check_input(fields: &Fields<'_>, endpoint: Endpoint, stream: bool) -> Result<(), ApiError> {
    let field = match endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
    };
    let Some(value) = fields.get(field) else {
        return Err(ApiError::invalid(field, format!("`{field}` is required")));
    };
    // The shape is read without building the values: an array of any items, or a string.
    let items = serde_json::from_str::<Vec<IgnoredAny>>(value.get()).ok();
    let is_string = value.get().starts_with('"');
    match endpoint {
        Endpoint::ChatCompletions if items.as_ref().is_none_or(Vec::is_empty) => {
            return Err(ApiError::invalid(
                field,
                "`messages` must be a non-empty array",
            ));
        }
        Endpoint::Completions | Endpoint::Embeddings if items.is_none() && !is_string => {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` must be a non-empty string or array"),
            ));
        }
        _ => {}
    }
    if endpoint == Endpoint::Embeddings && stream {
        return Err(ApiError::invalid("stream", "embeddings do not stream"));
    }
    Ok(())
}

/// Parses the body as a JSON object, naming what is wrong when it is not one.
pub fn parse_body(body: &[u8]) -> Result<Fields<'_>, ApiError> {
    if let Err(error) = std::str::from_utf8(body) {
        return Err(ApiError::InvalidRequest {
            param: None,
            message: format!(
                "the request body is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ),
        });
    }
    // Only a body that fails is parsed a second time, to distinguish a body that is not JSON
    // from one that is JSON but not an object.
    Fields::parse(body).map_err(|fields_error| {
        let message = match serde_json::from_slice::<&RawValue>(body) {
            Err(error) => format!("the request body is not valid JSON: {error}"),
            Ok(value) if !value.get().starts_with('{') => {
                "the request body must be a JSON object".to_owned()
            }
            Ok(_) => format!("the request body is not valid JSON: {fields_error}"),
        };
        ApiError::InvalidRequest {
            param: None,
            message,
        }
    })
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

/// Finishes the record of a failed request and renders the error. The future is boxed, so that
/// the many error exits of [`serve`] do not each make its future larger.
fn fail(
    record: PendingRecord,
    error: ApiError,
    user_locale: UserLocale,
) -> BoxFuture<'static, Response> {
    Box::pin(async move {
        record
            .finish(Outcome::failed(error.status(), error.code()))
            .await;
        let mut response = error.into_response();
        response.extensions_mut().insert(user_locale);
        response
    })
}

async fn complete(mut record: PendingRecord, completion: Completion) -> Response {
    let usage = match completion.usage {
        Some(reported) => reported,
        None => {
            record.delivered_mut().push_str(&completion.delivered());
            record.counted_usage()
        }
    };
    let cost = record.cost_of(usage);
    record
        .finish(Outcome {
            status: StatusCode::OK,
            error_code: None,
            usage,
            cost_usd: cost,
        })
        .await;

    let mut response = Response::new(Body::from(completion.json));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&cost.normalize().to_string()) {
        headers.insert(COST_HEADER, value);
    }
    response
}

/// Streams the upstream's chunks to the client as SSE. The upstream's usage chunk is read for
/// the record and forwarded only when the client requested it. The record is finished before the
/// final `[DONE]` and stored by the record writer shortly after.
fn stream(
    mut record: PendingRecord,
    mut chunks: BoxStream<'static, Result<Chunk, ProviderError>>,
    client_wants_usage: bool,
    locale: Locale,
    shutdown: CancellationToken,
) -> Response {
    let events = async_stream::stream! {
        let mut usage = None;
        let mut failure = None;

        let mut ended = false;
        while !ended {
            let next = tokio::select! {
                next = chunks.next() => next,
                () = shutdown.cancelled() => {
                    failure = Some(ApiError::ShuttingDown);
                    break;
                }
            };
            // Chunks that are ready together go out in one write, since the server flushes each
            // frame of the body with its own system call. The provider reads the upstream
            // connection in this task, so every chunk already received is ready.
            let mut out = Vec::new();
            let mut next = Some(next);
            while let Some(item) = next.take() {
                let chunk = match item {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Err(error)) => {
                        failure = Some(upstream_error(error));
                        ended = true;
                        break;
                    }
                    Some(Ok(chunk)) => chunk,
                };
                if chunk.usage.is_some() {
                    usage = chunk.usage;
                }
                record.delivered_mut().push_str(&chunk.delivered);
                if client_wants_usage {
                    push_sse_data(&mut out, &chunk.json);
                } else if !chunk.usage_only {
                    push_sse_data(&mut out, &chunk.json_without_usage());
                }
                next = chunks.next().now_or_never();
            }
            if !out.is_empty() {
                yield Ok::<Bytes, Infallible>(Bytes::from(out));
            }
        }

        // A reported usage, an explicit zero included, wins over the tokenizer's count.
        let usage = usage.unwrap_or_else(|| record.counted_usage());
        let cost = record.cost_of(usage);
        match failure {
            None => {
                record.finish(Outcome { status: StatusCode::OK, error_code: None, usage, cost_usd: cost }).await;
                yield Ok(sse_event("[DONE]"));
            }
            Some(error) => {
                tracing::warn!(%error, "stream ended early");
                record.finish(Outcome { status: error.status(), error_code: Some(error.code()), usage, cost_usd: cost }).await;
                let body = serde_json::to_string(&error.body(locale)).unwrap_or_default();
                yield Ok(sse_event(&body));
            }
        }
    };

    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| ApiError::Internal.into_response())
}

/// Returns `data` as one server-sent event.
fn sse_event(data: &str) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    push_sse_data(&mut out, data);
    Bytes::from(out)
}

/// Appends `json` to `out` as one server-sent event.
fn push_sse_data(out: &mut Vec<u8>, json: &str) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

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
