//! Streamable HTTP client side: one POST per message, replies as JSON, SSE or
//! 202, upstream SSE streams decoded incrementally and resumed when the
//! upstream closes them early.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Eras, Upstream, UpstreamSession};
use crate::config::Transport;
use tether_wire::jsonrpc::{self, Message};
use tether_wire::protocol;
use tether_wire::sse;

/// Largest single upstream message or SSE event Tether accepts.
pub const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;
/// How many times a stream closed before its response is resumed with `Last-Event-ID`.
const MAX_RESUMES: u32 = 5;

/// Why an upstream exchange failed.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// The request never left Tether (connection refused, DNS, TLS): safe to retry.
    Connect(String),
    /// The connection failed after the request may have been delivered.
    Transport(String),
    /// No answer within the upstream's timeout.
    Timeout,
    /// The upstream no longer knows the session (HTTP 404 on a session request).
    SessionLost,
    /// An HTTP status Tether cannot use.
    Status {
        /// HTTP status code.
        status: u16,
        /// First bytes of the body, for diagnostics.
        body: String,
    },
    /// The upstream answered something that is not MCP.
    Protocol(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::Transport(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Timeout => f.write_str("timed out"),
            UpstreamError::SessionLost => f.write_str("upstream session expired"),
            UpstreamError::Status { status, body } => write!(f, "HTTP {status}: {body}"),
            UpstreamError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl UpstreamError {
    /// True when the upstream provably did not process the request, so even a
    /// `tools/call` may be retried on a fresh session.
    pub fn provably_not_delivered(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::SessionLost)
    }

    /// Whether a request of `method` that failed this way may be sent again on
    /// a fresh session: always when it provably never arrived; after a broken
    /// connection only when repeating it is harmless (never a `tools/call`,
    /// DESIGN invariant 11).
    pub fn retryable(&self, method: &str) -> bool {
        self.provably_not_delivered()
            || (method != "tools/call" && matches!(self, UpstreamError::Transport(_)))
    }

    /// True when the session that produced this error must not be reused.
    /// A timeout does not: the upstream may simply be slow, and closing the
    /// session would throw away its state while a tool may still be running.
    pub fn poisons_session(&self) -> bool {
        !matches!(self, UpstreamError::Status { .. } | UpstreamError::Timeout)
    }

    /// True when the upstream may have switched era or transport (re-probe next time).
    pub fn suggests_era_change(&self) -> bool {
        matches!(
            self,
            UpstreamError::Status {
                status: 400..=499,
                ..
            } | UpstreamError::Protocol(_)
        )
    }

    /// Classifies a reqwest failure: connecting (not delivered), timeout or transport.
    pub(super) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_connect() {
            UpstreamError::Connect(error_chain(&e))
        } else if e.is_timeout() {
            UpstreamError::Timeout
        } else {
            UpstreamError::Transport(error_chain(&e))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the upstream answered to a POST.
pub enum Reply {
    /// One JSON-RPC message.
    Json(Bytes),
    /// An SSE stream of messages, ending with the response.
    Stream(Box<EventStream>),
    /// 202: a notification or response was accepted.
    Accepted,
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
    pub extra: &'a [(http::HeaderName, HeaderValue)],
    /// The client's `Authorization`, for upstreams configured to receive it.
    pub credentials: Option<HeaderValue>,
}

/// POSTs one JSON-RPC message to the upstream and classifies the reply.
pub async fn post(
    upstream: &Upstream,
    body: Bytes,
    headers: PostHeaders<'_>,
    session: Option<Arc<UpstreamSession>>,
) -> Result<Reply, UpstreamError> {
    let had_session = headers.session_id.is_some();
    let resp = post_raw(upstream, body, headers).await?;
    classify_reply(upstream, resp, had_session, session).await
}

/// POSTs one JSON-RPC message and returns the raw HTTP response head.
pub async fn post_raw(
    upstream: &Upstream,
    body: Bytes,
    headers: PostHeaders<'_>,
) -> Result<reqwest::Response, UpstreamError> {
    let mut req = upstream
        .http
        .post(upstream.url()?.clone())
        .headers(upstream.static_headers.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream");
    if let Some(id) = headers.session_id {
        req = req.header(protocol::HEADER_SESSION_ID, id.clone());
    }
    if let Some(v) = headers.protocol_version {
        req = req.header(protocol::HEADER_PROTOCOL_VERSION, v);
    }
    if let Some(m) = headers.method {
        req = req.header(protocol::HEADER_METHOD, m);
    }
    if let Some(n) = headers.name {
        req = req.header(protocol::HEADER_NAME, protocol::encode_header_value(n));
    }
    for (name, value) in headers.extra {
        req = req.header(name, value);
    }
    if let Some(credentials) = headers.credentials {
        req = req.header(http::header::AUTHORIZATION, credentials);
    }
    send_with_timeout(upstream, req.body(body)).await
}

/// Sends a request, bounding the wait for the response head by the upstream's timeout.
pub async fn send_with_timeout(
    upstream: &Upstream,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, UpstreamError> {
    tokio::time::timeout(upstream.config.timeout(), req.send())
        .await
        .map_err(|_| UpstreamError::Timeout)?
        .map_err(UpstreamError::from_reqwest)
}

/// Classifies an upstream HTTP response to a POST.
pub async fn classify_reply(
    upstream: &Upstream,
    resp: reqwest::Response,
    had_session: bool,
    session: Option<Arc<UpstreamSession>>,
) -> Result<Reply, UpstreamError> {
    let status = resp.status();
    if status == http::StatusCode::ACCEPTED {
        return Ok(Reply::Accepted);
    }
    if status == http::StatusCode::NOT_FOUND && had_session {
        return Err(UpstreamError::SessionLost);
    }
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if status.is_success() && is_sse {
        return Ok(Reply::Stream(Box::new(EventStream::new(
            resp,
            session,
            Some(upstream.config.timeout()),
        ))));
    }
    let body = read_body(resp, upstream.config.timeout()).await?;
    if status.is_success() {
        if body.is_empty() {
            return Ok(Reply::Accepted);
        }
        return Ok(Reply::Json(body));
    }
    // A JSON-RPC error answering our request (it has our id) is an answer to relay.
    if status.is_client_error() && Message::parse(&body).is_ok_and(|m| m.error.is_some()) {
        return Ok(Reply::Json(body));
    }
    Err(UpstreamError::Status {
        status: status.as_u16(),
        body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    })
}

async fn read_body(resp: reqwest::Response, timeout: Duration) -> Result<Bytes, UpstreamError> {
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
    let mut stream = resp.bytes_stream();
    loop {
        let chunk = tokio::time::timeout(timeout, stream.next())
            .await
            .map_err(|_| UpstreamError::Timeout)?;
        match chunk {
            None => break,
            Some(Err(e)) => return Err(UpstreamError::from_reqwest(e)),
            Some(Ok(c)) => {
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

type ByteStream = futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// Messages of an upstream SSE response (or of a message link's reply
/// channel), in arrival order, never buffered beyond one network chunk.
pub struct EventStream {
    /// Messages from a link instead of an HTTP body.
    channel: Option<mpsc::Receiver<super::link::Item>>,
    body: Option<ByteStream>,
    decoder: sse::Decoder,
    ready: VecDeque<Bytes>,
    last_event_id: Option<String>,
    retry: Duration,
    resumes: u32,
    session: Option<Arc<UpstreamSession>>,
    idle_timeout: Option<Duration>,
}

impl EventStream {
    fn new(
        resp: reqwest::Response,
        session: Option<Arc<UpstreamSession>>,
        idle: Option<Duration>,
    ) -> Self {
        EventStream {
            channel: None,
            body: Some(resp.bytes_stream().boxed()),
            decoder: sse::Decoder::new(MAX_UPSTREAM_MESSAGE),
            ready: VecDeque::new(),
            last_event_id: None,
            retry: Duration::from_millis(500),
            resumes: 0,
            session,
            idle_timeout: idle,
        }
    }

    /// The messages of a link's reply channel; `idle` bounds the wait for each.
    pub(super) fn channel(rx: mpsc::Receiver<super::link::Item>, idle: Option<Duration>) -> Self {
        EventStream {
            channel: Some(rx),
            body: None,
            decoder: sse::Decoder::new(0),
            ready: VecDeque::new(),
            last_event_id: None,
            retry: Duration::ZERO,
            resumes: 0,
            session: None,
            idle_timeout: idle,
        }
    }

    /// Puts a message back at the front (it is read again next).
    pub(super) fn push_front(&mut self, message: Bytes) {
        self.ready.push_front(message);
    }

    /// Drops the idle timeout (for long-lived streams that may be quiet for hours).
    pub fn without_idle_timeout(mut self: Box<Self>) -> Box<Self> {
        self.idle_timeout = None;
        self
    }

    /// The session's own GET stream: no idle timeout (it may be quiet for hours).
    pub(super) fn listen(resp: reqwest::Response, session: Arc<UpstreamSession>) -> Self {
        EventStream::new(resp, Some(session), None)
    }

    /// The next JSON-RPC message; `None` when the stream ended for good.
    /// A stream the upstream closed early is resumed with `Last-Event-ID`.
    pub async fn next_message(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(Ok(m));
            }
            if let Some(rx) = self.channel.as_mut() {
                return match self.idle_timeout {
                    Some(idle) => tokio::time::timeout(idle, rx.recv())
                        .await
                        .unwrap_or(Some(Err(UpstreamError::Timeout))),
                    None => rx.recv().await,
                };
            }
            let Some(body) = self.body.as_mut() else {
                match self.resume().await {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(e) => return Some(Err(e)),
                }
            };
            let next = match self.idle_timeout {
                Some(idle) => tokio::time::timeout(idle, body.next()).await,
                None => Ok(body.next().await),
            };
            match next {
                Err(_) => return Some(Err(UpstreamError::Timeout)),
                Ok(None) => self.body = None,
                Ok(Some(Err(e))) => {
                    self.body = None;
                    if self.last_event_id.is_none() {
                        return Some(Err(UpstreamError::from_reqwest(e)));
                    }
                }
                Ok(Some(Ok(chunk))) => match self.decoder.feed(&chunk) {
                    Err(e) => return Some(Err(UpstreamError::Protocol(e.to_string()))),
                    Ok(events) => {
                        for ev in events {
                            if let Some(id) = ev.id {
                                self.last_event_id = Some(id);
                            }
                            if (ev.event.is_empty() || ev.event == "message") && !ev.data.is_empty()
                            {
                                self.ready.push_back(Bytes::from(ev.data));
                            }
                        }
                        if let Some(ms) = self.decoder.retry_millis() {
                            self.retry = Duration::from_millis(ms.min(5_000));
                        }
                    }
                },
            }
        }
    }

    /// Reconnects with `GET` + `Last-Event-ID` (2025-11-25 polling/resumption).
    async fn resume(&mut self) -> Result<bool, UpstreamError> {
        let (Some(last), Some(session)) = (self.last_event_id.clone(), self.session.clone()) else {
            return Ok(false);
        };
        if self.resumes >= MAX_RESUMES {
            return Ok(false);
        }
        self.resumes += 1;
        tokio::time::sleep(self.retry).await;
        let resp = session.open_get(Some(&last)).await?;
        self.body = Some(resp.bytes_stream().boxed());
        self.decoder = sse::Decoder::new(MAX_UPSTREAM_MESSAGE);
        Ok(true)
    }
}

/// The `server/discover` request Tether probes upstreams with.
pub(super) fn discover_request() -> Bytes {
    let identity = super::ClientIdentity::tether();
    let body = serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": "tether-discover",
        "method": "server/discover",
        "params": {"_meta": {
            protocol::META_PROTOCOL_VERSION: protocol::MODERN_VERSION,
            protocol::META_CLIENT_INFO: identity.info,
            protocol::META_CLIENT_CAPABILITIES: identity.capabilities,
        }},
    }))
    .expect("discover request serializes");
    Bytes::from(body)
}

/// Probes an HTTP upstream's era: a modern `server/discover` first; a modern
/// answer (result or modern error code) means modern, any other 4xx means
/// legacy — or, with `transport = "auto"`, a 404/405 from a URL that opens an
/// HTTP+SSE stream means the 2024-11-05 transport.
pub async fn detect_era(
    upstream: &Upstream,
    credentials: Option<&HeaderValue>,
) -> Result<Discovery, UpstreamError> {
    let headers = PostHeaders {
        protocol_version: Some(protocol::MODERN_VERSION),
        method: Some("server/discover"),
        credentials: credentials.cloned(),
        ..Default::default()
    };
    let reply = post(upstream, discover_request(), headers, None).await;
    let answer = match reply {
        Ok(Reply::Json(b)) => b,
        Ok(Reply::Stream(mut s)) => match s.next_message().await {
            Some(Ok(b)) => b,
            _ => return Ok(Discovery::legacy()),
        },
        Ok(Reply::Accepted) => return Ok(Discovery::legacy()),
        // Unauthorized/forbidden says nothing about the era.
        Err(
            e @ UpstreamError::Status {
                status: 401 | 403, ..
            },
        ) => return Err(e),
        Err(UpstreamError::Status {
            status: 404 | 405, ..
        }) if upstream.config.transport == Transport::Auto
            && super::sse_client::probe(upstream).await =>
        {
            return Ok(Discovery {
                sse: true,
                ..Discovery::legacy()
            });
        }
        Err(UpstreamError::Status {
            status: 400..=499, ..
        }) => return Ok(Discovery::legacy()),
        Err(e) => return Err(e),
    };
    Ok(classify_discovery(&answer))
}

/// What a `server/discover` answer says about the eras a server speaks.
pub(super) fn classify_discovery(answer: &[u8]) -> Discovery {
    let Ok(mut msg) = Message::parse(answer) else {
        return Discovery::legacy();
    };
    if let Some(result) = msg.result.take() {
        let versions = versions_in(result.get(), &["supportedVersions"]);
        if versions.iter().any(|v| protocol::is_modern_version(v)) {
            let legacy = versions
                .iter()
                .any(|v| protocol::is_legacy_version(v))
                .then_some(true);
            return Discovery {
                eras: Eras {
                    legacy,
                    modern: true,
                },
                result: Some(result),
                sse: false,
            };
        }
        return Discovery::legacy();
    }
    if !modern_error_body(answer) {
        return Discovery::legacy();
    }
    // A modern server refusing the probe (e.g. -32022) may list what it speaks.
    let supported = versions_in(
        &String::from_utf8_lossy(answer),
        &["error", "data", "supported"],
    );
    let legacy = supported
        .iter()
        .any(|v| protocol::is_legacy_version(v))
        .then_some(true);
    Discovery {
        eras: Eras {
            legacy,
            modern: true,
        },
        result: None,
        sse: false,
    }
}

/// The string array at `path` in a JSON document (empty when absent).
fn versions_in(json: &str, path: &[&str]) -> Vec<String> {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    for key in path {
        value = value.get(*key).cloned().unwrap_or_default();
    }
    serde_json::from_value(value).unwrap_or_default()
}

/// What probing an upstream found.
pub struct Discovery {
    /// The eras it answers.
    pub eras: Eras,
    /// The `server/discover` result, for modern upstreams that answered it.
    pub result: Option<Box<serde_json::value::RawValue>>,
    /// The URL serves the 2024-11-05 HTTP+SSE transport.
    pub sse: bool,
}

impl Discovery {
    /// A legacy-only server over Streamable HTTP (or stdio).
    pub(super) fn legacy() -> Self {
        Discovery {
            eras: Eras::LEGACY,
            result: None,
            sse: false,
        }
    }
}

/// Whether a body is a JSON-RPC error carrying one of the modern-era codes.
fn modern_error_body(body: &[u8]) -> bool {
    jsonrpc::error_code(body).is_some_and(protocol::is_modern_error_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_lists() {
        let d = r#"{"supportedVersions":["2026-07-28","2025-11-25"]}"#;
        assert_eq!(
            versions_in(d, &["supportedVersions"]),
            ["2026-07-28", "2025-11-25"]
        );
        let e = r#"{"error":{"code":-32022,"data":{"supported":["2026-07-28"]}}}"#;
        assert_eq!(
            versions_in(e, &["error", "data", "supported"]),
            ["2026-07-28"]
        );
        assert!(versions_in("{}", &["supportedVersions"]).is_empty());
        assert!(versions_in("not json", &["x"]).is_empty());
    }

    #[test]
    fn recognises_modern_error_bodies() {
        assert!(modern_error_body(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"x"}}"#
        ));
        assert!(!modern_error_body(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request"}}"#
        ));
        assert!(!modern_error_body(b"Bad Request"));
    }
}
