//! One upstream session: the handshake (legacy) or per-request identity
//! (modern), request sending, and exactly-once close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{Notify, watch};

use tether_wire::jsonrpc::{self, EnvelopeError, Message, Method, RawObject, Request};
use tether_wire::protocol::{self, Era};

use super::endpoint::{HttpEndpoint, PostHeaders, SessionHeaders};
use super::error::UpstreamError;
use super::identity::ClientIdentity;
use super::link::Link;
use super::reply::{self, Credentials, EventStream, Reopen, first_response};
use super::{Upstream, Wiring, sse_transport, stdio};
use crate::clock::now_ms;
use crate::store::UpstreamBinding;
use crate::sync::lock;
use crate::telemetry::{
    self,
    spans::{ClientSpan, Destination},
};

/// How a session's messages travel.
enum Wire {
    /// Streamable HTTP.
    Http {
        /// The upstream's HTTP endpoint.
        endpoint: Arc<HttpEndpoint>,
        /// The upstream's `Mcp-Session-Id`, if it issued one.
        session_id: Option<HeaderValue>,
    },
    /// A message link of its own: a stdio process or an HTTP+SSE stream
    /// (or the one process of a shared stdio upstream).
    Link(Arc<Link>),
}

/// The longest an idle session's probe may take.
const VALIDATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A session with one upstream, owned by exactly one client session (or one
/// sessionless request, or the shared pool of a stateless-safe upstream).
pub struct UpstreamSession {
    /// The upstream this session talks to.
    pub upstream: Arc<Upstream>,
    /// The era spoken on this session.
    pub era: Era,
    wire: Wire,
    /// The one process of a shared stdio upstream: client sessions ending do
    /// not close it (the upstream does).
    shared: AtomicBool,
    /// Negotiated protocol version (modern: the modern version).
    pub protocol_version: String,
    /// Legacy: the upstream's `initialize` result.
    init_result: Option<Box<RawValue>>,
    client: ClientIdentity,
    closed: AtomicBool,
    /// Wakes what waits for `closed` (what relays the session's stream).
    closing: Notify,
    /// Becomes true once a relay has tried to open the session's own stream.
    own_stream_tried: watch::Sender<bool>,
    next_id: AtomicU64,
    /// When a request was last sent (ms since the Unix epoch).
    last_used_ms: AtomicI64,
    /// The owning client's `Authorization` (upstreams with `forward_client_token`).
    credentials: Credentials,
}

impl std::fmt::Debug for UpstreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSession")
            .field("upstream", &self.upstream.name)
            .field("era", &self.era)
            .field("version", &self.protocol_version)
            .finish()
    }
}

impl UpstreamSession {
    /// Opens a session: `initialize` + `notifications/initialized` for legacy
    /// upstreams; nothing on the wire for modern ones.
    pub(super) async fn open(
        upstream: Arc<Upstream>,
        era: Era,
        client: &ClientIdentity,
    ) -> Result<Arc<Self>, UpstreamError> {
        let wire = match (upstream.wiring(), upstream.endpoint()) {
            (Wiring::Stdio, _) => Wire::Link(
                stdio::spawn(&upstream.name, &upstream.config, upstream.config.shared).await?,
            ),
            (Wiring::Sse, Some(endpoint)) => {
                Wire::Link(sse_transport::connect(&upstream.name, endpoint).await?)
            }
            (Wiring::StreamableHttp, Some(endpoint)) => Wire::Http {
                endpoint: endpoint.clone(),
                session_id: None,
            },
            (_, None) => {
                return Err(UpstreamError::Protocol(
                    "an upstream without a URL speaks stdio only".into(),
                ));
            }
        };
        UpstreamSession::establish(upstream, era, wire, client).await
    }

    /// Opens a session with the process of a shared stdio upstream that
    /// another cluster node runs, through that node's endpoint for it: the
    /// handshake is answered with the process's own (it is not repeated).
    pub(super) async fn open_on_node(
        upstream: Arc<Upstream>,
        node: Arc<HttpEndpoint>,
        client: &ClientIdentity,
    ) -> Result<Arc<Self>, UpstreamError> {
        let wire = Wire::Http {
            endpoint: node,
            session_id: None,
        };
        UpstreamSession::establish(upstream, Era::Legacy, wire, client).await
    }

    /// A session on `wire`, after the handshake of its era.
    async fn establish(
        upstream: Arc<Upstream>,
        era: Era,
        wire: Wire,
        client: &ClientIdentity,
    ) -> Result<Arc<Self>, UpstreamError> {
        let mut session = UpstreamSession::build(
            upstream,
            era,
            wire,
            protocol::MODERN_VERSION.to_owned(),
            client,
        );
        if era == Era::Legacy
            && let Err(e) = session.initialize().await
        {
            // The upstream may have made a session before the handshake failed.
            session.release_wire().await;
            return Err(e);
        }
        session
            .upstream
            .stats
            .sessions_created
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(upstream = %session.upstream.name, era = era.as_str(), "opened upstream session");
        Ok(Arc::new(session))
    }

    /// Re-attaches a session this or another node opened earlier, by the
    /// upstream's own session id: no handshake, so the upstream's state is
    /// kept. If the upstream has lost the session, its next request answers
    /// 404 and the caller replaces it.
    pub fn reattach(
        upstream: Arc<Upstream>,
        binding: &UpstreamBinding,
        client: &ClientIdentity,
    ) -> Option<Arc<Self>> {
        let era = if binding.era == Era::Modern.as_str() {
            Era::Modern
        } else {
            Era::Legacy
        };
        let session_id = binding
            .session_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok());
        let endpoint = upstream.endpoint()?.clone();
        Some(Arc::new(UpstreamSession::build(
            upstream,
            era,
            Wire::Http {
                endpoint,
                session_id,
            },
            binding.protocol_version.clone(),
            client,
        )))
    }

    /// A session object (not yet open); counted in the live-sessions gauge
    /// until dropped (see the `Drop` impl).
    fn build(
        upstream: Arc<Upstream>,
        era: Era,
        wire: Wire,
        protocol_version: String,
        client: &ClientIdentity,
    ) -> Self {
        upstream.stats.sessions_live.fetch_add(1, Ordering::Relaxed);
        UpstreamSession {
            upstream,
            era,
            wire,
            shared: AtomicBool::new(false),
            protocol_version,
            init_result: None,
            client: client.clone(),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            own_stream_tried: watch::Sender::new(false),
            next_id: AtomicU64::new(1),
            last_used_ms: AtomicI64::new(now_ms()),
            credentials: Arc::new(std::sync::Mutex::new(client.credentials.clone())),
        }
    }

    /// What a store keeps to re-attach this session later.
    pub fn binding(&self) -> UpstreamBinding {
        UpstreamBinding {
            upstream: self.upstream.name.to_string(),
            era: self.era.as_str().to_owned(),
            protocol_version: self.protocol_version.clone(),
            session_id: self
                .http_session_id()
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// Whether a store record can bring this session back later: Streamable
    /// HTTP sessions can; a process or SSE stream ends with this node (and a
    /// shared process is found again wherever it runs).
    pub fn is_reattachable(&self) -> bool {
        matches!(self.wire, Wire::Http { .. }) && self.upstream.endpoint().is_some()
    }

    fn http_session_id(&self) -> Option<&HeaderValue> {
        match &self.wire {
            Wire::Http { session_id, .. } => session_id.as_ref(),
            Wire::Link(_) => None,
        }
    }

    /// What names this session in its HTTP requests.
    fn session_headers(&self) -> SessionHeaders {
        SessionHeaders {
            session_id: self.http_session_id().cloned(),
            protocol_version: self.protocol_version.clone(),
            credentials: self.credentials(),
        }
    }

    /// Where a stream of this session is opened again after the upstream closed it.
    fn reopen(&self) -> Option<Reopen> {
        match &self.wire {
            Wire::Http {
                endpoint,
                session_id,
            } => Some(Reopen {
                endpoint: endpoint.clone(),
                session_id: session_id.clone(),
                protocol_version: self.protocol_version.clone(),
                credentials: self.credentials.clone(),
            }),
            Wire::Link(_) => None,
        }
    }

    async fn initialize(&mut self) -> Result<(), UpstreamError> {
        let request = Request::new(
            jsonrpc::to_raw("tether-init"),
            Method::Initialize,
            Some(jsonrpc::to_raw(&json!({
                "protocolVersion": protocol::LATEST_LEGACY_VERSION,
                "capabilities": self.client.capabilities,
                "clientInfo": self.client.info,
            }))),
        );
        let credentials = self.credentials();
        let timeout = self.upstream.config.timeout();
        // The handshake is a request of the traced one too (under the span
        // opening this session).
        let (span, body, trace) = self.traced(&Method::Initialize, None, request.raw);
        let reply = match &mut self.wire {
            Wire::Link(link) => link.request(body, timeout).await,
            Wire::Http {
                endpoint,
                session_id,
            } => {
                let headers = PostHeaders {
                    credentials,
                    trace: &trace,
                    ..Default::default()
                };
                match endpoint.post(body, headers).await {
                    Ok(resp) => {
                        *session_id = resp.headers().get(protocol::HEADER_SESSION_ID).cloned();
                        reply::classify(resp, endpoint.timeout(), false, || None).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let reply = ended(span, reply)?;
        let answer = first_response(reply).await?;
        let msg = Message::parse(&answer).map_err(UpstreamError::malformed)?;
        let result = match (msg.result, msg.error) {
            (Some(r), _) => r,
            (None, Some(e)) => {
                return Err(UpstreamError::Protocol(
                    format!("initialize failed: {}", e.get()).into(),
                ));
            }
            _ => {
                return Err(UpstreamError::Protocol(
                    "initialize returned nothing".into(),
                ));
            }
        };
        let obj: RawObject = serde_json::from_str(result.get())
            .map_err(|_| UpstreamError::Protocol("initialize result is not an object".into()))?;
        let version = jsonrpc::str_member(&obj, "protocolVersion").unwrap_or_default();
        if !protocol::is_legacy_version(&version) {
            return Err(UpstreamError::Protocol(
                format!("upstream negotiated unsupported protocol version {version:?}").into(),
            ));
        }
        self.protocol_version = version;
        self.init_result = Some(result);
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        self.send_message(Bytes::from_static(note)).await?;
        Ok(())
    }

    /// The upstream's `initialize` result (legacy) or `server/discover` result (modern).
    pub async fn server_description(&self) -> Result<Arc<RawValue>, UpstreamError> {
        match &self.init_result {
            Some(r) => Ok(Arc::from(r.clone())),
            None => {
                self.upstream
                    .discover_result(self.credentials().as_ref())
                    .await
            }
        }
    }

    /// Whether this session has been closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the session can carry requests (not closed; its process or stream alive).
    pub fn is_usable(&self) -> bool {
        !self.is_closed()
            && match &self.wire {
                Wire::Http { .. } => true,
                Wire::Link(link) => !link.is_dead(),
            }
    }

    /// How long since the session last sent anything (links only; zero for HTTP).
    pub fn idle_for(&self) -> std::time::Duration {
        match &self.wire {
            Wire::Link(link) => link.idle_for(),
            Wire::Http { .. } => std::time::Duration::ZERO,
        }
    }

    /// Makes this the shared process of its upstream: [`UpstreamSession::close`]
    /// leaves it running; [`UpstreamSession::retire`] ends it.
    pub(super) fn mark_shared(&self) {
        self.shared.store(true, Ordering::Release);
    }

    fn headers<'a>(
        &'a self,
        method: Option<&'a str>,
        name: Option<&'a str>,
        extra: &'a [(http::HeaderName, HeaderValue)],
    ) -> PostHeaders<'a> {
        match self.era {
            Era::Legacy => PostHeaders {
                session_id: self.http_session_id(),
                protocol_version: Some(&self.protocol_version),
                credentials: self.credentials(),
                ..Default::default()
            },
            Era::Modern => PostHeaders {
                session_id: None,
                protocol_version: Some(protocol::MODERN_VERSION),
                method,
                name,
                extra,
                credentials: self.credentials(),
                trace: &[],
            },
        }
    }

    /// The body to send upstream for a request: the bytes it arrived as when
    /// nothing changes; otherwise with `params` replaced and, for modern
    /// upstreams, the per-request `_meta` identity added. `log_level` is the
    /// legacy client's `logging/setLevel` choice, which a modern upstream
    /// needs in every request's `_meta` to send log messages. `meta_complete`:
    /// the request's own `_meta` already names the protocol version, client
    /// info and capabilities (a 2026-07-28 client's request), so a modern
    /// upstream gets it as it was sent.
    pub fn prepare(
        &self,
        request: &Request,
        params: Option<&RawObject>,
        log_level: Option<&str>,
        meta_complete: bool,
    ) -> Result<Bytes, EnvelopeError> {
        let params = match (params, self.era) {
            (None, Era::Legacy) => return Ok(request.raw.clone()),
            (None, Era::Modern) if meta_complete && log_level.is_none() => {
                return Ok(request.raw.clone());
            }
            (Some(p), Era::Legacy) => jsonrpc::to_raw(p),
            (given, Era::Modern) => {
                let mut params = match given {
                    Some(p) => p.clone(),
                    None => request.params_object()?,
                };
                self.add_modern_meta(&mut params, log_level);
                jsonrpc::to_raw(&params)
            }
        };
        let out = Message::new(
            Some(request.id.clone()),
            request.method.clone(),
            Some(params),
        );
        Ok(Bytes::from(out.to_bytes()))
    }

    fn add_modern_meta(&self, params: &mut RawObject, log_level: Option<&str>) {
        let mut meta: RawObject = params
            .get("_meta")
            .and_then(|m| serde_json::from_str(m.get()).ok())
            .unwrap_or_default();
        meta.entry(protocol::META_PROTOCOL_VERSION.into())
            .or_insert_with(|| jsonrpc::to_raw(protocol::MODERN_VERSION));
        meta.entry(protocol::META_CLIENT_INFO.into())
            .or_insert_with(|| self.client.info.clone());
        meta.entry(protocol::META_CLIENT_CAPABILITIES.into())
            .or_insert_with(|| self.client.capabilities.clone());
        if let Some(level) = log_level {
            meta.entry(protocol::META_LOG_LEVEL.into())
                .or_insert_with(|| jsonrpc::to_raw(level));
        }
        params.insert("_meta".into(), jsonrpc::to_raw(&meta));
    }

    /// Sends the client's `Authorization` with this session's requests from
    /// now on (only for upstreams configured to receive it).
    pub fn forward_credentials(&self, credentials: Option<HeaderValue>) {
        if self.upstream.config.forward_client_token {
            *lock(&self.credentials) = credentials;
        }
    }

    fn credentials(&self) -> Option<HeaderValue> {
        lock(&self.credentials).clone()
    }

    /// Whether the session has gone unused for longer than its upstream's
    /// `idle_validation_secs` (a modern session holds no state: never).
    pub fn needs_validation(&self) -> bool {
        let limit = self.upstream.config.idle_validation_secs;
        let idle = now_ms() - self.last_used_ms.load(Ordering::Relaxed);
        self.era == Era::Legacy && limit > 0 && idle > (limit * 1000) as i64
    }

    /// Probes an idle session before it is used again: `ping`, or for an
    /// upstream without it a cheap list call. True when the upstream answered.
    pub async fn validate(self: &Arc<Self>) -> bool {
        let wait = self.upstream.config.timeout().min(VALIDATION_WAIT);
        let probe = |method: Method| async move {
            let answer = tokio::time::timeout(wait, self.call(method, json!({}))).await;
            match answer {
                Ok(Ok(body)) => Some(jsonrpc::error_code(&body)),
                _ => None,
            }
        };
        self.upstream
            .stats
            .sessions_validated
            .fetch_add(1, Ordering::Relaxed);
        match probe(Method::Ping).await {
            Some(Some(jsonrpc::code::METHOD_NOT_FOUND)) => probe(Method::ToolsList).await.is_some(),
            answered => answered.is_some(),
        }
    }

    /// Sends a request; `name` is the tool/prompt name or resource URI for
    /// `Mcp-Name`; `extra` headers go to modern upstreams only.
    pub async fn request(
        &self,
        body: Bytes,
        method: &Method,
        name: Option<&str>,
        extra: &[(http::HeaderName, HeaderValue)],
    ) -> Result<reply::Reply, UpstreamError> {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        let (span, body, trace) = self.traced(method, name, body);
        let started = std::time::Instant::now();
        let result = match &self.wire {
            Wire::Link(link) => link.request(body, self.upstream.config.timeout()).await,
            Wire::Http { endpoint, .. } => {
                let mut headers = self.headers(Some(method.as_str()), name, extra);
                headers.trace = &trace;
                match endpoint.post(body, headers).await {
                    Ok(resp) => {
                        let named = self.http_session_id().is_some();
                        reply::classify(resp, endpoint.timeout(), named, || self.reopen()).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        (self.upstream.stats).record(started.elapsed(), result.is_err());
        ended(span, result)
    }

    /// The client span of the request `body` (`method`, target `name`) when
    /// it is traced, and the body and headers carrying its trace context.
    fn traced(
        &self,
        method: &Method,
        name: Option<&str>,
        body: Bytes,
    ) -> (
        Option<ClientSpan>,
        Bytes,
        Vec<(http::HeaderName, HeaderValue)>,
    ) {
        match self.span(method, name, &body) {
            Some(span) => {
                let (body, trace) = self.with_trace_context(&span, body);
                (Some(span), body, trace)
            }
            None => (None, body, Vec::new()),
        }
    }

    /// The client span of a request to this session, when it is traced.
    fn span(&self, method: &Method, name: Option<&str>, body: &[u8]) -> Option<ClientSpan> {
        telemetry::get()?;
        let session_id = self.http_session_id().and_then(|v| v.to_str().ok());
        let to = Destination {
            upstream: &self.upstream.name,
            session_id,
            protocol_version: &self.protocol_version,
            transport: match self.upstream.wiring() {
                Wiring::Stdio => "pipe",
                Wiring::Sse | Wiring::StreamableHttp => "tcp",
            },
        };
        ClientSpan::start(&to, method, name, body)
    }

    /// `body` and the headers carrying `span`'s trace context: in `params._meta`
    /// (the MCP carrier, in every era: SDK servers read it there) when the
    /// span is sampled and, over HTTP, in the W3C headers.
    fn with_trace_context(
        &self,
        span: &ClientSpan,
        body: Bytes,
    ) -> (Bytes, Vec<(http::HeaderName, HeaderValue)>) {
        let outgoing = span.outgoing();
        // An unsampled span is not worth rewriting the body for: its context
        // goes in the headers only.
        let body = match span.is_sampled() {
            true => outgoing.into_meta(body),
            false => body,
        };
        let headers = match self.wire {
            Wire::Http { .. } => outgoing.headers(),
            Wire::Link(_) => Vec::new(),
        };
        (body, headers)
    }

    /// Sends a notification or a response (expects 202).
    pub async fn send_message(&self, body: Bytes) -> Result<(), UpstreamError> {
        match &self.wire {
            Wire::Link(link) => link.send(body).await,
            Wire::Http { endpoint, .. } => {
                let resp = endpoint.post(body, self.headers(None, None, &[])).await?;
                let named = self.http_session_id().is_some();
                reply::classify(resp, endpoint.timeout(), named, || self.reopen())
                    .await
                    .map(drop)
            }
        }
    }

    /// Sends a request Tether itself makes (catalogue listing) and waits for its response.
    pub async fn call(
        &self,
        method: Method,
        params: serde_json::Value,
    ) -> Result<Bytes, UpstreamError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request::new(
            jsonrpc::to_raw(&format!("tether-{n}")),
            method,
            Some(jsonrpc::to_raw(&params)),
        );
        let body = self
            .prepare(&request, None, None, false)
            .map_err(UpstreamError::malformed)?;
        first_response(self.request(body, &request.method, None, &[]).await?).await
    }

    /// The session's server-initiated messages: its GET stream (Streamable
    /// HTTP, resumed when the upstream closes it early) or what its link
    /// receives outside any request.
    pub async fn listen(&self) -> Result<EventStream, UpstreamError> {
        match &self.wire {
            Wire::Link(link) => Ok(link.listen()),
            Wire::Http { endpoint, .. } => {
                let session = self.session_headers();
                let resp = endpoint.open_stream(Some(&session), None).await?;
                let resp = reply::check_stream(resp, session.session_id.is_some())?;
                Ok(EventStream::http(resp, self.reopen(), None))
            }
        }
    }

    /// Ends the session exactly once: upstream DELETE for legacy sessions with
    /// an id, the process or stream of a link. The shared process of a stdio
    /// upstream stays (see [`UpstreamSession::retire`]).
    pub async fn close(&self) {
        if self.shared.load(Ordering::Acquire) {
            return;
        }
        self.retire().await;
    }

    /// Ends the session exactly once, shared or not.
    pub(super) async fn retire(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.closing.notify_waiters();
        self.release_wire().await;
    }

    /// Resolves once the session is closed.
    pub async fn closed(&self) {
        let woken = self.closing.notified();
        tokio::pin!(woken);
        // Waiting before the check: a close between the two still wakes it.
        woken.as_mut().enable();
        if !self.is_closed() {
            woken.await;
        }
    }

    /// Records that a relay has tried to open the session's own stream
    /// (a legacy upstream's GET stream, a modern one's listen stream).
    pub fn own_stream_tried(&self) {
        self.own_stream_tried.send_replace(true);
    }

    /// Resolves once a relay has tried to open the session's own stream.
    pub async fn own_stream_was_tried(&self) {
        let _ = (self.own_stream_tried.subscribe())
            .wait_for(|tried| *tried)
            .await;
    }

    /// Ends what the session holds upstream: the HTTP session (DELETE) or the link.
    async fn release_wire(&self) {
        match &self.wire {
            Wire::Link(link) => link.close().await,
            // Bounded by the upstream's request timeout; callers closing many
            // sessions bound the whole batch by the shutdown timeout as well.
            Wire::Http { endpoint, .. } => {
                endpoint
                    .delete_session(&self.upstream.name, &self.session_headers())
                    .await
            }
        }
    }
}

/// The live-sessions gauge counts session objects: up when one is built
/// (opened or re-attached), down when the last reference goes, whichever
/// path discards it.
impl Drop for UpstreamSession {
    fn drop(&mut self) {
        self.upstream
            .stats
            .sessions_live
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// `result` with its request's `span` (if traced) ended (an answer) or handed
/// to the stream it is the span of (ended when the stream is).
fn ended(
    span: Option<ClientSpan>,
    result: Result<reply::Reply, UpstreamError>,
) -> Result<reply::Reply, UpstreamError> {
    let Some(span) = span else {
        return result;
    };
    match result {
        Ok(reply::Reply::Stream(stream)) => {
            Ok(reply::Reply::Stream(stream.ending(span.until_dropped())))
        }
        Ok(reply) => {
            if let reply::Reply::Json(body) = &reply {
                span.answered(body);
            }
            span.end();
            Ok(reply)
        }
        Err(e) => {
            span.failed(e.kind(), &e);
            span.end();
            Err(e)
        }
    }
}
