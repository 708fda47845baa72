//! The HTTP server: shared state, the router, per-request context, health endpoints, and
//! serving with a graceful drain.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Extension, Router};
use futures_util::future::BoxFuture;
use secrecy::SecretString;
use synaxis_shared::RegionId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::audit::AuditLog;
use crate::control;
use crate::gateway::{self, Gateway};
use crate::http_error::{ApiError, Locale};
pub use crate::metrics::Metrics;
use crate::region::drill;
use crate::tenancy::Tenancy;

/// Default of `server.max_body_bytes`, the largest accepted request body.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static REGION: HeaderName = HeaderName::from_static("x-synaxis-region");

/// State shared by every handler, behind one reference count so that extractors clone it
/// cheaply.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    inner: AppStateInner,
    /// The `x-synaxis-region` header value, built once.
    region_header: Option<HeaderValue>,
}

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        let region_header = HeaderValue::from_str(inner.region.as_str()).ok();
        Self(Arc::new(Shared {
            inner,
            region_header,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0.inner
    }
}

/// The fields of [`AppState`].
#[derive(Debug)]
pub struct AppStateInner {
    pub tenancy: Tenancy,
    pub audit: AuditLog,
    pub gateway: Arc<Gateway>,
    pub operator_token: Arc<SecretString>,
    pub region: RegionId,
    pub metrics: Arc<Metrics>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Cancelled when the drain deadline passes, so that requests still running end with a
    /// request record instead of being dropped.
    pub shutdown: CancellationToken,
    /// Self-service signup, when the config turns it on.
    pub signup: Option<Arc<crate::control::Signup>>,
    /// The other regions: forwarding, peer calls and health.
    pub regions: Arc<crate::region::Regions>,
}

/// The locale of the authenticated key's user, set on a response so that its error message
/// uses that language when the request sent no `Accept-Language`.
#[derive(Clone, Copy, Debug)]
pub struct UserLocale(pub Locale);

/// Facts about the current request, set by the outermost middleware.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    /// The language from `Accept-Language`, English when it names no supported one.
    pub locale: Locale,
}

/// Builds the HTTP service: one router with every route, behind two middlewares. Requests pass
/// `region::route_by_region` first, which forwards those of other regions' keys and checks
/// peer calls before the routes are matched, then [`request_context`].
///
/// The middlewares and the body limit wrap the router once, rather than each route through
/// `Router::layer`, and the middlewares are plain functions that [`Front`] and [`Next`] chain,
/// so that a request boxes one future for them.
pub fn router(state: AppState) -> App<impl HttpService> {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(crate::region::HEALTH_PATH, get(peer_health))
        .route(crate::region::RESIDENCY_PATH, get(peer_residency))
        .route(
            crate::region::failover::USAGE_PATH,
            post(crate::region::failover::accept_held),
        )
        .route(drill::TENANTS_PATH, post(drill::peer_tenants))
        .route(drill::DIRECTORY_PATH, post(drill::peer_directory))
        .route(drill::RECORDS_PATH, post(drill::peer_records))
        .route(drill::DRAIN_PATH, post(drill::peer_drain))
        .route(drill::FINISH_PATH, post(drill::peer_finish))
        .route(drill::CLAIM_PATH, post(drill::peer_claim))
        .merge(gateway::routes())
        .merge(control::routes())
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone());
    let routes = DefaultBodyLimit::max(state.max_body_bytes).layer(routes);
    App(Front(Next { state, routes }))
}

type Routes = <DefaultBodyLimit as Layer<Router>>::Service;

/// The service in front of the routes: it runs `region::route_by_region` on each request.
#[derive(Clone, Debug)]
pub struct Front(Next);

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let next = self.0.clone();
        Box::pin(async move {
            let state = next.state.clone();
            Ok(crate::region::route_by_region(state, request, next).await)
        })
    }
}

/// The rest of the stack for a request served in this region, after `region::route_by_region`:
/// [`request_context`], then the router.
#[derive(Clone)]
pub struct Next {
    state: AppState,
    routes: Routes,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl Next {
    /// Runs the request context, then the router.
    pub async fn run(self, request: Request) -> Response {
        request_context(self.state, request, self.routes).await
    }
}

/// A service that handles every request, as axum serves it.
pub trait HttpService:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> HttpService for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The HTTP service that [`router`] builds. Serving it gives every request the peer address as
/// `ConnectInfo<SocketAddr>`.
#[derive(Clone)]
pub struct App<S>(S);

impl<S> std::fmt::Debug for App<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl<'a, L, S> Service<IncomingStream<'a, L>> for App<S>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    S: Clone,
{
    type Response = <Extension<ConnectInfo<SocketAddr>> as Layer<S>>::Service;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'a, L>) -> Self::Future {
        let peer = ConnectInfo(*stream.remote_addr());
        std::future::ready(Ok(Extension(peer).layer(self.0.clone())))
    }
}

/// Returns this region's residency report to a peer. `region::route_by_region` has checked the
/// caller.
async fn peer_residency(State(state): State<AppState>) -> Response {
    match state.tenancy.store().check_residency(&state.region).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => ApiError::from(crate::tenancy::TenancyError::Store(error)).into_response(),
    }
}

/// Returns this region's health to a peer's probe. `region::route_by_region` has checked the
/// caller.
async fn peer_health(State(state): State<AppState>) -> Response {
    let health =
        crate::region::health::answer(&state.regions, state.tenancy.store().as_ref()).await;
    axum::Json(health).into_response()
}

/// Gives the request an id and a span, tags the response with the id and the region, and
/// renders error bodies in the client's language.
async fn request_context(state: AppState, mut request: Request, mut routes: Routes) -> Response {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_valid_request_id(value))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let requested_locale = request
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
        .and_then(Locale::from_accept_language);
    let locale = requested_locale.unwrap_or_default();
    request.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        locale,
    });

    let span = tracing::info_span!(
        "request",
        request.id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let is_health_check = matches!(
        request.uri().path(),
        "/healthz" | "/readyz" | "/metrics" | crate::region::HEALTH_PATH
    );
    let started = std::time::Instant::now();
    let routed = async move {
        // axum's `Router::poll_ready` returns ready at once, and its error type is `Infallible`.
        let Ok(response) = routes.call(request).await;
        response
    };
    let mut response = routed.instrument(span.clone()).await;

    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_millis();
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    span.in_scope(|| {
        if is_health_check {
            tracing::debug!(status, duration_ms, "request finished");
        } else if is_stream {
            tracing::info!(status, duration_ms, "stream started");
        } else {
            tracing::info!(status, duration_ms, "request finished");
        }
    });

    let locale = requested_locale
        .or_else(|| response.extensions().get::<UserLocale>().map(|user| user.0))
        .unwrap_or_default();
    if locale != Locale::En
        && let Some(error) = response.extensions().get::<ApiError>().cloned()
    {
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        response = (status, axum::Json(error.body(locale))).into_response();
        for (name, value) in headers.iter() {
            if name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name, value.clone());
            }
        }
    }

    // A response relayed from the region that served the request keeps its id and region.
    let headers = response.headers_mut();
    if !headers.contains_key(&REQUEST_ID)
        && let Ok(value) = HeaderValue::from_str(&request_id)
    {
        headers.insert(REQUEST_ID.clone(), value);
    }
    if !headers.contains_key(&REGION)
        && let Some(value) = &state.0.region_header
    {
        headers.insert(REGION.clone(), value.clone());
    }
    response
}

/// Accepts a client's request id of 1 to 128 letters, digits, `-`, `_`, `.` or `:`; another
/// value is replaced by a generated one, so that log lines cannot be forged through it.
pub(crate) fn is_valid_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Serves the Prometheus metrics; breaker states are read at scrape time.
async fn metrics(State(state): State<AppState>) -> Response {
    for deployment in state.gateway.deployments() {
        state
            .metrics
            .set_breaker_open(&deployment.label, deployment.breaker.is_open());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// Returns 200 when the store responds, 503 otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.tenancy.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Body::from("store unavailable"),
            )
                .into_response()
        }
    }
}

/// Sets TCP_NODELAY on a plain connection: streams write one small segment per event, and
/// without it each would wait for the client's delayed acknowledgement of the previous one.
pub fn set_nodelay(connection: &mut tokio::net::TcpStream) {
    if let Err(error) = connection.set_nodelay(true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY on a connection");
    }
}

/// Time that requests get to write their records after the drain deadline cancels them.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// The shutdown steps of the server, in order, once the shutdown signal arrives.
#[derive(Debug)]
pub struct Drain {
    /// Time that in-flight requests get to finish.
    pub timeout: Duration,
    /// Cancelled when `timeout` passes, so that requests still running end with a record.
    pub cancel: CancellationToken,
    /// Tracks the request records not yet finished.
    pub records: TaskTracker,
    /// Tells the record writer to store what remains and stop.
    pub stop_writer: CancellationToken,
    /// Tracks the record writer.
    pub writer: TaskTracker,
}

/// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests up to
/// `drain.timeout` to finish. Requests still running then are cancelled and end with a record.
/// Last, once every record is finished, the record writer stores what remains.
pub async fn serve<L, S>(
    listener: L,
    app: App<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    S: HttpService,
{
    let Drain {
        timeout: drain_timeout,
        cancel,
        records,
        stop_writer,
        writer,
    } = drain;
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            timeout_secs = drain_timeout.as_secs(),
            "shutting down: draining in-flight requests"
        );
        let _ = draining_tx.send(());
    };

    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let deadline = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };

    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = deadline => {
            tracing::warn!("drain deadline passed; cancelling the remaining requests");
            cancel.cancel();
            match tokio::time::timeout(CANCEL_GRACE, &mut server).await {
                Ok(result) => result?,
                Err(_) => tracing::error!("connections still open after cancellation; closing them"),
            }
        }
    }

    // A connection's task drops its response body, and with it a record that a client's
    // disconnect left unfinished, just after the server counts the connection as closed.
    records.close();
    if tokio::time::timeout(CANCEL_GRACE, records.wait())
        .await
        .is_err()
    {
        tracing::error!(
            pending = records.len(),
            "requests still without a record at shutdown"
        );
    }
    stop_writer.cancel();
    writer.close();
    if tokio::time::timeout(drain_timeout, writer.wait())
        .await
        .is_err()
    {
        tracing::error!("request records still unwritten at shutdown");
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_clients_are_checked() {
        assert!(is_valid_request_id("req-123_abc.def:1"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id("line\nbreak"));
        assert!(!is_valid_request_id(&"a".repeat(129)));
    }
}
