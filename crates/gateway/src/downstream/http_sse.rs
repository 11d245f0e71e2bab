//! The 2024-11-05 HTTP+SSE transport for clients. `GET /sse` opens the
//! session's event stream; its first event names the endpoint
//! (`/message?session_id=…`) where the client POSTs its messages (202);
//! every answer and server message travels on the stream. The session lives
//! exactly as long as the connection: however the stream ends (the client
//! leaves, a send times out, shutdown, expiry), the session and its upstream
//! sessions are closed once ([invariant: close-once]). In a cluster the
//! endpoint also names the node holding the stream (`&node=…`), so a POST
//! that reaches another node is passed on to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Extension, Query, Request, State};
use axum::response::Response;
use bytes::Bytes;
use dashmap::DashMap;
use http::request::Parts;
use http::{Method as HttpMethod, StatusCode};
use tether_wire::jsonrpc::{ErrorObject, Incoming, Method, Request as JsonRpcRequest, code};
use tether_wire::sse;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::checks::edge;
use super::checks::inflight::session_permit;
use super::checks::record::labelled;
use super::endpoint_scope::EndpointScope;
use super::pass_on::{self, Failure};
use super::{App, handshake, reply};
use crate::auth::Caller;
use crate::cluster::{Cluster, Peer};
use crate::metrics::Label;
use crate::router::{Outcome, RequestContext};
use crate::session::{Admission, ClientSession, Scope, Seat, is_valid_session_id, new_session_id};
use crate::sync::lock;
use crate::telemetry::spans::{Arrival, ServerSpan};

/// Messages queued for one stream; a client that leaves it full for longer
/// than the send timeout is cut off.
const STREAM_QUEUE: usize = 16;
/// The reconnection hint sent first (ms).
const RETRY_MS: u64 = 3000;

/// The HTTP+SSE connections this node holds, by session id.
#[derive(Default)]
pub struct SseHub {
    conns: DashMap<String, Arc<Conn>>,
}

impl SseHub {
    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Ends every stream (shutdown); their sessions end as the streams close.
    pub fn close_all(&self) {
        for conn in self.conns.iter() {
            conn.cut();
        }
    }
}

/// One HTTP+SSE connection.
struct Conn {
    id: String,
    scope: Scope,
    /// Who opened the stream: only their messages reach it.
    caller: Caller,
    /// Its place under the session caps, from the moment the stream opens
    /// (its session, once initialized, takes no other).
    seat: Mutex<Option<Seat>>,
    /// The stream's sender until `initialize`; then the session holds it.
    early: Mutex<Option<mpsc::Sender<Bytes>>>,
    session: Mutex<Option<Arc<ClientSession>>>,
    initializing: AtomicBool,
    /// Its requests in flight.
    inflight: Arc<Semaphore>,
}

impl Conn {
    fn session(&self) -> Option<Arc<ClientSession>> {
        lock(&self.session).clone()
    }

    fn sender(&self) -> Option<mpsc::Sender<Bytes>> {
        match self.session() {
            Some(s) => s.outbound(),
            None => lock(&self.early).clone(),
        }
    }

    /// Drops the stream's sender: the stream ends once in-flight sends finish.
    fn cut(&self) {
        lock(&self.early).take();
        if let Some(s) = self.session() {
            s.close_outbound();
        }
    }
}

/// Ends the connection's session when its stream is dropped, however that happens.
struct StreamEnd {
    app: Arc<App>,
    id: String,
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        let (app, id) = (self.app.clone(), std::mem::take(&mut self.id));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { finish(&app, &id).await });
        }
    }
}

/// Cleanup of one connection, exactly once (the hub entry is removed once).
async fn finish(app: &App, id: &str) {
    let Some((_, conn)) = app.sse.conns.remove(id) else {
        return;
    };
    lock(&conn.seat).take();
    conn.cut();
    if conn.session().is_some() {
        app.sessions.end(id).await;
    }
    tracing::debug!(session = %id, "HTTP+SSE stream ended; session closed");
}

/// `GET /sse` and `GET /u/<upstream>/sse`: opens a session's stream (the
/// connection takes a place under the session caps).
pub async fn open(
    State(app): State<Arc<App>>,
    EndpointScope(scope): EndpointScope,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    if req.method() != HttpMethod::GET {
        return reply::method_not_allowed("use GET", "GET");
    }
    let seat = match app.sessions.admit(&caller.principal) {
        Ok(seat) => seat,
        Err(Admission::Full) => {
            return reply::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sessions; retry later",
            );
        }
        Err(Admission::PrincipalFull) => {
            return reply::retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sessions for this principal; end one or retry later",
            );
        }
    };
    let id = new_session_id();
    let mut endpoint = format!("{}/message?session_id={id}", scope.path_prefix());
    if let Some(cluster) = &app.cluster {
        endpoint.push_str("&node=");
        endpoint.push_str(cluster.node());
    }
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let conn = Arc::new(Conn {
        id: id.clone(),
        scope,
        caller,
        seat: Mutex::new(Some(seat)),
        early: Mutex::new(Some(tx)),
        session: Mutex::new(None),
        initializing: AtomicBool::new(false),
        inflight: Arc::new(Semaphore::new(app.config.server.max_inflight_per_session)),
    });
    app.sse.conns.insert(id.clone(), conn);
    let preamble = vec![
        sse::retry_hint(RETRY_MS),
        sse::named_event("endpoint", endpoint.as_bytes()),
    ];
    let keepalive = app.keepalive();
    let end = StreamEnd { app, id };
    let resp = reply::sse_response(rx, preamble, keepalive, |m| sse::message_event(&m), end);
    labelled(resp, Label::STREAM)
}

#[derive(serde::Deserialize)]
struct Target {
    session_id: Option<String>,
    /// The cluster node holding the stream.
    node: Option<String>,
}

/// `POST /message?session_id=…` and `POST /u/<upstream>/message?…`: takes
/// one message for a connection's session: 202, then the work goes on in
/// the background and whatever it yields goes on the stream.
pub async fn message(
    State(app): State<Arc<App>>,
    EndpointScope(scope): EndpointScope,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    if req.method() != HttpMethod::POST {
        return reply::method_not_allowed("use POST", "POST");
    }
    let (parts, body) = req.into_parts();
    if !edge::is_json(&parts.headers) {
        return reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let Ok(Query(target)) = Query::<Target>::try_from_uri(&parts.uri) else {
        return bad_request("malformed query string");
    };
    let Some(id) = target.session_id else {
        return bad_request("the session_id query parameter is required");
    };
    if !is_valid_session_id(&id) {
        return bad_request("invalid session_id");
    }
    let Some(conn) = app
        .sse
        .conns
        .get(&id)
        .map(|c| c.clone())
        // Another principal's stream is as unknown as a made-up id.
        .filter(|c| c.scope == scope && c.caller.principal == caller.principal)
    else {
        let Some((cluster, peer)) = stream_node(&app, &parts, target.node.as_deref()).await else {
            return unknown_stream();
        };
        let raw = match app.read_body(&parts.headers, body).await {
            Ok(raw) => raw,
            Err(refusal) => return *refusal,
        };
        return match pass_on::send(&app, cluster, &peer, &parts, raw).await {
            Ok(answer) | Err(Failure::Answer(answer)) => answer,
            // The node holding the stream is gone, and the stream with it.
            Err(Failure::Unreachable | Failure::Misdirected) => unknown_stream(),
        };
    };
    let incoming = match app.read_message(&parts.headers, body).await {
        Ok(m) => m,
        Err(refusal) => return *refusal,
    };
    let label = Label::of(&incoming);
    let permit = match session_permit(&conn.inflight) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    // Only looked at when tracing is on.
    let span = crate::telemetry::get().and_then(|_| {
        let session = conn.session();
        let arrival = Arrival {
            headers: &parts.headers,
            session_id: Some(&id),
            protocol_version: session.as_ref().map(|s| s.protocol_version.as_str()),
            upstream: scope.upstream(),
        };
        ServerSpan::start(&arrival, &incoming)
    });
    let app = app.clone();
    match span {
        None => drop(tokio::spawn(handle(app, conn, caller, incoming, permit))),
        Some(span) => {
            let handled = || handle(app, conn, caller, incoming, permit);
            drop(tokio::spawn(span.around(handled)));
        }
    }
    labelled(accepted(), label)
}

/// The live node `node` holding a stream this node does not, for a POST
/// not passed on already.
async fn stream_node<'a>(
    app: &'a App,
    parts: &Parts,
    node: Option<&str>,
) -> Option<(&'a Arc<Cluster>, Peer)> {
    let cluster = app.cluster.as_ref()?;
    if pass_on::is_passed_on(parts) {
        return None;
    }
    Some((cluster, cluster.peer(node?).await?))
}

fn unknown_stream() -> Response {
    reply::error(
        StatusCode::NOT_FOUND,
        code::INVALID_REQUEST,
        "unknown or ended SSE session; open a new stream with GET",
    )
}

fn bad_request(text: &'static str) -> Response {
    reply::error(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, text)
}

fn accepted() -> Response {
    let mut resp = Response::new(Body::from("Accepted"));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// Serves one client message; whatever it yields goes on the stream. Returns
/// the JSON-RPC error code it was answered with, for its span (tracing on).
async fn handle(
    app: Arc<App>,
    conn: Arc<Conn>,
    caller: Caller,
    incoming: Incoming,
    _permit: OwnedSemaphorePermit,
) -> Option<i64> {
    let outcome = match (conn.session(), incoming) {
        (_, Incoming::Request(request)) if request.method == Method::Initialize => {
            initialize(&app, &conn, request, caller).await
        }
        (Some(session), incoming) => {
            session.touch();
            let ctx = RequestContext::in_session(session, caller);
            app.router.handle(ctx, incoming).await
        }
        (None, Incoming::Request(request)) if request.method == Method::Ping => {
            Outcome::Message(request.answer(&tether_wire::jsonrpc::to_raw(&serde_json::json!({}))))
        }
        (None, Incoming::Request(request)) => Outcome::Error(
            ErrorObject::new(code::INVALID_REQUEST, "send initialize first"),
            Some(request.id),
        ),
        (None, _) => Outcome::Accepted,
    };
    let rpc_error = reply::rpc_error(&outcome);
    deliver(&app, &conn, outcome).await;
    rpc_error
}

/// `initialize` on an HTTP+SSE connection: the session takes the
/// connection's id and its stream.
async fn initialize(app: &App, conn: &Conn, request: JsonRpcRequest, caller: Caller) -> Outcome {
    let id = Some(request.id.clone());
    if conn.initializing.swap(true, Ordering::AcqRel) {
        return Outcome::Error(
            ErrorObject::new(code::INVALID_REQUEST, "the session is already initialized"),
            id,
        );
    }
    match handshake::handshake(app, conn.scope.clone(), &request, Some(&conn.id), caller).await {
        Ok((ctx, result)) => {
            let Some(session) = ctx.session().cloned() else {
                return Outcome::Accepted;
            };
            let stream = lock(&conn.early).take();
            let Some(tx) = stream else {
                // The stream ended while the session was being made.
                app.sessions.end(&session.id).await;
                return Outcome::Accepted;
            };
            session.set_outbound(tx);
            *lock(&conn.session) = Some(session.clone());
            if !app.sse.conns.contains_key(&conn.id) {
                // Cleanup ran before the session was attached: end it here.
                app.sessions.end(&session.id).await;
                return Outcome::Accepted;
            }
            Outcome::Message(request.answer(&tether_wire::jsonrpc::to_raw(&result)))
        }
        Err(refusal) => {
            conn.initializing.store(false, Ordering::Release);
            Outcome::Error(refusal.error(), id)
        }
    }
}

/// Puts an outcome on the stream; a client that leaves the stream full for
/// the send timeout is cut off.
async fn deliver(app: &App, conn: &Conn, outcome: Outcome) {
    let push = |message: Bytes| async move {
        let Some(tx) = conn.sender() else {
            return false;
        };
        if matches!(
            tokio::time::timeout(app.send_timeout(), tx.send(message)).await,
            Ok(Ok(()))
        ) {
            return true;
        }
        tracing::warn!(session = %conn.id, "client stopped reading its SSE stream; closing it");
        conn.cut();
        false
    };
    match outcome {
        Outcome::Accepted => {}
        Outcome::Message(m) => {
            push(m).await;
        }
        Outcome::Error(e, id) => {
            push(Bytes::from(e.to_response(id.as_deref()))).await;
        }
        Outcome::Stream(mut rx) => {
            while let Some(m) = rx.recv().await {
                if !push(m).await {
                    return;
                }
            }
        }
    }
}
