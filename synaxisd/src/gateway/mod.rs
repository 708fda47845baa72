//! The inference API (`/v1/...`): authentication with virtual keys, model resolution, the call
//! to the upstream provider, and the request record.

pub mod auth;
mod chat;
mod models;
pub mod provider;
pub mod record;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::config::{Config, ModelConfig, UpstreamKind};
use crate::server::AppState;
use crate::store::AuthenticatedKey;
use crate::tenancy::models as model_policy;
use provider::Provider;
use provider::anthropic::AnthropicProvider;
use provider::openai::{OpenAiProvider, SetupError};
use record::Recorder;

pub use auth::InferenceKey;

/// A public model and the provider that serves it.
#[derive(Debug)]
pub struct ModelRoute {
    /// The canonical public name, as written in config.
    pub name: String,
    pub config: ModelConfig,
    pub provider: Arc<dyn Provider>,
}

/// Everything the inference routes need besides tenancy.
#[derive(Debug)]
pub struct Gateway {
    /// Routes by lowercase public name, so that model names match case-insensitively.
    models: HashMap<String, Arc<ModelRoute>>,
    pub recorder: Recorder,
}

impl Gateway {
    pub fn new(
        config: &Config,
        recorder: Recorder,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        let mut providers: HashMap<&str, Arc<dyn Provider>> = HashMap::new();
        for (name, upstream) in &config.upstreams {
            let provider: Arc<dyn Provider> = match upstream.kind {
                UpstreamKind::Openai => Arc::new(OpenAiProvider::new(name, upstream, env)?),
                UpstreamKind::Anthropic => Arc::new(AnthropicProvider::new(name, upstream, env)?),
            };
            providers.insert(name, provider);
        }

        let mut models = HashMap::new();
        for (name, model) in &config.models {
            // Config validation checked that every model names a configured upstream.
            let Some(provider) = providers.get(model.upstream.as_str()) else {
                continue;
            };
            let route = ModelRoute {
                name: name.clone(),
                config: model.clone(),
                provider: provider.clone(),
            };
            models.insert(name.to_lowercase(), Arc::new(route));
        }

        Ok(Self { models, recorder })
    }

    /// Finds a model by public name, in any case.
    pub fn model(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.models.get(&name.to_lowercase())
    }

    /// Lists the models a key may use, sorted by name.
    pub fn models_for(&self, key: &AuthenticatedKey) -> Vec<&Arc<ModelRoute>> {
        let mut routes: Vec<_> = self
            .models
            .values()
            .filter(|route| key_allows(key, &route.name))
            .collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        routes
    }
}

/// Returns whether the policies of the key, its user's team and its org all admit `model`, the
/// canonical model name.
pub fn key_allows(key: &AuthenticatedKey, model: &str) -> bool {
    model_policy::admits(&key.key.allowed_models, model)
        && model_policy::admits(&key.team_allowed_models, model)
        && model_policy::admits(&key.org_allowed_models, model)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(models::list_models))
}
