//! W3C trace context in and out of Tether: `traceparent`/`tracestate` in
//! HTTP headers, and in a request's `params._meta` (the keys the MCP
//! specification reserves there for it, in every era).

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::Deserialize;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, RawObject};

/// The W3C header (and `_meta` key) naming the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header (and `_meta` key) with vendors' trace state.
pub const TRACESTATE: &str = "tracestate";

/// Trace context fields read from one carrier.
#[derive(Debug, Default, Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tracestate: Option<Cow<'a, str>>,
}

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The fields in a request's `params._meta`, if it carries a `traceparent`.
fn meta_fields(params: &RawValue) -> Option<Fields<'_>> {
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(rename = "_meta", borrow, default)]
        meta: Option<Fields<'a>>,
    }
    let params: Params = serde_json::from_str(params.get()).ok()?;
    params.meta.filter(|m| m.traceparent.is_some())
}

fn header_fields(headers: &HeaderMap) -> Fields<'_> {
    let field = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed)
    };
    Fields {
        traceparent: field(TRACEPARENT),
        tracestate: field(TRACESTATE),
    }
}

/// The trace a request arrived in: its `_meta`'s context when it names one
/// (it is the message's own), else its HTTP headers'; an empty context when
/// neither carries a valid one (the request starts a trace).
pub fn incoming(headers: &HeaderMap, params: Option<&RawValue>) -> Context {
    let propagator = TraceContextPropagator::new();
    match params.and_then(meta_fields) {
        Some(meta) => propagator.extract(&meta),
        None => propagator.extract(&header_fields(headers)),
    }
}

/// Trace context to send with a request: `span`'s, as W3C fields.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Outgoing {
    /// The context of `cx`'s span, as it is sent on.
    pub fn of(cx: &Context) -> Outgoing {
        let mut out = Outgoing::default();
        TraceContextPropagator::new().inject_context(cx, &mut out);
        out
    }

    /// The fields as HTTP headers.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let pairs = [
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
        ];
        pairs
            .into_iter()
            .filter_map(|(name, value)| {
                let value = HeaderValue::from_str(value.as_deref()?).ok()?;
                Some((HeaderName::from_static(name), value))
            })
            .collect()
    }

    /// `headers` with these fields instead of any trace context they had.
    pub fn replace_in(&self, headers: &mut HeaderMap) {
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        headers.extend(self.headers());
    }

    /// `body` (one JSON-RPC request) with the fields in its `params._meta`,
    /// replacing any there; as it was when it has no object to put them in.
    /// Only `_meta` is rebuilt: the rest of the body is copied as it is
    /// ([invariant: byte-for-byte]).
    pub fn into_meta(&self, body: Bytes) -> Bytes {
        self.spliced(&body).unwrap_or(body)
    }

    /// [`Self::into_meta`]'s new body, or `None` when there is none to make.
    fn spliced(&self, body: &[u8]) -> Option<Bytes> {
        let traceparent = self.traceparent.as_deref()?;
        let text = std::str::from_utf8(body).ok()?;
        let is_object = |raw: &str| raw.trim_start().starts_with('{');
        if !is_object(text) {
            return None;
        }
        let envelope: Envelope = serde_json::from_str(text).ok()?;
        let is_null = |raw: &RawValue| raw.get() == "null";
        // `params: null` is replaced whole, like absent params would be added.
        let (params, null_params) = match envelope.params {
            Some(p) if is_null(p) => (None, Some(p)),
            Some(p) if !is_object(p.get()) => return None,
            other => (other, None),
        };
        let old_meta = match params {
            Some(p) => serde_json::from_str::<Params>(p.get()).ok()?.meta,
            None => None,
        };
        let mut meta: RawObject = match old_meta {
            Some(m) if is_null(m) => RawObject::new(),
            Some(m) => serde_json::from_str(m.get()).ok()?,
            None => RawObject::new(),
        };
        meta.insert(TRACEPARENT.into(), jsonrpc::to_raw(traceparent));
        match &self.tracestate {
            Some(state) => meta.insert(TRACESTATE.into(), jsonrpc::to_raw(state)),
            None => meta.shift_remove(TRACESTATE),
        };
        let meta = serde_json::to_string(&meta).ok()?;
        let spliced = match (params, old_meta) {
            (None, _) if let Some(null) = null_params => {
                splice(text, null.get(), &format!("{{\"_meta\":{meta}}}"), "", "")
            }
            // Replace the `_meta` value in place.
            (_, Some(old)) => splice(text, old.get(), &meta, "", ""),
            // The first member of `params`.
            (Some(params), None) => {
                let inner = params.get().strip_prefix('{')?.trim_start();
                let comma = if inner.starts_with('}') { "" } else { "," };
                let at = &inner[..0];
                splice(text, at, &meta, "\"_meta\":", comma)
            }
            // No `params`: added before the message's closing brace.
            (None, None) => {
                let end = text.trim_end().strip_suffix('}')?;
                let at = &text[end.len()..end.len()];
                splice(
                    text,
                    at,
                    &format!("{{\"_meta\":{meta}}}"),
                    ",\"params\":",
                    "",
                )
            }
        };
        Some(Bytes::from(spliced))
    }
}

/// A request's `params`, borrowed from its body (so its place there is known).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// `params`, as far as `_meta` (borrowed likewise).
#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, rename = "_meta", default, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
}

/// A member that is there, even as `null` (which is then replaced, not
/// written a second time).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// `text` with `at` (a slice of it) replaced by `before`, `value`, `after`.
fn splice(text: &str, at: &str, value: &str, before: &str, after: &str) -> String {
    let start = at.as_ptr() as usize - text.as_ptr() as usize;
    let end = start + at.len();
    let mut out = String::with_capacity(text.len() + before.len() + value.len() + after.len());
    out.push_str(&text[..start]);
    out.push_str(before);
    out.push_str(value);
    out.push_str(after);
    out.push_str(&text[end..]);
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const OTHER: &str = "00-11111111111111111111111111111111-2222222222222222-01";

    fn trace_id(cx: &Context) -> String {
        cx.span().span_context().trace_id().to_string()
    }

    #[test]
    fn meta_comes_before_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(OTHER));
        let params = jsonrpc::to_raw(&serde_json::json!({
            "name": "t", "_meta": {"traceparent": PARENT, "tracestate": "k=v"}
        }));
        let cx = incoming(&headers, Some(&params));
        assert_eq!(trace_id(&cx), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(cx.span().span_context().is_remote());
        let no_meta = jsonrpc::to_raw(&serde_json::json!({"name": "t"}));
        let cx = incoming(&headers, Some(&no_meta));
        assert_eq!(trace_id(&cx), "11111111111111111111111111111111");
    }

    #[test]
    fn invalid_context_starts_no_trace() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-zz-00-01"));
        let cx = incoming(&headers, None);
        assert!(!cx.span().span_context().is_valid());
        let params = jsonrpc::to_raw(&serde_json::json!({"_meta": {"traceparent": 7}}));
        assert!(!incoming(&HeaderMap::new(), Some(&params)).has_active_span());
    }

    #[test]
    fn outgoing_context_goes_in_headers_and_meta() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        headers.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        let out = Outgoing::of(&incoming(&headers, None));
        let sent = out.headers();
        assert_eq!(sent[0].1, PARENT);
        assert_eq!(sent[1].1, "k=v");
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"traceparent":"stale","x":1}}}"#;
        let with = out.spliced(body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&with).unwrap();
        assert_eq!(v["params"]["_meta"]["traceparent"], PARENT);
        assert_eq!(v["params"]["_meta"]["tracestate"], "k=v");
        assert_eq!(v["params"]["_meta"]["x"], 1);
        assert_eq!(v["params"]["name"], "t");
        assert_eq!(v["id"], 1);
        let bare = br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#;
        let v: serde_json::Value = serde_json::from_slice(&out.spliced(bare).unwrap()).unwrap();
        assert_eq!(v["params"]["_meta"]["traceparent"], PARENT);
        // Only `_meta` changes: the rest keeps its bytes (spacing, number forms).
        let spaced = br#"{ "jsonrpc":"2.0", "id":1.0, "method":"tools/call", "params":{ "name":"t", "arguments":{"n":1e3} } }"#;
        let with = String::from_utf8(out.spliced(spaced).unwrap().to_vec()).unwrap();
        assert!(
            with.contains(r#""id":1.0"#) && with.contains(r#"{"n":1e3}"#),
            "{with}"
        );
        let v: serde_json::Value = serde_json::from_str(&with).unwrap();
        assert_eq!(v["params"]["_meta"]["traceparent"], PARENT);
        assert_eq!(v["params"]["name"], "t");
        let empty = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
        let v: serde_json::Value = serde_json::from_slice(&out.spliced(empty).unwrap()).unwrap();
        assert_eq!(v["params"]["_meta"]["tracestate"], "k=v");
        // A `null` member is replaced, never written twice.
        for null in [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":null}"#.as_slice(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"c","_meta":null}}"#,
        ] {
            let with = String::from_utf8(out.spliced(null).unwrap().to_vec()).unwrap();
            assert_eq!(with.matches("_meta").count(), 1, "{with}");
            assert_eq!(with.matches("params").count(), 1, "{with}");
            let v: serde_json::Value = serde_json::from_str(&with).unwrap();
            assert_eq!(v["params"]["_meta"]["traceparent"], PARENT, "{with}");
        }
        assert!(out.spliced(b"not json").is_none());
        assert!(out.spliced(b"[1]").is_none());
        let positional = br#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1]}"#;
        assert!(
            out.spliced(positional).is_none(),
            "no object to put _meta in"
        );
    }
}
