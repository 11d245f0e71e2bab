//! The remote side of `tether connect`: one Streamable HTTP MCP server, the
//! session the client's `initialize` opened there, transparent
//! re-initialization when the remote forgets that session, retries while the
//! remote refuses connections, and its GET stream of server-initiated
//! messages.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::out::{Output, failure};
use tether_gateway::store::UpstreamBinding;
use tether_gateway::sync::lock;
use tether_gateway::upstream::{
    self, ClientIdentity, HttpEndpoint, PostHeaders, Reply, Upstream, UpstreamError,
    UpstreamSession,
};
use tether_wire::jsonrpc::{self, Message, Method, RawObject};
use tether_wire::protocol::{self, Era};

/// How long a message keeps being retried while the remote refuses connections.
const RECONNECT_FOR: Duration = Duration::from_secs(10);
/// The first pause between connection attempts; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long the session's DELETE may take at exit.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// How a client message travels to the remote.
pub(super) enum Route {
    /// Legacy: in the session the client's `initialize` opened (if any).
    Session,
    /// Modern (2026-07-28): stateless, with the version its `_meta` declares
    /// and the `Mcp-Name` value its method mirrors.
    Modern {
        version: String,
        name: Option<String>,
    },
}

impl Route {
    /// A message declaring a protocol version in `params._meta` is modern.
    pub(super) fn of(msg: &Message) -> Route {
        let Ok(params) = msg.params_object() else {
            return Route::Session;
        };
        let version = params
            .get("_meta")
            .and_then(|m| serde_json::from_str::<RawObject>(m.get()).ok())
            .and_then(|meta| jsonrpc::str_member(&meta, protocol::META_PROTOCOL_VERSION));
        match version {
            Some(version) => Route::Modern {
                version,
                name: msg
                    .method
                    .as_ref()
                    .and_then(Method::name_param)
                    .and_then(|key| jsonrpc::str_member(&params, key)),
            },
            None => Route::Session,
        }
    }
}

/// The remote server and the client's session with it.
pub(super) struct Remote {
    upstream: Arc<Upstream>,
    endpoint: Arc<HttpEndpoint>,
    out: Output,
    /// The client's `initialize` request, replayed (with a fresh id) to re-initialize.
    init: Mutex<Option<Bytes>>,
    /// Whether the client has sent `notifications/initialized` on the current session.
    initialized: AtomicBool,
    session: Mutex<Option<Arc<UpstreamSession>>>,
    /// Held while re-initializing: one re-initialize at a time.
    reinit: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    /// The task following the session's GET stream.
    listener: Mutex<Option<JoinHandle<()>>>,
    /// The remote answered a GET with 405: it has no server-initiated stream.
    no_get: AtomicBool,
}

impl Remote {
    /// The remote reached through `upstream` (an HTTP upstream), writing to
    /// the client through `out`.
    pub(super) fn new(upstream: Arc<Upstream>, out: Output) -> Option<Arc<Self>> {
        Some(Arc::new(Remote {
            endpoint: upstream.endpoint()?.clone(),
            upstream,
            out,
            init: Mutex::new(None),
            initialized: AtomicBool::new(false),
            session: Mutex::new(None),
            reinit: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            listener: Mutex::new(None),
            no_get: AtomicBool::new(false),
        }))
    }

    /// The client's (legacy) `initialize`: relayed, and on success its
    /// session is adopted (and the request kept for re-initializing) before
    /// the client sees the result.
    pub(super) async fn initialize(self: &Arc<Self>, msg: &Message, raw: Bytes) {
        let Some(id) = msg.id.as_deref() else { return };
        match reconnecting(|| self.handshake(raw.clone())).await {
            Ok((response, session)) => {
                if let Some(session) = session {
                    *lock(&self.init) = Some(raw);
                    self.initialized.store(false, Ordering::Relaxed);
                    if let Some(old) = self.adopt(session) {
                        tokio::spawn(async move { old.close().await });
                    }
                }
                self.out.relay(&response, Some(id)).await;
            }
            Err(e) => self.out.send(failure(id, "initialize", &e)).await,
        }
    }

    /// A client request: relayed, its reply (a JSON body, or every message of
    /// an SSE stream as it arrives) written to the client; an error answers
    /// it when the remote cannot.
    pub(super) async fn request(self: &Arc<Self>, msg: &Message, raw: Bytes, route: &Route) {
        let (Some(id), Some(method)) = (msg.id.as_deref(), msg.method.as_ref()) else {
            return;
        };
        match self.send(route, &raw, Some(method)).await {
            Ok(reply) => self.relay(reply, Some((id, method.as_str()))).await,
            Err(e) => self.out.send(failure(id, method.as_str(), &e)).await,
        }
    }

    /// A client notification or response: relayed; `notifications/initialized`
    /// also opens the session's GET stream.
    pub(super) async fn deliver(self: &Arc<Self>, msg: &Message, raw: Bytes, route: &Route) {
        let method = msg.method.as_ref();
        match self.send(route, &raw, method).await {
            Ok(reply) => self.relay(reply, None).await,
            Err(e) => {
                tracing::warn!(method = method.map(Method::as_str), error = %e, "the remote did not take a message")
            }
        }
        if method == Some(&Method::Initialized) && matches!(route, Route::Session) {
            self.initialized.store(true, Ordering::Relaxed);
            self.listen();
        }
    }

    /// Stops following the GET stream and ends the session (DELETE, bounded).
    pub(super) async fn close(&self) {
        let listener = lock(&self.listener).take();
        if let Some(task) = listener {
            task.abort();
        }
        let session = lock(&self.session).take();
        if let Some(session) = session
            && tokio::time::timeout(CLOSE_WAIT, session.close())
                .await
                .is_err()
        {
            tracing::warn!("the remote did not confirm the session's end in time");
        }
    }

    fn current(&self) -> Option<Arc<UpstreamSession>> {
        lock(&self.session).clone()
    }

    /// Makes `session` current (restarting the GET stream once the client
    /// is initialized); the previous session, if any.
    fn adopt(self: &Arc<Self>, session: Arc<UpstreamSession>) -> Option<Arc<UpstreamSession>> {
        let old = lock(&self.session).replace(session);
        self.listen();
        old
    }

    /// Sends one message and returns the remote's reply. Connection refusals
    /// are retried for a while; a lost session (404) is re-initialized and
    /// the message sent once more (it was provably not processed); a broken
    /// connection is retried once unless the message is a `tools/call`.
    async fn send(
        self: &Arc<Self>,
        route: &Route,
        body: &Bytes,
        method: Option<&Method>,
    ) -> Result<Reply, UpstreamError> {
        let mut retried = false;
        loop {
            let session = match route {
                Route::Session => self.current(),
                Route::Modern { .. } => None,
            };
            let result =
                reconnecting(|| self.post(route, session.as_ref(), body.clone(), method)).await;
            match (result, session) {
                (Err(UpstreamError::SessionLost), Some(lost)) if !retried => {
                    self.reinitialize(&lost).await?;
                }
                (Err(e @ UpstreamError::Transport(_)), _)
                    if !retried && method != Some(&Method::ToolsCall) =>
                {
                    tracing::debug!(method = method.map(Method::as_str), error = %e, "connection to the remote failed; retrying once");
                }
                (result, _) => return result,
            }
            retried = true;
        }
    }

    async fn post(
        &self,
        route: &Route,
        session: Option<&Arc<UpstreamSession>>,
        body: Bytes,
        method: Option<&Method>,
    ) -> Result<Reply, UpstreamError> {
        let headers = match (route, session) {
            (Route::Modern { version, name }, _) => PostHeaders {
                protocol_version: Some(version),
                method: method.map(Method::as_str),
                name: name.as_deref(),
                ..Default::default()
            },
            (Route::Session, Some(session)) => {
                // A legacy session sends no `Mcp-Method`: a message without
                // a method (a response) travels the same way.
                let method = method.cloned().unwrap_or(Method::Other("".into()));
                return session.request(body, &method, None, &[]).await;
            }
            (Route::Session, None) => PostHeaders::default(),
        };
        let resp = self.endpoint.post(body, headers).await?;
        upstream::classify(resp, self.endpoint.timeout(), false, || None).await
    }

    /// POSTs an `initialize`: its response, and the session it opened when
    /// it succeeded (with the `Mcp-Session-Id` the remote returned, if any,
    /// and the negotiated version).
    async fn handshake(
        &self,
        body: Bytes,
    ) -> Result<(Bytes, Option<Arc<UpstreamSession>>), UpstreamError> {
        let resp = self.endpoint.post(body, PostHeaders::default()).await?;
        let session_id = resp
            .headers()
            .get(protocol::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reply = upstream::classify(resp, self.endpoint.timeout(), false, || None).await?;
        let response = upstream::first_response(reply).await?;
        let session = negotiated_version(&response).and_then(|protocol_version| {
            let binding = UpstreamBinding {
                upstream: self.upstream.name.to_string(),
                era: Era::Legacy.as_str().to_owned(),
                protocol_version,
                session_id,
            };
            UpstreamSession::reattach(self.upstream.clone(), &binding, &ClientIdentity::tether())
        });
        Ok((response, session))
    }

    /// Replaces the `lost` session: the client's `initialize` again (fresh
    /// id, response swallowed), `notifications/initialized` if the client
    /// had sent it, and the new session adopted. Concurrent callers wait for
    /// one re-initialize and reuse its session.
    async fn reinitialize(
        self: &Arc<Self>,
        lost: &Arc<UpstreamSession>,
    ) -> Result<(), UpstreamError> {
        let _only_one = self.reinit.lock().await;
        if !lock(&self.session)
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, lost))
        {
            return Ok(()); // another request already replaced it
        }
        let init = lock(&self.init).clone().ok_or(UpstreamError::SessionLost)?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = with_id(&init, &format!("tether-connect-reinit-{n}"))?;
        let (_, session) = reconnecting(|| self.handshake(body.clone())).await?;
        let session = session.ok_or_else(|| {
            UpstreamError::Protocol("the remote refused to initialize a new session".into())
        })?;
        if self.initialized.load(Ordering::Relaxed) {
            session
                .send_message(Bytes::from_static(INITIALIZED))
                .await?;
        }
        tracing::info!("the remote lost the session; re-initialized");
        self.adopt(session);
        Ok(())
    }

    /// Writes a reply to the client. For a request, a reply that ends without
    /// a response gets an error in its place.
    async fn relay(&self, reply: Reply, request: Option<(&RawValue, &str)>) {
        let id = request.map(|(id, _)| id);
        let missing = match reply {
            Reply::Json(body) => {
                let answered = self.out.relay(&body, id).await;
                (!answered).then(|| UpstreamError::Protocol("the reply is not a response".into()))
            }
            Reply::Accepted => Some(UpstreamError::Protocol(
                "the remote answered a request with 202 Accepted".into(),
            )),
            Reply::Stream(mut stream) => loop {
                match stream.next_message().await {
                    Some(Ok(m)) if self.out.relay(&m, id).await => break None,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(e),
                    None => {
                        break Some(UpstreamError::Transport(
                            "the reply stream ended before the response".into(),
                        ));
                    }
                }
            },
        };
        match (request, missing) {
            (Some((id, method)), Some(e)) => self.out.send(failure(id, method, &e)).await,
            (None, Some(e)) if !matches!(e, UpstreamError::Protocol(_)) => {
                tracing::debug!(error = %e, "a reply stream to a notification broke");
            }
            _ => {}
        }
    }

    /// Follows the current session's GET stream (server-initiated messages)
    /// once the client is initialized, replacing any previous follower.
    fn listen(self: &Arc<Self>) {
        let follow =
            self.initialized.load(Ordering::Relaxed) && !self.no_get.load(Ordering::Relaxed);
        let task = match self.current() {
            Some(session) if follow => {
                let remote = self.clone();
                Some(tokio::spawn(async move { remote.follow(session).await }))
            }
            _ => None,
        };
        let previous = std::mem::replace(&mut *lock(&self.listener), task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Writes the messages of `session`'s GET stream to the client until it
    /// ends; a remote without one (405) is not asked again.
    async fn follow(&self, session: Arc<UpstreamSession>) {
        let mut stream = match session.listen().await {
            Ok(stream) => stream,
            Err(UpstreamError::Status { status: 405, .. }) => {
                tracing::debug!("the remote offers no GET stream");
                self.no_get.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "no GET stream from the remote");
                return;
            }
        };
        while let Some(next) = stream.next_message().await {
            match next {
                Ok(m) => {
                    self.out.relay(&m, None).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the remote's GET stream ended");
                    return;
                }
            }
        }
    }
}

/// Runs `attempt` until the remote accepts the connection, pausing with a
/// capped exponential backoff, for at most [`RECONNECT_FOR`].
async fn reconnecting<T, F, Fut>(attempt: F) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, UpstreamError>>,
{
    reconnecting_for(RECONNECT_FOR, attempt).await
}

/// [`reconnecting`] with a given time budget.
async fn reconnecting_for<T, F, Fut>(budget: Duration, mut attempt: F) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, UpstreamError>>,
{
    let deadline = Instant::now() + budget;
    let mut pause = BACKOFF_FIRST;
    loop {
        match attempt().await {
            Err(UpstreamError::Connect(e)) if Instant::now() + pause <= deadline => {
                tracing::debug!(error = %e, "the remote is unreachable; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
            result => return result,
        }
    }
}

/// The protocol version a successful `initialize` response negotiated
/// (`None` for an error response).
fn negotiated_version(response: &[u8]) -> Option<String> {
    let result = Message::parse(response).ok()?.result?;
    let result: RawObject = serde_json::from_str(result.get()).ok()?;
    Some(
        jsonrpc::str_member(&result, "protocolVersion")
            .unwrap_or_else(|| protocol::DEFAULT_LEGACY_VERSION.to_owned()),
    )
}

/// The message in `raw` with its id replaced by `id`.
fn with_id(raw: &[u8], id: &str) -> Result<Bytes, UpstreamError> {
    let mut msg = Message::parse(raw).map_err(UpstreamError::malformed)?;
    msg.id = Some(jsonrpc::to_raw(id));
    Ok(Bytes::from(msg.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_declared_version() {
        let legacy = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(matches!(Route::of(&legacy), Route::Session));
        let modern = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        let Route::Modern { version, name } = Route::of(&modern) else {
            panic!("modern");
        };
        assert_eq!(
            (version.as_str(), name.as_deref()),
            ("2026-07-28", Some("echo"))
        );
    }

    #[test]
    fn reads_negotiated_versions_and_replaces_ids() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}"#;
        assert_eq!(negotiated_version(ok).as_deref(), Some("2025-06-18"));
        let refused = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}"#;
        assert_eq!(negotiated_version(refused), None);
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"a":1.50}}"#;
        assert_eq!(
            &with_id(init, "x").unwrap()[..],
            br#"{"jsonrpc":"2.0","id":"x","method":"initialize","params":{"a":1.50}}"#
        );
    }

    #[tokio::test]
    async fn retries_refused_connections_for_a_bounded_time() {
        let budget = Duration::from_millis(800);
        let mut attempts = 0;
        let started = Instant::now();
        let result: Result<(), _> = reconnecting_for(budget, || {
            attempts += 1;
            async { Err(UpstreamError::Connect("refused".into())) }
        })
        .await;
        assert!(matches!(result, Err(UpstreamError::Connect(_))));
        // Pauses of 100, 200 and 400 ms fit the budget; the next would not.
        assert!(started.elapsed() <= budget, "{:?}", started.elapsed());
        assert_eq!(attempts, 4);
        let mut attempts = 0;
        let result = reconnecting(|| {
            attempts += 1;
            let n = attempts;
            async move {
                if n < 3 {
                    Err(UpstreamError::Connect("refused".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }
}
