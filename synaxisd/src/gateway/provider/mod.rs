//! Upstream model providers behind one trait. A provider takes an OpenAI-format chat completion
//! request and returns an OpenAI-format response or stream of chunks, whatever its own wire
//! format is.

pub mod anthropic;
mod fields;
pub(crate) mod http1;
pub mod openai;
mod reply;
pub mod sse;

use std::fmt::Debug;
use std::sync::Arc;

pub use fields::Fields;
pub use reply::{Chunk, Completion};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde_json::Value;

/// An inference endpoint of the OpenAI API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions = 0,
    Completions = 1,
    Embeddings = 2,
}

impl Endpoint {
    /// Returns the path under an upstream's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
        }
    }

    /// Returns the gateway's route.
    pub fn route(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

/// A request in the OpenAI format, as the client sent it, for one upstream model.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// The client's body, a JSON object that the gateway has checked.
    pub body: Bytes,
    /// The upstream's name of the model, which replaces the body's `model`.
    pub model: String,
    pub stream: bool,
    /// The body's `model`, set when an OpenAI-compatible upstream of that model name can take
    /// the body unchanged. That holds when its top-level names are unique and a streamed
    /// request already requests the usage report.
    pub body_model: Option<Arc<str>>,
}

pub enum ChatResponse {
    /// A whole `chat.completion` object.
    Complete(Completion),
    /// `chat.completion.chunk` objects in order. The provider requests a usage report, which
    /// arrives as a chunk with a `usage` object (and no choices, in OpenAI's format).
    Stream(BoxStream<'static, Result<Chunk, ProviderError>>),
}

impl Debug for ChatResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete(body) => f.debug_tuple("Complete").field(body).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream timed out")]
    Timeout,
    /// A non-success status; `message` is the upstream's error message when it sent one.
    #[error("the upstream returned status {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the upstream sent an invalid response: {0}")]
    InvalidResponse(String),
    #[error("{0}")]
    Unsupported(String),
}

#[async_trait]
pub trait Provider: Send + Sync + Debug {
    async fn chat_completions(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError>;

    /// Calls `endpoint` with an OpenAI-format request. Providers that speak only chat
    /// completions reject the other endpoints.
    async fn call(
        &self,
        endpoint: Endpoint,
        request: ChatRequest,
    ) -> Result<ChatResponse, ProviderError> {
        match endpoint {
            Endpoint::ChatCompletions => self.chat_completions(request).await,
            other => Err(ProviderError::Unsupported(format!(
                "this model's provider does not serve {}",
                other.route()
            ))),
        }
    }
}

/// Bytes of an upstream error body parsed at most to find its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Returns the innermost cause of an error, such as "connection reset by peer", without the
/// layers of context around it.
pub(super) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Returns the `error.message` of an upstream's error body, or a short note when it has none.
/// OpenAI and Anthropic both put the message there.
pub(super) fn error_message(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(MAX_ERROR_BODY)];
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|body| {
            body.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "no error message".to_owned())
}
