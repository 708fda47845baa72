//! Provider for any API that speaks OpenAI's chat completions format.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use hyper::Uri;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;
use url::Url;

use super::http1::{self, Upstream};
use super::sse;
use super::{
    ChatRequest, ChatResponse, Chunk, Completion, Endpoint, Fields, Provider, ProviderError,
};
use crate::config::UpstreamConfig;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid base URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("invalid base URL: {0}")]
    Upstream(#[from] http1::SetupError),
}

#[derive(Debug)]
pub struct OpenAiProvider {
    upstream: Arc<Upstream>,
    /// The origin-form path of each endpoint, under a base such as `https://api.openai.com/v1`,
    /// indexed by [`Endpoint`].
    paths: [Uri; 3],
    /// The `Authorization` header, marked sensitive so that `Debug` does not show it.
    authorization: Option<HeaderValue>,
    request_timeout: Duration,
}

impl OpenAiProvider {
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        let api_key = match &config.api_key_env {
            Some(variable) => {
                let key = env(variable);
                if key.is_none() {
                    tracing::warn!(
                        upstream = name,
                        variable = variable.as_str(),
                        "upstream API key variable is not set; requests go out without a key"
                    );
                }
                key.map(SecretString::from)
            }
            None => None,
        };
        let authorization = api_key.and_then(|key| {
            let value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()));
            match value {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    Some(value)
                }
                Err(_) => {
                    tracing::error!(
                        upstream = name,
                        "upstream API key contains characters that an HTTP header cannot carry; requests go out without a key"
                    );
                    None
                }
            }
        });

        let base_url = config.base_url.as_str().trim_end_matches('/');
        let path = |endpoint: Endpoint| -> Result<Uri, SetupError> {
            let url = Url::parse(&format!("{base_url}/{}", endpoint.path()))?;
            Ok(http1::origin_form(&url)?)
        };
        let paths = [
            path(Endpoint::ChatCompletions)?,
            path(Endpoint::Completions)?,
            path(Endpoint::Embeddings)?,
        ];
        let upstream = Upstream::new(
            &config.base_url,
            Duration::from_secs(config.connect_timeout_secs),
        )?;

        Ok(Self {
            upstream: Arc::new(upstream),
            paths,
            authorization,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
        })
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat_completions(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.call(Endpoint::ChatCompletions, request).await
    }

    async fn call(
        &self,
        endpoint: Endpoint,
        request: ChatRequest,
    ) -> Result<ChatResponse, ProviderError> {
        let deadline = Instant::now() + self.request_timeout;
        let body = if request.body_model.as_deref() == Some(request.model.as_str()) {
            request.body
        } else {
            Bytes::from(rewrite(&request)?)
        };

        let headers: &[(HeaderName, HeaderValue)] = match &self.authorization {
            Some(authorization) => &[(AUTHORIZATION, authorization.clone())],
            None => &[],
        };
        let path = self.paths[endpoint as usize].clone();
        let body = http1::post_json(&self.upstream, path, headers, body, deadline).await?;

        if !request.stream {
            let json = body.collect(deadline).await?;
            let completion = Completion::parse(json).map_err(|error| {
                ProviderError::InvalidResponse(format!(
                    "the upstream response is not valid JSON: {error}"
                ))
            })?;
            return Ok(ChatResponse::Complete(completion));
        }

        let bytes = http1::until_deadline(body, deadline);
        Ok(ChatResponse::Stream(chunks_from_sse(bytes)))
    }
}

/// Returns the request's body with the upstream's model name and, for a stream, a request for
/// the usage report. The gateway removes that report from the client's stream when the client
/// did not ask for it.
fn rewrite(request: &ChatRequest) -> Result<Vec<u8>, ProviderError> {
    let fields = Fields::parse(&request.body).map_err(|error| {
        ProviderError::Unsupported(format!("the request body is not a JSON object: {error}"))
    })?;
    let model = Value::String(request.model.clone()).to_string();
    let mut replace = vec![("model", model.as_str())];
    let options;
    if request.stream {
        options = with_usage_report(fields.get("stream_options"));
        replace.push(("stream_options", options.as_str()));
    }
    Ok(fields.write_with(&replace))
}

/// Returns the client's `stream_options` with `include_usage` set, as JSON text.
fn with_usage_report(options: Option<&RawValue>) -> String {
    let mut options = options
        .and_then(|options| serde_json::from_str::<Map<String, Value>>(options.get()).ok())
        .unwrap_or_default();
    options.insert("include_usage".to_owned(), Value::Bool(true));
    Value::Object(options).to_string()
}

/// Parses an OpenAI server-sent event stream into its JSON chunks. Events may be split across
/// reads anywhere. A chunk that is not JSON, a read error, or an end before `data: [DONE]`
/// yields an error, after which the stream ends.
pub fn chunks_from_sse<S, B>(bytes: S) -> BoxStream<'static, Result<Chunk, ProviderError>>
where
    S: Stream<Item = Result<B, ProviderError>> + Send + 'static,
    B: AsRef<[u8]> + Send,
{
    let chunks = async_stream::stream! {
        let mut events = std::pin::pin!(sse::events(bytes));
        loop {
            let Some(event) = events.next().await else {
                yield Err(ProviderError::InvalidResponse(
                    "the stream ended before data: [DONE]".to_owned(),
                ));
                break;
            };
            match event.and_then(|event| read_event_data(event.data)) {
                Ok(EventData::Chunk(chunk)) => yield Ok(chunk),
                Ok(EventData::Blank) => {}
                Ok(EventData::Done) => break,
                Err(error) => {
                    yield Err(error);
                    break;
                }
            }
        }
    };
    chunks.boxed()
}

/// The content of one event's `data` in an OpenAI stream.
enum EventData {
    Chunk(Chunk),
    /// Only white space, which is skipped.
    Blank,
    /// `[DONE]`, the end of the stream.
    Done,
}

fn read_event_data(data: String) -> Result<EventData, ProviderError> {
    let trimmed = data.trim();
    if trimmed == "[DONE]" {
        return Ok(EventData::Done);
    }
    if trimmed.is_empty() {
        return Ok(EventData::Blank);
    }
    let data = if trimmed.len() == data.len() {
        data
    } else {
        trimmed.to_owned()
    };
    Chunk::parse(data).map(EventData::Chunk).map_err(|error| {
        ProviderError::InvalidResponse(format!("stream chunk is not JSON: {error}"))
    })
}
