//! JSON-RPC 2.0 envelopes, parsed only as far as routing needs.
//!
//! Payloads (`params`, `result`, `error`) stay raw JSON so unknown fields and
//! number formatting survive a relay byte-for-byte; only the method is parsed
//! into a [`Method`]. What a client sends is classified once into an
//! [`Incoming`]: a [`Request`] (which always has an id), a [`Notification`]
//! or a [`Response`], each with the bytes it arrived as.

use bytes::Bytes;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::method::Method;

/// Standard and MCP JSON-RPC error codes used by Tether.
pub mod code {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined server error (what SDK servers answer a request
    /// without a valid session with).
    pub const SERVER_ERROR: i64 = -32000;
    /// Resource not found (MCP).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// The caller may not use this upstream, tool, prompt or resource (Tether's policy).
    pub const FORBIDDEN: i64 = -32001;
    /// A rate or concurrency limit refused the call (Tether); `data.retryAfterMs`
    /// says when to try again.
    pub const LIMIT_EXCEEDED: i64 = -32029;
}

/// A JSON object whose member values are kept as raw JSON text, in order.
pub type RawObject = IndexMap<String, Box<RawValue>>;

/// One JSON-RPC message with its payload kept raw.
#[derive(Debug, Deserialize, Serialize)]
pub struct Message {
    /// Always `"2.0"` for a valid message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonrpc: Option<Box<RawValue>>,
    /// Request or response id, as raw JSON (string or number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Box<RawValue>>,
    /// Method for requests and notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Request parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Box<RawValue>>,
    /// Successful response payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// Error response payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<RawValue>>,
}

/// What kind of JSON-RPC message a [`Message`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id.
    Request,
    /// Has a method and no id.
    Notification,
    /// Has an id and a result or an error.
    Response,
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not JSON at all.
    Parse(String),
    /// JSON, but not a single JSON-RPC 2.0 message.
    Invalid(&'static str),
}

impl EnvelopeError {
    /// The JSON-RPC error code for this rejection.
    pub fn code(&self) -> i64 {
        match self {
            EnvelopeError::Parse(_) => code::PARSE_ERROR,
            EnvelopeError::Invalid(_) => code::INVALID_REQUEST,
        }
    }

    /// A human-readable message for the error body.
    pub fn message(&self) -> String {
        match self {
            EnvelopeError::Parse(e) => format!("Parse error: {e}"),
            EnvelopeError::Invalid(why) => format!("Invalid Request: {why}"),
        }
    }
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for EnvelopeError {}

/// Deepest nesting of arrays and objects accepted in a message.
pub const MAX_DEPTH: usize = 64;

/// Whether `json` nests arrays and objects deeper than `max` (a scan that
/// skips strings; it does not validate the JSON).
pub fn nests_deeper_than(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl Message {
    /// Parses and validates a single JSON-RPC 2.0 message.
    pub fn parse(body: &[u8]) -> Result<Message, EnvelopeError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return Err(EnvelopeError::Invalid(
                "JSON-RPC batches are not supported by this protocol version",
            ));
        }
        if nests_deeper_than(body, MAX_DEPTH) {
            return Err(EnvelopeError::Invalid(
                "the message nests arrays and objects more than 64 levels deep",
            ));
        }
        let msg: Message = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                EnvelopeError::Invalid("not a JSON-RPC message object")
            } else {
                EnvelopeError::Parse(e.to_string())
            }
        })?;
        if msg.jsonrpc.as_deref().map(RawValue::get) != Some("\"2.0\"") {
            return Err(EnvelopeError::Invalid("jsonrpc must be \"2.0\""));
        }
        msg.kind()?;
        Ok(msg)
    }

    /// Classifies the message, rejecting shapes that are none of the three kinds.
    pub fn kind(&self) -> Result<Kind, EnvelopeError> {
        if let Some(id) = &self.id {
            let t = id.get().as_bytes().first();
            if !matches!(t, Some(b'"' | b'-' | b'0'..=b'9')) {
                return Err(EnvelopeError::Invalid("id must be a string or a number"));
            }
        }
        match (&self.method, &self.id, &self.result, &self.error) {
            (Some(_), Some(_), None, None) => Ok(Kind::Request),
            (Some(_), None, None, None) => Ok(Kind::Notification),
            (None, Some(_), Some(_), None) | (None, Some(_), None, Some(_)) => Ok(Kind::Response),
            _ => Err(EnvelopeError::Invalid(
                "message must be a request, a notification or a response",
            )),
        }
    }

    /// The raw id text (e.g. `1` or `"abc"`), if any.
    pub fn id_text(&self) -> Option<&str> {
        self.id.as_deref().map(RawValue::get)
    }

    /// Serializes the message back to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("raw JSON message always serializes")
    }

    /// Parses `params` as an ordered object of raw members (empty when absent).
    pub fn params_object(&self) -> Result<RawObject, EnvelopeError> {
        params_object(self.params.as_deref())
    }

    /// A message built by Tether: a request (with an id) or a notification.
    pub fn new(
        id: Option<Box<RawValue>>,
        method: Method,
        params: Option<Box<RawValue>>,
    ) -> Message {
        Message {
            jsonrpc: Some(to_raw("2.0")),
            id,
            method: Some(method),
            params,
            result: None,
            error: None,
        }
    }

    /// Classifies a message that arrived as `raw` (and was parsed from it).
    pub fn into_incoming(self, raw: Bytes) -> Result<Incoming, EnvelopeError> {
        Ok(match (self.kind()?, self.id, self.method) {
            (Kind::Request, Some(id), Some(method)) => Incoming::Request(Request {
                id,
                method,
                params: self.params,
                raw,
            }),
            (Kind::Notification, _, Some(method)) => Incoming::Notification(Notification {
                method,
                params: self.params,
                raw,
            }),
            (_, Some(id), None) => Incoming::Response(Response {
                id,
                outcome: match (self.result, self.error) {
                    (Some(result), _) => Ok(result),
                    (None, Some(error)) => Err(error),
                    (None, None) => {
                        return Err(EnvelopeError::Invalid(
                            "a response needs a result or an error",
                        ));
                    }
                },
            }),
            _ => {
                return Err(EnvelopeError::Invalid(
                    "message must be a request, a notification or a response",
                ));
            }
        })
    }
}

/// Parses raw `params` as an ordered object of raw members (empty when absent).
fn params_object(params: Option<&RawValue>) -> Result<RawObject, EnvelopeError> {
    match params {
        None => Ok(RawObject::new()),
        Some(p) => serde_json::from_str(p.get())
            .map_err(|_| EnvelopeError::Invalid("params must be an object")),
    }
}

/// What a client sent: one message, classified.
#[derive(Debug)]
pub enum Incoming {
    /// A request (it expects a response).
    Request(Request),
    /// A notification.
    Notification(Notification),
    /// The answer to a request the server sent the client.
    Response(Response),
}

impl Incoming {
    /// Parses and classifies one message as it arrived.
    pub fn parse(raw: Bytes) -> Result<Incoming, EnvelopeError> {
        Message::parse(&raw)?.into_incoming(raw)
    }
}

/// A request: its id, its method, its params kept raw, and the message as it
/// arrived (relayed as it is when nothing in it changes).
#[derive(Debug)]
pub struct Request {
    /// The id the answer must carry.
    pub id: Box<RawValue>,
    /// The method.
    pub method: Method,
    /// The parameters, raw.
    pub params: Option<Box<RawValue>>,
    /// The whole message as it arrived.
    pub raw: Bytes,
}

impl Request {
    /// A request Tether makes itself (its bytes are serialized once, here).
    pub fn new(id: Box<RawValue>, method: Method, params: Option<Box<RawValue>>) -> Request {
        #[derive(Serialize)]
        struct Wire<'a> {
            jsonrpc: &'static str,
            id: &'a RawValue,
            method: &'a Method,
            #[serde(skip_serializing_if = "Option::is_none")]
            params: Option<&'a RawValue>,
        }
        let wire = Wire {
            jsonrpc: "2.0",
            id: &id,
            method: &method,
            params: params.as_deref(),
        };
        let raw = Bytes::from(serde_json::to_vec(&wire).expect("raw JSON serializes"));
        Request {
            id,
            method,
            params,
            raw,
        }
    }

    /// Parses `params` as an ordered object of raw members (empty when absent).
    pub fn params_object(&self) -> Result<RawObject, EnvelopeError> {
        params_object(self.params.as_deref())
    }

    /// A string member of `params` (a tool name, a URI), if there is one.
    pub fn str_param(&self, key: &str) -> Option<String> {
        crate::fields::str_field(self.params.as_deref()?.get(), key)
    }

    /// The value a modern request mirrors in `Mcp-Name` (the tool or prompt
    /// name, or the resource URI), read from `params` when given (rewritten
    /// ones), else from the request's own.
    pub fn name_value(&self, params: Option<&RawObject>) -> Option<String> {
        let key = self.method.name_param()?;
        match params {
            Some(p) => str_member(p, key),
            None => self.str_param(key),
        }
    }

    /// The request as a message (params kept raw, id and method as they are).
    pub fn to_message(&self) -> Message {
        Message::new(
            Some(self.id.clone()),
            self.method.clone(),
            self.params.clone(),
        )
    }

    /// A successful response to this request.
    pub fn answer(&self, result: &RawValue) -> Bytes {
        Bytes::from(response(&self.id, result))
    }
}

/// A notification: its method, its params kept raw, and the message as it arrived.
#[derive(Debug)]
pub struct Notification {
    /// The method.
    pub method: Method,
    /// The parameters, raw.
    pub params: Option<Box<RawValue>>,
    /// The whole message as it arrived.
    pub raw: Bytes,
}

/// A response: the id of the request it answers and its result or error, raw.
#[derive(Debug)]
pub struct Response {
    /// The id of the request it answers.
    pub id: Box<RawValue>,
    /// The result, or the error object.
    pub outcome: Result<Box<RawValue>, Box<RawValue>>,
}

impl Response {
    /// The raw id text (e.g. `1` or `"abc"`).
    pub fn id_text(&self) -> &str {
        self.id.get()
    }

    /// The response re-addressed to the request id `id`, as bytes.
    pub fn with_id(&self, id: &RawValue) -> Bytes {
        match &self.outcome {
            Ok(result) => Bytes::from(response(id, result)),
            Err(error) => {
                let mut out = Vec::with_capacity(error.get().len() + id.get().len() + 40);
                out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
                out.extend_from_slice(id.get().as_bytes());
                out.extend_from_slice(b",\"error\":");
                out.extend_from_slice(error.get().as_bytes());
                out.push(b'}');
                Bytes::from(out)
            }
        }
    }
}

/// Whether `needle` occurs in `haystack`: a cheap pre-filter before parsing
/// (candidates found by their first byte, then compared).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    memchr::memchr_iter(first, haystack).any(|i| haystack[i + 1..].starts_with(rest))
}

/// The `error.code` of a JSON-RPC error message body, if it is one.
pub fn error_code(body: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Code {
        code: i64,
    }
    #[derive(Deserialize)]
    struct Body {
        error: Code,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| b.error.code)
}

/// Reads one string member of a raw object.
pub fn str_member(obj: &RawObject, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

/// Encodes any serializable value as a raw JSON value.
pub fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("value serializes to JSON")
}

/// Builds a successful response with a raw id and result.
pub fn response(id: &RawValue, result: &RawValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.get().len() + result.get().len() + 40);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result.get().as_bytes());
    out.push(b'}');
    out
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorObject {
    /// Error code.
    pub code: i64,
    /// Short description.
    pub message: String,
    /// Optional structured details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ErrorObject {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Adds structured data.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Serializes an error response for `id` (null when the id is unknown).
    pub fn to_response(&self, id: Option<&RawValue>) -> Vec<u8> {
        let id = id.map(RawValue::get).unwrap_or("null");
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b",\"error\":");
        serde_json::to_writer(&mut out, self).expect("error object serializes");
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert!(!nests_deeper_than(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(nests_deeper_than(br#"{"a":[1,{"b":[]}]}"#, 3));
        assert!(!nests_deeper_than(br#"{"a":"[[[[[[\"[[[["}"#, 1));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(
            Message::parse(
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{deep}}}"#).as_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn classifies_messages() {
        let req = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!(req.kind().unwrap(), Kind::Request);
        let note =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(note.kind().unwrap(), Kind::Notification);
        let resp = Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(resp.kind().unwrap(), Kind::Response);
    }

    #[test]
    fn rejects_bad_envelopes() {
        assert!(matches!(
            Message::parse(b"{nope"),
            Err(EnvelopeError::Parse(_))
        ));
        assert!(matches!(
            Message::parse(b"[]"),
            Err(EnvelopeError::Invalid(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#),
            Err(EnvelopeError::Invalid(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#),
            Err(EnvelopeError::Invalid(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0"}"#),
            Err(EnvelopeError::Invalid(_))
        ));
        assert!(matches!(
            Message::parse(b"42"),
            Err(EnvelopeError::Invalid(_))
        ));
    }

    #[test]
    fn unknown_fields_and_numbers_survive() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"n":1.50,"big":12345678901234567890},"zz":{"keep":true}}}"#;
        let msg = Message::parse(body).unwrap();
        let mut params = msg.params_object().unwrap();
        params.insert("name".into(), to_raw("y"));
        let text = serde_json::to_string(&params).unwrap();
        assert_eq!(
            text,
            r#"{"name":"y","arguments":{"n":1.50,"big":12345678901234567890},"zz":{"keep":true}}"#
        );
    }

    #[test]
    fn finds_needles_anywhere() {
        assert!(contains(b"abcabd", b"abd"));
        assert!(contains(b"abd", b"abd"));
        assert!(!contains(b"ab", b"abd"));
        assert!(!contains(b"abcab", b"abd"));
        assert!(contains(b"x", b""));
    }

    #[test]
    fn builds_responses() {
        let id = to_raw(&5);
        let err = ErrorObject::new(code::INVALID_REQUEST, "bad").to_response(Some(&id));
        assert_eq!(
            String::from_utf8(err).unwrap(),
            r#"{"jsonrpc":"2.0","id":5,"error":{"code":-32600,"message":"bad"}}"#
        );
        let ok = response(&id, &to_raw(&serde_json::json!({})));
        assert_eq!(
            String::from_utf8(ok).unwrap(),
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#
        );
    }
}
