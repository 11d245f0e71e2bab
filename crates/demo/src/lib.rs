//! The built-in demo upstream MCP server (`tether demo-upstream`).
//!
//! A small, deterministic MCP server used by tests, benchmarks and demos. It
//! speaks the legacy era (`initialize` + `Mcp-Session-Id`), the modern era
//! (stateless, `_meta` on every request, MRTR) or both, over Streamable HTTP
//! ([`http`]), the 2024-11-05 HTTP+SSE transport ([`sse`], legacy only) or
//! newline-delimited stdio ([`stdio`]). Method handlers here are
//! transport-agnostic: they get a [`Call`] and return a result or an error.
//!
//! The catalogue (tools, prompts, resources) depends on the [`DemoProfile`]:
//! the demo one lives here, the conformance fixture in [`conformance`] (and
//! its MRTR fixtures in [`input_required`]); the machinery (eras, sessions,
//! streaming, server→client requests, log levels) is shared, with modern
//! header validation in [`headers`], sealed MRTR state in [`mrtr`] and
//! `subscriptions/listen` streams in [`listen`].

mod conformance;
mod headers;
mod http;
mod input_required;
mod listen;
mod mrtr;
mod replies;
mod resume;
mod sse;
mod stdio;
mod tasks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use tether_wire::jsonrpc::{ErrorObject, Message, Method, code};
use tether_wire::protocol::{self, Era};

/// Which protocol era(s) the demo server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoEra {
    /// Only `initialize` + sessions (2024-11-05 … 2025-11-25).
    Legacy,
    /// Only stateless per-request `_meta` (2026-07-28).
    Modern,
    /// Both: a modern `_meta` version or `MCP-Protocol-Version` header selects
    /// modern; otherwise `initialize` starts a legacy session.
    #[default]
    Dual,
}

impl DemoEra {
    fn allows(self, era: Era) -> bool {
        matches!(
            (self, era),
            (DemoEra::Dual, _) | (DemoEra::Legacy, Era::Legacy) | (DemoEra::Modern, Era::Modern)
        )
    }
}

/// Which catalogue of tools, prompts and resources the demo server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoProfile {
    /// `echo`, counters, `progress`, `sample`, `announce`, the `greeting`
    /// prompt and `demo://` resources.
    #[default]
    Demo,
    /// Exactly what the official MCP conformance suite's server scenarios
    /// expect (`test_*` tools, prompts and `test://` resources).
    Conformance,
}

/// Most live legacy sessions at once; `initialize` beyond this gets 503.
const MAX_SESSIONS: usize = 10_000;
/// Largest accepted request body (HTTP) or line (stdio).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long a tool waits for the client's answer to a server→client request.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_STEPS: u64 = 100;
const MAX_DELAY_MS: u64 = 10_000;

/// The demo upstream server; cheap to clone (all state is shared).
#[derive(Clone)]
pub struct DemoServer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    era: DemoEra,
    profile: DemoProfile,
    /// Required `Authorization: Bearer` token on `/mcp`, if any.
    bearer: Option<String>,
    sessions: DashMap<String, Arc<Session>>,
    /// Live HTTP+SSE (2024-11-05) sessions, by the id in their endpoint URL.
    sse_sessions: DashMap<String, Arc<sse::Link>>,
    /// The modern era has no sessions, so its counter tools share this one process-wide counter.
    modern_counter: AtomicU64,
    next_request_id: AtomicU64,
    initializes: AtomicU64,
    deletes: AtomicU64,
    modern_requests: AtomicU64,
    tool_calls: AtomicU64,
    /// The W3C trace context the last HTTP `tools/call` came with: its
    /// `traceparent` header and `params._meta.traceparent` (in `/stats`).
    last_call_trace: std::sync::Mutex<Value>,
    log_level_sets: AtomicU64,
    /// Seals modern MRTR `requestState` tokens.
    state_key: mrtr::StateKey,
    /// List and resource changes, fanned out to `subscriptions/listen` streams.
    changes: listen::Changes,
    /// Conformance profile: whether `test_trigger_tool_change` has added its extra tool.
    extra_tool: AtomicBool,
    /// Conformance profile: whether `test_trigger_prompt_change` has added its extra prompt.
    extra_prompt: AtomicBool,
    /// What modern cacheable results say about caching them.
    cache_hint: CacheHint,
    /// Modern cacheable requests answered (list methods, `resources/read`).
    cacheable_requests: AtomicU64,
    /// Conformance profile: the tasks of the tasks extension.
    tasks: tasks::Tasks,
}

/// The `ttlMs` and `cacheScope` modern cacheable results carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheHint {
    /// How long a client (or a gateway) may reuse the result.
    pub ttl_ms: u64,
    /// `private`: only for the one who asked; else `public`.
    pub private: bool,
}

impl Shared {
    /// Announces a list change: on every `subscriptions/listen` stream, and
    /// on every legacy session's GET stream.
    fn announce(&self, change: listen::Change) {
        let note = json!({"jsonrpc": "2.0", "method": change.method().as_str()});
        for session in self.sessions.iter() {
            let _ = session.announcements.send(note.clone());
        }
        self.changes.publish(change);
    }
}

/// One legacy session (Streamable HTTP or HTTP+SSE) or the implicit stdio session.
struct Session {
    counter: AtomicU64,
    /// Whether the client declared the `sampling` capability at `initialize`.
    sampling: AtomicBool,
    /// Whether the client declared the `elicitation` capability at `initialize`.
    elicitation: AtomicBool,
    /// The `logging/setLevel` choice as a [`log_rank`]; [`NO_LEVEL`] until set.
    log_level: AtomicU8,
    /// Server→client requests awaiting the client's response, by normalized id.
    pending: DashMap<String, oneshot::Sender<Value>>,
    /// Flips to `true` when the session ends (closes its GET stream).
    closed: watch::Sender<bool>,
    /// Server-initiated messages for the session's GET stream(s) (bounded; dropped without listeners).
    announcements: broadcast::Sender<Value>,
    /// Recent events of resumable POST streams, replayed on GET with `Last-Event-ID`.
    events: resume::EventLog,
}

impl Session {
    fn new(caps: ClientCaps) -> Self {
        Session {
            counter: AtomicU64::new(0),
            sampling: AtomicBool::new(caps.sampling),
            elicitation: AtomicBool::new(caps.elicitation),
            log_level: AtomicU8::new(NO_LEVEL),
            pending: DashMap::new(),
            closed: watch::Sender::new(false),
            announcements: broadcast::Sender::new(16),
            events: resume::EventLog::default(),
        }
    }

    /// Records the capabilities a client declared at `initialize`.
    fn set_caps(&self, caps: ClientCaps) {
        self.sampling.store(caps.sampling, Ordering::Relaxed);
        self.elicitation.store(caps.elicitation, Ordering::Relaxed);
    }

    /// Subscribes a GET stream to the session's server-initiated messages.
    fn listen(&self) -> broadcast::Receiver<Value> {
        self.announcements.subscribe()
    }

    /// Hands a client's JSON-RPC response to the tool call waiting for it.
    fn deliver(&self, response: Value) {
        let key = response.get("id").map(id_key).unwrap_or_default();
        match self.pending.remove(&key) {
            Some((_, tx)) => {
                let _ = tx.send(response);
            }
            None => tracing::debug!(id = %key, "response for no pending request"),
        }
    }
}

impl DemoServer {
    /// A demo server answering the given era(s).
    pub fn new(era: DemoEra) -> Self {
        Self::with_bearer(era, None)
    }

    /// A demo server that, given a token, answers 401 to MCP requests over
    /// HTTP without `Authorization: Bearer <token>` (an upstream needing credentials).
    pub fn with_bearer(era: DemoEra, bearer: Option<String>) -> Self {
        Self::with_options(era, DemoProfile::Demo, bearer)
    }

    /// A demo server with the given era(s), catalogue profile and optional bearer token.
    pub fn with_options(era: DemoEra, profile: DemoProfile, bearer: Option<String>) -> Self {
        DemoServer {
            shared: Arc::new(Shared {
                era,
                profile,
                bearer,
                ..Shared::default()
            }),
        }
    }

    /// Modern cacheable results say `hint` about caching them (default:
    /// `ttlMs: 0`, `public`).
    pub fn with_cache_hint(mut self, hint: CacheHint) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.cache_hint = hint;
        }
        self
    }

    /// The axum router serving `/mcp` (POST/GET/DELETE), the HTTP+SSE
    /// transport (`GET /sse`, `POST /messages`) and `/stats`.
    pub fn router(&self) -> axum::Router {
        http::router(self.shared.clone())
    }

    /// Serve HTTP on a bound listener until the future is dropped; sets
    /// `TCP_NODELAY` on accepted sockets so streamed events leave at once.
    pub async fn serve_http(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        axum::serve(listener, self.router()).await
    }

    /// Serve one client over stdin/stdout until stdin closes.
    pub async fn serve_stdio(self) -> std::io::Result<()> {
        stdio::serve(self.shared).await
    }
}

/// Normalizes a JSON-RPC id so `"a"` and `"\u0061"` match.
fn id_key(id: &Value) -> String {
    id.to_string()
}

/// A fresh session id: 128 random bits, base64url without padding.
fn mint_session_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn err(code: i64, message: impl Into<String>) -> ErrorObject {
    ErrorObject::new(code, message)
}

fn invalid(what: impl std::fmt::Display) -> ErrorObject {
    err(code::INVALID_PARAMS, format!("Invalid params: {what}"))
}

fn missing_meta(key: &str) -> ErrorObject {
    invalid(format_args!("missing _meta[\"{key}\"]"))
}

/// A message's `params` as a JSON value (`null` when absent).
fn params_of(msg: &Message) -> Value {
    msg.params
        .as_deref()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or(Value::Null)
}

/// The modern protocol version a request declares in `_meta`, if it declares one.
fn meta_version(params: &Value) -> Option<&Value> {
    params.get("_meta")?.get(protocol::META_PROTOCOL_VERSION)
}

fn unsupported_version(requested: &Value) -> ErrorObject {
    let requested = requested
        .as_str()
        .map_or_else(|| requested.to_string(), str::to_owned);
    err(
        protocol::ERROR_UNSUPPORTED_VERSION,
        "Unsupported protocol version",
    )
    .with_data(json!({"supported": protocol::MODERN_VERSIONS, "requested": requested}))
}

/// Decides which era serves a request, or the (HTTP 400) error rejecting it.
/// A request is modern when its `_meta` declares a protocol version or its
/// `MCP-Protocol-Version` header names a modern one; that includes a modern
/// `initialize`, which the modern era answers with -32601.
fn route(
    era: DemoEra,
    method: Option<&str>,
    params: &Value,
    header_version: Option<&str>,
) -> Result<Era, ErrorObject> {
    let modern = era.allows(Era::Modern)
        && (meta_version(params).is_some()
            || header_version.is_some_and(protocol::is_modern_version));
    if modern {
        return Ok(Era::Modern);
    }
    if method == Some("initialize") {
        if era.allows(Era::Legacy) {
            return Ok(Era::Legacy);
        }
        let requested = params
            .get("protocolVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let mut e = unsupported_version(&requested);
        e.message = format!(
            "Unsupported protocol version: this server speaks only {}",
            protocol::MODERN_VERSION
        );
        return Err(e);
    }
    if era.allows(Era::Legacy) {
        return Ok(Era::Legacy);
    }
    Err(missing_meta(protocol::META_PROTOCOL_VERSION))
}

/// Checks a modern request's `_meta` and, when given, the
/// `MCP-Protocol-Version` header against it: a missing `_meta` field is
/// -32602, a header/body disagreement -32020, an unsupported version -32022.
fn validate_modern(params: &Value, header_version: Option<&str>) -> Result<(), ErrorObject> {
    let Some(meta) = params.get("_meta").filter(|m| m.is_object()) else {
        return Err(invalid("missing params._meta"));
    };
    let Some(version) = meta.get(protocol::META_PROTOCOL_VERSION) else {
        return Err(missing_meta(protocol::META_PROTOCOL_VERSION));
    };
    let Some(v) = version.as_str() else {
        return Err(invalid(format_args!(
            "_meta[\"{}\"] must be a string",
            protocol::META_PROTOCOL_VERSION
        )));
    };
    if let Some(h) = header_version.filter(|h| *h != v) {
        return Err(err(
            protocol::ERROR_HEADER_MISMATCH,
            format!(
                "Header mismatch: MCP-Protocol-Version header value '{h}' does not match body value '{v}'"
            ),
        ));
    }
    if !protocol::is_modern_version(v) {
        return Err(unsupported_version(version));
    }
    if !meta
        .get(protocol::META_CLIENT_CAPABILITIES)
        .is_some_and(Value::is_object)
    {
        return Err(missing_meta(protocol::META_CLIENT_CAPABILITIES));
    }
    Ok(())
}

/// HTTP status for a JSON-RPC error produced by a handler.
fn error_status(era: Era, e: &ErrorObject) -> u16 {
    match (era, e.code) {
        (Era::Modern, code::METHOD_NOT_FOUND) => 404,
        (Era::Modern, c) if protocol::is_modern_error_code(c) => 400,
        _ => 200,
    }
}

/// Serializes a handler outcome as a JSON-RPC response, with its HTTP status.
/// Modern results get `resultType`, cache hints where applicable and `_meta` serverInfo.
fn finish(
    era: Era,
    method: &str,
    id: &RawValue,
    outcome: Result<Value, ErrorObject>,
    hint: CacheHint,
) -> (u16, Vec<u8>) {
    match outcome {
        Ok(mut result) => {
            if era == Era::Modern {
                decorate_modern(method, &mut result, hint);
            }
            (
                200,
                tether_wire::jsonrpc::response(id, &tether_wire::jsonrpc::to_raw(&result)),
            )
        }
        Err(e) => (error_status(era, &e), e.to_response(Some(id))),
    }
}

fn decorate_modern(method: &str, result: &mut Value, hint: CacheHint) {
    let Some(obj) = result.as_object_mut() else {
        return;
    };
    obj.entry("resultType").or_insert_with(|| json!("complete"));
    if Method::parse(method).is_cacheable() {
        let scope = if hint.private { "private" } else { "public" };
        obj.entry("ttlMs").or_insert_with(|| json!(hint.ttl_ms));
        obj.entry("cacheScope").or_insert_with(|| json!(scope));
    }
    let meta = obj.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(protocol::META_SERVER_INFO.into(), server_info());
    }
}

fn server_info() -> Value {
    json!({"name": "tether-demo-upstream", "version": env!("CARGO_PKG_VERSION")})
}

impl DemoProfile {
    /// The server capabilities advertised in the given era.
    fn capabilities(self, era: Era) -> Value {
        match self {
            DemoProfile::Demo => {
                json!({"tools": {"listChanged": false}, "prompts": {}, "resources": {}, "logging": {}, "completions": {}})
            }
            DemoProfile::Conformance => conformance::capabilities(era),
        }
    }

    fn instructions(self) -> &'static str {
        match self {
            DemoProfile::Demo => {
                "Tether demo upstream: echo, counters, progress, sampling, a greeting prompt and demo:// resources."
            }
            DemoProfile::Conformance => conformance::INSTRUCTIONS,
        }
    }

    /// The input schema of tool `name`, if the profile lists it.
    fn input_schema(self, shared: &Shared, name: &str) -> Option<Value> {
        let tools = match self {
            DemoProfile::Demo => tool_list(),
            DemoProfile::Conformance => conformance::tool_list(shared),
        };
        tools
            .as_array()?
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["inputSchema"].clone())
    }

    /// What the profile's `subscriptions/listen` streams can carry; `None`
    /// when it has no such method (the demo profile).
    fn listen_support(self) -> Option<listen::Support> {
        match self {
            DemoProfile::Demo => None,
            DemoProfile::Conformance => Some(conformance::listen_support()),
        }
    }

    /// Whether a request's answer is an SSE stream on HTTP (it sends
    /// notifications or server→client requests before its result).
    fn streams(self, era: Era, method: &str, params: &Value) -> bool {
        let tool = params.get("name").and_then(Value::as_str);
        if method != "tools/call" {
            return false;
        }
        match self {
            // `progress` always, legacy `sample` because it asks the client on that stream.
            DemoProfile::Demo => {
                tool == Some("progress") || (era == Era::Legacy && tool == Some("sample"))
            }
            DemoProfile::Conformance => tool.is_some_and(|t| conformance::streams(era, t)),
        }
    }

    /// Whether a request's HTTP answer is a resumable stream that closes
    /// before the result (SEP-1699 polling): the result is then only served
    /// on a GET with `Last-Event-ID`.
    fn polls(self, era: Era, method: &str, params: &Value) -> bool {
        self == DemoProfile::Conformance
            && era == Era::Legacy
            && method == "tools/call"
            && params.get("name").and_then(Value::as_str) == Some(conformance::RECONNECTION_TOOL)
    }
}

/// Client capabilities, declared at `initialize`, that server→client requests need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClientCaps {
    sampling: bool,
    elicitation: bool,
}

/// The legacy `InitializeResult`, and the capabilities the client declared.
fn initialize_result(profile: DemoProfile, params: &Value) -> (Value, ClientCaps) {
    let requested = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let declared = |cap: &str| {
        params
            .get("capabilities")
            .and_then(|c| c.get(cap))
            .is_some()
    };
    let caps = ClientCaps {
        sampling: declared("sampling"),
        elicitation: declared("elicitation"),
    };
    let result = json!({
        "protocolVersion": protocol::negotiate_legacy(requested),
        "capabilities": profile.capabilities(Era::Legacy),
        "serverInfo": server_info(),
        "instructions": profile.instructions(),
    });
    (result, caps)
}

/// MCP log levels, least severe first; a level's index is its rank.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];
/// [`Session::log_level`] before any `logging/setLevel`: everything is sent.
const NO_LEVEL: u8 = u8::MAX;

/// The rank of a log level name (`debug` = 0 … `emergency` = 7).
fn log_rank(level: &str) -> Option<u8> {
    LOG_LEVELS
        .iter()
        .position(|l| *l == level)
        .and_then(|i| u8::try_from(i).ok())
}

/// How a server→client request on a legacy response stream ended.
enum Asked {
    /// The client's JSON-RPC response (with `result` or `error`).
    Answered(Value),
    /// No answer within [`SAMPLE_TIMEOUT`].
    TimedOut,
    /// The request was dropped (the session ended).
    Abandoned,
}

/// What a modern (MRTR) tool does next.
enum Mrtr<'a> {
    /// This is a retry carrying the client's answer.
    Answer(&'a Value),
    /// Ask the client: the `input_required` result to return.
    Ask(Value),
}

/// One request being served: its era, session, params and the sink for
/// messages sent before the result (progress notifications, sampling requests).
struct Call {
    shared: Arc<Shared>,
    era: Era,
    session: Option<Arc<Session>>,
    out: Option<mpsc::Sender<Vec<u8>>>,
    params: Value,
}

impl Call {
    fn new(shared: &Arc<Shared>, era: Era, session: Option<Arc<Session>>, params: Value) -> Self {
        Call {
            shared: shared.clone(),
            era,
            session,
            out: None,
            params,
        }
    }

    /// Runs the request and serializes its response, with the HTTP status.
    async fn run(&self, method: &str, id: &RawValue) -> (u16, Vec<u8>) {
        let outcome = self.dispatch(method).await;
        let counted = Method::parse(method);
        if self.era == Era::Modern && counted.is_cacheable() && counted != Method::ServerDiscover {
            self.shared
                .cacheable_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        finish(self.era, method, id, outcome, self.shared.cache_hint)
    }

    /// Runs one request method (everything except `initialize`, which transports own).
    async fn dispatch(&self, method: &str) -> Result<Value, ErrorObject> {
        let (legacy, modern) = (self.era == Era::Legacy, self.era == Era::Modern);
        match method {
            "ping" if legacy => Ok(json!({})),
            "logging/setLevel" if legacy => self.set_log_level(),
            "server/discover" if modern => Ok(json!({
                // A dual-era server also speaks the legacy versions (by `initialize`).
                "supportedVersions": if self.shared.era == DemoEra::Dual {
                    protocol::all_versions()
                } else {
                    protocol::MODERN_VERSIONS.to_vec()
                },
                "capabilities": self.shared.profile.capabilities(self.era),
            })),
            _ => match self.shared.profile {
                DemoProfile::Demo => self.demo_method(method).await,
                DemoProfile::Conformance => self.conformance_method(method).await,
            },
        }
    }

    /// Legacy `logging/setLevel`: remembered for the session's log notifications.
    fn set_log_level(&self) -> Result<Value, ErrorObject> {
        let level = self.params.get("level").and_then(Value::as_str);
        let Some(rank) = level.and_then(log_rank) else {
            return Err(invalid("'level' must be a log level"));
        };
        if let Some(session) = &self.session {
            session.log_level.store(rank, Ordering::Relaxed);
        }
        self.shared.log_level_sets.fetch_add(1, Ordering::Relaxed);
        Ok(json!({}))
    }

    /// Whether a log notification at `level` may be sent for this request:
    /// legacy honours the session's `logging/setLevel` (everything until set),
    /// modern only the request's `_meta` log level (nothing without one).
    fn log_enabled(&self, level: &str) -> bool {
        let Some(rank) = log_rank(level) else {
            return false;
        };
        let threshold = match self.era {
            Era::Legacy => self
                .session
                .as_ref()
                .map_or(NO_LEVEL, |s| s.log_level.load(Ordering::Relaxed)),
            Era::Modern => match self.params["_meta"]
                .get(protocol::META_LOG_LEVEL)
                .and_then(Value::as_str)
                .and_then(log_rank)
            {
                Some(r) => r,
                None => return false,
            },
        };
        threshold == NO_LEVEL || rank >= threshold
    }

    /// Sends a `notifications/message` ahead of the result when the level
    /// allows it; `false` when the client went away.
    async fn log(&self, level: &str, logger: &str, data: &str) -> bool {
        if !self.log_enabled(level) {
            return true;
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": level, "logger": logger, "data": data}});
        self.emit(&note).await
    }

    /// The demo profile's methods.
    async fn demo_method(&self, method: &str) -> Result<Value, ErrorObject> {
        match method {
            "tools/list" => Ok(json!({"tools": tool_list()})),
            "tools/call" => self.call_tool().await,
            "prompts/list" => Ok(json!({"prompts": [{
                "name": "greeting",
                "description": "A friendly greeting for someone",
                "arguments": [{"name": "name", "description": "Who to greet", "required": true}],
            }]})),
            "prompts/get" => self.get_prompt(),
            "resources/list" => Ok(json!({"resources": [{
                "uri": "demo://readme", "name": "readme", "mimeType": "text/plain",
            }]})),
            "resources/templates/list" => Ok(json!({"resourceTemplates": [{
                "uriTemplate": "demo://items/{id}", "name": "item", "mimeType": "text/plain",
            }]})),
            "resources/read" => self.read_resource(),
            "completion/complete" => Ok(json!({"completion": {"values": [], "hasMore": false}})),
            _ => Err(method_not_found(method)),
        }
    }

    fn get_prompt(&self) -> Result<Value, ErrorObject> {
        if self.params.get("name").and_then(Value::as_str) != Some("greeting") {
            return Err(invalid("unknown prompt"));
        }
        let Some(name) = self
            .params
            .pointer("/arguments/name")
            .and_then(Value::as_str)
        else {
            return Err(invalid("missing required argument 'name'"));
        };
        Ok(
            json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("Hello, {name}!")}}]}),
        )
    }

    fn read_resource(&self) -> Result<Value, ErrorObject> {
        let uri = self.params.get("uri").and_then(Value::as_str).unwrap_or("");
        let Some(text) = resource_text(uri) else {
            return Err(self.resource_not_found(uri));
        };
        Ok(json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}))
    }

    /// The era's "resource not found" error: -32002 in legacy, -32602 in modern.
    fn resource_not_found(&self, uri: &str) -> ErrorObject {
        let code = if self.era == Era::Legacy {
            code::RESOURCE_NOT_FOUND
        } else {
            code::INVALID_PARAMS
        };
        err(code, "Resource not found").with_data(json!({"uri": uri}))
    }

    /// The `tools/call` arguments (`{}` when absent) and tool name.
    fn tool_args(&self) -> (&str, Value) {
        let name = self
            .params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = self
            .params
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({}));
        (name, args)
    }

    async fn call_tool(&self) -> Result<Value, ErrorObject> {
        self.shared.tool_calls.fetch_add(1, Ordering::Relaxed);
        let (name, args) = self.tool_args();
        let counter = match &self.session {
            Some(s) if self.era == Era::Legacy => &s.counter,
            _ => &self.shared.modern_counter,
        };
        match name {
            "echo" => match args.get("text").and_then(Value::as_str) {
                Some(text) => Ok(text_result(text)),
                None => Err(invalid("'text' must be a string")),
            },
            "counter_increment" => Ok(count_result(counter.fetch_add(1, Ordering::Relaxed) + 1)),
            "counter_get" => Ok(count_result(counter.load(Ordering::Relaxed))),
            "progress" => {
                let steps = int_arg(&args, "steps", 3)?.min(MAX_STEPS);
                let delay = int_arg(&args, "delay_ms", 100)?.min(MAX_DELAY_MS);
                self.progress(steps, Duration::from_millis(delay)).await
            }
            "sample" => {
                let Some(prompt) = args.get("prompt").and_then(Value::as_str) else {
                    return Err(invalid("'prompt' must be a string"));
                };
                match self.era {
                    Era::Legacy => self.sample_legacy(prompt).await,
                    Era::Modern => self.sample_modern(prompt),
                }
            }
            "announce" => {
                let Some(message) = args.get("message").and_then(Value::as_str) else {
                    return Err(invalid("'message' must be a string"));
                };
                let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": "info", "logger": "announce", "data": message}});
                let listeners = match &self.session {
                    Some(s) if self.era == Era::Legacy => s.announcements.send(note).unwrap_or(0),
                    _ => 0,
                };
                Ok(text_result(&format!("delivered to {listeners} listeners")))
            }
            _ => Err(invalid(format_args!("unknown tool '{name}'"))),
        }
    }

    /// Sends one message ahead of the result; `false` when the client went away.
    async fn emit(&self, message: &Value) -> bool {
        match &self.out {
            Some(out) => out
                .send(serde_json::to_vec(message).unwrap_or_default())
                .await
                .is_ok(),
            None => true,
        }
    }

    /// Resolves when the client stops listening (HTTP: closed the SSE stream).
    async fn gone(&self) {
        match &self.out {
            Some(out) => out.closed().await,
            None => std::future::pending().await,
        }
    }

    async fn progress(&self, steps: u64, delay: Duration) -> Result<Value, ErrorObject> {
        for i in 1..=steps {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.gone() => return Err(cancelled()),
            }
            if !self
                .report_progress(i, steps, &format!("step {i} of {steps}"))
                .await
            {
                return Err(cancelled());
            }
        }
        Ok(text_result(&format!("completed {steps} steps")))
    }

    /// Sends a progress notification when the request asked for progress;
    /// false when the client stopped listening.
    async fn report_progress(&self, progress: u64, total: u64, message: &str) -> bool {
        let Some(token) = self.params.pointer("/_meta/progressToken") else {
            return true;
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
            "progressToken": token, "progress": progress, "total": total, "message": message,
        }});
        self.emit(&note).await
    }

    /// The session whose client can be asked something on this call's
    /// response stream (legacy, with a stream to write to).
    fn client_stream(&self) -> Option<&Arc<Session>> {
        self.out.as_ref().and(self.session.as_ref())
    }

    /// Legacy: sends a server→client request on this call's response stream
    /// and waits for the response the client POSTs back. `Err` when the client
    /// went away (the call is cancelled).
    async fn ask_client(
        &self,
        session: &Session,
        kind: &str,
        method: &str,
        params: Value,
    ) -> Result<Asked, ErrorObject> {
        let n = self.shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let id = json!(format!("tether-demo-{kind}-{n}"));
        let (tx, rx) = oneshot::channel();
        session.pending.insert(id_key(&id), tx);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let outcome = match self.emit(&request).await {
            true => tokio::select! {
                r = tokio::time::timeout(SAMPLE_TIMEOUT, rx) => Some(r),
                () = self.gone() => None,
            },
            false => None,
        };
        session.pending.remove(&id_key(&id));
        match outcome {
            None => Err(cancelled()),
            Some(Err(_)) => Ok(Asked::TimedOut),
            Some(Ok(Err(_))) => Ok(Asked::Abandoned),
            Some(Ok(Ok(response))) => Ok(Asked::Answered(response)),
        }
    }

    /// Whether the modern client declared `capability` in its `_meta`.
    fn client_declares(&self, capability: &str) -> bool {
        self.params["_meta"]
            .get(protocol::META_CLIENT_CAPABILITIES)
            .and_then(|c| c.get(capability))
            .is_some_and(|c| !c.is_null())
    }

    /// -32021 (HTTP 400) unless the modern client declared `capability`.
    fn require_capability(&self, capability: &str) -> Result<(), ErrorObject> {
        if self.client_declares(capability) {
            return Ok(());
        }
        let e = err(
            protocol::ERROR_MISSING_CAPABILITY,
            format!("Missing required client capability: {capability}"),
        );
        Err(e.with_data(json!({"requiredCapabilities": {capability: {}}})))
    }

    /// The retry's sealed `requestState`, opened for `method` and this
    /// request's params: `None` when absent, -32602 when not intact.
    fn open_state(&self, method: &str) -> Result<Option<mrtr::State>, ErrorObject> {
        match self.params.get("requestState") {
            None => Ok(None),
            Some(Value::String(token)) => self
                .shared
                .state_key
                .open(token, method, &self.params)
                .map(Some),
            Some(_) => Err(invalid("'requestState' must be a string")),
        }
    }

    /// A sealed `requestState` for the next retry of `method` with these params.
    fn seal_state(&self, method: &str, round: u64, data: Value) -> String {
        let state = mrtr::State { round, data };
        self.shared.state_key.seal(method, &self.params, &state)
    }

    /// Modern MRTR step for a tool that needs the client's `capability`: on a
    /// retry carrying a valid answer under `key` (and its sealed
    /// `requestState`), that answer; otherwise the `input_required` result
    /// asking for it with `method`/`params`.
    fn mrtr(
        &self,
        capability: &str,
        key: &str,
        method: &str,
        params: Value,
    ) -> Result<Mrtr<'_>, ErrorObject> {
        self.require_capability(capability)?;
        let state = self.open_state("tools/call")?;
        let responses = mrtr::responses(&self.params)?;
        if let Some(answer) = mrtr::response_for(responses, key, method)? {
            if state.is_none() {
                return Err(invalid("requestState is required with this input response"));
            }
            return Ok(Mrtr::Answer(answer));
        }
        let mut requests = serde_json::Map::new();
        requests.insert(key.into(), mrtr::input_request(method, params));
        let state = self.seal_state("tools/call", 1, Value::Null);
        Ok(Mrtr::Ask(mrtr::input_required(requests, Some(state))))
    }

    /// Legacy sampling: a `sampling/createMessage` request to the client, answered by a POSTed response.
    async fn sample_legacy(&self, prompt: &str) -> Result<Value, ErrorObject> {
        let Some(session) = self.client_stream() else {
            return Ok(tool_error(
                "sample needs a session and a streaming response",
            ));
        };
        if !session.sampling.load(Ordering::Relaxed) {
            return Ok(tool_error(
                "the client did not declare the 'sampling' capability",
            ));
        }
        let asked = self
            .ask_client(
                session,
                "sample",
                "sampling/createMessage",
                sampling_params(prompt),
            )
            .await?;
        if matches!(asked, Asked::Answered(_)) {
            // Progress after the client's answer (a resumed call's progress).
            self.report_progress(1, 1, "the client answered").await;
        }
        Ok(match asked {
            Asked::TimedOut => tool_error("sampling timed out after 30 s"),
            Asked::Abandoned => tool_error("sampling request abandoned"),
            Asked::Answered(response) => {
                match (response.get("result"), response.pointer("/error/message")) {
                    (Some(result), _) => text_result(&format!("sampled: {}", content_text(result))),
                    (None, e) => tool_error(&format!(
                        "the client refused sampling: {}",
                        e.unwrap_or(&response)
                    )),
                }
            }
        })
    }

    /// Modern sampling: MRTR. First answer `input_required`; the retry carries the completion.
    fn sample_modern(&self, prompt: &str) -> Result<Value, ErrorObject> {
        let params = sampling_params(prompt);
        match self.mrtr("sampling", "sample", "sampling/createMessage", params)? {
            Mrtr::Answer(answer) => Ok(text_result(&format!("sampled: {}", content_text(answer)))),
            Mrtr::Ask(result) => Ok(result),
        }
    }
}

fn method_not_found(method: &str) -> ErrorObject {
    err(
        code::METHOD_NOT_FOUND,
        format!("Method not found: {method}"),
    )
}

fn cancelled() -> ErrorObject {
    err(code::INTERNAL_ERROR, "request cancelled")
}

/// Reads an optional non-negative integer tool argument.
fn int_arg(args: &Value, key: &str, default: u64) -> Result<u64, ErrorObject> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid(format_args!("'{key}' must be a non-negative integer"))),
    }
}

fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

fn tool_error(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

fn count_result(n: u64) -> Value {
    json!({"content": [{"type": "text", "text": n.to_string()}], "structuredContent": {"count": n}})
}

fn sampling_params(prompt: &str) -> Value {
    json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 100})
}

/// The text of a `CreateMessageResult`'s content (a block or an array of blocks).
fn content_text(result: &Value) -> String {
    let text = |b: &Value| {
        b.get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match result.get("content") {
        Some(Value::Array(blocks)) => blocks.iter().map(text).collect::<Vec<_>>().join(""),
        Some(block) => text(block),
        None => String::new(),
    }
}

fn resource_text(uri: &str) -> Option<String> {
    if uri == "demo://readme" {
        return Some("Tether demo upstream".into());
    }
    let id = uri.strip_prefix("demo://items/")?;
    (!id.is_empty() && !id.contains('/')).then(|| format!("item {id}"))
}

fn tool_list() -> Value {
    let empty = json!({"type": "object", "properties": {}, "additionalProperties": false});
    let count = json!({"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]});
    json!([
        {"name": "echo", "description": "Echo the given text back", "inputSchema": {
            "type": "object", "properties": {"text": {"type": "string", "description": "Text to echo"}},
            "required": ["text"], "additionalProperties": false}},
        {"name": "counter_increment", "description": "Increment and return the counter (per session; process-wide in the modern era)",
            "inputSchema": empty, "outputSchema": count},
        {"name": "counter_get", "description": "Return the counter without changing it",
            "inputSchema": empty, "outputSchema": count},
        {"name": "progress", "description": "Run a few timed steps, reporting progress when given a progressToken",
            "inputSchema": {"type": "object", "properties": {
                "steps": {"type": "integer", "minimum": 0, "default": 3, "description": "Number of steps (capped at 100)"},
                "delay_ms": {"type": "integer", "minimum": 0, "default": 100, "description": "Delay before each step in ms (capped at 10000)"}},
            "additionalProperties": false}},
        {"name": "sample", "description": "Ask the client's LLM to complete a prompt (needs the sampling capability)",
            "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string", "description": "Prompt to complete"}},
            "required": ["prompt"], "additionalProperties": false}},
        {"name": "announce", "description": "Send a log message on the session's standalone (GET) stream, not on this call's response",
            "inputSchema": {"type": "object", "properties": {"message": {"type": "string", "description": "Text to announce"}},
            "required": ["message"], "additionalProperties": false}},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modern(extra: Value) -> Value {
        let mut p = json!({"_meta": {protocol::META_PROTOCOL_VERSION: protocol::MODERN_VERSION,
            protocol::META_CLIENT_CAPABILITIES: {}}});
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        p
    }

    #[test]
    fn routes_by_era() {
        let m = modern(json!({}));
        let plain = json!({});
        let modern_header = Some(protocol::MODERN_VERSION);
        let era = |e, method, p: &Value, h| route(e, Some(method), p, h).unwrap();
        assert_eq!(era(DemoEra::Dual, "tools/list", &m, None), Era::Modern);
        assert_eq!(era(DemoEra::Dual, "tools/list", &plain, None), Era::Legacy);
        // The modern header alone selects modern (so a missing _meta is -32602, not a session error).
        assert_eq!(
            era(DemoEra::Dual, "server/discover", &plain, modern_header),
            Era::Modern
        );
        assert_eq!(
            era(DemoEra::Dual, "tools/list", &plain, Some("2025-11-25")),
            Era::Legacy
        );
        // A legacy initialize starts a session; a modern one is a modern (unknown) method.
        let init = json!({"protocolVersion": "2025-11-25"});
        assert_eq!(
            era(DemoEra::Dual, "initialize", &init, Some("2025-11-25")),
            Era::Legacy
        );
        assert_eq!(era(DemoEra::Dual, "initialize", &m, None), Era::Modern);
        assert_eq!(
            era(DemoEra::Dual, "initialize", &init, modern_header),
            Era::Modern
        );
        assert_eq!(
            era(DemoEra::Legacy, "server/discover", &m, modern_header),
            Era::Legacy
        );
        let e = route(
            DemoEra::Modern,
            Some("initialize"),
            &json!({"protocolVersion": "2025-06-18"}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, protocol::ERROR_UNSUPPORTED_VERSION);
        assert_eq!(e.data.unwrap()["requested"], "2025-06-18");
        let e = route(DemoEra::Modern, Some("tools/list"), &plain, None).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
    }

    #[test]
    fn validates_modern_meta() {
        let code_of = |p: &Value, h| validate_modern(p, h).err().map(|e| e.code);
        assert_eq!(code_of(&modern(json!({})), None), None);
        assert_eq!(
            code_of(&modern(json!({})), Some(protocol::MODERN_VERSION)),
            None
        );
        assert_eq!(
            code_of(&modern(json!({})), Some("2025-11-25")),
            Some(protocol::ERROR_HEADER_MISMATCH)
        );
        let old = json!({"_meta": {protocol::META_PROTOCOL_VERSION: "1900-01-01", protocol::META_CLIENT_CAPABILITIES: {}}});
        let e = validate_modern(&old, Some("1900-01-01")).unwrap_err();
        assert_eq!(
            (e.code, e.data.unwrap()["requested"].clone()),
            (protocol::ERROR_UNSUPPORTED_VERSION, json!("1900-01-01"))
        );
        // A header/body disagreement is -32020 even when the body's version is unknown.
        assert_eq!(
            code_of(&old, Some(protocol::MODERN_VERSION)),
            Some(protocol::ERROR_HEADER_MISMATCH)
        );
        let no_caps = json!({"_meta": {protocol::META_PROTOCOL_VERSION: protocol::MODERN_VERSION}});
        let no_version = json!({"_meta": {protocol::META_CLIENT_CAPABILITIES: {}}});
        for p in [no_caps, no_version, json!({}), json!({"_meta": 1})] {
            assert_eq!(
                code_of(&p, Some(protocol::MODERN_VERSION)),
                Some(code::INVALID_PARAMS),
                "{p}"
            );
        }
    }

    #[test]
    fn decorates_modern_results() {
        let mut r = json!({"tools": []});
        decorate_modern("tools/list", &mut r, CacheHint::default());
        assert_eq!(r["resultType"], "complete");
        assert_eq!(
            (r["ttlMs"].clone(), r["cacheScope"].clone()),
            (json!(0), json!("public"))
        );
        assert_eq!(
            r["_meta"][protocol::META_SERVER_INFO]["name"],
            "tether-demo-upstream"
        );
        let mut r = json!({"resultType": "input_required"});
        decorate_modern("tools/call", &mut r, CacheHint::default());
        assert_eq!(r["resultType"], "input_required");
        assert!(r.get("ttlMs").is_none());
        let id = tether_wire::jsonrpc::to_raw(&1);
        let (status, _) = finish(
            Era::Modern,
            "x",
            &id,
            Err(err(code::METHOD_NOT_FOUND, "no")),
            CacheHint::default(),
        );
        assert_eq!(status, 404);
        assert_eq!(
            finish(
                Era::Legacy,
                "x",
                &id,
                Err(err(code::METHOD_NOT_FOUND, "no")),
                CacheHint::default(),
            )
            .0,
            200
        );
    }

    #[test]
    fn pure_helpers() {
        assert_eq!(resource_text("demo://items/42").as_deref(), Some("item 42"));
        assert_eq!(
            resource_text("demo://readme").as_deref(),
            Some("Tether demo upstream")
        );
        assert!(resource_text("demo://items/").is_none() && resource_text("demo://nope").is_none());
        assert_eq!(int_arg(&json!({"steps": 5}), "steps", 3).unwrap(), 5);
        assert_eq!(int_arg(&json!({}), "steps", 3).unwrap(), 3);
        assert!(int_arg(&json!({"steps": -1}), "steps", 3).is_err());
        assert_eq!(
            content_text(&json!({"content": {"type": "text", "text": "hi"}})),
            "hi"
        );
        assert_eq!(
            content_text(&json!({"content": [{"type": "text", "text": "a"}, {"text": "b"}]})),
            "ab"
        );
        let id = mint_session_id().unwrap();
        assert!(
            id.len() >= 22
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let demo = DemoProfile::Demo;
        assert!(demo.streams(Era::Legacy, "tools/call", &json!({"name": "sample"})));
        assert!(!demo.streams(Era::Modern, "tools/call", &json!({"name": "sample"})));
        assert!(!demo.polls(
            Era::Legacy,
            "tools/call",
            &json!({"name": "test_reconnection"})
        ));
        let conf = DemoProfile::Conformance;
        assert!(conf.polls(
            Era::Legacy,
            "tools/call",
            &json!({"name": "test_reconnection"})
        ));
        assert!(!conf.polls(
            Era::Modern,
            "tools/call",
            &json!({"name": "test_reconnection"})
        ));
        assert_eq!(log_rank("debug"), Some(0));
        assert_eq!(log_rank("emergency"), Some(7));
        assert_eq!(log_rank("verbose"), None);
    }

    #[tokio::test]
    async fn mrtr_sample_round_trip() {
        let shared = DemoServer::new(DemoEra::Modern).shared;
        let mut params = modern(json!({"name": "sample", "arguments": {"prompt": "hi"}}));
        params["_meta"][protocol::META_CLIENT_CAPABILITIES] = json!({"sampling": {}});
        let call = Call::new(&shared, Era::Modern, None, params.clone());
        let first = call.dispatch("tools/call").await.unwrap();
        assert_eq!(first["resultType"], "input_required");
        params["requestState"] = first["requestState"].clone();
        params["inputResponses"] = json!({"sample": {"content": {"type": "text", "text": "yo"}}});
        let call = Call::new(&shared, Era::Modern, None, params);
        assert_eq!(
            call.dispatch("tools/call").await.unwrap()["content"][0]["text"],
            "sampled: yo"
        );
    }

    #[tokio::test]
    async fn legacy_sample_and_progress_use_the_stream() {
        let shared = DemoServer::new(DemoEra::Legacy).shared;
        let session = Arc::new(Session::new(ClientCaps {
            sampling: true,
            elicitation: false,
        }));
        let (tx, mut rx) = mpsc::channel(8);
        let params = json!({"name": "sample", "arguments": {"prompt": "p"}});
        let mut call = Call::new(&shared, Era::Legacy, Some(session.clone()), params);
        call.out = Some(tx.clone());
        let task = tokio::spawn(async move { call.dispatch("tools/call").await });
        let req: Value = serde_json::from_slice(&rx.recv().await.unwrap()).unwrap();
        assert_eq!(req["method"], "sampling/createMessage");
        session.deliver(
            json!({"id": req["id"], "result": {"content": {"type": "text", "text": "ok"}}}),
        );
        assert_eq!(
            task.await.unwrap().unwrap()["content"][0]["text"],
            "sampled: ok"
        );

        let args = json!({"name": "progress", "arguments": {"steps": 2, "delay_ms": 1}, "_meta": {"progressToken": 5}});
        let mut call = Call::new(&shared, Era::Legacy, Some(session), args);
        call.out = Some(tx);
        let result = call.dispatch("tools/call").await.unwrap();
        assert_eq!(result["content"][0]["text"], "completed 2 steps");
        for i in 1..=2 {
            let note: Value = serde_json::from_slice(&rx.recv().await.unwrap()).unwrap();
            assert_eq!(
                (
                    note["params"]["progress"].clone(),
                    note["params"]["total"].clone()
                ),
                (json!(i), json!(2))
            );
        }
    }
}
