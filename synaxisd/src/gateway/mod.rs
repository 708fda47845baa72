//! The inference API (`/v1/...`): authentication with virtual keys, model resolution, the call
//! to the upstream provider, and the request record.

pub mod admission;
pub mod auth;
pub mod chat;
mod models;
pub mod privacy;
pub mod provider;
pub mod record;
pub mod routing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use crate::billing::budgets::Budgets;
use crate::config::{Config, RoutingConfig, UpstreamKind};
use crate::server::AppState;
use crate::store::AuthenticatedKey;
use crate::tenancy::models as model_policy;
use admission::Admission;
use provider::Provider;
use provider::anthropic::AnthropicProvider;
use provider::openai::{OpenAiProvider, SetupError};
use record::Recorder;
use routing::{Breaker, Deployment};

pub use auth::InferenceKey;

/// A public model and the deployments that serve it.
#[derive(Debug)]
pub struct ModelRoute {
    /// The canonical public name, as written in config.
    pub name: String,
    pub owned_by: String,
    pub deployments: Vec<Arc<Deployment>>,
}

/// Everything the inference routes need besides tenancy.
#[derive(Debug)]
pub struct Gateway {
    /// Routes by lowercase public name, so that model names match case-insensitively.
    models: HashMap<String, Arc<ModelRoute>>,
    /// Lowercase alias to lowercase public name.
    aliases: HashMap<String, String>,
    pub routing: RoutingConfig,
    pub recorder: Recorder,
    pub admission: Admission,
    pub budgets: Arc<Budgets>,
}

impl Gateway {
    pub fn new(
        config: &Config,
        recorder: Recorder,
        admission: Admission,
        budgets: Arc<Budgets>,
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

        let breaker_open_for = Duration::from_secs(config.routing.breaker_open_secs);
        let mut models = HashMap::new();
        for (name, model) in &config.models {
            let mut deployments = Vec::new();
            for deployment in model.deployments() {
                // Config validation checked that every deployment names a configured upstream.
                let Some(provider) = providers.get(deployment.upstream.as_str()) else {
                    continue;
                };
                let upstream_model = deployment.model.clone().unwrap_or_else(|| name.clone());
                deployments.push(Arc::new(Deployment {
                    label: format!("{}/{upstream_model}", deployment.upstream),
                    upstream_model,
                    weight: deployment.weight,
                    priority: deployment.priority,
                    prices: deployment.prices(model.prices()),
                    provider: provider.clone(),
                    breaker: Breaker::new(config.routing.breaker_failures, breaker_open_for),
                }));
            }
            let owned_by = model
                .deployments()
                .first()
                .map(|deployment| deployment.upstream.clone())
                .unwrap_or_default();
            let route = ModelRoute {
                name: name.clone(),
                owned_by,
                deployments,
            };
            models.insert(name.to_lowercase(), Arc::new(route));
        }
        let aliases = config
            .aliases
            .iter()
            .map(|(alias, target)| (alias.to_lowercase(), target.to_lowercase()))
            .collect();

        Ok(Self {
            models,
            aliases,
            routing: config.routing.clone(),
            recorder,
            admission,
            budgets,
        })
    }

    /// Finds a model by public name or alias, in any case. Access is checked by the caller on
    /// the returned route's canonical name.
    pub fn model(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        let name = name.to_lowercase();
        let canonical = self.aliases.get(&name).unwrap_or(&name);
        self.models.get(canonical)
    }

    /// Lists every deployment of every model.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.models
            .values()
            .flat_map(|route| route.deployments.iter())
    }

    /// Returns the public names of every configured model, sorted.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .models
            .values()
            .map(|route| route.name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// Lists the models a key may use, sorted by name.
    pub fn models_for(&self, key: &AuthenticatedKey) -> Vec<&Arc<ModelRoute>> {
        let mut routes: Vec<_> = self
            .models
            .values()
            .filter(|route| blocking_policy(key, &route.name).is_none())
            .collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        routes
    }
}

/// Returns the first policy, of the key, its user's team or its org, that does not admit
/// `model`, the canonical model name; `None` when all admit it.
pub fn blocking_policy(key: &AuthenticatedKey, model: &str) -> Option<&'static str> {
    if !model_policy::admits(&key.key.allowed_models, model) {
        Some("key")
    } else if !model_policy::admits(&key.team_allowed_models, model) {
        Some("team")
    } else if !model_policy::admits(&key.org_allowed_models, model) {
        Some("organization")
    } else {
        None
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route("/v1/embeddings", post(chat::embeddings))
        .route("/v1/models", get(models::list_models))
        .route(
            "/v1/privacy/consent",
            get(privacy::show)
                .post(privacy::grant)
                .delete(privacy::withdraw),
        )
}
