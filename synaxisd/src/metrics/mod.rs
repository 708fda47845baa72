//! Prometheus metrics, served at `/metrics` in the text exposition format.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::limits::fallback::FallbackMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub model: String,
    pub status: u16,
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    /// The home region of the request's key.
    pub region: String,
    /// `served` or `refused`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    pub region: String,
    pub status: u16,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 100 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// The routes whose latency histograms [`Metrics`] keeps at hand: the inference routes.
const LATENCY_ROUTES: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// The latency histograms of one route.
#[derive(Debug)]
struct RouteLatency {
    total: Histogram,
    upstream: Histogram,
    overhead: Histogram,
}

/// Every metric of the daemon, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    overhead_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    upstream_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The three latency histograms of each route in [`LATENCY_ROUTES`], taken from their
    /// families on the route's first request, so that later requests skip the label lookups.
    route_latency: [OnceLock<RouteLatency>; LATENCY_ROUTES.len()],
    upstream_errors: Family<DeploymentLabels, Counter>,
    breaker_open: Family<DeploymentLabels, Gauge>,
    fallbacks: Counter,
    rejected_keys: Counter,
    /// Shared with the auth cache, which counts into them.
    pub auth_cache_hits: Counter,
    pub auth_cache_misses: Counter,
    limit_refusals: Family<ReasonLabels, Counter>,
    limit_waits: Counter,
    /// Shared with the fallback limiter, which reports into it.
    pub limiter_fallback: FallbackMetrics,
    /// Shared with the health monitor.
    pub region_up: Family<RegionLabels, Gauge>,
    forwarded: Family<ForwardLabels, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    handed_off: Family<RegionLabels, Counter>,
    /// Shared with the key directory's publisher and replicator.
    pub directory_published: Counter,
    pub directory_applied: Counter,
    pub directory_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("synaxis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Inference requests with a valid key, by route, model, status and region",
            requests.clone(),
        );
        let request_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from the request to the response headers, by route",
            request_seconds.clone(),
        );
        let overhead_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "gateway_overhead_seconds",
            "Time the gateway itself adds before and after the upstream call, by route",
            overhead_seconds.clone(),
        );
        let upstream_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "upstream_duration_seconds",
            "Time spent waiting for upstream calls, fallbacks included, by route",
            upstream_seconds.clone(),
        );
        let upstream_errors = Family::<DeploymentLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed upstream attempts, by deployment",
            upstream_errors.clone(),
        );
        let breaker_open = Family::<DeploymentLabels, Gauge>::default();
        registry.register(
            "breaker_open",
            "1 when a deployment's circuit breaker keeps calls away, else 0",
            breaker_open.clone(),
        );
        let fallbacks = Counter::default();
        registry.register(
            "fallbacks",
            "Upstream attempts after a failed one, on the next deployment",
            fallbacks.clone(),
        );
        let rejected_keys = Counter::default();
        registry.register(
            "rejected_keys",
            "Inference requests rejected for a missing or invalid key",
            rejected_keys.clone(),
        );
        let auth_cache_hits = Counter::default();
        registry.register(
            "auth_cache_hits",
            "Key lookups answered from the in-process cache",
            auth_cache_hits.clone(),
        );
        let auth_cache_misses = Counter::default();
        registry.register(
            "auth_cache_misses",
            "Key lookups that went to the store",
            auth_cache_misses.clone(),
        );

        let limit_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Inference requests refused with 429, by reason: rate_limit_exceeded (throttle), quota_exceeded (block), concurrency_limit_exceeded",
            limit_refusals.clone(),
        );
        let limit_waits = Counter::default();
        registry.register(
            "limit_waits",
            "Inference requests that waited for a throttle limit or the concurrency cap",
            limit_waits.clone(),
        );
        let limiter_fallback = FallbackMetrics::default();
        registry.register(
            "limiter_fallback_active",
            "1 while Redis is unreachable and this process enforces its share of every limit locally",
            limiter_fallback.active.clone(),
        );
        registry.register(
            "limiter_fallback_switches",
            "Times the limiter fell back from Redis to local limits",
            limiter_fallback.switches.clone(),
        );
        registry.register(
            "limiter_local_calls",
            "Limiter calls answered by local limits during a Redis outage",
            limiter_fallback.local_calls.clone(),
        );

        let region_up = Family::<RegionLabels, Gauge>::default();
        registry.register(
            "region_up",
            "1 while this region's probes find a region up, else 0, by region",
            region_up.clone(),
        );
        let forwarded = Family::<ForwardLabels, Counter>::default();
        registry.register(
            "forwarded_requests",
            "Requests forwarded to their key's home region, by region and the status answered (503 or 401 when it could not be reached)",
            forwarded.clone(),
        );
        let failovers = Family::<FailoverLabels, Counter>::default();
        registry.register(
            "failover_requests",
            "Requests of users of a down or drained region, by that region and outcome: served here, or refused for lack of a transfer basis",
            failovers.clone(),
        );
        let handed_off = Family::<RegionLabels, Counter>::default();
        registry.register(
            "held_records_handed_off",
            "Request records held here during failover and stored by their home region since, by that region",
            handed_off.clone(),
        );
        let directory_published = Counter::default();
        registry.register(
            "directory_published",
            "Key directory entries of this region published to the event bus",
            directory_published.clone(),
        );
        let directory_applied = Counter::default();
        registry.register(
            "directory_applied",
            "Peer key directory entries stored in the replica",
            directory_applied.clone(),
        );
        let directory_rejected = Counter::default();
        registry.register(
            "directory_rejected",
            "Key directory events that did not parse",
            directory_rejected.clone(),
        );

        Self {
            registry,
            region_up,
            forwarded,
            failovers,
            handed_off,
            directory_published,
            directory_applied,
            directory_rejected,
            limit_refusals,
            limit_waits,
            limiter_fallback,
            requests,
            request_seconds,
            overhead_seconds,
            upstream_seconds,
            route_latency: Default::default(),
            upstream_errors,
            breaker_open,
            fallbacks,
            rejected_keys,
            auth_cache_hits,
            auth_cache_misses,
        }
    }
}

impl Metrics {
    pub fn count_request(&self, labels: RequestLabels) {
        self.requests.get_or_create(&labels).inc();
    }

    /// Records a request's timings: the whole, and the part spent waiting for upstreams.
    pub fn observe_latency(&self, route: &'static str, total_seconds: f64, upstream_seconds: f64) {
        let overhead_seconds = (total_seconds - upstream_seconds).max(0.0);
        let resolve = || RouteLatency {
            total: self
                .request_seconds
                .get_or_create_owned(&RouteLabels { route }),
            upstream: self
                .upstream_seconds
                .get_or_create_owned(&RouteLabels { route }),
            overhead: self
                .overhead_seconds
                .get_or_create_owned(&RouteLabels { route }),
        };
        let resolved;
        let latency = match LATENCY_ROUTES.iter().position(|known| *known == route) {
            Some(index) => self.route_latency[index].get_or_init(resolve),
            None => {
                resolved = resolve();
                &resolved
            }
        };
        latency.total.observe(total_seconds);
        latency.upstream.observe(upstream_seconds);
        latency.overhead.observe(overhead_seconds);
    }

    pub fn count_upstream_error(&self, deployment: &str) {
        self.upstream_errors
            .get_or_create(&DeploymentLabels {
                deployment: deployment.to_owned(),
            })
            .inc();
    }

    pub fn set_breaker_open(&self, deployment: &str, open: bool) {
        self.breaker_open
            .get_or_create(&DeploymentLabels {
                deployment: deployment.to_owned(),
            })
            .set(i64::from(open));
    }

    pub fn count_fallback(&self) {
        self.fallbacks.inc();
    }

    pub fn count_limit_refusal(&self, reason: &'static str) {
        self.limit_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn count_limit_wait(&self) {
        self.limit_waits.inc();
    }

    pub fn count_forwarded(&self, region: &str, status: u16) {
        self.forwarded
            .get_or_create(&ForwardLabels {
                region: region.to_owned(),
                status,
            })
            .inc();
    }

    pub fn count_failover(&self, region: &str, served: bool) {
        self.failovers
            .get_or_create(&FailoverLabels {
                region: region.to_owned(),
                outcome: if served { "served" } else { "refused" },
            })
            .inc();
    }

    pub fn count_handed_off(&self, region: &str, records: u64) {
        self.handed_off
            .get_or_create(&RegionLabels {
                region: region.to_owned(),
            })
            .inc_by(records);
    }

    pub fn count_rejected_key(&self) {
        self.rejected_keys.inc();
    }

    /// Renders every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
