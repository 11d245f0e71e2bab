//! The spans Tether makes, named and described as the OpenTelemetry
//! semantic conventions for MCP say: `{mcp.method.name} {target}` (the tool
//! or prompt name when there is one), with the method, JSON-RPC request id,
//! session id, protocol version, tool/prompt name or resource URI and error
//! type, plus `tether.upstream` where one upstream is involved.
//!
//! - [`ServerSpan`]: one per client message (kind server), the current
//!   context while the message is served;
//! - [`ClientSpan`]: one per request sent upstream (kind client), a child
//!   of the current context, ended when its reply has been read;
//! - [`internal`]: a step of Tether's own (restoring a session, probing an
//!   upstream's era, opening an upstream session) inside a request.

use std::borrow::Cow;
use std::future::Future;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, Incoming, Method};

use super::Telemetry;
use super::carrier::{self, Outgoing};

/// Attribute names (semantic conventions; `tether.*` are Tether's own).
mod key {
    pub const METHOD: &str = "mcp.method.name";
    pub const SESSION_ID: &str = "mcp.session.id";
    pub const PROTOCOL_VERSION: &str = "mcp.protocol.version";
    pub const RESOURCE_URI: &str = "mcp.resource.uri";
    pub const REQUEST_ID: &str = "jsonrpc.request.id";
    pub const TOOL: &str = "gen_ai.tool.name";
    pub const PROMPT: &str = "gen_ai.prompt.name";
    pub const OPERATION: &str = "gen_ai.operation.name";
    pub const ERROR_TYPE: &str = "error.type";
    pub const RPC_STATUS: &str = "rpc.response.status_code";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const TRANSPORT: &str = "network.transport";
    pub const PROTOCOL_NAME: &str = "network.protocol.name";
    pub const UPSTREAM: &str = "tether.upstream";
}

/// What a JSON-RPC message says about itself, for a span.
struct Described<'a> {
    /// Its method.
    method: &'a Method,
    /// Its id (requests), raw.
    id: Option<&'a RawValue>,
    /// Its tool or prompt name, or resource URI.
    target: Option<String>,
}

impl<'a> Described<'a> {
    /// A client message (`None` for a response: it gets no span).
    fn incoming(incoming: &'a Incoming) -> Option<Described<'a>> {
        match incoming {
            Incoming::Request(r) => Some(Described {
                method: &r.method,
                id: Some(&r.id),
                target: r.name_value(None),
            }),
            Incoming::Notification(n) => Some(Described {
                method: &n.method,
                id: None,
                target: None,
            }),
            Incoming::Response(_) => None,
        }
    }

    /// The span's name: the method, and the tool or prompt name when it is
    /// short enough to be one of a few (a long one is an attribute only).
    fn name(&self) -> Cow<'static, str> {
        let method = self.method.as_str();
        match (self.method, &self.target) {
            (Method::ToolsCall | Method::PromptsGet, Some(target))
                if target.len() <= MAX_NAME_TARGET =>
            {
                Cow::Owned(format!("{method} {target}"))
            }
            _ => Cow::Owned(method.to_owned()),
        }
    }

    /// The attributes describing the message.
    fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(10);
        attributes.push(KeyValue::new(key::METHOD, self.method.as_str().to_owned()));
        if let Some(id) = self.id {
            attributes.push(bounded(key::REQUEST_ID, id.get().trim_matches('"')));
        }
        match (self.method, &self.target) {
            (Method::ToolsCall, Some(tool)) => {
                attributes.push(bounded(key::TOOL, tool));
                attributes.push(KeyValue::new(key::OPERATION, "execute_tool"));
            }
            (Method::PromptsGet, Some(prompt)) => attributes.push(bounded(key::PROMPT, prompt)),
            (Method::ResourcesRead, Some(uri)) => attributes.push(bounded(key::RESOURCE_URI, uri)),
            _ => {}
        }
        attributes
    }
}

/// The longest tool or prompt name put in a span's name.
const MAX_NAME_TARGET: usize = 64;

/// The longest attribute value, in bytes: a client chooses many of them
/// (names, ids, URIs), and a queued span must stay small.
const MAX_VALUE: usize = 256;

/// `value` as an attribute, cut to [`MAX_VALUE`] bytes at a character boundary.
fn bounded(name: &'static str, value: &str) -> KeyValue {
    let mut end = value.len().min(MAX_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    KeyValue::new(name, value[..end].to_owned())
}

/// A new span under `parent`, as the context holding it; its attributes
/// are made only when it is recorded (sampled).
fn open(
    telemetry: &Telemetry,
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    parent: Context,
) -> Context {
    let tracer = telemetry.tracer();
    let mut span = tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, &parent);
    if span.is_recording() {
        span.set_attributes(attributes());
    }
    parent.with_span(span)
}

fn optional(attributes: &mut Vec<KeyValue>, name: &'static str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        attributes.push(bounded(name, value));
    }
}

/// The span of one client message as Tether serves it.
pub struct ServerSpan {
    cx: Context,
}

/// Where a client message came from, beyond the message itself.
pub struct Arrival<'a> {
    /// Its HTTP request's headers (`traceparent`, `Mcp-Session-Id`, …).
    pub headers: &'a http::HeaderMap,
    /// The client's session id, if it has one.
    pub session_id: Option<&'a str>,
    /// The protocol version it speaks, if known.
    pub protocol_version: Option<&'a str>,
    /// The one upstream its endpoint reaches (`/u/<upstream>/…`).
    pub upstream: Option<&'a str>,
}

impl ServerSpan {
    /// The span of `incoming`, in the trace its `_meta` or headers name;
    /// `None` when tracing is off or the message is a response.
    pub fn start(arrival: &Arrival<'_>, incoming: &Incoming) -> Option<ServerSpan> {
        let telemetry = super::get()?;
        let described = Described::incoming(incoming)?;
        let params = match incoming {
            Incoming::Request(r) => r.params.as_deref(),
            Incoming::Notification(n) => n.params.as_deref(),
            Incoming::Response(_) => None,
        };
        let parent = carrier::incoming(arrival.headers, params);
        let attributes = || {
            let mut attributes = described.attributes();
            optional(&mut attributes, key::SESSION_ID, arrival.session_id);
            optional(
                &mut attributes,
                key::PROTOCOL_VERSION,
                arrival.protocol_version,
            );
            optional(&mut attributes, key::UPSTREAM, arrival.upstream);
            attributes.push(KeyValue::new(key::TRANSPORT, "tcp"));
            attributes.push(KeyValue::new(key::PROTOCOL_NAME, "http"));
            attributes
        };
        let name = described.name();
        Some(ServerSpan {
            cx: open(telemetry, name, SpanKind::Server, attributes, parent),
        })
    }

    /// The context to serve the message in (the span current).
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Marks the span with how the message was answered: the HTTP status
    /// of its response (none for a message answered on an HTTP+SSE stream)
    /// and the JSON-RPC error code of its answer, if any (which then names
    /// the error); it ends when the returned guard is dropped (with the
    /// response's body).
    pub fn finish(self, status: Option<u16>, rpc_error: Option<i64>) -> EndsSpan {
        let span = self.cx.span();
        if let Some(status) = status {
            span.set_attribute(KeyValue::new(key::HTTP_STATUS, i64::from(status)));
        }
        let error = match (rpc_error, status) {
            (Some(code), _) => {
                span.set_attribute(KeyValue::new(key::RPC_STATUS, code.to_string()));
                Some(code.to_string())
            }
            (None, Some(status)) if status >= 400 => Some(status.to_string()),
            _ => None,
        };
        if let Some(error) = error {
            span.set_status(Status::error(format!("error {error}")));
            span.set_attribute(KeyValue::new(key::ERROR_TYPE, error));
        }
        EndsSpan(self.cx)
    }

    /// Runs the future `work` makes inside the span, then ends the span
    /// marked with the JSON-RPC error code the work answered with, if any.
    /// (The future is made where it is awaited, so it is stored once.)
    pub async fn around<W: Future<Output = Option<i64>>>(self, work: impl FnOnce() -> W) {
        let rpc_error = work().with_context(self.context()).await;
        drop(self.finish(None, rpc_error));
    }
}

/// Ends the span of its context when dropped (with the body it guards).
pub struct EndsSpan(Context);

impl Drop for EndsSpan {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// What a client span reads from the request it is the span of.
#[derive(Deserialize)]
struct Sent<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<Named<'a>>,
}

/// The members of `params` naming a request's target.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
}

/// The span of one request Tether sends an upstream.
pub struct ClientSpan {
    cx: Context,
}

/// The upstream session a request goes out on.
pub struct Destination<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// The upstream's session id, if it gave one.
    pub session_id: Option<&'a str>,
    /// The protocol version spoken with it.
    pub protocol_version: &'a str,
    /// `pipe` for a process's stdin/stdout, else `tcp`.
    pub transport: &'static str,
}

impl ClientSpan {
    /// A span for the request `body` (its method `method`, target `name`)
    /// going to `to`: a child of the current span; `None` when tracing is
    /// off or no request is being traced.
    pub fn start(
        to: &Destination<'_>,
        method: &Method,
        name: Option<&str>,
        body: &[u8],
    ) -> Option<ClientSpan> {
        let telemetry = super::get()?;
        let parent = Context::current();
        if !parent.span().span_context().is_valid() {
            return None;
        }
        // A child of an unsampled span is not recorded (parent-based
        // sampling): it only carries the context on, so the body is not read.
        if !parent.span().span_context().is_sampled() {
            let name = Cow::Owned(method.as_str().to_owned());
            let cx = open(telemetry, name, SpanKind::Client, Vec::new, parent);
            return Some(ClientSpan { cx });
        }
        let sent = serde_json::from_slice::<Sent>(body).ok();
        let (id, params) = sent.map_or((None, None), |s| (s.id, s.params));
        // A legacy upstream is not told the name in a header: read it from the body.
        let target = name.map(str::to_owned).or_else(|| {
            let params = params?;
            match method.name_param()? {
                "uri" => params.uri,
                _ => params.name,
            }
            .map(Cow::into_owned)
        });
        let described = Described { method, id, target };
        let attributes = || {
            let mut attributes = described.attributes();
            optional(&mut attributes, key::UPSTREAM, Some(to.upstream));
            optional(&mut attributes, key::SESSION_ID, to.session_id);
            optional(
                &mut attributes,
                key::PROTOCOL_VERSION,
                Some(to.protocol_version),
            );
            attributes.push(KeyValue::new(key::TRANSPORT, to.transport));
            attributes
        };
        let name = described.name();
        Some(ClientSpan {
            cx: open(telemetry, name, SpanKind::Client, attributes, parent),
        })
    }

    /// Whether the span is recorded (its context then goes in `_meta` too).
    pub fn is_sampled(&self) -> bool {
        self.cx.span().span_context().is_sampled()
    }

    /// The span's context as the upstream is to receive it.
    pub fn outgoing(&self) -> Outgoing {
        Outgoing::of(&self.cx)
    }

    /// Marks the span failed: the request got no answer (`kind` says why).
    pub fn failed(&self, kind: &str, detail: &dyn std::fmt::Display) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(key::ERROR_TYPE, kind.to_owned()));
        span.set_status(Status::error(detail.to_string()));
    }

    /// Marks the span with the JSON-RPC error in the answer `body`, if any.
    pub fn answered(&self, body: &[u8]) {
        // Most answers are results: not parsed for an error they cannot hold.
        if !jsonrpc::contains(body, b"\"error\"") {
            return;
        }
        if let Some(code) = jsonrpc::error_code(body) {
            let span = self.cx.span();
            span.set_attribute(KeyValue::new(key::ERROR_TYPE, code.to_string()));
            span.set_attribute(KeyValue::new(key::RPC_STATUS, code.to_string()));
            span.set_status(Status::error(format!("error {code}")));
        }
    }

    /// Ends the span now.
    pub fn end(self) {
        self.cx.span().end();
    }

    /// Ends the span when the returned guard is dropped (a streamed reply
    /// read to its end).
    pub fn until_dropped(self) -> EndsSpan {
        EndsSpan(self.cx)
    }
}

/// Runs the future `step` makes (named `name`, described by `attributes`)
/// as a span of its own inside the request being traced; just runs it
/// otherwise. `failure` says whether (and why) its output is a failure,
/// which marks the span. The future is made where it is awaited, so it is
/// stored once in the caller's future.
pub async fn internal<T, F: Future<Output = T>>(
    name: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    failure: impl FnOnce(&T) -> Option<String>,
    step: impl FnOnce() -> F,
) -> T {
    let traced = super::get().filter(|_| Context::current().span().span_context().is_valid());
    let Some(telemetry) = traced else {
        return step().await;
    };
    let (name, parent) = (Cow::Borrowed(name), Context::current());
    let cx = open(telemetry, name, SpanKind::Internal, attributes, parent);
    let out = step().with_context(cx.clone()).await;
    if let Some(why) = failure(&out) {
        cx.span().set_status(Status::error(why));
    }
    cx.span().end();
    out
}

/// The failure of a `Result`: its error's text.
pub fn error_text<T, E: std::fmt::Display>(result: &Result<T, E>) -> Option<String> {
    result.as_ref().err().map(ToString::to_string)
}

/// The `tether.upstream` attribute, for internal spans.
pub fn upstream_attribute(upstream: &str) -> KeyValue {
    KeyValue::new(key::UPSTREAM, upstream.to_owned())
}

/// The `mcp.session.id` attribute, for internal spans.
pub fn session_attribute(id: &str) -> KeyValue {
    KeyValue::new(key::SESSION_ID, id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(body: &str) -> (String, Vec<(String, String)>) {
        let incoming = Incoming::parse(bytes::Bytes::from(body.to_owned())).unwrap();
        let described = Described::incoming(&incoming).unwrap();
        let (name, attributes) = (described.name(), described.attributes());
        let attributes = attributes
            .into_iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        (name.into_owned(), attributes)
    }

    fn has(attributes: &[(String, String)], key: &str, value: &str) -> bool {
        attributes.iter().any(|(k, v)| k == key && v == value)
    }

    #[test]
    fn spans_are_named_by_method_and_low_cardinality_target() {
        let (name, attrs) = described(
            r#"{"jsonrpc":"2.0","id":"a7","method":"tools/call","params":{"name":"get_weather"}}"#,
        );
        assert_eq!(name, "tools/call get_weather");
        assert!(has(&attrs, key::TOOL, "get_weather"));
        assert!(has(&attrs, key::OPERATION, "execute_tool"));
        assert!(has(&attrs, key::REQUEST_ID, "a7"));
        assert!(has(&attrs, key::METHOD, "tools/call"));
        // A resource URI is an attribute, never the name (unbounded cardinality).
        let (name, attrs) = described(
            r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///x"}}"#,
        );
        assert_eq!(name, "resources/read");
        assert!(has(&attrs, key::RESOURCE_URI, "file:///x"));
        assert!(has(&attrs, key::REQUEST_ID, "3"));
        let (name, attrs) = described(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(name, "notifications/initialized");
        assert!(!attrs.iter().any(|(k, _)| k == key::REQUEST_ID));
        let response = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let incoming = Incoming::parse(bytes::Bytes::from(response)).unwrap();
        assert!(
            Described::incoming(&incoming).is_none(),
            "responses get no span"
        );
    }
}
