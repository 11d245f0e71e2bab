//! Streamable HTTP transport for the demo server: legacy sessions and modern
//! stateless requests on `/mcp`, plus the `/stats` counters.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Call, DemoEra, MAX_BODY, MAX_SESSIONS, Session, Shared};
use super::{initialize_result, mint_session_id, params_of, route, streams, validate_modern};
use crate::jsonrpc::{ErrorObject, Kind, Message, code, response, to_raw};
use crate::protocol::{self, Era};
use crate::sse;

/// Interval between keepalive comments on a legacy GET stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Builds the router over the shared state.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let mcp = Router::new()
        .route("/mcp", post(post_mcp).get(get_mcp).delete(delete_mcp))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_bearer,
        ));
    Router::new()
        .merge(mcp)
        .route("/stats", get(stats))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// 401 for `/mcp` requests without the configured bearer token.
async fn require_bearer(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &shared.bearer {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "unauthorized",
            )
                .into_response();
        }
    }
    next.run(request).await
}

fn json_body(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(status: u16, e: &ErrorObject, id: Option<&RawValue>) -> Response {
    json_body(status, e.to_response(id))
}

fn reject(status: u16, code: i64, message: &str) -> Response {
    error(status, &ErrorObject::new(code, message), None)
}

fn sse_body(body: Body) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        (HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    (headers, body).into_response()
}

/// The session a request names in `Mcp-Session-Id`, or the status rejecting it.
fn lookup(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Session>, u16> {
    let id = headers.get(protocol::HEADER_SESSION_ID).ok_or(400u16)?;
    let session = id
        .to_str()
        .ok()
        .and_then(|id| shared.sessions.get(id))
        .ok_or(404u16)?;
    Ok(session.value().clone())
}

/// 400 for a missing session id, 404 for an unknown one.
fn session_error(status: u16) -> Response {
    match status {
        400 => reject(
            400,
            code::SERVER_ERROR,
            "Bad Request: No valid session ID provided",
        ),
        _ => reject(404, code::SERVER_ERROR, "Session not found"),
    }
}

async fn post_mcp(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (kind, msg) = match Message::parse(&body).and_then(|m| Ok((m.kind()?, m))) {
        Ok(m) => m,
        Err(e) => return reject(400, e.code(), &e.message()),
    };
    let params = params_of(&msg);
    match route(shared.era, msg.method.as_deref(), &params) {
        Err(e) => error(400, &e, msg.id.as_deref()),
        Ok(Era::Modern) => modern(shared, &headers, msg, params).await,
        Ok(Era::Legacy) => legacy(shared, &headers, kind, msg, params, &body).await,
    }
}

/// A modern request: stateless, validated against its `_meta`.
async fn modern(shared: Arc<Shared>, headers: &HeaderMap, msg: Message, params: Value) -> Response {
    // Modern HTTP defines no client notifications; accept and ignore any.
    let (Some(method), Some(id)) = (msg.method, msg.id) else {
        return StatusCode::ACCEPTED.into_response();
    };
    shared.modern_requests.fetch_add(1, Ordering::Relaxed);
    let header = headers.get(protocol::HEADER_PROTOCOL_VERSION);
    let header = header.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Err(e) = validate_modern(&params, header.as_deref()) {
        return error(400, &e, Some(&id));
    }
    respond(Call::new(&shared, Era::Modern, None, params), method, id).await
}

/// A legacy message: `initialize`, or anything else within a session.
async fn legacy(
    shared: Arc<Shared>,
    headers: &HeaderMap,
    kind: Kind,
    msg: Message,
    params: Value,
    body: &[u8],
) -> Response {
    if let (Kind::Request, Some("initialize"), Some(id)) = (kind, msg.method.as_deref(), &msg.id) {
        return initialize(&shared, id, &params);
    }
    let session = match lookup(&shared, headers) {
        Ok(s) => s,
        Err(400) if kind == Kind::Notification => return StatusCode::ACCEPTED.into_response(),
        Err(status) => return session_error(status),
    };
    let (Some(method), Some(id)) = (msg.method, msg.id) else {
        if kind == Kind::Response {
            session.deliver(serde_json::from_slice(body).unwrap_or(Value::Null));
        }
        return StatusCode::ACCEPTED.into_response();
    };
    if let Some(v) = headers.get(protocol::HEADER_PROTOCOL_VERSION)
        && !v.to_str().is_ok_and(protocol::is_legacy_version)
    {
        let e = ErrorObject::new(
            code::INVALID_REQUEST,
            "Bad Request: Unsupported protocol version",
        );
        return error(400, &e, Some(&id));
    }
    respond(
        Call::new(&shared, Era::Legacy, Some(session), params),
        method,
        id,
    )
    .await
}

fn initialize(shared: &Shared, id: &RawValue, params: &Value) -> Response {
    if shared.sessions.len() >= MAX_SESSIONS {
        return error(
            503,
            &ErrorObject::new(code::SERVER_ERROR, "Too many sessions"),
            Some(id),
        );
    }
    let Some(sid) = mint_session_id() else {
        return reject(500, code::INTERNAL_ERROR, "Cannot generate a session id");
    };
    let (result, sampling) = initialize_result(params);
    shared
        .sessions
        .insert(sid.clone(), Arc::new(Session::new(sampling)));
    shared.initializes.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(session = %sid, "demo session started");
    let mut resp = json_body(200, response(id, &to_raw(&result)));
    if let Ok(v) = HeaderValue::from_str(&sid) {
        resp.headers_mut().insert(protocol::HEADER_SESSION_ID, v);
    }
    resp
}

/// Answers a request as JSON, or as an SSE stream written while the handler runs.
async fn respond(mut call: Call, method: String, id: Box<RawValue>) -> Response {
    if !streams(call.era, &method, &call.params) {
        let (status, body) = call.run(&method, &id).await;
        return json_body(status, body);
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(32);
    call.out = Some(tx.clone());
    tokio::spawn(async move {
        let (_, body) = call.run(&method, &id).await;
        let _ = tx.send(body).await;
    });
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|m| (Ok::<_, Infallible>(sse::message_event(&m)), rx))
    });
    sse_body(Body::from_stream(events))
}

/// Legacy standalone stream: announcements as they happen and keepalives
/// every 15 s, until the session ends.
async fn get_mcp(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.era == DemoEra::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let (closed, notes) = match lookup(&shared, &headers) {
        Ok(session) => (session.closed.subscribe(), session.listen()),
        Err(status) => return session_error(status),
    };
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.reset(); // the first keepalive after one interval, not at once
    let state = (closed, notes, tick);
    let events = stream::unfold(state, |(mut closed, mut notes, mut tick)| async move {
        let frame = tokio::select! {
            _ = tick.tick() => sse::keepalive(),
            note = notes.recv() => match note {
                Ok(m) => sse::message_event(m.to_string().as_bytes()),
                Err(_) => sse::keepalive(),
            },
            _ = closed.wait_for(|c| *c) => return None,
        };
        Some((Ok::<_, Infallible>(frame), (closed, notes, tick)))
    });
    sse_body(Body::from_stream(events))
}

async fn delete_mcp(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.era == DemoEra::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let id = match lookup(&shared, &headers) {
        Ok(_) => headers
            .get(protocol::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok()),
        Err(status) => return session_error(status),
    };
    let Some((sid, session)) = id.and_then(|id| shared.sessions.remove(id)) else {
        return session_error(404);
    };
    session.closed.send_replace(true);
    session.pending.clear();
    shared.deletes.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(session = %sid, "demo session deleted");
    StatusCode::OK.into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let body = json!({
        "initializes": shared.initializes.load(Ordering::Relaxed),
        "deletes": shared.deletes.load(Ordering::Relaxed),
        "live_sessions": shared.sessions.len(),
        "modern_requests": shared.modern_requests.load(Ordering::Relaxed),
        "tool_calls": shared.tool_calls.load(Ordering::Relaxed),
        "log_level_sets": shared.log_level_sets.load(Ordering::Relaxed),
    });
    json_body(200, body.to_string().into_bytes())
}
