//! The 2024-11-05 HTTP+SSE transport for clients. `GET /sse` opens the
//! session's event stream; its first event names the endpoint
//! (`/message?session_id=…`) where the client POSTs its messages (202);
//! every answer and server message travels on the stream. The session lives
//! exactly as long as the connection: however the stream ends (the client
//! leaves, a send times out, shutdown, expiry), the session and its upstream
//! sessions are closed once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::mcp::edge_response;
use super::{App, describe, identity, reply};
use crate::auth::Caller;
use crate::gateway::Outcome;
use crate::metrics;
use crate::session::{ClientSession, Scope, is_valid_session_id, new_session_id};
use crate::sync::lock;
use tether_wire::jsonrpc::{ErrorObject, Kind, Message, code};
use tether_wire::sse;

/// Messages queued for one stream; a client that leaves it full for longer
/// than the send timeout is cut off.
const STREAM_QUEUE: usize = 16;
/// Requests one session may have in flight; more answer 429.
const MAX_INFLIGHT: usize = 16;
/// The reconnection hint sent first (ms).
const RETRY_MS: u64 = 3000;

/// The HTTP+SSE connections this node holds, by session id.
#[derive(Default)]
pub struct SseHub {
    conns: DashMap<String, Arc<Conn>>,
    /// Open streams per principal (initialized or not).
    per_principal: DashMap<Arc<str>, usize>,
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
    /// The stream's sender until `initialize`; then the session holds it.
    early: Mutex<Option<mpsc::Sender<Bytes>>>,
    session: Mutex<Option<Arc<ClientSession>>>,
    initializing: AtomicBool,
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
    app.sse
        .per_principal
        .remove_if_mut(&conn.caller.principal, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    conn.cut();
    if conn.session().is_some() {
        app.sessions.end(id).await;
    }
    tracing::debug!(session = %id, "HTTP+SSE stream ended; session closed");
}

/// `GET /sse` and `POST /message` on `/`: all upstreams, federated.
pub async fn federated_stream(State(app): State<Arc<App>>, req: Request) -> Response {
    open(app, Scope::Federated, req).await
}

/// `GET /u/<upstream>/sse`.
pub async fn single_stream(
    State(app): State<Arc<App>>,
    Path(upstream): Path<String>,
    req: Request,
) -> Response {
    match app.gateway.upstream(&upstream) {
        Some(up) => open(app.clone(), Scope::Single(up.name.clone()), req).await,
        None => no_upstream(&upstream),
    }
}

/// `POST /message?session_id=…`.
pub async fn federated_message(State(app): State<Arc<App>>, req: Request) -> Response {
    message(app, Scope::Federated, req).await
}

/// `POST /u/<upstream>/message?session_id=…`.
pub async fn single_message(
    State(app): State<Arc<App>>,
    Path(upstream): Path<String>,
    req: Request,
) -> Response {
    match app.gateway.upstream(&upstream) {
        Some(up) => message(app.clone(), Scope::Single(up.name.clone()), req).await,
        None => no_upstream(&upstream),
    }
}

fn no_upstream(name: &str) -> Response {
    reply::error(
        StatusCode::NOT_FOUND,
        code::INVALID_REQUEST,
        format!("no upstream named {name:?}"),
    )
}

fn only(method: &'static str) -> Response {
    let mut r = reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        code::INVALID_REQUEST,
        format!("use {method}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(method));
    r
}

fn busy(status: StatusCode, text: &'static str) -> Response {
    let mut r = reply::error(status, code::INTERNAL_ERROR, text);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn open(app: Arc<App>, scope: Scope, req: Request) -> Response {
    if req.method() != Method::GET {
        return only("GET");
    }
    open_stream(&app, scope, req.headers()).await
}

/// `GET` on an SSE path served outside the HTTP stack (see `direct`):
/// `/sse` or `/u/<upstream>/sse`.
pub(super) async fn open_path(app: &Arc<App>, path: &str, headers: &HeaderMap) -> Response {
    let scope = match path
        .strip_prefix("/u/")
        .and_then(|p| p.strip_suffix("/sse"))
    {
        None => Scope::Federated,
        Some(name) => match app.gateway.upstream(name) {
            Some(up) => Scope::Single(up.name.clone()),
            None => return no_upstream(name),
        },
    };
    open_stream(app, scope, headers).await
}

/// Opens a session's stream (after the edge checks, authentication and the session cap).
async fn open_stream(app: &Arc<App>, scope: Scope, headers: &HeaderMap) -> Response {
    let start = Instant::now();
    let resp = match app.edge.check(headers) {
        Err(rejection) => edge_response(rejection),
        Ok(()) => match identity::caller(app, headers).await {
            Ok(caller) => match app.rate_limited(&caller) {
                Some(limited) => limited,
                None => new_stream(app, scope, caller),
            },
            Err(refusal) => *refusal,
        },
    };
    app.metrics.record(
        metrics::kind_slot(metrics::Kind::Stream),
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

fn new_stream(app: &Arc<App>, scope: Scope, caller: Caller) -> Response {
    // Streams not yet initialized count against the session caps too.
    if app.sse.len() >= app.config.session.max_sessions {
        return busy(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sessions; retry later",
        );
    }
    {
        let mut held = app
            .sse
            .per_principal
            .entry(caller.principal.clone())
            .or_default();
        if *held >= app.config.session.max_sessions_per_principal {
            return busy(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sessions for this principal; end one or retry later",
            );
        }
        *held += 1;
    }
    let id = new_session_id();
    let endpoint = match &scope {
        Scope::Federated => format!("/message?session_id={id}"),
        Scope::Single(name) => format!("/u/{name}/message?session_id={id}"),
    };
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let conn = Arc::new(Conn {
        id: id.clone(),
        scope,
        caller,
        early: Mutex::new(Some(tx)),
        session: Mutex::new(None),
        initializing: AtomicBool::new(false),
        inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
    });
    app.sse.conns.insert(id.clone(), conn);
    let preamble = vec![
        sse::retry_hint(RETRY_MS),
        sse::named_event("endpoint", endpoint.as_bytes()),
    ];
    let end = StreamEnd {
        app: app.clone(),
        id,
    };
    reply::sse_response(
        rx,
        preamble,
        app.keepalive(),
        |m| sse::message_event(&m),
        end,
    )
}

#[derive(serde::Deserialize)]
struct Target {
    session_id: Option<String>,
}

async fn message(app: Arc<App>, scope: Scope, req: Request) -> Response {
    let start = Instant::now();
    let (slot, resp) = take_message(&app, scope, req).await;
    app.metrics
        .record(slot, resp.status().as_u16(), start.elapsed());
    resp
}

async fn take_message(app: &Arc<App>, scope: Scope, req: Request) -> (usize, Response) {
    let rejected = metrics::kind_slot(metrics::Kind::Rejected);
    if req.method() != Method::POST {
        return (rejected, only("POST"));
    }
    let (parts, body) = req.into_parts();
    if let Some(refusal) = check_post(app, &parts.headers) {
        return (rejected, refusal);
    }
    let caller = match identity::caller(app, &parts.headers).await {
        Ok(c) => c,
        Err(refusal) => return (rejected, *refusal),
    };
    if let Some(limited) = app.rate_limited(&caller) {
        return (rejected, limited);
    }
    let Ok(Query(target)) = Query::<Target>::try_from_uri(&parts.uri) else {
        return (rejected, bad_request("malformed query string"));
    };
    let Some(id) = target.session_id else {
        return (
            rejected,
            bad_request("the session_id query parameter is required"),
        );
    };
    if !is_valid_session_id(&id) {
        return (rejected, bad_request("invalid session_id"));
    }
    let Some(conn) = app
        .sse
        .conns
        .get(&id)
        .map(|c| c.clone())
        // Another principal's stream is as unknown as a made-up id.
        .filter(|c| c.scope == scope && c.caller.principal == caller.principal)
    else {
        let unknown = reply::error(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "unknown or ended SSE session; open a new stream with GET",
        );
        return (rejected, unknown);
    };
    let raw = match app.edge.read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return (rejected, edge_response(e)),
    };
    let msg = match Message::parse(&raw) {
        Ok(m) => m,
        Err(e) => {
            let r = reply::error(StatusCode::BAD_REQUEST, e.code(), e.message());
            return (rejected, r);
        }
    };
    let slot = match msg.kind() {
        Ok(Kind::Request) => metrics::method_slot(msg.method.as_deref().unwrap_or_default()),
        Ok(Kind::Notification) => metrics::kind_slot(metrics::Kind::Notification),
        _ => metrics::kind_slot(metrics::Kind::Response),
    };
    let Ok(permit) = conn.inflight.clone().try_acquire_owned() else {
        let r = busy(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight on this session; retry later",
        );
        return (rejected, r);
    };
    tokio::spawn(handle(app.clone(), conn, caller, msg, raw, permit));
    (slot, accepted())
}

/// The refusal of a POST failing the edge checks or not carrying JSON.
fn check_post(app: &App, headers: &HeaderMap) -> Option<Response> {
    if let Err(rejection) = app.edge.check(headers) {
        return Some(edge_response(rejection));
    }
    (!super::edge::is_json(headers)).then(|| {
        reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        )
    })
}

fn bad_request(text: &'static str) -> Response {
    reply::error(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, text)
}

fn accepted() -> Response {
    let mut resp = Response::new(Body::from("Accepted"));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// Serves one client message; whatever it yields goes on the stream.
async fn handle(
    app: Arc<App>,
    conn: Arc<Conn>,
    caller: Caller,
    msg: Message,
    raw: Bytes,
    _permit: OwnedSemaphorePermit,
) {
    let id = msg.id.clone();
    let kind = msg.kind().unwrap_or(Kind::Notification);
    let outcome = match (conn.session(), msg.method.as_deref()) {
        (_, Some("initialize")) if kind == Kind::Request => {
            initialize(&app, &conn, msg, &caller).await
        }
        (Some(ctx), _) => {
            ctx.authorize(&caller);
            ctx.touch();
            match kind {
                Kind::Request => app.gateway.request(&ctx, msg, raw).await,
                _ => app.gateway.client_message(&ctx, msg, raw).await,
            }
        }
        (None, Some("ping")) if kind == Kind::Request => {
            let id = id.as_deref().expect("requests have ids");
            Outcome::Message(Bytes::from(tether_wire::jsonrpc::response(
                id,
                &tether_wire::jsonrpc::to_raw(&serde_json::json!({})),
            )))
        }
        (None, _) if kind == Kind::Request => Outcome::Error(
            ErrorObject::new(code::INVALID_REQUEST, "send initialize first"),
            id,
        ),
        (None, _) => Outcome::Accepted,
    };
    deliver(&app, &conn, outcome).await;
}

/// `initialize` on an HTTP+SSE connection: the session takes the
/// connection's id and its stream.
async fn initialize(app: &App, conn: &Conn, msg: Message, caller: &Caller) -> Outcome {
    let id = msg.id.clone();
    if conn.initializing.swap(true, Ordering::AcqRel) {
        return Outcome::Error(
            ErrorObject::new(code::INVALID_REQUEST, "the session is already initialized"),
            id,
        );
    }
    match describe::handshake(app, conn.scope.clone(), &msg, Some(&conn.id), caller).await {
        Ok((ctx, result)) => {
            let stream = lock(&conn.early).take();
            let Some(tx) = stream else {
                // The stream ended while the session was being made.
                app.sessions.end(&ctx.id).await;
                return Outcome::Accepted;
            };
            ctx.set_outbound(tx);
            *lock(&conn.session) = Some(ctx.clone());
            if !app.sse.conns.contains_key(&conn.id) {
                // Cleanup ran before the session was attached: end it here.
                app.sessions.end(&ctx.id).await;
                return Outcome::Accepted;
            }
            let id = id.as_deref().expect("handshake checked the id");
            Outcome::Message(Bytes::from(tether_wire::jsonrpc::response(
                id,
                &tether_wire::jsonrpc::to_raw(&result),
            )))
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
