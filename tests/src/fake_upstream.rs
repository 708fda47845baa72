//! A fake OpenAI-compatible upstream. It returns a fixed reply with fixed token counts for every
//! chat completion, streaming or not. It keeps the request bodies it received, so that tests can
//! check what the gateway sent.

use std::convert::Infallible;
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
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Reply, usage and timing of the fake upstream.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The assistant's reply; streams send it word by word.
    pub reply: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Wait before the response starts.
    pub latency: Duration,
    /// Wait between stream chunks.
    pub chunk_delay: Duration,
    /// When set, requests must carry `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Leave `usage` out of every response, as some providers do.
    pub omit_usage: bool,
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
        }
    }
}

#[derive(Clone, Debug)]
struct FakeState {
    config: Arc<FakeConfig>,
    received: Arc<Mutex<Vec<Value>>>,
    /// Number of chat completion requests received so far.
    arrivals: Arc<watch::Sender<usize>>,
}

/// A fake upstream running on a task of the current runtime until dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Value>>>,
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

    /// Waits until at least `count` chat completion requests have arrived; panics after
    /// `timeout`, so that a test fails instead of hanging.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) {
        let mut arrivals = self.arrivals.subscribe();
        let reached = tokio::time::timeout(timeout, arrivals.wait_for(|arrived| *arrived >= count));
        assert!(
            matches!(reached.await, Ok(Ok(_))),
            "the fake upstream received fewer than {count} requests in {timeout:?}"
        );
    }

    /// Returns the chat completion request bodies received so far, oldest first.
    pub fn received(&self) -> Vec<Value> {
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
    received: Arc<Mutex<Vec<Value>>>,
    arrivals: Arc<watch::Sender<usize>>,
) -> Router {
    let state = FakeState {
        config: Arc::new(config),
        received,
        arrivals,
    };
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/_fake/requests", get(received_requests))
        .with_state(state)
}

fn lock(received: &Mutex<Vec<Value>>) -> std::sync::MutexGuard<'_, Vec<Value>> {
    received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn received_requests(State(state): State<FakeState>) -> Json<Vec<Value>> {
    Json(lock(&state.received).clone())
}

async fn models(State(state): State<FakeState>, headers: HeaderMap) -> Response {
    if let Err(response) = check_key(&state.config, &headers) {
        return *response;
    }
    Json(json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}))
        .into_response()
}

fn check_key(config: &FakeConfig, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = &config.api_key else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented == Some(expected.as_str()) {
        return Ok(());
    }
    let body = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key", "param": null}});
    Err(Box::new(
        (StatusCode::UNAUTHORIZED, Json(body)).into_response(),
    ))
}

async fn chat_completions(
    State(state): State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = check_key(&state.config, &headers) {
        return *response;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            let body = json!({"error": {"message": format!("invalid JSON: {error}"), "type": "invalid_request_error", "code": null, "param": null}});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    lock(&state.received).push(request.clone());
    state.arrivals.send_modify(|arrived| *arrived += 1);

    tokio::time::sleep(state.config.latency).await;

    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if stream {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        stream_response(state.config.clone(), model, include_usage)
    } else {
        Json(completion(&state.config, &model)).into_response()
    }
}

fn usage(config: &FakeConfig) -> Value {
    json!({
        "prompt_tokens": config.prompt_tokens,
        "completion_tokens": config.completion_tokens,
        "total_tokens": config.prompt_tokens + config.completion_tokens,
    })
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn completion(config: &FakeConfig, model: &str) -> Value {
    let mut body = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": created(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": config.reply},
            "finish_reason": "stop",
        }],
    });
    if !config.omit_usage {
        body["usage"] = usage(config);
    }
    body
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

fn stream_response(config: Arc<FakeConfig>, model: String, include_usage: bool) -> Response {
    let events = async_stream::stream! {
        let created = created();
        let chunk = |delta: Value, finish: Value| {
            let mut chunk = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            chunk
        };

        yield sse(&chunk(json!({"role": "assistant", "content": ""}), Value::Null));
        for word in split_words(&config.reply) {
            tokio::time::sleep(config.chunk_delay).await;
            yield sse(&chunk(json!({"content": word}), Value::Null));
        }
        yield sse(&chunk(json!({}), json!("stop")));

        if include_usage && !config.omit_usage {
            let usage_chunk = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage(&config),
            });
            yield sse(&usage_chunk);
        }
        yield Ok::<Bytes, Infallible>(Bytes::from_static(b"data: [DONE]\n\n"));
    };

    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn sse(value: &Value) -> Result<Bytes, Infallible> {
    Ok(Bytes::from(format!("data: {value}\n\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_joins_back() {
        let text = "Hello from  the fake upstream.";
        let pieces = split_words(text);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "Hello");
        assert_eq!(pieces.len(), 5);
    }
}
