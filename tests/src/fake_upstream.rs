//! A fake upstream provider that speaks OpenAI's and Anthropic's wire formats. It returns a
//! fixed reply with fixed token counts, streaming or not, and keeps the requests it received, so
//! that tests can check what the gateway sent.
//!
//! Endpoints:
//!
//! - `POST /v1/chat/completions`: OpenAI chat completions. Streams send the reply word by word
//!   and a usage chunk when the request sets `stream_options.include_usage`.
//! - `POST /v1/completions`: OpenAI legacy text completions, streaming too.
//! - `POST /v1/embeddings`: OpenAI embeddings, as float arrays or, with
//!   `encoding_format: "base64"`, as base64 of little-endian `f32`s. The values are derived from
//!   the input, so equal inputs get equal vectors.
//! - `POST /v1/messages`: Anthropic's Messages API, streaming as Anthropic's server-sent events.
//!   It rejects requests without `anthropic-version`, `max_tokens` or valid messages with 400.
//! - `GET /v1/models`, and `GET /_fake/requests` with the request bodies received so far.
//!
//! Every `POST` endpoint counts in [`FakeUpstream::received`] and is subject to the failure
//! modes of [`FakeConfig`]: failing the first requests, or every Nth, with an error status,
//! resetting the connection, and cutting streams. A refused connection needs no fake, because it is a port
//! that nothing listens on: tests use `http://127.0.0.1:9/v1`, the discard port, which no
//! test machine serves.
//!
//! With [`FakeConfig::tool_call`] set, a chat completion or message request that offers tools
//! gets a call of that tool, after the reply text unless the reply is empty.

mod anthropic;
mod openai;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Reply, usage, timing and failure modes of the fake upstream.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The assistant's reply; streams send it word by word.
    pub reply: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Wait before the response starts, failures and resets included.
    pub latency: Duration,
    /// Wait between stream chunks.
    pub chunk_delay: Duration,
    /// When set, OpenAI requests must carry `Authorization: Bearer <api_key>` and Anthropic
    /// requests `x-api-key: <api_key>`.
    pub api_key: Option<String>,
    /// Leave `usage` out of every response, as some providers do.
    pub omit_usage: bool,
    /// Report every token count as zero, while still sending the `usage` fields.
    pub zero_usage: bool,
    /// Tool name and input (a JSON object) of a tool call sent in response to a request with
    /// `tools`. Its arguments are streamed in pieces.
    pub tool_call: Option<(String, Value)>,
    /// Number of requests, counted from the first, that fail with `fail_status`.
    pub fail_first: u32,
    /// Status of the failing requests, with an error body in the endpoint's wire format.
    pub fail_status: u16,
    /// When set to N, every Nth request, counted from the first, fails with `fail_status`.
    pub fail_every: Option<u32>,
    /// Close the connection of every request without sending a response.
    pub reset_connection: bool,
    /// Cut every stream after this many server-sent events (`[DONE]` included) by aborting
    /// the connection, so that the stream ends without `[DONE]` or `message_stop`. A count at
    /// or beyond the length of the stream sends the whole stream and then aborts.
    pub cut_after_chunk: Option<usize>,
    /// Wait between the last event sent and the cut of `cut_after_chunk`.
    pub pause_before_cut: Duration,
    /// Length of embedding vectors when the request sets no `dimensions`.
    pub embedding_dimensions: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            reply: "Hello from the fake upstream.".to_owned(),
            prompt_tokens: 11,
            completion_tokens: 7,
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            api_key: None,
            omit_usage: false,
            zero_usage: false,
            tool_call: None,
            fail_first: 0,
            fail_status: 500,
            fail_every: None,
            reset_connection: false,
            cut_after_chunk: None,
            pause_before_cut: Duration::ZERO,
            embedding_dimensions: 8,
        }
    }
}

impl FakeConfig {
    /// Returns the prompt and completion token counts to report.
    fn token_counts(&self) -> (u64, u64) {
        if self.zero_usage {
            (0, 0)
        } else {
            (self.prompt_tokens, self.completion_tokens)
        }
    }
}

/// A request that reached an inference endpoint.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// Path of the endpoint, such as `/v1/messages`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as it arrived.
    pub raw_body: Bytes,
}

#[derive(Clone, Debug)]
struct FakeState {
    config: Arc<FakeConfig>,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
    /// Number of inference requests received so far.
    arrivals: Arc<watch::Sender<usize>>,
}

/// A fake upstream running on a task of the current runtime until dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
    arrivals: Arc<watch::Sender<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts a fake upstream on a free loopback port.
    pub async fn start(config: FakeConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(watch::Sender::new(0));
        let app = router(config, received.clone(), arrivals.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake upstream stopped");
            }
        });
        Ok(Self {
            address,
            received,
            arrivals,
            task,
        })
    }

    /// Base URL for a gateway's upstream config, such as `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// Waits until at least `count` inference requests have arrived; panics after `timeout`,
    /// so that a test fails instead of hanging.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) {
        let mut arrivals = self.arrivals.subscribe();
        let reached = tokio::time::timeout(timeout, arrivals.wait_for(|arrived| *arrived >= count));
        assert!(
            matches!(reached.await, Ok(Ok(_))),
            "the fake upstream received fewer than {count} requests in {timeout:?}"
        );
    }

    /// Returns the bodies of the inference requests received so far, oldest first.
    pub fn received(&self) -> Vec<Value> {
        lock(&self.received)
            .iter()
            .map(|request| request.body.clone())
            .collect()
    }

    /// Returns the inference requests received so far with their paths and headers, oldest
    /// first.
    pub fn received_requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.received).clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the fake upstream on `listener` until the process ends.
pub async fn serve(listener: TcpListener, config: FakeConfig) -> std::io::Result<()> {
    let app = router(
        config,
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(watch::Sender::new(0)),
    );
    axum::serve(listener, app).await
}

fn router(
    config: FakeConfig,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
    arrivals: Arc<watch::Sender<usize>>,
) -> Router {
    let state = FakeState {
        config: Arc::new(config),
        received,
        arrivals,
    };
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/models", get(openai::models))
        .route("/_fake/requests", get(received_bodies))
        .with_state(state)
}

fn lock(received: &Mutex<Vec<ReceivedRequest>>) -> std::sync::MutexGuard<'_, Vec<ReceivedRequest>> {
    received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn received_bodies(State(state): State<FakeState>) -> Json<Vec<Value>> {
    Json(
        lock(&state.received)
            .iter()
            .map(|request| request.body.clone())
            .collect(),
    )
}

/// Wire format of an endpoint, which decides the shape of its error bodies and the header of
/// its API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
}

impl Wire {
    /// Returns an error response in this wire format.
    fn error(self, status: StatusCode, message: &str) -> Response {
        let body = match self {
            Self::OpenAi => {
                let (kind, code) = match status.as_u16() {
                    401 => ("invalid_request_error", json!("invalid_api_key")),
                    429 => ("requests", json!("rate_limit_exceeded")),
                    400..=499 => ("invalid_request_error", Value::Null),
                    _ => ("server_error", Value::Null),
                };
                json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
            }
            Self::Anthropic => {
                let kind = match status.as_u16() {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
        };
        (status, Json(body)).into_response()
    }

    fn check_key(self, config: &FakeConfig, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let Some(expected) = &config.api_key else {
            return Ok(());
        };
        let presented = match self {
            Self::OpenAi => headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer ")),
            Self::Anthropic => headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok()),
        };
        if presented == Some(expected.as_str()) {
            return Ok(());
        }
        let message = match self {
            Self::OpenAi => "Incorrect API key provided",
            Self::Anthropic => "invalid x-api-key",
        };
        Err(Box::new(self.error(StatusCode::UNAUTHORIZED, message)))
    }
}

/// Runs the steps that every inference endpoint shares, in order: the API key check, JSON
/// parsing, recording the request, the latency, and the failure modes. Returns the request
/// body, or the response that ends the request.
async fn accept_request(
    state: &FakeState,
    wire: Wire,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Box<Response>> {
    wire.check_key(&state.config, headers)?;

    let request: Value = serde_json::from_slice(body).map_err(|error| {
        Box::new(wire.error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {error}")))
    })?;

    lock(&state.received).push(ReceivedRequest {
        path: path.to_owned(),
        headers: headers.clone(),
        body: request.clone(),
        raw_body: body.clone(),
    });
    let mut position = 0;
    state.arrivals.send_modify(|arrived| {
        position = *arrived;
        *arrived += 1;
    });

    pause(state.config.latency).await;

    if state.config.reset_connection {
        return Err(Box::new(reset_response()));
    }
    let fail_first = state.config.fail_first;
    let status =
        StatusCode::from_u16(state.config.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if u32::try_from(position).is_ok_and(|position| position < fail_first) {
        let message = format!(
            "the fake upstream fails the first {fail_first} requests; this is request {}",
            position + 1
        );
        return Err(Box::new(wire.error(status, &message)));
    }
    if let Some(every) = state.config.fail_every
        && every > 0
        && (position + 1) % usize::try_from(every).unwrap_or(usize::MAX) == 0
    {
        let message = format!(
            "the fake upstream fails every {every}th request; this is request {}",
            position + 1
        );
        return Err(Box::new(wire.error(status, &message)));
    }

    Ok(request)
}

/// Returns a response whose body fails before its first byte. Hyper then closes the
/// connection without writing the buffered status line and headers, so that the client sees
/// the connection closed before any response.
fn reset_response() -> Response {
    let body = stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the fake upstream resets the connection",
        ))
    });
    Response::new(Body::from_stream(body))
}

/// Returns a `text/event-stream` response of `events`, cut after `cut_after_chunk` events
/// when it is set.
fn sse_response(
    config: &FakeConfig,
    events: impl Stream<Item = Bytes> + Send + 'static,
) -> Response {
    let events = events.map(Ok::<Bytes, std::io::Error>);
    let body = match config.cut_after_chunk {
        None => Body::from_stream(events),
        Some(count) => {
            let pause = config.pause_before_cut;
            let cut = stream::once(async move {
                tokio::time::sleep(pause).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the fake upstream cuts the stream",
                ))
            });
            Body::from_stream(events.take(count).chain(cut))
        }
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Returns a server-sent event with `data` and, when given, an `event` name.
fn sse_event(name: Option<&str>, data: &Value) -> Bytes {
    match name {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// Waits `delay`, and returns at once when it is zero: a zero-length tokio sleep still waits
/// for the next tick of the timer, up to a millisecond.
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Returns the configured tool call when the request offers tools and does not forbid calls.
fn tool_call_for<'a>(config: &'a FakeConfig, request: &Value) -> Option<&'a (String, Value)> {
    let offers_tools = request
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|tools| !tools.is_empty());
    let choice = request.get("tool_choice");
    let forbids_calls = choice.and_then(Value::as_str) == Some("none")
        || choice
            .and_then(|choice| choice.get("type"))
            .and_then(Value::as_str)
            == Some("none");
    if offers_tools && !forbids_calls {
        config.tool_call.as_ref()
    } else {
        None
    }
}

/// Splits text into words that keep their leading spaces, so that the pieces join back to it.
pub fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_whitespace() && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Splits text into pieces of at most `max_chars` characters that join back to it, as
/// providers stream tool call arguments.
pub fn split_pieces(text: &str, max_chars: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(max_chars.max(1))
        .map(|piece| piece.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests;
