//! Streamable HTTP transport for the demo server: legacy sessions and modern
//! stateless requests on `/mcp`, the HTTP+SSE routes of [`super::sse`], plus
//! the `/stats` counters. Every request must name a loopback host
//! (DNS-rebinding protection).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use futures_util::stream;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::replies::{KEEPALIVE, error, json_body, reject, sse_body};
use super::{Call, DemoEra, MAX_BODY, MAX_SESSIONS, SAMPLE_TIMEOUT, Session, Shared};
use super::{headers as mcp_headers, initialize_result, listen, mint_session_id, params_of};
use super::{resume, route, sse as sse_transport, validate_modern};
use tether_wire::jsonrpc::{ErrorObject, Kind, Message, Method, code, response, to_raw};
use tether_wire::protocol::{self, Era};
use tether_wire::sse;

/// The `retry:` hint (ms) on a resumable stream that closes before its result.
const RETRY_MS: u64 = 1000;
/// How long a resumed (`Last-Event-ID`) stream waits for its next event.
const REPLAY_WAIT: Duration = SAMPLE_TIMEOUT;

/// Builds the router over the shared state.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let mcp = Router::new()
        .route("/mcp", post(post_mcp).get(get_mcp).delete(delete_mcp))
        .route("/sse", get(sse_transport::open))
        .route("/messages", post(sse_transport::post_message))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_bearer,
        ));
    Router::new()
        .merge(mcp)
        .route("/stats", get(stats))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(require_loopback))
        .with_state(shared)
}

/// DNS-rebinding protection: 403 unless the Host names a loopback host and
/// the Origin, when present, is on one.
async fn require_loopback(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = match request.headers().get(header::HOST) {
        Some(h) => h.to_str().is_ok_and(is_loopback_host),
        None => request
            .uri()
            .authority()
            .is_some_and(|a| is_loopback_host(a.as_str())),
    };
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .is_none_or(|o| o.to_str().is_ok_and(is_loopback_origin));
    if !host {
        return reject(
            403,
            code::SERVER_ERROR,
            "Forbidden: Host is not a loopback host",
        );
    }
    if !origin {
        return reject(
            403,
            code::SERVER_ERROR,
            "Forbidden: Origin is not a loopback origin",
        );
    }
    next.run(request).await
}

/// Whether a `Host` value (`name[:port]`) is `localhost`, `127.0.0.1` or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let is_port = |p: &str| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, port)) => {
                ip == "::1" && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
            }
            None => false,
        };
    }
    let name = match host.split_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
}

/// Whether an `Origin` value is an `http(s)://` origin on a loopback host.
fn is_loopback_origin(origin: &str) -> bool {
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && is_loopback_host(host)
}

/// 401 for MCP requests (`/mcp`, `/sse`, `/messages`) without the configured bearer token.
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
    if msg.method == Some(Method::ToolsCall) {
        let header = headers.get("traceparent").and_then(|v| v.to_str().ok());
        let trace = json!({"header": header, "meta": params["_meta"]["traceparent"]});
        *shared
            .last_call_trace
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = trace;
    }
    let version = mcp_headers::protocol_version(&headers);
    match route(
        shared.era,
        msg.method.as_ref().map(Method::as_str),
        &params,
        version.as_deref(),
    ) {
        Err(e) => error(400, &e, msg.id.as_deref()),
        Ok(Era::Modern) => modern(shared, &headers, msg, params).await,
        Ok(Era::Legacy) => legacy(shared, &headers, kind, msg, params, &body).await,
    }
}

/// A modern request: stateless, validated against its `_meta` and headers.
async fn modern(shared: Arc<Shared>, headers: &HeaderMap, msg: Message, params: Value) -> Response {
    // Modern HTTP defines no client notifications; accept and ignore any.
    let (Some(method), Some(id)) = (msg.method.map(|m| m.to_string()), msg.id) else {
        return StatusCode::ACCEPTED.into_response();
    };
    shared.modern_requests.fetch_add(1, Ordering::Relaxed);
    let version = mcp_headers::protocol_version(headers);
    let schema = (method == "tools/call")
        .then(|| params.get("name").and_then(Value::as_str))
        .flatten()
        .and_then(|tool| shared.profile.input_schema(&shared, tool));
    let valid = validate_modern(&params, version.as_deref())
        .and_then(|()| mcp_headers::validate(headers, &method, &params, schema.as_ref()));
    if let Err(e) = valid {
        return error(400, &e, Some(&id));
    }
    if method == "subscriptions/listen"
        && let Some(support) = shared.profile.listen_support()
    {
        return listen_stream(&shared, &id, &params, &support);
    }
    respond(Call::new(&shared, Era::Modern, None, params), method, id).await
}

/// A `subscriptions/listen` stream: the acknowledgement, then the requested
/// change notifications, until the client closes it.
fn listen_stream(
    shared: &Shared,
    id: &RawValue,
    params: &Value,
    support: &listen::Support,
) -> Response {
    let requested = params.get("notifications").unwrap_or(&Value::Null);
    let filter = listen::Filter::honoured(requested, support);
    let subscription = serde_json::from_str(id.get()).unwrap_or(Value::Null);
    let events = listen::events(shared.changes.subscribe(), filter, subscription);
    sse_body(Body::from_stream(events))
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
    if let (Kind::Request, Some("initialize"), Some(id)) =
        (kind, msg.method.as_ref().map(Method::as_str), &msg.id)
    {
        return initialize(&shared, id, &params);
    }
    let session = match lookup(&shared, headers) {
        Ok(s) => s,
        Err(400) if kind == Kind::Notification => return StatusCode::ACCEPTED.into_response(),
        Err(status) => return session_error(status),
    };
    let (Some(method), Some(id)) = (msg.method.map(|m| m.to_string()), msg.id) else {
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
    let (result, caps) = initialize_result(shared.profile, params);
    shared
        .sessions
        .insert(sid.clone(), Arc::new(Session::new(caps)));
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
    let profile = call.shared.profile;
    if profile.polls(call.era, &method, &call.params)
        && let Some(session) = call.session.clone()
    {
        return poll(call, session, method, id);
    }
    if !profile.streams(call.era, &method, &call.params) {
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

/// SEP-1699 polling: a stream with only a priming event (an id and a
/// `retry:` hint) that closes at once; the call's messages and result go to
/// the session's event log, for a GET with `Last-Event-ID` to pick up.
fn poll(mut call: Call, session: Arc<Session>, method: String, id: Box<RawValue>) -> Response {
    let stream = session.events.open_stream();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(32);
    call.out = Some(tx);
    tokio::spawn(async move {
        let log = session.clone();
        let forward = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                log.events.append(stream, m, false);
            }
        });
        let (_, body) = call.run(&method, &id).await;
        drop(call); // closes the channel so the forwarder finishes first
        let _ = forward.await;
        session.events.append(stream, body, true);
    });
    let priming = sse::priming_event(&resume::event_id(stream, 0), RETRY_MS);
    sse_body(Body::from(priming))
}

/// A resumed stream: the events of `stream` after `cursor`, as they are
/// logged, until its final message, the session's end or [`REPLAY_WAIT`] idle.
fn replay(session: Arc<Session>, stream: u64, cursor: u64) -> Response {
    struct Replay {
        session: Arc<Session>,
        cursor: u64,
        appended: watch::Receiver<u64>,
        closed: watch::Receiver<bool>,
        done: bool,
    }
    let state = Replay {
        appended: session.events.watch(),
        closed: session.closed.subscribe(),
        session,
        cursor,
        done: false,
    };
    let events = stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            st.appended.borrow_and_update();
            let found = st.session.events.after(stream, st.cursor);
            if !found.events.is_empty() {
                let mut frame = BytesMut::new();
                for (id, data) in &found.events {
                    frame.extend_from_slice(&sse::message_event_with_id(id, data));
                }
                (st.cursor, st.done) = (found.cursor, found.done);
                return Some((Ok::<_, Infallible>(frame.freeze()), st));
            }
            tokio::select! {
                changed = st.appended.changed() => if changed.is_err() { return None },
                _ = st.closed.wait_for(|c| *c) => return None,
                () = tokio::time::sleep(REPLAY_WAIT) => return None,
            }
        }
    });
    sse_body(Body::from_stream(events))
}

/// Legacy GET: with a `Last-Event-ID` of a resumable stream, that stream's
/// replay; otherwise the standalone stream (announcements as they happen and
/// keepalives every 15 s, until the session ends).
async fn get_mcp(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.era == DemoEra::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let session = match lookup(&shared, &headers) {
        Ok(session) => session,
        Err(status) => return session_error(status),
    };
    let resume = headers
        .get(protocol::HEADER_LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(resume::parse_event_id)
        .filter(|(stream, _)| session.events.knows(*stream));
    if let Some((stream, cursor)) = resume {
        return replay(session, stream, cursor);
    }
    let (closed, notes) = (session.closed.subscribe(), session.listen());
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
        "sse_sessions": shared.sse_sessions.len(),
        "modern_requests": shared.modern_requests.load(Ordering::Relaxed),
        "cacheable_requests": shared.cacheable_requests.load(Ordering::Relaxed),
        "tool_calls": shared.tool_calls.load(Ordering::Relaxed),
        "log_level_sets": shared.log_level_sets.load(Ordering::Relaxed),
        "last_call_trace": *shared.last_call_trace.lock().unwrap_or_else(|e| e.into_inner()),
    });
    json_body(200, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_origins() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:19100",
            "[::1]",
            "[::1]:443",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:80",
            "localhost.evil.com",
            "127.0.0.2",
            "127.0.0.1:",
            "127.0.0.1:80x",
            "localhost:1:2",
            "[::2]",
            "[::1]x",
            "[::1",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(is_loopback_origin("https://127.0.0.1"));
        assert!(is_loopback_origin("http://[::1]:8080"));
        assert!(!is_loopback_origin("http://evil.example.com"));
        assert!(!is_loopback_origin("null"));
        assert!(!is_loopback_origin("file://localhost"));
    }
}
