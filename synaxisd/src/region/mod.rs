//! The regions of the service from this region's side: which region a key belongs to, the
//! forwarding of requests to a key's home region over the peer API, the peer API's
//! authentication (`peer`), and the health of every region (`health`).
//!
//! Requests whose bearer token is a key of another region are forwarded before routing:
//! `POST /v1/...` goes to `<peer_url>/peer/v1/forward/v1/...` with the signed peer header, and
//! the home region's answer streams back as it comes. The entry region stores nothing about
//! such a request; it counts it in `synaxis_forwarded_requests`.

pub mod drill;
pub mod failover;
pub mod health;
pub mod peer;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::TryStreamExt;
use synaxis_shared::RegionId;
use synaxis_shared::compliance::{ResidencyCheck, ResidencyReport};
use synaxis_shared::region::{PeerHealth, RegionView, RegionsStatus};
use tracing::Instrument;
use url::Url;

use crate::config::Config;
use crate::gateway::auth::bearer_token;
use crate::http_error::ApiError;
use crate::server::{AppState, Next};
use crate::tenancy::keys;
use health::HealthMonitor;
use peer::{PEER_HEADER, PeerAuth};

/// Path prefix under which a peer sends a forwarded request.
pub const FORWARD_PREFIX: &str = "/peer/v1/forward";

/// Path of the health probe that peers call.
pub const HEALTH_PATH: &str = "/peer/v1/health";

/// Path of a region's residency report, which peers read.
pub const RESIDENCY_PATH: &str = "/peer/v1/compliance/residency";

/// Builds the report of a region whose check failed or could not be read.
fn failed_report(region: &RegionId, error: String) -> ResidencyReport {
    ResidencyReport {
        region: region.clone(),
        records_checked: 0,
        violations: Vec::new(),
        pending_transfers: 0,
        error: Some(error),
    }
}

/// The client's address as the entry region saw it, sent with a forwarded request.
pub static CLIENT_IP_HEADER: HeaderName = HeaderName::from_static("x-synaxis-client-ip");

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static REGION: HeaderName = HeaderName::from_static("x-synaxis-region");

/// Marks a region's refusal of a peer call, so the caller tells it from its client's own 401.
pub static PEER_REFUSED_HEADER: HeaderName = HeaderName::from_static("x-synaxis-peer-refused");

/// A region other than this one.
#[derive(Clone, Debug)]
pub struct Peer {
    pub url: Url,
    pub key_prefix: String,
    pub jurisdiction: synaxis_shared::Jurisdiction,
}

/// Set on a request that a peer forwarded, once its signature is checked.
#[derive(Clone, Debug)]
pub struct Forwarded {
    pub from: RegionId,
    /// The client's address as the entry region saw it.
    pub client_ip: Option<std::net::IpAddr>,
}

#[derive(Debug)]
pub struct Regions {
    pub own: RegionId,
    pub own_jurisdiction: synaxis_shared::Jurisdiction,
    /// The URL at which peers and clients reach this region.
    pub own_url: Url,
    pub peers: BTreeMap<RegionId, Peer>,
    /// `None` when no peer secret is configured: nothing is forwarded and peer calls are
    /// refused.
    pub auth: Option<PeerAuth>,
    pub client: reqwest::Client,
    pub health: Arc<HealthMonitor>,
    /// When a refused peer call was last logged.
    last_refusal_log: std::sync::Mutex<Option<std::time::Instant>>,
    /// The failover drill that has claimed this region, so that two drills do not overlap.
    pub drill: std::sync::Mutex<Option<drill::DrillClaim>>,
}

/// Shortest time between two logged refusals of peer calls.
const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("no peer secret is configured")]
    NoSecret,
    #[error("region `{0}` is not configured")]
    UnknownRegion(RegionId),
    #[error("{}", describe(.0))]
    Http(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("cannot encode the request body: {0}")]
    Body(String),
    #[error(
        "it rejected this region's peer signature: check that SYNAXIS_PEER_SECRET is the same in every region and that the clocks agree within a minute"
    )]
    Refused,
}

/// Describes an HTTP client error with its causes, such as `error sending request: client
/// error (Connect): tcp connect error: Connection refused (os error 111)`.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Regions {
    /// Builds the regions of `config` as seen from `config.server.region`.
    pub fn new(
        config: &Config,
        auth: Option<PeerAuth>,
        client: reqwest::Client,
        health: Arc<HealthMonitor>,
    ) -> Self {
        let own = config.server.region.clone();
        let peers = config
            .regions
            .iter()
            .filter(|(id, _)| **id != own)
            .map(|(id, region)| {
                let peer = Peer {
                    url: region.peer_url.clone(),
                    key_prefix: region.key_prefix.clone(),
                    jurisdiction: region.jurisdiction,
                };
                (id.clone(), peer)
            })
            .collect();
        Self {
            own_jurisdiction: config.home_region().jurisdiction,
            own_url: config.home_region().peer_url.clone(),
            own,
            peers,
            auth,
            client,
            health,
            last_refusal_log: std::sync::Mutex::new(None),
            drill: std::sync::Mutex::new(None),
        }
    }

    /// Returns the peer whose keys carry `prefix`.
    fn peer_of_prefix(&self, prefix: &str) -> Option<(&RegionId, &Peer)> {
        self.peers
            .iter()
            .find(|(_, peer)| peer.key_prefix == prefix)
    }

    /// Returns the URL of `path_and_query` on `peer`.
    fn url(peer: &Peer, path_and_query: &str) -> String {
        format!(
            "{}{path_and_query}",
            peer.url.as_str().trim_end_matches('/')
        )
    }

    /// Calls a peer's health probe.
    pub async fn peer_health(&self, region: &RegionId) -> Result<PeerHealth, PeerCallError> {
        self.peer_get(region, HEALTH_PATH).await
    }

    /// Sends a signed `GET` of `path` to a peer and parses its JSON response.
    async fn peer_get<T: serde::de::DeserializeOwned>(
        &self,
        region: &RegionId,
        path: &str,
    ) -> Result<T, PeerCallError> {
        self.peer_call(region, axum::http::Method::GET, path, None)
            .await
    }

    /// Sends a signed `POST` of `body` as JSON to a peer's `path` and parses its JSON response.
    pub async fn peer_post<B: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        region: &RegionId,
        path: &str,
        body: &B,
    ) -> Result<T, PeerCallError> {
        let body =
            serde_json::to_vec(body).map_err(|error| PeerCallError::Body(error.to_string()))?;
        self.peer_call(region, axum::http::Method::POST, path, Some(body))
            .await
    }

    /// Sends a signed call of `path` to a peer and parses its JSON response.
    async fn peer_call<T: serde::de::DeserializeOwned>(
        &self,
        region: &RegionId,
        method: axum::http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, PeerCallError> {
        let auth = self.auth.as_ref().ok_or(PeerCallError::NoSecret)?;
        let peer = self
            .peers
            .get(region)
            .ok_or_else(|| PeerCallError::UnknownRegion(region.clone()))?;
        let signature = auth.sign(&method, path, Utc::now());
        let mut call = self
            .client
            .request(method, Self::url(peer, path))
            .header(PEER_HEADER.clone(), signature);
        if let Some(body) = body {
            call = call
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = call.send().await?;
        if response.headers().contains_key(&PEER_REFUSED_HEADER) {
            return Err(PeerCallError::Refused);
        }
        if !response.status().is_success() {
            return Err(PeerCallError::Status(response.status()));
        }
        Ok(response.json().await?)
    }

    /// Returns this region's residency report, then each peer's as it reports it.
    pub async fn residency(&self, store: &dyn crate::store::Store) -> ResidencyCheck {
        let own = match store.check_residency(&self.own).await {
            Ok(report) => report,
            Err(error) => failed_report(&self.own, error.to_string()),
        };
        let peers = self.peers.keys().map(|region| async move {
            self.peer_get::<ResidencyReport>(region, RESIDENCY_PATH)
                .await
                .unwrap_or_else(|error| failed_report(region, error.to_string()))
        });
        let mut reports = vec![own];
        reports.extend(futures_util::future::join_all(peers).await);
        ResidencyCheck { reports }
    }

    /// Sends a request to `region`'s `/peer/v1/forward{path_and_query}`, signed, with the
    /// client's headers but the connection's own and with the client's address.
    pub async fn send(
        &self,
        region: &RegionId,
        method: axum::http::Method,
        path_and_query: &str,
        client_headers: &HeaderMap,
        body: reqwest::Body,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<reqwest::Response, PeerCallError> {
        let auth = self.auth.as_ref().ok_or(PeerCallError::NoSecret)?;
        let peer = self
            .peers
            .get(region)
            .ok_or_else(|| PeerCallError::UnknownRegion(region.clone()))?;
        let path_and_query = format!("{FORWARD_PREFIX}{path_and_query}");
        let mut headers = HeaderMap::new();
        for (name, value) in client_headers {
            // The body may differ from the client's, so reqwest sets its length.
            let own =
                name == PEER_HEADER || name == CLIENT_IP_HEADER || name == header::CONTENT_LENGTH;
            if !is_hop_by_hop(name) && !own {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(
            PEER_HEADER.clone(),
            auth.sign(&method, &path_and_query, Utc::now()),
        );
        if let Some(ip) = client_ip
            && let Ok(value) = HeaderValue::from_str(&ip.to_string())
        {
            headers.insert(CLIENT_IP_HEADER.clone(), value);
        }
        let answer = self
            .client
            .request(method, Self::url(peer, &path_and_query))
            .headers(headers)
            .body(body)
            .send()
            .await?;
        if answer.headers().contains_key(&PEER_REFUSED_HEADER) {
            return Err(PeerCallError::Refused);
        }
        Ok(answer)
    }

    /// Returns whether a refused peer call should be logged: at most one a minute, so that a
    /// peer with the wrong secret does not fill the log with its probes.
    fn should_log_refusal(&self) -> bool {
        let mut last = self
            .last_refusal_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Returns whether requests can be forwarded to `region`.
    pub fn can_forward_to(&self, region: &RegionId) -> bool {
        self.auth.is_some() && self.peers.contains_key(region)
    }

    /// Returns this region's view, then each peer's as it reports it.
    pub async fn status(&self) -> RegionsStatus {
        let mut views = vec![RegionView {
            observer: self.own.clone(),
            regions: self.health.view(),
            error: None,
        }];
        let peers = self.peers.keys().map(|region| async move {
            match self.peer_health(region).await {
                Ok(health) => RegionView {
                    observer: region.clone(),
                    regions: health.view,
                    error: None,
                },
                Err(error) => RegionView {
                    observer: region.clone(),
                    regions: Vec::new(),
                    error: Some(error.to_string()),
                },
            }
        });
        views.extend(futures_util::future::join_all(peers).await);
        RegionsStatus {
            region: self.own.clone(),
            views,
        }
    }
}

/// Headers that belong to one connection and are not forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// Returns the region that a peer header claims, before its signature is checked, for logs.
fn claimed_region(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(&PEER_HEADER)?.to_str().ok()?;
    value
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("region="))
        .next()
}

/// Renders `error` in the language of the request's `Accept-Language`, for responses made
/// before routing, where the localizing middleware does not run.
fn refuse(error: ApiError, headers: &HeaderMap, region: &RegionId) -> Response {
    refuse_in(error, headers, region, None)
}

/// Renders `error` like [`refuse`], in `user_locale` when the request names no language.
fn refuse_in(
    error: ApiError,
    headers: &HeaderMap,
    region: &RegionId,
    user_locale: Option<crate::http_error::Locale>,
) -> Response {
    let locale = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
        .and_then(crate::http_error::Locale::from_accept_language)
        .or(user_locale)
        .unwrap_or_default();
    let body = error.body(locale);
    let mut response = error.into_response();
    *response.body_mut() = Body::from(serde_json::to_vec(&body).unwrap_or_default());
    let response_headers = response.headers_mut();
    response_headers.remove(header::CONTENT_LENGTH);
    response_headers.insert(REQUEST_ID.clone(), request_id(headers));
    if let Ok(value) = HeaderValue::from_str(region.as_str()) {
        response_headers.insert(REGION.clone(), value);
    }
    response
}

/// Returns the client's request id when it is valid, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
        .filter(|value| value.to_str().is_ok_and(crate::server::is_valid_request_id))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        })
}

/// Runs before routing: checks peer calls and takes their forwarding prefix off, and forwards
/// requests whose key belongs to another region.
pub async fn route_by_region(state: AppState, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/peer/") {
        let Some(auth) = &state.regions.auth else {
            return refuse(
                ApiError::PeerRefused(peer::PeerAuthError::NoLinks),
                request.headers(),
                &state.regions.own,
            );
        };
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or(path, |value| value.as_str())
            .to_owned();
        let from = match auth.verify(
            request.headers(),
            request.method(),
            &path_and_query,
            Utc::now(),
        ) {
            Ok(from) => from,
            Err(error) => {
                if state.regions.should_log_refusal() {
                    let claimed = claimed_region(request.headers()).unwrap_or("none");
                    tracing::warn!(%error, path = %path_and_query, claimed_region = claimed, "peer call refused (further refusals within a minute are not logged)");
                }
                let mut response = refuse(
                    ApiError::PeerRefused(error),
                    request.headers(),
                    &state.regions.own,
                );
                response
                    .headers_mut()
                    .insert(PEER_REFUSED_HEADER.clone(), HeaderValue::from_static("1"));
                return response;
            }
        };
        let client_ip = request
            .headers()
            .get(&CLIENT_IP_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        if let Some(rest) = path_and_query.strip_prefix(FORWARD_PREFIX) {
            match rest.parse() {
                Ok(uri) => *request.uri_mut() = uri,
                Err(_) => {
                    return refuse(
                        ApiError::RouteNotFound,
                        request.headers(),
                        &state.regions.own,
                    );
                }
            }
        }
        request
            .extensions_mut()
            .insert(Forwarded { from, client_ip });
        return next.run(request).await;
    }

    let routed = path.starts_with("/v1/") || path.starts_with("/control/v1/");
    let home = routed
        .then(|| bearer_token(request.headers()))
        .flatten()
        .and_then(keys::region_prefix)
        .and_then(|prefix| state.regions.peer_of_prefix(prefix))
        .map(|(region, peer)| (region.clone(), peer.clone()));
    match home {
        Some((region, peer)) => {
            // The home region logs the request under the id of the entry region's response.
            let id = request_id(request.headers());
            let span = tracing::info_span!(
                "request",
                request.id = id.to_str().unwrap_or_default(),
                method = %request.method(),
                path = %request.uri().path(),
            );
            request.headers_mut().insert(REQUEST_ID.clone(), id);
            if !state.regions.health.takes_traffic(&region, Utc::now()) {
                return failover::serve(&state, &region, &peer, request, next)
                    .instrument(span)
                    .await;
            }
            let started = std::time::Instant::now();
            let response = forward(&state, &region, &peer, request)
                .instrument(span.clone())
                .await;
            span.in_scope(|| {
                tracing::info!(
                    status = response.status().as_u16(),
                    %region,
                    duration_ms = started.elapsed().as_millis(),
                    "request forwarded"
                );
            });
            response
        }
        None => next.run(request).await,
    }
}

/// Sends `request` to `region` and streams its answer back.
async fn forward(state: &AppState, region: &RegionId, peer: &Peer, request: Request) -> Response {
    if state.regions.auth.is_none() {
        let error = ApiError::OtherRegionKey {
            region: region.clone(),
            url: peer.url.to_string(),
        };
        return refuse(error, request.headers(), &state.regions.own);
    }
    let client_ip = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |value| value.as_str());
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let sent = state
        .regions
        .send(
            region,
            parts.method.clone(),
            path_and_query,
            &parts.headers,
            body,
            client_ip,
        )
        .await;
    match sent {
        Ok(answer) => {
            state
                .metrics
                .count_forwarded(region.as_str(), answer.status().as_u16());
            relay(answer)
        }
        Err(error) => {
            tracing::error!(%region, %error, "cannot forward a request to its home region");
            // The replica separates a key that its region would accept from an invalid one.
            let presented = bearer_token(&parts.headers).unwrap_or_default();
            let error = match state.tenancy.find_in_directory(presented).await {
                Ok(None) => ApiError::InvalidKey,
                Ok(Some(entry)) => {
                    // Until the health monitor finds the home region down, its users retry; once
                    // it does, those with a basis are served here. One without a basis learns
                    // how to give one.
                    let compliance = crate::compliance::Compliance::default();
                    let decision = compliance.provider(peer.jurisdiction).map(|provider| {
                        provider.validate_transfer(&crate::compliance::TransferRequest {
                            target_region: &state.regions.own,
                            target: state.regions.own_jurisdiction,
                            org_mechanism: entry.org_transfer_mechanism,
                            consent: &entry.consent,
                        })
                    });
                    match decision {
                        Some(crate::compliance::TransferDecision::Refused) => {
                            ApiError::RegionUnavailableWithoutConsent {
                                region: region.clone(),
                                here: state.regions.own.clone(),
                            }
                        }
                        _ => ApiError::RegionUnavailable {
                            region: region.clone(),
                        },
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the key directory replica");
                    ApiError::RegionUnavailable {
                        region: region.clone(),
                    }
                }
            };
            state
                .metrics
                .count_forwarded(region.as_str(), error.status().as_u16());
            refuse(error, &parts.headers, &state.regions.own)
        }
    }
}

/// Turns a peer's answer into this region's response, its body streamed as it arrives.
pub fn relay(answer: reqwest::Response) -> Response {
    let mut response = Response::builder().status(answer.status().as_u16());
    if let Some(headers) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !is_hop_by_hop(name) && name != header::CONTENT_LENGTH {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
    response
        .body(body)
        .unwrap_or_else(|_| ApiError::Internal.into_response())
}
