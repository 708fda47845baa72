//! Provider for Anthropic's Messages API. Chat completion requests are translated into
//! messages requests, and responses and stream events back into the OpenAI format.
//!
//! `request` translates the request body, `response` a whole message, and `stream` the
//! server-sent events of a streamed message. This module sends the HTTP request.

mod request;
mod response;
mod stream;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::time::Instant;
use url::Url;

use super::http1::{self, Upstream};
use super::openai::SetupError;
use super::{ChatRequest, ChatResponse, Completion, Provider, ProviderError};
use crate::config::UpstreamConfig;

/// Value of the `anthropic-version` header: the version of the Messages API that the
/// translation follows.
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct AnthropicProvider {
    upstream: Arc<Upstream>,
    /// The origin-form path of the Messages API.
    messages_path: Uri,
    /// The headers of every request: the API version and the `x-api-key`, marked sensitive so
    /// that `Debug` does not show it.
    headers: Vec<(HeaderName, HeaderValue)>,
    request_timeout: Duration,
}

impl AnthropicProvider {
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        let api_key = match &config.api_key_env {
            Some(variable) => api_key_header(name, variable, env(variable).map(SecretString::from)),
            None => None,
        };

        let base = config.base_url.as_str().trim_end_matches('/');
        let messages_url = Url::parse(&format!("{base}/messages"))?;
        let messages_path = http1::origin_form(&messages_url)?;
        let mut headers = vec![(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        )];
        if let Some(key) = api_key {
            headers.push((HeaderName::from_static("x-api-key"), key));
        }
        let upstream = Upstream::new(
            &config.base_url,
            Duration::from_secs(config.connect_timeout_secs),
        )?;

        Ok(Self {
            upstream: Arc::new(upstream),
            messages_path,
            headers,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
        })
    }
}

/// Builds the `x-api-key` header from the key in `variable`. Returns `None`, so that requests go
/// out without a key, after logging a warning when the variable is unset or an error when the
/// key contains characters that a header cannot carry.
fn api_key_header(name: &str, variable: &str, key: Option<SecretString>) -> Option<HeaderValue> {
    let Some(key) = key else {
        tracing::warn!(
            upstream = name,
            variable,
            "upstream API key variable is not set; requests go out without a key"
        );
        return None;
    };
    match HeaderValue::from_str(key.expose_secret()) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(value)
        }
        Err(_) => {
            // NOTE: `SetupError` has no variant for an invalid key, so a key with characters
            // that a header cannot carry only logs this error, and the daemon still starts.
            tracing::error!(
                upstream = name,
                variable,
                "upstream API key contains characters that an HTTP header cannot carry; requests go out without a key"
            );
            None
        }
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn chat_completions(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        let mut body: Map<String, Value> =
            serde_json::from_slice(&request.body).map_err(|error| {
                ProviderError::Unsupported(format!(
                    "the request body is not a JSON object: {error}"
                ))
            })?;
        body.insert("model".to_owned(), Value::String(request.model));
        let body = request::translate_request(body, request.stream)?;

        let deadline = Instant::now() + self.request_timeout;
        let body = serde_json::to_vec(&body)
            .map_err(|error| ProviderError::Unsupported(error.to_string()))?;
        let body = http1::post_json(
            &self.upstream,
            self.messages_path.clone(),
            &self.headers,
            body.into(),
            deadline,
        )
        .await?;

        if !request.stream {
            let json = body.collect(deadline).await?;
            let message: Value = serde_json::from_slice(&json).map_err(|error| {
                ProviderError::InvalidResponse(format!(
                    "the upstream response is not valid JSON: {error}"
                ))
            })?;
            let completion = response::translate_response(&message, unix_time())?;
            return Ok(ChatResponse::Complete(Completion::from_value(&completion)));
        }

        let events = super::sse::events(http1::until_deadline(body, deadline));
        Ok(ChatResponse::Stream(stream::translate_stream(
            events,
            unix_time(),
        )))
    }
}

/// Returns the current Unix time in seconds, for the `created` field of completions.
fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_header_is_sensitive() {
        let header = api_key_header("claude", "KEY", Some(SecretString::from("sk-ant-secret")));

        let header = header.expect("a valid key makes a header");
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().ok(), Some("sk-ant-secret"));
        assert!(!format!("{header:?}").contains("sk-ant-secret"));
    }

    #[test]
    fn api_key_header_rejects_line_breaks() {
        let header = api_key_header("claude", "KEY", Some(SecretString::from("sk-ant\nx")));

        assert!(header.is_none());
    }
}
