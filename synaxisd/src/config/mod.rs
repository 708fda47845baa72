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
use synaxis_shared::limits::{LimitSet, MAX_AMOUNT};
use synaxis_shared::{Jurisdiction, RegionId};
use url::Url;

pub use money::{deserialize_money, deserialize_optional_money};

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
    /// Other names of models: alias to public model name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub plans: PlansConfig,
    #[serde(default)]
    pub budgets: BudgetsConfig,
    #[serde(default)]
    pub signup: SignupConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub peer: PeerConfig,
    #[serde(default)]
    pub health: HealthConfig,
}

/// The event bus between regions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default)]
    pub bus: BusKind,
    /// First part of every topic name: `<topic_prefix>.<region>.keys`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Seconds between two publications of the whole key directory.
    #[serde(default = "default_republish_interval_secs")]
    pub republish_interval_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            bus: BusKind::default(),
            topic_prefix: default_topic_prefix(),
            republish_interval_secs: default_republish_interval_secs(),
        }
    }
}

fn default_topic_prefix() -> String {
    "synaxis".to_owned()
}

fn default_republish_interval_secs() -> u64 {
    600
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In this process only: the embedded default, a single region.
    #[default]
    Memory,
    /// Each region's Kafka cluster, from `regions.<id>.kafka_brokers`.
    Kafka,
}

/// Calls to other regions: forwarded requests and health probes. Regions authenticate each
/// other with the secret in `SYNAXIS_PEER_SECRET`, which every region shares.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// PEM file of the certificate authorities that peers' certificates chain to; without it,
    /// the public web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_peer_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            connect_timeout_ms: default_peer_connect_timeout_ms(),
        }
    }
}

fn default_peer_connect_timeout_ms() -> u64 {
    2000
}

/// Probes of the peers and of this region's own dependencies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// Failed probes in a row after which a region is down.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// Passed probes in a row after which a region is up.
    #[serde(default = "default_up_after")]
    pub up_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: default_probe_interval_ms(),
            probe_timeout_ms: default_probe_timeout_ms(),
            down_after: default_down_after(),
            up_after: default_up_after(),
        }
    }
}

fn default_probe_interval_ms() -> u64 {
    1000
}

fn default_probe_timeout_ms() -> u64 {
    1000
}

fn default_down_after() -> u32 {
    3
}

fn default_up_after() -> u32 {
    2
}

/// Self-service signup (`POST /control/v1/signup`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupConfig {
    /// Whether this daemon accepts signups; off by default.
    #[serde(default)]
    pub enabled: bool,
    /// A MaxMind country database (GeoLite2-Country or GeoIP2-Country). Without it, a signup
    /// that names no region goes to `default_region`.
    #[serde(default)]
    pub geoip_database: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` names the client, as addresses or CIDR networks. The
    /// header of any other peer is ignored.
    #[serde(default, deserialize_with = "addresses_or_networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Region of the countries that `country_regions` does not list.
    #[serde(default = "default_signup_region")]
    pub default_region: RegionId,
    /// Region by ISO 3166-1 country code, such as `DE = "eu-west-1"`. Without the table, EU and
    /// EEA countries go to `eu-west-1` and Brazil to `sa-east-1`.
    #[serde(default = "default_country_regions")]
    pub country_regions: BTreeMap<String, RegionId>,
    /// The plan that a new org tries, and for how many days.
    #[serde(default = "default_trial_plan")]
    pub trial_plan: String,
    #[serde(default = "default_trial_days")]
    pub trial_days: u32,
}

impl Default for SignupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            geoip_database: None,
            trusted_proxies: Vec::new(),
            default_region: default_signup_region(),
            country_regions: default_country_regions(),
            trial_plan: default_trial_plan(),
            trial_days: default_trial_days(),
        }
    }
}

/// Reads a list of addresses (`10.0.0.1`) and networks (`10.0.0.0/8`); an address is the
/// network of that one address.
fn addresses_or_networks<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let entries: Vec<String> = Deserialize::deserialize(deserializer)?;
    entries
        .iter()
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{entry}` is not an IP address or network such as 10.0.0.1 or 10.0.0.0/8"
                    ))
                })
        })
        .collect()
}

fn default_signup_region() -> RegionId {
    RegionId::from_static("us-east-1")
}

/// Returns the default country table: the EU's 27 members and the other EEA countries
/// (Iceland, Liechtenstein, Norway) to `eu-west-1`, and Brazil to `sa-east-1`.
fn default_country_regions() -> BTreeMap<String, RegionId> {
    const EU_AND_EEA: [&str; 30] = [
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
        "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
    ];
    let mut regions: BTreeMap<String, RegionId> = EU_AND_EEA
        .into_iter()
        .map(|code| (code.to_owned(), RegionId::from_static("eu-west-1")))
        .collect();
    regions.insert("BR".to_owned(), RegionId::from_static("sa-east-1"));
    regions
}

fn default_trial_plan() -> String {
    "pro".to_owned()
}

fn default_trial_days() -> u32 {
    14
}

/// Settings of budget holds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Seconds a request's hold on its budgets lives. A process that stops before settling its
    /// requests leaves holds that any process releases after this time; a request that runs
    /// longer keeps its budgets only for this time, and its cost is still added when it ends.
    #[serde(default = "default_hold_ttl_secs")]
    pub hold_ttl_secs: u64,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            hold_ttl_secs: default_hold_ttl_secs(),
        }
    }
}

/// Longest life of a budget hold: one day, after which the sweeper deletes a released hold
/// whose request never ended.
pub const MAX_HOLD_TTL_SECS: u64 = 86_400;

fn default_hold_ttl_secs() -> u64 {
    900
}

/// The source of the plan catalog, and the schedule of the plan lifecycle.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansConfig {
    /// A TOML plan catalog such as `config/plans.toml`; the catalog built into the binary when
    /// absent.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Seconds between two runs of the plan lifecycle, which ends trials and suspends and
    /// deletes resources past the caps.
    #[serde(default = "default_lifecycle_interval_secs")]
    pub lifecycle_interval_secs: u64,
}

impl Default for PlansConfig {
    fn default() -> Self {
        Self {
            file: None,
            lifecycle_interval_secs: default_lifecycle_interval_secs(),
        }
    }
}

fn default_lifecycle_interval_secs() -> u64 {
    3600
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
    /// TLS 1.3 on the listener; without it the listener speaks plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// The listener's certificate chain and private key, as PEM files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
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
    /// Bootstrap servers of the region's Kafka cluster (`host:port`, comma separated), for
    /// `events.bus = "kafka"`.
    #[serde(default)]
    pub kafka_brokers: Option<String>,
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
    /// Shorthand for a single deployment: the name of an entry in `[upstreams]`. Either this or
    /// `deployments` is given.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Model name sent upstream by the shorthand deployment; the public name when absent.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// The deployments that serve the model, tried by priority and weight.
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
    /// USD per million prompt tokens, written as a string such as `"0.15"`.
    #[serde(deserialize_with = "deserialize_money")]
    pub input_per_million: Decimal,
    /// USD per million completion tokens, written as a string such as `"0.60"`.
    #[serde(deserialize_with = "deserialize_money")]
    pub output_per_million: Decimal,
}

/// One place that serves a public model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Name of an entry in `[upstreams]`.
    pub upstream: String,
    /// Model name sent upstream; the public name when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Share of the traffic among the deployments of the same priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Deployments of a lower priority are tried first; the next priority is the fallback.
    #[serde(default)]
    pub priority: u32,
    /// Price overrides of this deployment, in USD per million tokens.
    #[serde(default, deserialize_with = "deserialize_optional_money")]
    pub input_per_million: Option<Decimal>,
    #[serde(default, deserialize_with = "deserialize_optional_money")]
    pub output_per_million: Option<Decimal>,
}

fn default_weight() -> u32 {
    1
}

/// Prices of a model or deployment, in USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prices {
    pub input_per_million: Decimal,
    pub output_per_million: Decimal,
}

impl ModelConfig {
    /// Returns the model's deployments, with the shorthand `upstream` as a single one.
    pub fn deployments(&self) -> Vec<DeploymentConfig> {
        match &self.upstream {
            Some(upstream) => vec![DeploymentConfig {
                upstream: upstream.clone(),
                model: self.upstream_model.clone(),
                weight: 1,
                priority: 0,
                input_per_million: None,
                output_per_million: None,
            }],
            None => self.deployments.clone(),
        }
    }

    pub fn prices(&self) -> Prices {
        Prices {
            input_per_million: self.input_per_million,
            output_per_million: self.output_per_million,
        }
    }
}

impl DeploymentConfig {
    /// Returns this deployment's prices, falling back to the model's.
    pub fn prices(&self, model: Prices) -> Prices {
        Prices {
            input_per_million: self.input_per_million.unwrap_or(model.input_per_million),
            output_per_million: self.output_per_million.unwrap_or(model.output_per_million),
        }
    }
}

/// Retries, fallback and circuit breaking of upstream calls.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Upstream calls per request at most, over all deployments.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Base of the jittered exponential wait before the next attempt, in milliseconds.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Maximum wait before an attempt, in milliseconds.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Consecutive failures that open a deployment's circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds an open breaker skips its deployment before letting one trial call through.
    #[serde(default = "default_breaker_open_secs")]
    pub breaker_open_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            retry_backoff_ms: default_retry_backoff_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            breaker_failures: default_breaker_failures(),
            breaker_open_secs: default_breaker_open_secs(),
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}

fn default_retry_backoff_ms() -> u64 {
    25
}

fn default_retry_backoff_max_ms() -> u64 {
    1_000
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_open_secs() -> u64 {
    30
}

/// Rate-limit settings: the store of counters and leases, the throttle wait, and the default
/// limit sets of scopes that have none stored.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `memory` keeps counters in this process (a single node); `redis` shares them between
    /// every process of the region.
    #[serde(default)]
    pub store: LimitStoreKind,
    /// URL of the Redis server when `store` is `redis`, such as `redis://127.0.0.1:6379`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key of the limiter.
    #[serde(default = "default_redis_key_prefix")]
    pub redis_key_prefix: String,
    /// Maximum wait for Redis to connect or reply, in milliseconds, before local limits apply.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// Gateway processes of the region. While Redis is unreachable, each process enforces this
    /// share of every limit on its own.
    #[serde(default = "default_processes")]
    pub processes: u64,
    /// Maximum time a request held by a `throttle` limit waits for capacity, in milliseconds.
    #[serde(default = "default_throttle_wait_ms")]
    pub throttle_wait_ms: u64,
    /// Seconds a concurrency lease lives unless renewed. A running request renews it every third
    /// of that, so a crashed process frees its slots within this time.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Output tokens charged to token limits when a request sets no `max_tokens`, until the
    /// response settles the real count.
    #[serde(default = "default_output_tokens_estimate")]
    pub output_tokens_estimate: u64,
    /// Limits of every organization, team and user that has no limit set of its own.
    #[serde(default)]
    pub org: LimitSet,
    #[serde(default)]
    pub team: LimitSet,
    #[serde(default)]
    pub user: LimitSet,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            store: LimitStoreKind::default(),
            redis_url: None,
            redis_key_prefix: default_redis_key_prefix(),
            redis_timeout_ms: default_redis_timeout_ms(),
            processes: default_processes(),
            throttle_wait_ms: default_throttle_wait_ms(),
            lease_ttl_secs: default_lease_ttl_secs(),
            output_tokens_estimate: default_output_tokens_estimate(),
            org: LimitSet::default(),
            team: LimitSet::default(),
            user: LimitSet::default(),
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (prefix, set, for_org) in [
            ("limits.org", &self.org, true),
            ("limits.team", &self.team, false),
            ("limits.user", &self.user, false),
        ] {
            set.validate(prefix, for_org)
                .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        }
        match (self.store, &self.redis_url) {
            (LimitStoreKind::Redis, None) => {
                return Err(ConfigError::invalid(
                    "limits.redis_url",
                    "`store = \"redis\"` needs the server's URL, such as `redis://127.0.0.1:6379`",
                ));
            }
            (LimitStoreKind::Redis, Some(url))
                if !url.starts_with("redis://") && !url.starts_with("rediss://") =>
            {
                return Err(ConfigError::invalid(
                    "limits.redis_url",
                    format!("`{url}` is not a `redis://` or `rediss://` URL"),
                ));
            }
            _ => {}
        }
        for (key, value) in [
            ("limits.redis_timeout_ms", self.redis_timeout_ms),
            ("limits.processes", self.processes),
            ("limits.lease_ttl_secs", self.lease_ttl_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.throttle_wait_ms > 60_000 {
            return Err(ConfigError::invalid(
                "limits.throttle_wait_ms",
                format!("{} is above the maximum of 60000 ms", self.throttle_wait_ms),
            ));
        }
        if self.output_tokens_estimate > MAX_AMOUNT {
            return Err(ConfigError::invalid(
                "limits.output_tokens_estimate",
                format!("must be at most {MAX_AMOUNT}"),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitStoreKind {
    #[default]
    Memory,
    Redis,
}

fn default_redis_key_prefix() -> String {
    "synaxis:".to_owned()
}

fn default_redis_timeout_ms() -> u64 {
    250
}

fn default_processes() -> u64 {
    1
}

fn default_throttle_wait_ms() -> u64 {
    2_000
}

fn default_lease_ttl_secs() -> u64 {
    30
}

fn default_output_tokens_estimate() -> u64 {
    1_024
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

/// Checks a list of Kafka bootstrap servers: `host:port` entries separated by commas.
fn check_brokers(key: &str, brokers: &str) -> Result<(), ConfigError> {
    for entry in brokers.split(',') {
        let entry = entry.trim();
        let valid = entry.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
        });
        if !valid {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "`{entry}` is not host:port with a port from 1 to 65535, such as 127.0.0.1:9092"
                ),
            ));
        }
    }
    Ok(())
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
            if self.events.bus == BusKind::Kafka
                && region.kafka_brokers.as_deref().is_none_or(str::is_empty)
            {
                return Err(ConfigError::invalid(
                    format!("regions.{id}.kafka_brokers"),
                    "missing: events.bus = \"kafka\" needs every region's brokers, such as \"127.0.0.1:9092\"",
                ));
            }
        }
        for (id, region) in &self.regions {
            if let Some(brokers) = &region.kafka_brokers {
                check_brokers(&format!("regions.{id}.kafka_brokers"), brokers)?;
            }
            if region.peer_url.scheme() != "https" {
                return Err(ConfigError::invalid(
                    format!("regions.{id}.peer_url"),
                    format!(
                        "`{}` is not https: peer links carry keys and prompts, so they run over TLS 1.3 only",
                        region.peer_url
                    ),
                ));
            }
        }
        self.validate_regions_links()?;

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
            self.validate_model(name, model)?;
        }
        for (alias, target) in &self.aliases {
            let known = self
                .models
                .keys()
                .any(|name| name.eq_ignore_ascii_case(target));
            if !known {
                return Err(ConfigError::invalid(
                    format!("aliases.{alias}"),
                    format!("model `{target}` is not in the [models] table"),
                ));
            }
            if self
                .models
                .keys()
                .any(|name| name.eq_ignore_ascii_case(alias))
            {
                return Err(ConfigError::invalid(
                    format!("aliases.{alias}"),
                    "an alias cannot have the name of a model",
                ));
            }
        }
        if self.routing.max_attempts == 0 || self.routing.breaker_failures == 0 {
            return Err(ConfigError::invalid(
                "routing",
                "max_attempts and breaker_failures must be at least 1",
            ));
        }

        self.limits.validate()?;
        if self.plans.lifecycle_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "plans.lifecycle_interval_secs",
                "0 would run the lifecycle without a pause: give 1 or more seconds, such as 3600",
            ));
        }
        if self.signup.enabled {
            self.validate_signup()?;
        }
        let ttl = self.budgets.hold_ttl_secs;
        if !(1..=MAX_HOLD_TTL_SECS).contains(&ttl) {
            return Err(ConfigError::invalid(
                "budgets.hold_ttl_secs",
                format!("{ttl} is out of range: give 1 to {MAX_HOLD_TTL_SECS} seconds (one day)"),
            ));
        }

        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid("log.level", error.to_string()));
        }
        Ok(())
    }

    /// Checks that signups can land: every region they may pick is in `[regions]`, so that a
    /// signup for another region can be sent to its URL.
    /// Checks the event bus, health probe and TLS settings.
    fn validate_regions_links(&self) -> Result<(), ConfigError> {
        crate::events::check_topic(&format!("{}.region.keys", self.events.topic_prefix))
            .map_err(|_| {
                ConfigError::invalid(
                    "events.topic_prefix",
                    format!(
                        "`{}` makes invalid topic names: use ASCII letters, digits, `.`, `_` and `-`",
                        self.events.topic_prefix
                    ),
                )
            })?;
        if self.events.topic_prefix.is_empty() {
            return Err(ConfigError::invalid(
                "events.topic_prefix",
                "is empty: use a name such as \"synaxis\"",
            ));
        }
        if self.events.republish_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "events.republish_interval_secs",
                "must be at least 1",
            ));
        }
        let health = &self.health;
        for (key, value, range) in [
            (
                "health.probe_interval_ms",
                health.probe_interval_ms,
                10..=600_000,
            ),
            (
                "health.probe_timeout_ms",
                health.probe_timeout_ms,
                10..=600_000,
            ),
            ("health.down_after", u64::from(health.down_after), 1..=1000),
            ("health.up_after", u64::from(health.up_after), 1..=1000),
            (
                "peer.connect_timeout_ms",
                self.peer.connect_timeout_ms,
                10..=600_000,
            ),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{value} is out of range: use {} to {}",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        let mut files: Vec<(&str, &std::path::Path)> = Vec::new();
        if let Some(tls) = &self.server.tls {
            files.push(("server.tls.cert_file", &tls.cert_file));
            files.push(("server.tls.key_file", &tls.key_file));
        }
        if let Some(ca) = &self.peer.ca_file {
            files.push(("peer.ca_file", ca));
        }
        for (key, path) in files {
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if let Some(tls) = &self.server.tls {
            crate::tls::server_config(tls)
                .map_err(|error| ConfigError::invalid("server.tls", format!("{error:#}")))?;
        }
        if let Some(ca) = &self.peer.ca_file {
            crate::tls::read_certs(ca)
                .map_err(|error| ConfigError::invalid("peer.ca_file", format!("{error:#}")))?;
        }
        Ok(())
    }

    fn validate_signup(&self) -> Result<(), ConfigError> {
        let signup = &self.signup;
        let known: Vec<&str> = self.regions.keys().map(RegionId::as_str).collect();
        let mut targets = vec![("signup.default_region".to_owned(), &signup.default_region)];
        for (country, region) in &signup.country_regions {
            targets.push((format!("signup.country_regions.{country}"), region));
        }
        for (key, region) in targets {
            if !self.regions.contains_key(region) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "region `{region}` is not in the [regions] table; configured regions: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        if !(1..=3650).contains(&signup.trial_days) {
            return Err(ConfigError::invalid(
                "signup.trial_days",
                format!("{} is out of range: give 1 to 3650 days", signup.trial_days),
            ));
        }
        for country in signup.country_regions.keys() {
            if country.len() != 2 || !country.bytes().all(|byte| byte.is_ascii_uppercase()) {
                return Err(ConfigError::invalid(
                    format!("signup.country_regions.{country}"),
                    "countries are ISO 3166-1 codes of two capital letters, such as DE",
                ));
            }
        }
        if let Some(path) = &signup.geoip_database
            && !path.is_file()
        {
            return Err(ConfigError::invalid(
                "signup.geoip_database",
                format!(
                    "{} is not a file: give the path of a MaxMind country database (.mmdb)",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    fn validate_model(&self, name: &str, model: &ModelConfig) -> Result<(), ConfigError> {
        match (&model.upstream, model.deployments.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    format!("models.{name}"),
                    "give either `upstream` or `deployments`, not both",
                ));
            }
            (None, true) => {
                return Err(ConfigError::invalid(
                    format!("models.{name}"),
                    "give `upstream` or at least one entry of `deployments`",
                ));
            }
            _ => {}
        }
        let mut prices = vec![
            (
                format!("models.{name}.input_per_million"),
                Some(model.input_per_million),
            ),
            (
                format!("models.{name}.output_per_million"),
                Some(model.output_per_million),
            ),
        ];
        for (index, deployment) in model.deployments().iter().enumerate() {
            let key = if model.upstream.is_some() {
                format!("models.{name}.upstream")
            } else {
                format!("models.{name}.deployments[{index}].upstream")
            };
            if !self.upstreams.contains_key(&deployment.upstream) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "upstream `{}` is not in the [upstreams] table",
                        deployment.upstream
                    ),
                ));
            }
            if deployment.weight == 0 {
                return Err(ConfigError::invalid(
                    format!("models.{name}.deployments[{index}].weight"),
                    "a weight must be at least 1",
                ));
            }
            prices.push((
                format!("models.{name}.deployments[{index}].input_per_million"),
                deployment.input_per_million,
            ));
            prices.push((
                format!("models.{name}.deployments[{index}].output_per_million"),
                deployment.output_per_million,
            ));
        }
        for (key, price) in prices {
            if let Some(price) = price
                && price.is_sign_negative()
            {
                return Err(ConfigError::invalid(
                    key,
                    format!("price `{price}` is negative"),
                ));
            }
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
