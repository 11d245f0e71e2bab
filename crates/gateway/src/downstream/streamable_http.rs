//! The Streamable HTTP endpoint for both eras: POST (messages), GET (the
//! session's server→client stream) and DELETE (end the session).
//!
//! A POST is read and parsed once, then goes one of three ways: a legacy
//! `initialize` (a new session, see [`handshake`]), a 2026-07-28 request
//! (validated, served without a session) or a message in a legacy session
//! (found here or restored from the store); the router answers the last two.
//! In a cluster, a request in a session another node serves, or a retry for
//! a call waiting on another node, is passed on there ([`pass_on`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method as HttpMethod, StatusCode};
use serde_json::json;
use tether_wire::jsonrpc::{ErrorObject, Incoming, Method, Request as JsonRpcRequest, code};
use tether_wire::protocol::{self, Era};

use super::checks::edge;
use super::checks::inflight::session_permit;
use super::checks::record::labelled;
use super::endpoint_scope::EndpointScope;
use super::pass_on::{self, Failure};
use super::reply::{self, Accepts, Guarded, ReplyStyle};
use super::{App, handshake, modern_request};
use crate::auth::Caller;
use crate::metrics::Label;
use crate::router::{self, Outcome, RequestContext, RequestOptions};
use crate::session::{ClientSession, Located, Scope};
use crate::telemetry::spans::{Arrival, ServerSpan};
use crate::upstream::ClientIdentity;

/// `/mcp` (all upstreams, federated) and `/u/<upstream>/mcp` (one
/// upstream, transparent).
pub async fn endpoint(
    State(app): State<Arc<App>>,
    EndpointScope(scope): EndpointScope,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let modern_sessionless = parts.headers.get(protocol::HEADER_SESSION_ID).is_none()
        && modern_version_header(&parts.headers);
    match parts.method {
        HttpMethod::POST => post(&app, scope, &parts, body, caller).await,
        // 2026-07-28 has no GET stream and no session to DELETE.
        HttpMethod::GET | HttpMethod::DELETE if modern_sessionless => {
            reply::method_not_allowed("2026-07-28 clients use POST only", "POST")
        }
        HttpMethod::GET | HttpMethod::DELETE if app.config.server.stateless => {
            let refusal = reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                code::INVALID_REQUEST,
                "stateless mode has no sessions",
            );
            let label = match parts.method {
                HttpMethod::GET => Label::STREAM,
                _ => Label::DELETE,
            };
            labelled(refusal, label)
        }
        HttpMethod::GET => labelled(
            open_stream(&app, &scope, &parts, &caller).await,
            Label::STREAM,
        ),
        HttpMethod::DELETE => labelled(
            match route(&app, &scope, &parts, Bytes::new(), &caller).await {
                Ok(Route::Here(session)) => {
                    app.sessions.end(&session.id).await;
                    StatusCode::OK.into_response()
                }
                Ok(Route::Answered(resp)) => resp,
                Err(refusal) => *refusal,
            },
            Label::DELETE,
        ),
        _ => reply::method_not_allowed("use POST, GET or DELETE", "GET, POST, DELETE"),
    }
}

/// The 404 for an unknown, ended or foreign session ([invariant: stale-session]).
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

async fn post(app: &Arc<App>, scope: Scope, parts: &Parts, body: Body, caller: Caller) -> Response {
    let headers = &parts.headers;
    if !edge::is_json(headers) {
        return reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let accepts = Accepts::from_headers(headers);
    if !accepts.json && !accepts.sse {
        return reply::error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must include application/json or text/event-stream",
        );
    }
    let raw = match app.read_body(headers, body).await {
        Ok(raw) => raw,
        Err(refusal) => return *refusal,
    };
    let incoming = match App::parse(raw.clone()) {
        Ok(m) => m,
        Err(refusal) => return *refusal,
    };
    let label = Label::of(&incoming);
    let sent = Sent { parts, raw };
    // Only looked at when tracing is on.
    let span = crate::telemetry::get().and_then(|_| {
        let arrival = Arrival {
            headers,
            session_id: header_str(headers, protocol::HEADER_SESSION_ID),
            protocol_version: header_str(headers, protocol::HEADER_PROTOCOL_VERSION),
            upstream: scope.upstream(),
        };
        ServerSpan::start(&arrival, &incoming)
    });
    let resp = match span {
        None => dispatch(app, scope, sent, incoming, accepts, caller).await,
        // Boxed: the traced path does not grow every request's future.
        Some(span) => {
            let respond = || dispatch(app, scope, sent, incoming, accepts, caller);
            // Its own statement: the unboxed future is gone before the await.
            let traced = Box::pin(reply::traced(span, respond));
            traced.await
        }
    };
    labelled(resp, label)
}

/// A parsed message, served: `initialize` (a new legacy session), a
/// 2026-07-28 message, or a message in a legacy session.
async fn dispatch(
    app: &Arc<App>,
    scope: Scope,
    sent: Sent<'_>,
    incoming: Incoming,
    accepts: Accepts,
    caller: Caller,
) -> Response {
    let headers = &sent.parts.headers;
    let style = |era| ReplyStyle {
        accepts,
        era,
        keepalive: app.keepalive(),
    };
    match incoming {
        // `initialize` starts a legacy session, unless a modern client sent it
        // (it does not exist in 2026-07-28: such a client gets "method not found").
        Incoming::Request(request)
            if request.method == Method::Initialize && !modern_version_header(headers) =>
        {
            handshake::initialize(app, scope, request, style(Era::Legacy), caller).await
        }
        incoming if is_modern(headers, &incoming) => {
            modern(app, scope, sent, incoming, style(Era::Modern), caller).await
        }
        incoming => legacy(app, scope, sent, incoming, style(Era::Legacy), caller).await,
    }
}

/// A header's value, if it is text.
fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `MCP-Protocol-Version` names a 2026-07-28-era version.
fn modern_version_header(headers: &HeaderMap) -> bool {
    header_str(headers, protocol::HEADER_PROTOCOL_VERSION).is_some_and(protocol::is_modern_version)
}

/// A modern message declares a modern version in its header (and names no
/// session) or in its `_meta`.
fn is_modern(headers: &HeaderMap, incoming: &Incoming) -> bool {
    let header_modern = header_str(headers, protocol::HEADER_PROTOCOL_VERSION).is_some_and(|v| {
        !protocol::is_legacy_version(v) && headers.get(protocol::HEADER_SESSION_ID).is_none()
    });
    header_modern || modern_request::declares_meta_version(incoming)
}

/// A POST as it came: what another node needs to serve it instead.
struct Sent<'a> {
    parts: &'a Parts,
    raw: Bytes,
}

/// A 2026-07-28 message: no session; a request is validated and served in
/// a context of its own (a retry for a call waiting on another node is
/// served there).
async fn modern(
    app: &Arc<App>,
    scope: Scope,
    sent: Sent<'_>,
    incoming: Incoming,
    style: ReplyStyle,
    caller: Caller,
) -> Response {
    let headers = &sent.parts.headers;
    let request = match incoming {
        Incoming::Request(request) => request,
        Incoming::Notification(_) => return reply::accepted(),
        Incoming::Response(_) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "2026-07-28 clients do not send responses",
            );
        }
    };
    if let Some(answer) = to_waiting_node(app, &sent, &request).await {
        return answer;
    }
    let (identity, options) = match modern_request::validate(headers, &request) {
        Ok(v) => v,
        Err(r) => return reply::json(r.status, r.error.to_response(Some(&request.id))),
    };
    let ctx = RequestContext::sessionless(
        scope,
        Era::Modern,
        identity,
        caller,
        options,
        app.router.close_timeout(),
    );
    if request.method == Method::ServerDiscover {
        return handshake::discover(app, &ctx, &request).await;
    }
    reply::render(app.router.request(ctx, request).await, style).await
}

/// A modern retry whose `requestState` names a call waiting on another
/// live node: that node's answer. `None`: served here (the call waits here,
/// or its node is gone and the state is as unknown as an expired one).
async fn to_waiting_node(app: &App, sent: &Sent<'_>, request: &JsonRpcRequest) -> Option<Response> {
    let cluster = app.cluster.as_ref()?;
    if pass_on::is_passed_on(sent.parts) {
        return None;
    }
    let node = router::waiting_node(request)?;
    let peer = cluster.peer(&node).await?;
    match pass_on::send(app, cluster, &peer, sent.parts, sent.raw.clone()).await {
        Ok(answer) | Err(Failure::Answer(answer)) => Some(answer),
        Err(Failure::Unreachable | Failure::Misdirected) => None,
    }
}

/// A legacy message: in the session `Mcp-Session-Id` names (or, in
/// stateless mode, in a context of its own).
async fn legacy(
    app: &Arc<App>,
    scope: Scope,
    sent: Sent<'_>,
    incoming: Incoming,
    style: ReplyStyle,
    caller: Caller,
) -> Response {
    let headers = &sent.parts.headers;
    let version = headers
        .get(protocol::HEADER_PROTOCOL_VERSION)
        .map(|v| v.to_str().unwrap_or("?"))
        .unwrap_or(protocol::DEFAULT_LEGACY_VERSION);
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
    if app.config.server.stateless {
        let ctx = RequestContext::sessionless(
            scope,
            Era::Legacy,
            ClientIdentity::tether(),
            caller,
            RequestOptions::default(),
            app.router.close_timeout(),
        );
        return reply::render(app.router.handle(ctx, incoming).await, style).await;
    }
    let session = match route(app, &scope, sent.parts, sent.raw, &caller).await {
        Ok(Route::Here(s)) => s,
        Ok(Route::Answered(resp)) => return resp,
        Err(resp) => return *resp,
    };
    session.touch();
    let permit = match session_permit(&session.inflight) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let ctx = RequestContext::in_session(session.clone(), caller);
    let resp = match app.router.handle(ctx, incoming).await {
        // A session's streams are resumable: events carry ids and are kept.
        Outcome::Stream(rx) if style.accepts.sse => {
            let (_, events) = session.streams.record(rx, app.send_timeout());
            reply::framed_stream(events, None, app.keepalive())
        }
        outcome => reply::render(outcome, style).await,
    };
    resp.map(|body| Body::new(Guarded::new(body, permit)))
}

/// Where a request in a session is served.
enum Route {
    /// Here, in this session.
    Here(Arc<ClientSession>),
    /// By the session's home node, which answered this.
    Answered(Response),
}

/// Where the request (`parts`, `body`) in the caller's session named by
/// `Mcp-Session-Id` is served: here, or passed on to the session's home
/// node (a node found gone is taken over from; a stale home is looked up
/// again); else the response refusing it (another principal's session is as
/// unknown as a made-up id).
async fn route(
    app: &App,
    scope: &Scope,
    parts: &Parts,
    body: Bytes,
    caller: &Caller,
) -> Result<Route, Box<Response>> {
    let Some(id) = parts.headers.get(protocol::HEADER_SESSION_ID) else {
        return Err(Box::new(reply::error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        )));
    };
    let id = id.to_str().unwrap_or("");
    let passed_on = pass_on::is_passed_on(parts);
    // A home found gone or stale is looked up again, twice at most.
    for _ in 0..3 {
        let peer = match app.sessions.locate(id, caller, passed_on).await {
            Located::Here(s) if s.scope == *scope && !s.is_closed() => return Ok(Route::Here(s)),
            Located::Here(_) | Located::Nowhere => return Err(Box::new(stale_session())),
            Located::Unavailable => {
                return Err(Box::new(reply::retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session store cannot be read now; retry",
                )));
            }
            Located::Misdirected => return Err(Box::new(pass_on::misdirected())),
            Located::Peer(peer) => peer,
        };
        let Some(cluster) = &app.cluster else {
            return Err(Box::new(stale_session()));
        };
        match pass_on::send(app, cluster, &peer, parts, body.clone()).await {
            Ok(answer) | Err(Failure::Answer(answer)) => return Ok(Route::Answered(answer)),
            Err(Failure::Unreachable) => {}
            Err(Failure::Misdirected) => {
                app.sessions.forget_home(id);
                cluster.look_up_nodes().await;
            }
        }
    }
    Err(Box::new(reply::retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node serving this session is changing; retry",
    )))
}

/// GET: the session's server→client stream (resumed with `Last-Event-ID`).
async fn open_stream(app: &Arc<App>, scope: &Scope, parts: &Parts, caller: &Caller) -> Response {
    let headers = &parts.headers;
    if !Accepts::from_headers(headers).sse {
        return reply::error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must include text/event-stream",
        );
    }
    let session = match route(app, scope, parts, Bytes::new(), caller).await {
        Ok(Route::Here(s)) => s,
        Ok(Route::Answered(resp)) => return resp,
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
    app.router.relay_upstream_streams(&session);
    reply::framed_stream(
        events,
        Some(std::time::Duration::from_secs(3)),
        app.keepalive(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream::test_headers as headers;

    fn incoming(body: &str) -> Incoming {
        Incoming::parse(bytes::Bytes::from(body.to_owned())).unwrap()
    }

    #[test]
    fn the_era_follows_the_header_or_the_meta() {
        let plain = incoming(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        let meta = incoming(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let in_argument = incoming(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let none = headers(&[]);
        assert!(!is_modern(&none, &plain));
        assert!(is_modern(&none, &meta));
        assert!(!is_modern(&none, &in_argument), "only params._meta counts");
        let modern_header = headers(&[("mcp-protocol-version", "2026-07-28")]);
        assert!(is_modern(&modern_header, &plain));
        let with_session = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-session-id", "abc"),
        ]);
        assert!(!is_modern(&with_session, &plain));
        let legacy_header = headers(&[("mcp-protocol-version", "2025-11-25")]);
        assert!(!is_modern(&legacy_header, &plain));
    }
}
