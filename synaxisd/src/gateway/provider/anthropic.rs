//! Provider for Anthropic's Messages API. Chat completion requests are translated into
//! messages requests, and responses and stream events back into the OpenAI format.

use async_trait::async_trait;

use super::openai::SetupError;
use super::{ChatRequest, ChatResponse, Provider, ProviderError};
use crate::config::UpstreamConfig;

#[derive(Debug)]
pub struct AnthropicProvider {}

impl AnthropicProvider {
    pub fn new(
        _name: &str,
        _config: &UpstreamConfig,
        _env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        Ok(Self {})
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn chat_completions(&self, _request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        // TODO: the translation to the Messages API is not written yet.
        Err(ProviderError::InvalidResponse(
            "the Anthropic provider is not implemented yet".to_owned(),
        ))
    }
}
