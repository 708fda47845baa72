//! HTTP/1.1 connections to one upstream origin, each driven by the task of the request that
//! uses it. A general client runs every connection in a task of its own and hands each body
//! frame over through a channel, which costs two task wakeups per frame, often across threads.
//! Here the request's task polls the connection itself, so the frames of a stream that arrived
//! together are read in one turn. Idle connections wait in a pool, undriven, and are checked
//! for a close by the upstream when taken out.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_util::either::Either;
use url::Url;

use super::ProviderError;

/// Idle connections kept per upstream at most; more are closed when they come back.
const MAX_IDLE: usize = 512;

/// Time after which an idle connection is closed instead of reused: an upstream or a network
/// device in between may have dropped it without a word.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Frames read at most from a body dropped before its end, to reach the end and keep the
/// connection.
const MAX_DRAIN_FRAMES: usize = 16;

type Io = TokioIo<Either<TcpStream, TlsStream<TcpStream>>>;

/// One connection: the handle that sends requests and the state machine that does its I/O.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Connection<Io, Full<Bytes>>>>,
}

impl Conn {
    /// Polls the connection once without a waker, and returns whether it can take a request.
    fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.driver.as_mut().poll(&mut cx).is_ready() {
            return false;
        }
        !self.sender.is_closed()
    }
}

/// The connections to one origin, such as `https://api.openai.com`.
pub struct Upstream {
    host: String,
    port: u16,
    /// The `Host` header of every request.
    authority: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Idle connections with the time each became idle, newest last.
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// An error in setting up an upstream from its base URL.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the URL has no host")]
    NoHost,
    #[error("the scheme `{0}` is not http or https")]
    Scheme(String),
    #[error("the host is not a valid TLS server name: {0}")]
    ServerName(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("the path is not a valid request target: {0}")]
    Path(String),
}

impl Upstream {
    /// Sets up the connections to the origin of `base_url`.
    pub fn new(base_url: &Url, connect_timeout: Duration) -> Result<Self, SetupError> {
        // An IPv6 address is written in brackets in the URL and the `Host` header only.
        let bracketed = base_url.host_str().ok_or(SetupError::NoHost)?;
        let host = bracketed
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = base_url.port_or_known_default().ok_or(SetupError::NoHost)?;
        let tls = match base_url.scheme() {
            "http" => None,
            "https" => {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                // The provider is named, so that no other crypto backend linked into the
                // binary can make the default ambiguous.
                let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|error| SetupError::Tls(error.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = ServerName::try_from(host.clone())
                    .map_err(|error| SetupError::ServerName(error.to_string()))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            other => return Err(SetupError::Scheme(other.to_owned())),
        };
        let authority = match base_url.port() {
            Some(port) => format!("{bracketed}:{port}"),
            None => bracketed.to_owned(),
        };
        let authority = HeaderValue::from_str(&authority).map_err(|_| SetupError::NoHost)?;
        Ok(Self {
            host,
            port,
            authority,
            tls,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request`, whose URI is the origin-form path, and returns the response with a body
    /// that drives the connection while it is read. A pooled connection that the upstream closed
    /// before taking the request is replaced by a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<ResponseBody>, ProviderError> {
        request.headers_mut().insert(HOST, self.authority.clone());
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let response = match drive(&mut conn, |sender| sender.try_send_request(request)).await {
            Ok(response) => response,
            Err(mut error) => match error.take_message() {
                // The connection closed before the request was written: send it on a new one.
                Some(request) => {
                    conn = self.connect().await?;
                    drive(&mut conn, |sender| sender.send_request(request))
                        .await
                        .map_err(|error| map_hyper_error(&error))?
                }
                None => return Err(map_hyper_error(error.error())),
            },
        };
        let (parts, body) = response.into_parts();
        let body = ResponseBody {
            conn: Some(conn),
            body,
            upstream: self.clone(),
        };
        Ok(Response::from_parts(parts, body))
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        while let Some((mut conn, since)) = idle.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, mut conn: Conn) {
        if !conn.is_usable() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<Conn, ProviderError> {
        let connecting = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|error| ProviderError::Connect(error.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|error| ProviderError::Connect(error.to_string()))?;
            let io = match &self.tls {
                None => Either::Left(tcp),
                Some((connector, name)) => Either::Right(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|error| ProviderError::Connect(error.to_string()))?,
                ),
            };
            let (sender, driver) = http1::handshake(TokioIo::new(io))
                .await
                .map_err(|error| ProviderError::Connect(error.to_string()))?;
            Ok(Conn {
                sender,
                driver: Box::pin(driver),
            })
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| ProviderError::Timeout)?
    }
}

/// Runs the future that `start` makes from the connection's sender while polling the
/// connection, until the future is done.
async fn drive<F, T>(conn: &mut Conn, start: impl FnOnce(&mut SendRequest<Full<Bytes>>) -> F) -> T
where
    F: Future<Output = T>,
{
    let mut future = pin!(start(&mut conn.sender));
    let driver = &mut conn.driver;
    let mut driver_done = false;
    poll_fn(|cx| {
        // A connection that ended makes the request's future fail, so its result is not needed.
        if !driver_done && driver.as_mut().poll(cx).is_ready() {
            driver_done = true;
        }
        future.as_mut().poll(cx)
    })
    .await
}

/// The body of a response, which polls its connection while it is read and returns the
/// connection to the pool once the body ends. Dropped before the end, it closes the connection.
pub struct ResponseBody {
    conn: Option<Conn>,
    body: Incoming,
    upstream: Arc<Upstream>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("pooled_on_end", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Stream for ResponseBody {
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(conn) = &mut this.conn
                && conn.driver.as_mut().poll(cx).is_ready()
            {
                // The connection ended; the body reports how.
                this.conn = None;
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(map_hyper_error(&error))));
                }
                Poll::Ready(None) => {
                    if let Some(conn) = this.conn.take() {
                        this.upstream.put_idle(conn);
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for ResponseBody {
    /// Keeps the connection for another request when the rest of the body has already arrived,
    /// as when a stream's reader stops at its last event. The frames that are ready are read
    /// without waiting, and the connection goes back to the pool if they reach the end.
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..MAX_DRAIN_FRAMES {
            if conn.driver.as_mut().poll(&mut cx).is_ready() {
                return;
            }
            match Pin::new(&mut self.body).poll_frame(&mut cx) {
                Poll::Ready(None) => {
                    self.upstream.put_idle(conn);
                    return;
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

impl ResponseBody {
    /// Reads the whole body, or fails with [`ProviderError::Timeout`] when `deadline` passes
    /// first.
    pub async fn collect(mut self, deadline: Instant) -> Result<Bytes, ProviderError> {
        let mut frames: Vec<Bytes> = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| ProviderError::Timeout)?;
            match next {
                Some(frame) => frames.push(frame?),
                None => break,
            }
        }
        Ok(match frames.len() {
            0 => Bytes::new(),
            1 => frames.swap_remove(0),
            _ => Bytes::from(frames.concat()),
        })
    }
}

/// Posts the JSON `body` to `path` with `headers` and returns the response body of a success
/// status. Another status becomes [`ProviderError::Status`] with the upstream's message, and
/// passing `deadline` becomes [`ProviderError::Timeout`].
pub async fn post_json(
    upstream: &Arc<Upstream>,
    path: Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    deadline: Instant,
) -> Result<ResponseBody, ProviderError> {
    let mut request = Request::post(path)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(body))
        .map_err(|error| ProviderError::Unsupported(error.to_string()))?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let response = tokio::time::timeout_at(deadline, upstream.send(request))
        .await
        .map_err(|_| ProviderError::Timeout)??;
    let status = response.status();
    let body = response.into_body();
    if status.is_success() {
        return Ok(body);
    }
    let message = match body.collect(deadline).await {
        Ok(bytes) => super::error_message(&bytes),
        Err(error) => format!("error body unreadable: {error}"),
    };
    Err(ProviderError::Status {
        status: status.as_u16(),
        message,
    })
}

/// Returns the body as a stream of byte frames that fails with [`ProviderError::Timeout`] when
/// `deadline` passes before the end.
pub fn until_deadline(
    body: ResponseBody,
    deadline: Instant,
) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + 'static {
    async_stream::stream! {
        let mut body = std::pin::pin!(body);
        let mut deadline = std::pin::pin!(tokio::time::sleep_until(deadline));
        loop {
            tokio::select! {
                biased;
                next = body.next() => match next {
                    Some(item) => yield item,
                    None => break,
                },
                () = &mut deadline => {
                    yield Err(ProviderError::Timeout);
                    break;
                }
            }
        }
    }
}

/// Returns the origin-form URI (path and query) of `url`.
pub fn origin_form(url: &Url) -> Result<Uri, SetupError> {
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    path.parse()
        .map_err(|error: hyper::http::uri::InvalidUri| SetupError::Path(error.to_string()))
}

fn map_hyper_error(error: &hyper::Error) -> ProviderError {
    ProviderError::InvalidResponse(super::root_cause(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query() {
        let url = Url::parse("http://127.0.0.1:9001/v1/chat/completions?api-version=1")
            .expect("valid URL");
        assert_eq!(
            origin_form(&url).expect("valid path").to_string(),
            "/v1/chat/completions?api-version=1"
        );
    }

    #[test]
    fn authority_names_port_only_when_given() {
        let plain = Upstream::new(
            &Url::parse("http://127.0.0.1:9001/v1").expect("URL"),
            Duration::from_secs(1),
        )
        .expect("upstream");
        assert_eq!(plain.authority, "127.0.0.1:9001");
        let tls = Upstream::new(
            &Url::parse("https://api.openai.com/v1").expect("URL"),
            Duration::from_secs(1),
        )
        .expect("upstream");
        assert_eq!(tls.authority, "api.openai.com");
        assert_eq!(tls.port, 443);
        let ipv6 = Upstream::new(
            &Url::parse("http://[::1]:9001/v1").expect("URL"),
            Duration::from_secs(1),
        )
        .expect("upstream");
        assert_eq!(ipv6.host, "::1");
        assert_eq!(ipv6.authority, "[::1]:9001");
    }

    /// Starts a server whose `/whole` returns `ok` and whose `/slow` sends one frame and then
    /// waits. Returns its URL and a counter of the connections it accepted.
    async fn server() -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::serve::ListenerExt;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let app = axum::Router::new()
            .route("/whole", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    let frames = futures_util::stream::once(async {
                        Ok::<_, std::convert::Infallible>(Bytes::from_static(b"first"))
                    })
                    .chain(futures_util::stream::pending());
                    axum::body::Body::from_stream(frames)
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = Url::parse(&format!("http://{address}/")).expect("URL");
        (url, accepted)
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .body(Full::new(Bytes::new()))
            .expect("request")
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn finished_body_reuses_connection() {
        let (url, accepted) = server().await;
        let upstream = Arc::new(Upstream::new(&url, Duration::from_secs(5)).expect("upstream"));

        for _ in 0..3 {
            let response = upstream.send(get("/whole")).await.expect("response");
            let body = response
                .into_body()
                .collect(deadline())
                .await
                .expect("body");
            assert_eq!(body, Bytes::from_static(b"ok"));
        }
        // A body dropped after its last frame arrived, without reading the end.
        let response = upstream.send(get("/whole")).await.expect("response");
        let mut body = response.into_body();
        assert_eq!(
            body.next().await.map(|frame| frame.ok()),
            Some(Some(Bytes::from_static(b"ok")))
        );
        drop(body);
        let response = upstream.send(get("/whole")).await.expect("response");
        response
            .into_body()
            .collect(deadline())
            .await
            .expect("body");

        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unfinished_body_closes_connection() {
        let (url, accepted) = server().await;
        let upstream = Arc::new(Upstream::new(&url, Duration::from_secs(5)).expect("upstream"));

        let response = upstream.send(get("/slow")).await.expect("response");
        let mut body = response.into_body();
        assert_eq!(
            body.next().await.map(|frame| frame.ok()),
            Some(Some(Bytes::from_static(b"first")))
        );
        drop(body);
        let response = upstream.send(get("/whole")).await.expect("response");
        response
            .into_body()
            .collect(deadline())
            .await
            .expect("body");

        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connection_is_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let url = Url::parse(&format!("http://{address}/")).expect("URL");
        let upstream = Arc::new(Upstream::new(&url, Duration::from_secs(5)).expect("upstream"));

        let error = upstream.send(get("/whole")).await.expect_err("refused");
        assert!(matches!(error, ProviderError::Connect(_)), "{error:?}");
    }
}
