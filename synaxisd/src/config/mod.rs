//! Typed daemon configuration: a TOML file, then `SYNAXIS_<SECTION>__<KEY>` environment
//! overrides, then validation of the rules that span several keys. Every error names the key.

mod money;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use rust_decimal::Decimal;
use serde::Deserialize;
use synaxis_shared::{Jurisdiction, RegionId};
use url::Url;

pub use money::deserialize_money;

/// Prefix of the environment variables that override config keys. A double underscore
/// separates the levels: `SYNAXIS_SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "SYNAXIS_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} not found: pass --config PATH or create it")]
    Missing { path: PathBuf },
    /// One line per problem, each naming its key and where the value came from.
    #[error("invalid config: {}", .0.join("; "))]
    Parse(Vec<String>),
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    pub database: DatabaseConfig,
    /// Every region of the service, keyed by region id; this daemon serves `server.region`.
    pub regions: BTreeMap<RegionId, RegionConfig>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Public model names and where and at what price they are served.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The region this daemon serves.
    pub region: RegionId,
    pub listen: SocketAddr,
    /// Directory of the embedded database and of the secrets generated on first start.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Seconds that in-flight requests get to finish after SIGTERM.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Largest accepted request body, in bytes; larger ones get 413 before they are read.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    crate::server::MAX_BODY_BYTES
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

fn default_shutdown_timeout_secs() -> u64 {
    30
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `synaxisd=debug,sqlx=warn`.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` for the embedded database, `postgres://...` for PostgreSQL.
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    10
}

impl DatabaseConfig {
    /// Returns whether this is the embedded single-node database.
    pub fn is_embedded(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The region's part of its keys' visible prefix: `sk-syn-<key_prefix>-...`.
    pub key_prefix: String,
    pub jurisdiction: Jurisdiction,
    /// Base URL of the region's peer API.
    pub peer_url: Url,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    /// Base URL of the provider's API, up to and including its version, such as
    /// `https://api.openai.com/v1`.
    pub base_url: Url,
    /// Name of the environment variable with the provider's API key. Without one, requests
    /// carry no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Upper bound on a whole upstream call, streams included.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

fn default_connect_timeout_secs() -> u64 {
    10
}

fn default_request_timeout_secs() -> u64 {
    600
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// Any API that speaks OpenAI's chat completions wire format.
    Openai,
    /// Anthropic's Messages API; chat completions are translated to and from it.
    Anthropic,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name of an entry in `[upstreams]`.
    pub upstream: String,
    /// Model name sent upstream; the public name when absent.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// USD per million prompt tokens, written as a string such as `"0.15"`.
    #[serde(deserialize_with = "deserialize_money")]
    pub input_per_million: Decimal,
    /// USD per million completion tokens, written as a string such as `"0.60"`.
    #[serde(deserialize_with = "deserialize_money")]
    pub output_per_million: Decimal,
}

impl ModelConfig {
    pub fn upstream_model<'a>(&'a self, public_name: &'a str) -> &'a str {
        self.upstream_model.as_deref().unwrap_or(public_name)
    }
}

fn check_http_url(key: &str, url: &Url) -> Result<(), ConfigError> {
    if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("`{url}` is not an http or https URL with a host"),
        ))
    }
}

/// Renders figment's errors as `` `key`: problem (in SOURCE) ``.
fn describe(errors: figment::Error) -> ConfigError {
    let lines = errors
        .into_iter()
        .map(|error| {
            let key = error.path.join(".").to_lowercase();
            let source = match error
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.source.as_ref())
            {
                Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                _ if error
                    .metadata
                    .as_ref()
                    .is_some_and(|metadata| metadata.name.contains("environment")) =>
                {
                    let variable = error.path.join("__").to_uppercase();
                    format!(" (from environment variable {ENV_PREFIX}{variable})")
                }
                _ => String::new(),
            };
            if key.is_empty() {
                format!("{}{source}", error.kind)
            } else {
                format!("`{key}`: {}{source}", error.kind)
            }
        })
        .collect();
    ConfigError::Parse(lines)
}

impl Config {
    /// Loads the file at `path`, applies `SYNAXIS_*` overrides from the process environment,
    /// and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing {
                path: path.to_owned(),
            });
        }
        Self::with_overrides(Figment::new().merge(Toml::file_exact(path)))
    }

    /// Loads the built-in default `text`, then applies `SYNAXIS_*` overrides and validates.
    pub fn load_builtin(text: &str) -> Result<Self, ConfigError> {
        Self::with_overrides(Figment::new().merge(Toml::string(text)))
    }

    fn with_overrides(base: Figment) -> Result<Self, ConfigError> {
        // Only variables with a level separator are overrides; others such as
        // SYNAXIS_KEY_PEPPER are read by their own modules.
        let overrides = Env::prefixed(ENV_PREFIX)
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let config: Config = base.merge(overrides).extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a config from TOML text without environment overrides.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.regions.contains_key(&self.server.region) {
            let known: Vec<&str> = self.regions.keys().map(RegionId::as_str).collect();
            return Err(ConfigError::invalid(
                "server.region",
                format!(
                    "region `{}` is not in the [regions] table; configured regions: {}",
                    self.server.region,
                    known.join(", ")
                ),
            ));
        }

        let mut prefixes = BTreeMap::new();
        for (id, region) in &self.regions {
            let key = format!("regions.{id}.key_prefix");
            let prefix = &region.key_prefix;
            let valid = (2..=8).contains(&prefix.len())
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !valid {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{prefix}` must be 2 to 8 lowercase letters or digits, such as `eu`"),
                ));
            }
            if let Some(other) = prefixes.insert(prefix.clone(), id) {
                return Err(ConfigError::invalid(
                    key,
                    format!("prefix `{prefix}` is already used by region `{other}`"),
                ));
            }
        }

        let url = &self.database.url;
        let scheme_ok = url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://");
        if !scheme_ok {
            return Err(ConfigError::invalid(
                "database.url",
                "use `sqlite://PATH` for the embedded database or `postgres://...` for PostgreSQL",
            ));
        }

        if self.server.shutdown_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "server.shutdown_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                format!(
                    "{} is below the minimum of 1024 bytes",
                    self.server.max_body_bytes
                ),
            ));
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("server.data_dir", "the path is empty"));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }

        for (id, region) in &self.regions {
            check_http_url(&format!("regions.{id}.peer_url"), &region.peer_url)?;
        }

        for (name, upstream) in &self.upstreams {
            check_http_url(&format!("upstreams.{name}.base_url"), &upstream.base_url)?;
            if upstream.connect_timeout_secs == 0 || upstream.request_timeout_secs == 0 {
                return Err(ConfigError::invalid(
                    format!("upstreams.{name}"),
                    "connect_timeout_secs and request_timeout_secs must be at least 1",
                ));
            }
            if let Some(variable) = &upstream.api_key_env {
                let valid = !variable.is_empty()
                    && variable
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(ConfigError::invalid(
                        format!("upstreams.{name}.api_key_env"),
                        format!(
                            "`{variable}` is not an environment variable name such as `OPENAI_API_KEY`"
                        ),
                    ));
                }
            }
        }

        for (name, model) in &self.models {
            if !self.upstreams.contains_key(&model.upstream) {
                return Err(ConfigError::invalid(
                    format!("models.{name}.upstream"),
                    format!(
                        "upstream `{}` is not in the [upstreams] table",
                        model.upstream
                    ),
                ));
            }
            for (field, price) in [
                ("input_per_million", model.input_per_million),
                ("output_per_million", model.output_per_million),
            ] {
                if price.is_sign_negative() {
                    return Err(ConfigError::invalid(
                        format!("models.{name}.{field}"),
                        format!("price `{price}` is negative"),
                    ));
                }
            }
        }

        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid("log.level", error.to_string()));
        }
        Ok(())
    }

    /// Returns the config of the region this daemon serves.
    pub fn home_region(&self) -> &RegionConfig {
        // validate() checked that server.region is a key of the table.
        &self.regions[&self.server.region]
    }

    /// Finds the region whose keys carry `prefix`.
    pub fn region_by_key_prefix(&self, prefix: &str) -> Option<&RegionId> {
        self.regions
            .iter()
            .find(|(_, region)| region.key_prefix == prefix)
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests;
