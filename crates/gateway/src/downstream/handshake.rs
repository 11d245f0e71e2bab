//! What a client learns about the server: the legacy `initialize` handshake
//! (which creates the session) and the modern `server/discover` answer. On
//! `/mcp` that is Tether itself; on `/u/<upstream>/mcp` the upstream's own
//! capabilities, identity and instructions.

use std::sync::Arc;

use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use tether_wire::jsonrpc::{self, ErrorObject, RawObject, Request, code};
use tether_wire::protocol::{self, Era};
use tether_wire::tasks;

use super::App;
use super::reply::{self, ReplyStyle};
use crate::auth::Caller;
use crate::router::{Outcome, RequestContext, RequestOptions, add_cache_fields};
use crate::session::{Admission, Scope};
use crate::upstream::ClientIdentity;

/// Why an `initialize` was refused.
pub enum Refusal {
    /// The request itself is malformed.
    BadParams(&'static str),
    /// A session cap is reached.
    Full(Admission),
    /// The upstream behind `/u/<upstream>/…` could not describe itself.
    Upstream(ErrorObject),
    /// The caller's policy does not reach the endpoint's upstream.
    Forbidden(String),
}

impl Refusal {
    /// The refusal as a JSON-RPC error.
    pub fn error(&self) -> ErrorObject {
        match self {
            Refusal::BadParams(text) => ErrorObject::new(code::INVALID_PARAMS, *text),
            Refusal::Full(Admission::PrincipalFull) => ErrorObject::new(
                code::INTERNAL_ERROR,
                "too many sessions for this principal; end one or retry later",
            ),
            Refusal::Full(Admission::Full) => {
                ErrorObject::new(code::INTERNAL_ERROR, "too many sessions; retry later")
            }
            Refusal::Upstream(e) => e.clone(),
            Refusal::Forbidden(what) => ErrorObject::new(
                code::FORBIDDEN,
                format!("Forbidden: {what} is not permitted for this principal"),
            ),
        }
    }
}

/// The `initialize` handshake: negotiates the version, creates the session
/// (none in stateless mode; bound to the HTTP+SSE connection `stream` when
/// given) and builds the result.
pub async fn handshake(
    app: &App,
    scope: Scope,
    request: &Request,
    stream: Option<&str>,
    caller: Caller,
) -> Result<(Arc<RequestContext>, RawObject), Refusal> {
    let Ok(params) = request.params_object() else {
        return Err(Refusal::BadParams("initialize params must be an object"));
    };
    let Some(requested) = jsonrpc::str_member(&params, "protocolVersion") else {
        return Err(Refusal::BadParams(
            "initialize params.protocolVersion is required",
        ));
    };
    if let Scope::Single(name) = &scope
        && !caller.access.reaches_upstream(name)
    {
        return Err(Refusal::Forbidden(format!("upstream {name}")));
    }
    let version = protocol::negotiate_legacy(&requested);
    let tether = ClientIdentity::tether();
    let identity = ClientIdentity {
        info: params.get("clientInfo").cloned().unwrap_or(tether.info),
        capabilities: params
            .get("capabilities")
            .cloned()
            .unwrap_or(tether.capabilities),
        credentials: None,
    };
    let ctx = match stream {
        Some(stream) => {
            let session = app
                .sessions
                .create_bound(stream, scope, version.into(), identity, &caller)
                .await
                .map_err(Refusal::Full)?;
            RequestContext::in_session(session, caller)
        }
        None if app.config.server.stateless => RequestContext::sessionless(
            scope,
            Era::Legacy,
            identity,
            caller,
            RequestOptions::default(),
            app.router.close_timeout(),
        ),
        None => {
            let session = app
                .sessions
                .create(scope, version.into(), identity, &caller)
                .await
                .map_err(Refusal::Full)?;
            RequestContext::in_session(session, caller)
        }
    };
    match server_description(app, &ctx, version).await {
        Ok(result) => Ok((ctx, result)),
        Err(e) => {
            if let Some(session) = ctx.session() {
                app.sessions.end(&session.id).await;
            }
            Err(Refusal::Upstream(e))
        }
    }
}

/// Answers `initialize` over Streamable HTTP: the session id travels in
/// the `Mcp-Session-Id` header.
pub async fn initialize(
    app: &Arc<App>,
    scope: Scope,
    request: Request,
    style: ReplyStyle,
    caller: Caller,
) -> Response {
    let id = Some(request.id.clone());
    let (ctx, result) = match handshake(app, scope, &request, None, caller).await {
        Ok(done) => done,
        Err(refusal) => {
            let (status, retry_after) = match &refusal {
                Refusal::BadParams(_) => (StatusCode::BAD_REQUEST, None),
                Refusal::Forbidden(_) => (StatusCode::FORBIDDEN, None),
                Refusal::Full(Admission::PrincipalFull) => {
                    (StatusCode::TOO_MANY_REQUESTS, Some("30"))
                }
                Refusal::Full(Admission::Full) => (StatusCode::SERVICE_UNAVAILABLE, Some("5")),
                Refusal::Upstream(e) => {
                    return reply::render(Outcome::Error(e.clone(), id), style).await;
                }
            };
            let mut r = reply::json(status, refusal.error().to_response(id.as_deref()));
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
            }
            return r;
        }
    };
    let mut resp = reply::json(StatusCode::OK, request.answer(&jsonrpc::to_raw(&result)));
    if let Some(id) = ctx
        .session()
        .and_then(|s| HeaderValue::from_str(&s.id).ok())
    {
        resp.headers_mut().insert(protocol::HEADER_SESSION_ID, id);
    }
    resp
}

/// Tether's capabilities on the federated endpoint.
fn federated_capabilities() -> serde_json::Value {
    json!({
        "tools": {"listChanged": true},
        "prompts": {"listChanged": true},
        "resources": {"listChanged": true},
        "logging": {},
        "completions": {},
    })
}

fn tether_info() -> serde_json::Value {
    json!({"name": "tether", "version": env!("CARGO_PKG_VERSION")})
}

/// A virtual server's identity: its name, title and description, and
/// Tether's version; its instructions, if any.
fn virtual_info(app: &App, name: &str) -> Result<(serde_json::Value, Option<String>), ErrorObject> {
    let Some(server) = app.router.virtual_server(name) else {
        return Err(ErrorObject::new(
            code::INVALID_REQUEST,
            format!("virtual server {name:?} no longer exists"),
        ));
    };
    let config = &server.config;
    let mut info = json!({"name": &config.name, "version": env!("CARGO_PKG_VERSION")});
    for (key, value) in [
        ("title", &config.title),
        ("description", &config.description),
    ] {
        if !value.is_empty() {
            info[key] = value.as_str().into();
        }
    }
    let instructions = Some(config.instructions.clone()).filter(|i| !i.is_empty());
    Ok((info, instructions))
}

/// The `initialize` result: Tether's own on `/mcp`; a virtual server's own
/// identity and instructions on `/v/<name>/mcp`; the upstream's
/// capabilities, identity and instructions on `/u/<upstream>/mcp`.
async fn server_description(
    app: &App,
    ctx: &RequestContext,
    version: &str,
) -> Result<RawObject, ErrorObject> {
    let mut result = RawObject::new();
    result.insert("protocolVersion".into(), jsonrpc::to_raw(version));
    let name = match &ctx.scope {
        Scope::Single(name) => name,
        Scope::Federated | Scope::Virtual(_) => {
            let (info, instructions) = match &ctx.scope {
                Scope::Virtual(name) => virtual_info(app, name)?,
                _ => (tether_info(), None),
            };
            result.insert(
                "capabilities".into(),
                jsonrpc::to_raw(&federated_capabilities()),
            );
            result.insert("serverInfo".into(), jsonrpc::to_raw(&info));
            if let Some(instructions) = instructions {
                result.insert("instructions".into(), jsonrpc::to_raw(&instructions));
            }
            return Ok(result);
        }
    };
    let unavailable = |why: String| {
        ErrorObject::new(
            code::INTERNAL_ERROR,
            format!("upstream {name} is unavailable: {why}"),
        )
        .with_data(json!({"upstream": &**name}))
    };
    let Some(upstream) = app.router.upstream(name) else {
        return Err(unavailable("it is no longer configured".into()));
    };
    let desc = app
        .router
        .describe_upstream(ctx, &upstream)
        .await
        .map_err(|e| {
            ErrorObject::new(
                code::INTERNAL_ERROR,
                format!("upstream {name} is unavailable: {e}"),
            )
            .with_data(json!({"upstream": &**name}))
        })?;
    let desc: RawObject = serde_json::from_str(desc.get()).unwrap_or_default();
    let meta: RawObject = desc
        .get("_meta")
        .and_then(|m| serde_json::from_str(m.get()).ok())
        .unwrap_or_default();
    let capabilities = desc
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| jsonrpc::to_raw(&json!({})));
    let info = desc
        .get("serverInfo")
        .or_else(|| meta.get(protocol::META_SERVER_INFO))
        .cloned()
        .unwrap_or_else(|| jsonrpc::to_raw(&json!({"name": &**name, "version": "unknown"})));
    result.insert("capabilities".into(), capabilities);
    result.insert("serverInfo".into(), info);
    if let Some(instructions) = desc.get("instructions") {
        result.insert("instructions".into(), instructions.clone());
    }
    Ok(result)
}

/// Removes `listChanged` and `subscribe` from server capabilities.
fn strip_change_notifications(capabilities: &mut RawObject) {
    for key in ["tools", "prompts", "resources"] {
        let Some(cap) = capabilities.get(key) else {
            continue;
        };
        let Ok(mut cap) = serde_json::from_str::<RawObject>(cap.get()) else {
            continue;
        };
        cap.shift_remove("listChanged");
        cap.shift_remove("subscribe");
        capabilities.insert(key.into(), jsonrpc::to_raw(&cap));
    }
}

/// Adds the tasks extension to server capabilities: Tether runs tasks for
/// upstreams that do not (and relays those of upstreams that do).
fn offer_tasks(capabilities: &mut RawObject) {
    let mut extensions: RawObject = (capabilities.get("extensions"))
        .and_then(|e| serde_json::from_str(e.get()).ok())
        .unwrap_or_default();
    extensions.insert(tasks::EXTENSION.into(), jsonrpc::to_raw(&json!({})));
    capabilities.insert("extensions".into(), jsonrpc::to_raw(&extensions));
}

/// Answers a modern `server/discover`.
pub async fn discover(app: &Arc<App>, ctx: &RequestContext, request: &Request) -> Response {
    let id = &request.id;
    if let Scope::Single(name) = &ctx.scope
        && !ctx.access().reaches_upstream(name)
    {
        let denied = Refusal::Forbidden(format!("upstream {name}")).error();
        return reply::json(StatusCode::OK, denied.to_response(Some(id)));
    }
    let desc = match server_description(app, ctx, protocol::MODERN_VERSION).await {
        Ok(d) => d,
        Err(e) => return reply::json(StatusCode::OK, e.to_response(Some(id))),
    };
    let mut result = RawObject::new();
    result.insert("resultType".into(), jsonrpc::to_raw("complete"));
    result.insert(
        "supportedVersions".into(),
        jsonrpc::to_raw(&protocol::all_versions()),
    );
    let mut capabilities: RawObject = desc
        .get("capabilities")
        .and_then(|c| serde_json::from_str(c.get()).ok())
        .unwrap_or_default();
    capabilities.shift_remove("logging");
    // Change notifications reach 2026-07-28 clients only through
    // `subscriptions/listen`, which Tether passes through to a single modern
    // upstream but does not serve itself: don't promise them otherwise.
    let listen_passes_through = match &ctx.scope {
        Scope::Single(name) => match app.router.upstream(name) {
            Some(up) => up
                .eras(None)
                .await
                .is_ok_and(|e| e.pick(Era::Modern) == Era::Modern),
            None => false,
        },
        Scope::Federated | Scope::Virtual(_) => false,
    };
    if !listen_passes_through {
        strip_change_notifications(&mut capabilities);
    }
    if app.config.tasks.enabled {
        offer_tasks(&mut capabilities);
    }
    result.insert("capabilities".into(), jsonrpc::to_raw(&capabilities));
    if let Some(i) = desc.get("instructions") {
        result.insert("instructions".into(), i.clone());
    }
    add_cache_fields(&mut result);
    if let Some(info) = desc.get("serverInfo") {
        result.insert(
            "_meta".into(),
            jsonrpc::to_raw(&json!({ protocol::META_SERVER_INFO: info })),
        );
    }
    reply::json(
        StatusCode::OK,
        jsonrpc::response(id, &jsonrpc::to_raw(&result)),
    )
}
