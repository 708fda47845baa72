//! HTTP client of the control API (`/control/v1/...`) and the errors of its requests.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::{ACCEPT, ACCEPT_LANGUAGE, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::redirect::Policy;
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use synaxis_shared::api::JUSTIFICATION_HEADER;
use synaxis_shared::error::ErrorBody;

use crate::cli::{BearerToken, Justification};
use crate::exit::Exit;
use crate::language::Language;

/// Maximum number of characters of a non-JSON error body kept for the error message.
const BODY_EXCERPT_CHARS: usize = 200;

/// An error of one control API request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("the token is not a valid HTTP header value")]
    InvalidToken,
    /// `SYNAXIS_CA_CERT` names a file that is not a PEM certificate bundle.
    #[error("cannot use the CA certificates in {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error("the endpoint {endpoint} is not a base URL")]
    InvalidEndpoint { endpoint: String },
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the request to {endpoint} timed out after {seconds} seconds")]
    Timeout {
        endpoint: String,
        seconds: u64,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {endpoint} failed")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// An error response with the API's JSON error body.
    #[error("{message} (HTTP {status})")]
    Api { status: StatusCode, message: String },
    /// An error response without the API's JSON error body, such as one from a proxy.
    #[error("HTTP {status} without an error body: {body}")]
    Status { status: StatusCode, body: String },
    /// A success response whose body is not the expected JSON.
    #[error("HTTP {status} with an unexpected body")]
    InvalidResponse {
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Api { status, .. } | Self::Status { status, .. } => Exit::for_status(*status),
            Self::InvalidToken | Self::InvalidEndpoint { .. } | Self::CaCert { .. } => Exit::Usage,
            Self::Build(_)
            | Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::InvalidResponse { .. } => Exit::Failure,
        }
    }

    /// Returns the message of the innermost error in the source chain, such as
    /// `Connection refused (os error 111)`, or an empty string for errors without a source.
    pub fn root_cause(&self) -> String {
        let mut cause = self.source();
        while let Some(next) = cause.and_then(|error| error.source()) {
            cause = Some(next);
        }
        cause.map(ToString::to_string).unwrap_or_default()
    }
}

/// A success response: the JSON as the server sent it, and the same JSON decoded.
#[derive(Debug)]
pub struct Reply<T> {
    pub raw: Value,
    pub body: T,
}

/// A control API client that sends the token, the language and the justification, if any,
/// on every request.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    timeout: Duration,
}

/// Environment variable naming a PEM file of certificate authorities to trust besides the
/// public web roots, for a synaxisd whose certificate a private CA signed.
pub const CA_CERT_ENV: &str = "SYNAXIS_CA_CERT";

fn read_ca_certs(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let error = |reason: String| ClientError::CaCert {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| error(source.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| error(source.to_string()))?;
    if certificates.is_empty() {
        return Err(error("it holds no PEM certificate".to_owned()));
    }
    Ok(certificates)
}

impl Client {
    pub fn new(
        endpoint: Url,
        token: &BearerToken,
        language: Language,
        timeout: Duration,
        justification: Option<&Justification>,
    ) -> Result<Self, ClientError> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ClientError::InvalidToken)?;
        authorization.set_sensitive(true);

        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT_LANGUAGE, HeaderValue::from_static(language.tag()));
        if let Some(justification) = justification {
            headers.insert(JUSTIFICATION_HEADER, justification.header_value().clone());
        }

        // Redirects are not followed, because reqwest 0.12 resends a POST as a GET after a
        // 301, 302 or 303, and keeps the operator token on a redirect from https to http.
        let mut builder = reqwest::Client::builder();
        if let Some(path) = std::env::var_os(CA_CERT_ENV).filter(|path| !path.is_empty()) {
            for certificate in read_ca_certs(std::path::Path::new(&path))? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .default_headers(headers)
            .user_agent(concat!("synaxisctl/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .redirect(Policy::none())
            .build()
            .map_err(ClientError::Build)?;

        Ok(Self {
            http,
            endpoint,
            timeout,
        })
    }

    /// Sends `GET /control/v1/{segments}` with the given query parameters.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Reply<T>, ClientError> {
        let url = self.url(segments)?;
        self.send(self.http.get(url).query(query)).await
    }

    /// Sends `POST /control/v1/{segments}` with a JSON body.
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply<T>, ClientError> {
        let url = self.url(segments)?;
        self.send(self.http.post(url).json(body)).await
    }

    /// Sends `PATCH /control/v1/{segments}` with a JSON body.
    pub async fn patch<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply<T>, ClientError> {
        let url = self.url(segments)?;
        self.send(self.http.patch(url).json(body)).await
    }

    /// Sends `PUT /control/v1/{segments}` with a JSON body.
    pub async fn put<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply<T>, ClientError> {
        let url = self.url(segments)?;
        self.send(self.http.put(url).json(body)).await
    }

    /// Sends `DELETE /control/v1/{segments}`.
    pub async fn delete<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Reply<T>, ClientError> {
        let url = self.url(segments)?;
        self.send(self.http.delete(url)).await
    }

    /// Sends `POST /control/v1/{segments}` without a body.
    pub async fn post_empty<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Reply<T>, ClientError> {
        let url = self.url(segments)?;
        self.send(self.http.post(url)).await
    }

    /// Appends `control/v1` and `segments` to the endpoint's path, percent-encoding each
    /// segment, so a slug such as `a/b` stays one segment.
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidEndpoint {
                endpoint: self.endpoint_name(),
            })?
            .pop_if_empty()
            .extend(["control", "v1"])
            .extend(segments);
        Ok(url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<Reply<T>, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.transport_error(error))?;

        if !status.is_success() {
            return Err(error_response(status, &bytes));
        }

        let invalid = |source| ClientError::InvalidResponse { status, source };
        let raw: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
        let body = T::deserialize(&raw).map_err(invalid)?;
        Ok(Reply { raw, body })
    }

    fn transport_error(&self, source: reqwest::Error) -> ClientError {
        let endpoint = self.endpoint_name();
        if source.is_timeout() {
            ClientError::Timeout {
                endpoint,
                seconds: self.timeout.as_secs(),
                source,
            }
        } else if source.is_connect() {
            ClientError::Connect { endpoint, source }
        } else {
            ClientError::Transport { endpoint, source }
        }
    }

    /// Returns the endpoint as the user would type it, without the trailing slash that `Url` adds.
    fn endpoint_name(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }
}

/// Builds the error of a response with an error status, from its JSON error body when it has
/// one.
fn error_response(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status,
            message: body.error.message,
        },
        Err(_) => ClientError::Status {
            status,
            body: excerpt(bytes),
        },
    }
}

/// Returns the start of a body as one line of text, for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= BODY_EXCERPT_CHARS {
        return line;
    }
    let mut shortened: String = line.chars().take(BODY_EXCERPT_CHARS).collect();
    shortened.push('…');
    shortened
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(endpoint: &str) -> Result<Client, Box<dyn std::error::Error>> {
        let token: BearerToken = "op-token".parse()?;
        Ok(Client::new(
            Url::parse(endpoint)?,
            &token,
            Language::En,
            Duration::from_secs(1),
            None,
        )?)
    }

    #[test]
    fn url_appends_control_path() -> Result<(), Box<dyn std::error::Error>> {
        let client = client("http://127.0.0.1:8080")?;
        let url = client.url(&["orgs", "acme", "revoke"])?;
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/control/v1/orgs/acme/revoke"
        );
        Ok(())
    }

    #[test]
    fn url_keeps_endpoint_path_prefix() -> Result<(), Box<dyn std::error::Error>> {
        let client = client("https://gateway.example.com/synaxis/")?;
        let url = client.url(&["keys"])?;
        assert_eq!(
            url.as_str(),
            "https://gateway.example.com/synaxis/control/v1/keys"
        );
        Ok(())
    }

    #[test]
    fn url_encodes_segments() -> Result<(), Box<dyn std::error::Error>> {
        let client = client("http://127.0.0.1:8080")?;
        let url = client.url(&["orgs", "a/b?c"])?;
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/control/v1/orgs/a%2Fb%3Fc"
        );
        Ok(())
    }

    #[test]
    fn error_response_reads_error_body() -> Result<(), Box<dyn std::error::Error>> {
        let body = serde_json::to_vec(&serde_json::json!({
            "error": {
                "message": "The organization `x` was not found.",
                "type": "invalid_request_error",
                "code": "not_found",
                "param": null
            }
        }))?;

        let error = error_response(StatusCode::NOT_FOUND, &body);

        let ClientError::Api { status, message } = &error else {
            return Err(format!("expected an API error, got {error:?}").into());
        };
        assert_eq!(*status, StatusCode::NOT_FOUND);
        assert_eq!(message, "The organization `x` was not found.");
        assert_eq!(error.exit(), Exit::NotFound);
        Ok(())
    }

    #[test]
    fn error_response_without_body_keeps_status() -> Result<(), Box<dyn std::error::Error>> {
        let body = b"<html>\n<h1>Bad Gateway</h1>\n</html>";

        let error = error_response(StatusCode::BAD_GATEWAY, body);

        let ClientError::Status { status, body } = &error else {
            return Err(format!("expected a status error, got {error:?}").into());
        };
        assert_eq!(*status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, "<html> <h1>Bad Gateway</h1> </html>");
        assert_eq!(error.exit(), Exit::Failure);
        Ok(())
    }

    #[test]
    fn exit_follows_http_status() {
        let cases = [
            (StatusCode::UNAUTHORIZED, Exit::Denied),
            (StatusCode::CONFLICT, Exit::Conflict),
            (StatusCode::INTERNAL_SERVER_ERROR, Exit::Failure),
        ];
        for (status, expected) in cases {
            let error = ClientError::Api {
                status,
                message: String::new(),
            };
            assert_eq!(error.exit(), expected, "{status}");
        }
    }

    #[test]
    fn permission_denied_exits_denied() -> Result<(), Box<dyn std::error::Error>> {
        let body = serde_json::to_vec(&serde_json::json!({
            "error": {
                "message": "The role `viewer` may not create keys.",
                "type": "invalid_request_error",
                "code": "permission_denied",
                "param": null
            }
        }))?;

        let error = error_response(StatusCode::FORBIDDEN, &body);

        assert_eq!(error.exit(), Exit::Denied);
        Ok(())
    }

    /// Accepts one HTTP request on a loopback port, answers `{}` with status 200, and returns
    /// the request's head (request line and headers) in lowercase.
    async fn capture_request_head(
        listener: tokio::net::TcpListener,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut stream, _) = listener.accept().await?;
        let mut head = Vec::new();
        let mut buffer = [0_u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            .await?;
        Ok(String::from_utf8_lossy(&head).to_lowercase())
    }

    #[tokio::test]
    async fn justification_is_sent_as_header() -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(capture_request_head(listener));
        let token: BearerToken = "op-token".parse()?;
        let justification = crate::cli::parse_justification("ticket OPS-12")?;
        let client = Client::new(
            Url::parse(&endpoint)?,
            &token,
            Language::PtBr,
            Duration::from_secs(5),
            Some(&justification),
        )?;

        client.get::<Value>(&["orgs"], &[]).await?;
        let head = server.await?.map_err(|error| error.to_string())?;

        assert!(head.starts_with("get /control/v1/orgs "), "{head}");
        assert!(
            head.contains("\r\nauthorization: bearer op-token\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\naccept-language: pt-br\r\n"), "{head}");
        assert!(
            head.contains("\r\nx-synaxis-justification: ticket ops-12\r\n"),
            "{head}"
        );
        Ok(())
    }

    #[test]
    fn excerpt_shortens_long_bodies() {
        let body = "x".repeat(BODY_EXCERPT_CHARS + 50);
        let shortened = excerpt(body.as_bytes());
        assert_eq!(shortened.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(shortened.ends_with('…'));
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() -> Result<(), Box<dyn std::error::Error>> {
        // Port 9 (discard) on loopback: nothing listens there in the test environment.
        let client = client("http://127.0.0.1:9")?;
        let result = client.get::<Value>(&["orgs"], &[]).await;
        let Err(error) = result else {
            return Err("expected a connection error, got a reply".into());
        };

        let ClientError::Connect { endpoint, .. } = &error else {
            return Err(format!("expected a connection error, got {error:?}").into());
        };
        assert_eq!(endpoint, "http://127.0.0.1:9");
        assert_eq!(error.exit(), Exit::Failure);
        assert!(!error.root_cause().is_empty());
        Ok(())
    }
}
