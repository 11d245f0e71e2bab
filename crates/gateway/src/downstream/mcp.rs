//! The Streamable HTTP endpoint for both eras: POST (messages), GET (the
//! session's server→client stream) and DELETE (end the session).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::json;

use super::edge::EdgeRejection;
use super::reply::{self, Accepts, ReplyStyle};
use super::{App, describe, identity, modern};
use crate::auth::Caller;
use crate::gateway::Outcome;
use crate::metrics;
use crate::session::{ClientSession, Scope};
use crate::upstream::ClientIdentity;
use tether_wire::jsonrpc::{self, ErrorObject, Kind, Message, code};
use tether_wire::protocol::{self, Era};

/// `/mcp`: all upstreams, federated.
pub async fn federated(State(app): State<Arc<App>>, req: Request) -> Response {
    endpoint(app, Scope::Federated, req).await
}

/// `/u/<upstream>/mcp`: one upstream, transparent.
pub async fn single(
    State(app): State<Arc<App>>,
    Path(upstream): Path<String>,
    req: Request,
) -> Response {
    let Some(up) = app.gateway.upstream(&upstream) else {
        return reply::error(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            format!("no upstream named {upstream:?}"),
        );
    };
    let scope = Scope::Single(up.name.clone());
    endpoint(app, scope, req).await
}

async fn endpoint(app: Arc<App>, scope: Scope, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    if let Err(rejection) = app.edge.check(&parts.headers) {
        let resp = edge_response(rejection);
        app.metrics.record(
            metrics::kind_slot(metrics::Kind::Rejected),
            resp.status().as_u16(),
            start.elapsed(),
        );
        return resp;
    }
    let caller = match identity::caller(&app, &parts.headers).await {
        Ok(c) => c,
        Err(resp) => {
            app.metrics.record(
                metrics::kind_slot(metrics::Kind::Rejected),
                401,
                start.elapsed(),
            );
            return *resp;
        }
    };
    if let Some(resp) = app.rate_limited(&caller) {
        app.metrics.record(
            metrics::kind_slot(metrics::Kind::Rejected),
            429,
            start.elapsed(),
        );
        return resp;
    }
    let modern_sessionless = parts.headers.get(protocol::HEADER_SESSION_ID).is_none()
        && modern_version_header(&parts.headers);
    let (slot, resp) = match parts.method {
        Method::POST => {
            // Bound the work in flight (DESIGN invariant 10): the permit lives
            // as long as the response body, so streams count until they end.
            let Ok(permit) = app.inflight.clone().try_acquire_owned() else {
                let mut r = reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::INTERNAL_ERROR,
                    "too many requests in flight; retry later",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                app.metrics.record(
                    metrics::kind_slot(metrics::Kind::Rejected),
                    503,
                    start.elapsed(),
                );
                return r;
            };
            let (slot, resp) = post(&app, scope, &parts.headers, body, &caller).await;
            (
                slot,
                resp.map(|body| Body::new(reply::Guarded::new(body, permit))),
            )
        }
        // 2026-07-28 has no GET stream and no session to DELETE.
        Method::GET | Method::DELETE if modern_sessionless => {
            let mut r = reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                code::INVALID_REQUEST,
                "2026-07-28 clients use POST only",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            (metrics::kind_slot(metrics::Kind::Rejected), r)
        }
        Method::GET => (
            metrics::kind_slot(metrics::Kind::Stream),
            open_stream(&app, &scope, &parts.headers, &caller).await,
        ),
        Method::DELETE => (
            metrics::kind_slot(metrics::Kind::Delete),
            delete(&app, &scope, &parts.headers, &caller).await,
        ),
        _ => {
            let mut r = reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                code::INVALID_REQUEST,
                "use POST, GET or DELETE",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            (metrics::kind_slot(metrics::Kind::Rejected), r)
        }
    };
    app.metrics
        .record(slot, resp.status().as_u16(), start.elapsed());
    resp
}

/// The answer to a request the edge checks refused.
pub(super) fn edge_response(rejection: EdgeRejection) -> Response {
    match rejection {
        EdgeRejection::Host => reply::error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Forbidden: Host header not allowed",
        ),
        EdgeRejection::Origin => reply::error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Forbidden: Origin not allowed",
        ),
        EdgeRejection::TooLarge => reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            "request body too large",
        ),
        EdgeRejection::BadBody => reply::error(
            StatusCode::BAD_REQUEST,
            code::PARSE_ERROR,
            "could not read request body",
        ),
        EdgeRejection::HeadersTooLarge => reply::error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code::INVALID_REQUEST,
            "request headers too large",
        ),
        EdgeRejection::SlowBody => reply::error(
            StatusCode::REQUEST_TIMEOUT,
            code::INVALID_REQUEST,
            "the request body did not arrive in time",
        ),
    }
}

/// The 404 for an unknown, ended or foreign session (DESIGN invariant 6).
pub fn stale_session() -> Response {
    let err = ErrorObject::new(
        code::INVALID_REQUEST,
        "MCP session expired or was not found; reinitialize the streamable HTTP session",
    )
    .with_data(json!({
        "recoverable": true,
        "action": "reinitialize_mcp_session",
        "reason": "stale_streamable_http_session",
    }));
    reply::json(StatusCode::NOT_FOUND, err.to_response(None))
}

async fn post(
    app: &Arc<App>,
    scope: Scope,
    headers: &HeaderMap,
    body: Body,
    caller: &Caller,
) -> (usize, Response) {
    let other = metrics::kind_slot(metrics::Kind::Rejected);
    if !super::edge::is_json(headers) {
        let r = reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
        return (other, r);
    }
    let accepts = Accepts::from_headers(headers);
    if !accepts.json && !accepts.sse {
        let r = reply::error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must include application/json or text/event-stream",
        );
        return (other, r);
    }
    let raw = match app.edge.read_body(headers, body).await {
        Ok(b) => b,
        Err(e) => return (other, edge_response(e)),
    };
    let msg = match Message::parse(&raw) {
        Ok(m) => m,
        Err(e) => {
            return (
                other,
                reply::error(StatusCode::BAD_REQUEST, e.code(), e.message()),
            );
        }
    };
    let kind = msg.kind().expect("parse validated the kind");
    let slot = match kind {
        Kind::Request => metrics::method_slot(msg.method.as_deref().unwrap_or_default()),
        Kind::Notification => metrics::kind_slot(metrics::Kind::Notification),
        Kind::Response => metrics::kind_slot(metrics::Kind::Response),
    };
    let style = |era| ReplyStyle {
        accepts,
        era,
        keepalive: app.keepalive(),
    };
    // `initialize` starts a legacy session, unless a modern client sent it
    // (it does not exist in 2026-07-28: such a client gets "method not found").
    if msg.method.as_deref() == Some("initialize") && !modern_version_header(headers) {
        return (
            slot,
            describe::initialize(app, scope, msg, style(Era::Legacy), caller).await,
        );
    }
    if is_modern(headers, &msg, &raw) {
        return (
            slot,
            modern_request(app, scope, headers, msg, raw, style(Era::Modern), caller).await,
        );
    }
    (
        slot,
        legacy_request(app, scope, headers, msg, raw, style(Era::Legacy), caller).await,
    )
}

/// A modern request declares a modern version in its header or `_meta`.
/// Whether `MCP-Protocol-Version` names a 2026-07-28-era version.
fn modern_version_header(headers: &HeaderMap) -> bool {
    headers
        .get(protocol::HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(protocol::is_modern_version)
}

fn is_modern(headers: &HeaderMap, msg: &Message, raw: &[u8]) -> bool {
    let header_modern = headers
        .get(protocol::HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            !protocol::is_legacy_version(v) && headers.get(protocol::HEADER_SESSION_ID).is_none()
        });
    // The substring test keeps legacy requests from paying for a params parse;
    // the key must then really be in `params._meta` (not, say, in a tool argument).
    header_modern
        || (jsonrpc::contains(raw, protocol::META_PROTOCOL_VERSION.as_bytes())
            && modern::meta_version(msg).is_some())
}

async fn modern_request(
    app: &Arc<App>,
    scope: Scope,
    headers: &HeaderMap,
    msg: Message,
    raw: Bytes,
    style: ReplyStyle,
    caller: &Caller,
) -> Response {
    let kind = msg.kind().expect("validated");
    if kind == Kind::Response {
        return reply::error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "2026-07-28 clients do not send responses",
        );
    }
    if kind == Kind::Notification {
        return reply::accepted();
    }
    let params = match msg.params_object() {
        Ok(p) => p,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, code::INVALID_PARAMS, e.message()),
    };
    let (identity, options) = match modern::validate(headers, &msg, &params) {
        Ok(v) => v,
        Err(r) => return reply::json(r.status, r.error.to_response(msg.id.as_deref())),
    };
    let ctx = Arc::new(
        ClientSession::sessionless(
            scope,
            Era::Modern,
            protocol::MODERN_VERSION,
            identity,
            caller,
        )
        .with_options(options),
    );
    if msg.method.as_deref() == Some("server/discover") {
        if let Scope::Single(name) = &ctx.scope
            && !ctx.access().reaches_upstream(name)
        {
            let denied = ErrorObject::new(
                code::FORBIDDEN,
                format!("Forbidden: upstream {name} is not permitted for this principal"),
            );
            return reply::json(StatusCode::OK, denied.to_response(msg.id.as_deref()));
        }
        return describe::discover(app, &ctx, &msg).await;
    }
    reply::render(app.gateway.request(&ctx, msg, raw).await, style).await
}

async fn legacy_request(
    app: &Arc<App>,
    scope: Scope,
    headers: &HeaderMap,
    msg: Message,
    raw: Bytes,
    style: ReplyStyle,
    caller: &Caller,
) -> Response {
    let kind = msg.kind().expect("parse validated the kind");
    let version = headers
        .get(protocol::HEADER_PROTOCOL_VERSION)
        .map(|v| v.to_str().unwrap_or("?"));
    let version = version.unwrap_or(protocol::DEFAULT_LEGACY_VERSION);
    if !protocol::is_legacy_version(version) {
        return reply::error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            format!(
                "Bad Request: unsupported MCP-Protocol-Version {version:?}; supported: {}",
                protocol::LEGACY_VERSIONS.join(", ")
            ),
        );
    }
    let ctx = if app.config.server.stateless {
        Arc::new(ClientSession::sessionless(
            scope,
            Era::Legacy,
            version,
            ClientIdentity::tether(),
            caller,
        ))
    } else {
        match find_session(app, &scope, headers, caller).await {
            Ok(s) => s,
            Err(resp) => return *resp,
        }
    };
    ctx.touch();
    // Bounded work per session: the permit lives as long as the response body.
    let permit = match ctx.inflight.clone().map(|l| l.try_acquire_owned()) {
        Some(Err(_)) => {
            let mut r = reply::error(
                StatusCode::TOO_MANY_REQUESTS,
                code::INTERNAL_ERROR,
                "too many requests in flight on this session; retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        held => held.and_then(Result::ok),
    };
    let outcome = match kind {
        Kind::Request => app.gateway.request(&ctx, msg, raw).await,
        _ => app.gateway.client_message(&ctx, msg, raw).await,
    };
    let resp = match outcome {
        // A session's streams are resumable: events carry ids and are kept.
        Outcome::Stream(rx) if !ctx.is_ephemeral() && style.accepts.sse => {
            let (_, events) = ctx.streams.record(rx, app.send_timeout());
            reply::framed_stream(events, None, app.keepalive())
        }
        outcome => reply::render(outcome, style).await,
    };
    resp.map(|body| Body::new(reply::Guarded::new(body, permit)))
}

/// The caller's session named by `Mcp-Session-Id`, or the response refusing
/// the request (another principal's session is as unknown as a made-up id).
async fn find_session(
    app: &App,
    scope: &Scope,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<Arc<ClientSession>, Box<Response>> {
    let Some(id) = headers.get(protocol::HEADER_SESSION_ID) else {
        return Err(Box::new(reply::error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        )));
    };
    let id = id.to_str().unwrap_or("");
    match app.sessions.find(id, caller).await {
        Some(s) if s.scope == *scope && !s.is_closed() => Ok(s),
        _ => Err(Box::new(stale_session())),
    }
}

async fn open_stream(
    app: &Arc<App>,
    scope: &Scope,
    headers: &HeaderMap,
    caller: &Caller,
) -> Response {
    if app.config.server.stateless {
        return reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "stateless mode has no session stream",
        );
    }
    let accepts = Accepts::from_headers(headers);
    if !accepts.sse {
        return reply::error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must include text/event-stream",
        );
    }
    let session = match find_session(app, scope, headers, caller).await {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    session.touch();
    let last_event_id = headers
        .get(protocol::HEADER_LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok());
    if let Some(resumed) = match last_event_id {
        Some(id) => session.streams.resume(id).await,
        None => None,
    } {
        return reply::framed_stream(resumed, None, app.keepalive());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    session.set_outbound(tx);
    // The GET stream is resumable too: its events are kept while no
    // connection reads them (bounded), and replayed on a Last-Event-ID.
    let (log, events) = session.streams.record(rx, app.send_timeout());
    session.set_get_stream(log);
    app.gateway.relay_upstream_streams(&session);
    reply::framed_stream(
        events,
        Some(std::time::Duration::from_secs(3)),
        app.keepalive(),
    )
}

async fn delete(app: &Arc<App>, scope: &Scope, headers: &HeaderMap, caller: &Caller) -> Response {
    if app.config.server.stateless {
        return reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "stateless mode has no sessions",
        );
    }
    let session = match find_session(app, scope, headers, caller).await {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    app.sessions.end(&session.id).await;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}
