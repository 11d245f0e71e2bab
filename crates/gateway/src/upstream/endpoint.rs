//! HTTP to one upstream: its URL, the client that holds its connection pool
//! and TLS settings, the headers it is configured with, and the requests
//! Tether makes there — a POST per message, a GET that opens an event
//! stream, a DELETE that ends a session — each bounded by the upstream's
//! timeout.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tether_wire::protocol;

use super::error::UpstreamError;
use super::http1;
use super::response::HttpResponse;
use crate::config::UpstreamConfig;

/// Largest single upstream message or SSE event Tether accepts.
pub const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

/// The TLS files an upstream's definition names, as read when it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA certificates (PEM).
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM).
    pub identity: Option<Vec<u8>>,
}

impl TlsMaterial {
    /// Reads the files `config` names.
    pub fn read(config: &UpstreamConfig) -> Result<TlsMaterial, BuildError> {
        let read = |path: &Option<std::path::PathBuf>| {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|source| BuildError::TlsFile {
                        path: p.clone(),
                        source,
                    })
                })
                .transpose()
        };
        Ok(TlsMaterial {
            ca: read(&config.tls_ca_file)?,
            identity: read(&config.tls_client_identity_file)?,
        })
    }
}

/// Why an upstream's definition could not be turned into a way to reach it.
#[derive(Debug)]
pub enum BuildError {
    /// The URL does not parse.
    Url(url::ParseError),
    /// A configured header name or value is not valid in HTTP.
    Header(String),
    /// A header value could not be resolved (its environment variable).
    Config(crate::config::ConfigError),
    /// A TLS file could not be read.
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no certificate.
    NoCertificate,
    /// The TLS material or the client could not be set up.
    Client(reqwest::Error),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Url(e) => write!(f, "bad url: {e}"),
            BuildError::Header(why) => write!(f, "bad header: {why}"),
            BuildError::Config(e) => write!(f, "{e}"),
            BuildError::TlsFile { path, source } => write!(f, "{}: {source}", path.display()),
            BuildError::NoCertificate => f.write_str("tls_ca_file holds no PEM certificate"),
            BuildError::Client(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Url(e) => Some(e),
            BuildError::TlsFile { source, .. } => Some(source),
            BuildError::Client(e) => Some(e),
            BuildError::Config(e) => Some(e),
            BuildError::Header(_) | BuildError::NoCertificate => None,
        }
    }
}

/// Where and how Tether reaches one HTTP upstream.
#[derive(Debug)]
pub struct HttpEndpoint {
    url: reqwest::Url,
    /// The URL's path and query: the request target on the lean client.
    target: String,
    client: Client,
    headers: HeaderMap,
    timeout: Duration,
}

/// The client an endpoint's requests take.
#[derive(Debug)]
enum Client {
    /// Plain `http://`: the lean HTTP/1.1 client.
    Lean(http1::Client),
    /// TLS (HTTP/1.1 or HTTP/2), or a client shared with other uses.
    General(reqwest::Client),
}

/// Headers of one upstream POST beyond the static ones.
#[derive(Default)]
pub struct PostHeaders<'a> {
    /// `Mcp-Session-Id`, for legacy sessions.
    pub session_id: Option<&'a HeaderValue>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method` (modern).
    pub method: Option<&'a str>,
    /// `Mcp-Name` (modern), unencoded.
    pub name: Option<&'a str>,
    /// Further headers passed through unchanged (modern `Mcp-Param-*`).
    pub extra: &'a [(HeaderName, HeaderValue)],
    /// The client's `Authorization`, for upstreams configured to receive it.
    pub credentials: Option<HeaderValue>,
    /// W3C trace context (`traceparent`, `tracestate`) of a traced request.
    pub trace: &'a [(HeaderName, HeaderValue)],
}

/// What identifies one upstream session in its HTTP requests.
#[derive(Debug, Clone, Default)]
pub struct SessionHeaders {
    /// The upstream's `Mcp-Session-Id`, if it issued one.
    pub session_id: Option<HeaderValue>,
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// The client's `Authorization`, for upstreams configured to receive it.
    pub credentials: Option<HeaderValue>,
}

impl HttpEndpoint {
    /// The endpoint `config` defines, with its TLS material and its static
    /// headers (`configured`, resolved).
    pub fn new(
        config: &UpstreamConfig,
        tls: &TlsMaterial,
        configured: &BTreeMap<String, String>,
    ) -> Result<HttpEndpoint, BuildError> {
        let url = reqwest::Url::parse(&config.url).map_err(BuildError::Url)?;
        let mut headers = HeaderMap::new();
        for (k, v) in configured {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| BuildError::Header(format!("{k:?}: {e}")))?;
            if FRAMING.contains(&name) {
                return Err(BuildError::Header(format!(
                    "{k:?} frames the request and is set by Tether"
                )));
            }
            let mut value =
                HeaderValue::from_str(v).map_err(|e| BuildError::Header(format!("{k:?}: {e}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let connect_timeout = Duration::from_secs(10);
        let mut client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .connect_timeout(connect_timeout);
        if let Some(ca) = &tls.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(BuildError::Client)?;
            if certs.is_empty() {
                return Err(BuildError::NoCertificate);
            }
            for cert in certs {
                client = client.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &tls.identity {
            client =
                client.identity(reqwest::Identity::from_pem(identity).map_err(BuildError::Client)?);
        }
        // TLS files are checked even for a plain-http URL: a bad file is a
        // configuration error whichever client ends up in use.
        let lean = (!proxy_configured())
            .then(|| http1::Client::for_url(&url, connect_timeout))
            .flatten();
        if let Some(lean) = lean {
            return Ok(HttpEndpoint::build(
                url,
                Client::Lean(lean),
                headers,
                config.timeout(),
            ));
        }
        let client = Client::General(client.build().map_err(BuildError::Client)?);
        Ok(HttpEndpoint::build(url, client, headers, config.timeout()))
    }

    fn build(url: reqwest::Url, client: Client, headers: HeaderMap, timeout: Duration) -> Self {
        HttpEndpoint {
            target: request_target(&url).to_owned(),
            url,
            client,
            headers,
            timeout,
        }
    }

    /// An endpoint at `url` reached with `client` (whose connections it
    /// shares), sending `headers` with every request.
    pub fn with_client(
        url: reqwest::Url,
        client: reqwest::Client,
        headers: HeaderMap,
        timeout: Duration,
    ) -> HttpEndpoint {
        HttpEndpoint::build(url, Client::General(client), headers, timeout)
    }

    /// The upstream's URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// How long a request may wait for the response head (and between the
    /// chunks of a body).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs one JSON-RPC message to the upstream's URL; the raw response head.
    pub async fn post(
        &self,
        body: Bytes,
        headers: PostHeaders<'_>,
    ) -> Result<HttpResponse, UpstreamError> {
        let mut extra = Vec::with_capacity(6 + headers.extra.len());
        extra.push((http::header::CONTENT_TYPE, JSON.clone()));
        extra.push((http::header::ACCEPT, JSON_OR_SSE.clone()));
        if let Some(id) = headers.session_id {
            extra.push((SESSION_ID.clone(), id.clone()));
        }
        if let Some(v) = headers.protocol_version {
            extra.push((PROTOCOL_VERSION.clone(), value(v)?));
        }
        if let Some(m) = headers.method {
            extra.push((METHOD.clone(), value(m)?));
        }
        if let Some(n) = headers.name {
            let encoded = protocol::encode_header_value(n);
            extra.push((NAME.clone(), value(&encoded)?));
        }
        extra.extend(headers.extra.iter().cloned());
        extra.extend(headers.trace.iter().cloned());
        if let Some(credentials) = headers.credentials {
            extra.push((http::header::AUTHORIZATION, credentials));
        }
        self.send(http::Method::POST, None, &extra, body).await
    }

    /// POSTs one message to `endpoint` (an HTTP+SSE session's message
    /// endpoint, on this upstream's origin); the answer comes on the stream.
    pub async fn post_message(
        &self,
        endpoint: &reqwest::Url,
        body: Bytes,
    ) -> Result<(), UpstreamError> {
        let extra = [(http::header::CONTENT_TYPE, JSON.clone())];
        let resp = self
            .send(http::Method::POST, Some(endpoint), &extra, body)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            http::StatusCode::NOT_FOUND => Err(UpstreamError::SessionLost),
            s => Err(UpstreamError::Status {
                status: s.as_u16(),
                body: String::new(),
            }),
        }
    }

    /// Opens an event stream with `GET` at the upstream's URL (for a session,
    /// with its headers; resuming after `last_event_id`).
    pub async fn open_stream(
        &self,
        session: Option<&SessionHeaders>,
        last_event_id: Option<&str>,
    ) -> Result<HttpResponse, UpstreamError> {
        let mut extra = vec![(http::header::ACCEPT, SSE.clone())];
        if let Some(session) = session {
            extra.extend(session.headers()?);
        }
        if let Some(last) = last_event_id {
            extra.push((LAST_EVENT_ID.clone(), value(last)?));
        }
        self.send(http::Method::GET, None, &extra, Bytes::new())
            .await
    }

    /// Ends a session with `DELETE`; bounded by the timeout, and only logged
    /// when it fails (the session is gone for Tether either way).
    pub async fn delete_session(&self, upstream: &str, session: &SessionHeaders) {
        if session.session_id.is_none() {
            return;
        }
        let sent = async {
            let extra = session.headers()?;
            self.send(http::Method::DELETE, None, &extra, Bytes::new())
                .await
        }
        .await;
        match sent {
            Ok(resp) => {
                tracing::debug!(%upstream, status = resp.status().as_u16(), "closed upstream session");
            }
            Err(UpstreamError::Timeout) => {
                tracing::warn!(%upstream, "upstream session DELETE timed out; abandoned")
            }
            Err(e) => tracing::warn!(%upstream, error = %e, "upstream session DELETE failed"),
        }
    }

    /// Sends a request to the upstream's URL (or to `url` on its origin),
    /// bounding the wait for the response head by the timeout.
    async fn send(
        &self,
        method: http::Method,
        url: Option<&reqwest::Url>,
        extra: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<HttpResponse, UpstreamError> {
        let sent = async {
            match &self.client {
                Client::Lean(client) => self.send_lean(client, &method, url, extra, body).await,
                Client::General(client) => {
                    let mut req = client
                        .request(method, url.unwrap_or(&self.url).clone())
                        .headers(self.headers.clone());
                    for (name, value) in extra {
                        req = req.header(name, value);
                    }
                    req.body(body)
                        .send()
                        .await
                        .map(HttpResponse::from)
                        .map_err(UpstreamError::from_reqwest)
                }
            }
        };
        tokio::time::timeout(self.timeout, sent)
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    /// [`Self::send`] on the lean client, following same-origin redirects.
    async fn send_lean(
        &self,
        client: &http1::Client,
        method: &http::Method,
        url: Option<&reqwest::Url>,
        extra: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<HttpResponse, UpstreamError> {
        let mut target = Cow::Borrowed(url.map_or(self.target.as_str(), request_target));
        for _ in 0..=MAX_REDIRECTS {
            let resp = client
                .send(method, &target, &self.headers, extra, body.clone())
                .await
                .map_err(UpstreamError::from_http1)?;
            match self.same_origin_redirect(&target, &resp) {
                Some(next) => target = Cow::Owned(next),
                None => return Ok(HttpResponse::from(resp)),
            }
        }
        Err(UpstreamError::Protocol("too many redirects".into()))
    }

    /// Where a 307/308 answer to a request for `target` sends it again, when
    /// that is on the upstream's origin (the request is then repeated as it
    /// was: the upstream did not act on it). Other answers, and redirects
    /// elsewhere, are the answer.
    fn same_origin_redirect(&self, target: &str, resp: &http1::Response) -> Option<String> {
        if !matches!(resp.status.as_u16(), 307 | 308) {
            return None;
        }
        let location = resp.headers.get(http::header::LOCATION)?.to_str().ok()?;
        let next = self.url.join(target).ok()?.join(location).ok()?;
        (next.origin() == self.url.origin()).then(|| request_target(&next).to_owned())
    }
}

/// Redirects followed at most per request.
const MAX_REDIRECTS: usize = 5;

/// Headers that frame a request: Tether writes them, a definition may not.
static FRAMING: [HeaderName; 5] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
    http::header::UPGRADE,
    http::header::TE,
];

/// Whether an HTTP proxy is configured in the environment: then every
/// request takes the general client, which honours it (and `NO_PROXY`).
fn proxy_configured() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

static SESSION_ID: HeaderName = HeaderName::from_static(protocol::HEADER_SESSION_ID);
static PROTOCOL_VERSION: HeaderName = HeaderName::from_static(protocol::HEADER_PROTOCOL_VERSION);
static METHOD: HeaderName = HeaderName::from_static(protocol::HEADER_METHOD);
static NAME: HeaderName = HeaderName::from_static(protocol::HEADER_NAME);
static LAST_EVENT_ID: HeaderName = HeaderName::from_static(protocol::HEADER_LAST_EVENT_ID);
static JSON: HeaderValue = HeaderValue::from_static("application/json");
static SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
static JSON_OR_SSE: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");

/// A header value from text Tether was given (a client's or upstream's).
fn value(text: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(text)
        .map_err(|_| UpstreamError::Protocol(format!("not a valid header value: {text:?}").into()))
}

/// A URL's path and query: what the request line names.
fn request_target(url: &reqwest::Url) -> &str {
    &url[url::Position::BeforePath..url::Position::AfterQuery]
}

impl SessionHeaders {
    /// The headers naming this session on a GET or DELETE.
    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, UpstreamError> {
        let mut out = vec![(PROTOCOL_VERSION.clone(), value(&self.protocol_version)?)];
        if let Some(id) = &self.session_id {
            out.push((SESSION_ID.clone(), id.clone()));
        }
        if let Some(credentials) = &self.credentials {
            out.push((http::header::AUTHORIZATION, credentials.clone()));
        }
        Ok(out)
    }
}

/// Reads a whole response body (at most [`MAX_UPSTREAM_MESSAGE`]), waiting at
/// most `timeout` for each chunk.
pub async fn read_body(mut resp: HttpResponse, timeout: Duration) -> Result<Bytes, UpstreamError> {
    if resp
        .content_length()
        .is_some_and(|n| n as usize > MAX_UPSTREAM_MESSAGE)
    {
        return Err(UpstreamError::Protocol(
            "upstream response too large".into(),
        ));
    }
    // Usually the whole body is one chunk: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout(timeout, resp.chunk())
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        match chunk {
            None => break,
            Some(c) => {
                if first.is_none() && body.is_empty() {
                    first = Some(c);
                    continue;
                }
                if let Some(f) = first.take() {
                    body.extend_from_slice(&f);
                }
                body.extend_from_slice(&c);
                if body.len() > MAX_UPSTREAM_MESSAGE {
                    return Err(UpstreamError::Protocol(
                        "upstream response too large".into(),
                    ));
                }
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn endpoint(url: &str, headers: &[(&str, &str)]) -> Result<HttpEndpoint, BuildError> {
        let configured = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = UpstreamConfig::http("up", url);
        HttpEndpoint::new(&config, &TlsMaterial::default(), &configured)
    }

    /// A server that redirects `/mcp` to `/mcp/` (307, as web frameworks
    /// do for a mount point) and answers there; the paths it was asked for.
    async fn redirecting_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                        let answer: &[u8] = if path == "/mcp" {
                            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /mcp/\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                        };
                        let _ = tx.send(path);
                        s.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn follows_a_same_origin_redirect_with_the_same_request() {
        let (url, mut asked) = redirecting_server().await;
        let endpoint = endpoint(&url, &[]).unwrap();
        let resp = endpoint
            .post(Bytes::from_static(b"{}"), PostHeaders::default())
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        assert_eq!(asked.recv().await.as_deref(), Some("/mcp"));
        assert_eq!(asked.recv().await.as_deref(), Some("/mcp/"));
    }

    #[test]
    fn framing_headers_are_refused_in_a_definition() {
        for name in ["content-length", "Transfer-Encoding", "connection"] {
            let e = endpoint("http://127.0.0.1:1/mcp", &[(name, "1")]).unwrap_err();
            assert!(e.to_string().contains("set by Tether"), "{name}: {e}");
        }
        assert!(endpoint("http://127.0.0.1:1/mcp", &[("x-api-key", "k")]).is_ok());
    }
}
