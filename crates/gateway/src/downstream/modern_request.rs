//! 2026-07-28 request validation: `_meta` identity and the mirrored headers
//! (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`).

use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, ErrorObject, Incoming, Request, code};
use tether_wire::protocol;

use crate::router::RequestOptions;
use crate::upstream::ClientIdentity;

/// A rejected modern request: HTTP status plus JSON-RPC error.
pub struct Rejection {
    /// HTTP status (400 for every validation failure).
    pub status: http::StatusCode,
    /// The JSON-RPC error.
    pub error: ErrorObject,
}

fn reject(code: i64, message: impl Into<String>) -> Rejection {
    Rejection {
        status: http::StatusCode::BAD_REQUEST,
        error: ErrorObject::new(code, message),
    }
}

/// The protocol version in `params._meta`, when there is one.
fn meta_version(params: Option<&RawValue>) -> Option<String> {
    serde_json::from_str::<Params>(params?.get())
        .ok()?
        .meta
        .version
}

/// Whether a message declares a protocol version in `params._meta` (as only
/// 2026-07-28 clients do). A substring test first keeps legacy messages from
/// paying for a params parse; the key must then really be in `params._meta`
/// (not, say, in a tool argument).
pub fn declares_meta_version(incoming: &Incoming) -> bool {
    let (raw, params) = match incoming {
        Incoming::Request(r) => (&r.raw, r.params.as_deref()),
        Incoming::Notification(n) => (&n.raw, n.params.as_deref()),
        Incoming::Response(_) => return false,
    };
    jsonrpc::contains(raw, protocol::META_PROTOCOL_VERSION.as_bytes())
        && meta_version(params).is_some()
}

/// The `params` of a modern request, as far as validation reads them: one
/// pass that skips everything else (arguments are never built).
#[derive(Deserialize, Default)]
struct Params<'a> {
    #[serde(rename = "_meta", borrow, default)]
    meta: Meta<'a>,
    /// The tool or prompt name, raw (read as a string only when needed).
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    /// The resource URI, raw.
    #[serde(borrow)]
    uri: Option<&'a RawValue>,
    /// The task id (tasks extension methods), raw.
    #[serde(rename = "taskId", borrow)]
    task_id: Option<&'a RawValue>,
}

impl Params<'_> {
    /// The string member `key` (`name`, `uri` or `taskId`), if it is one.
    fn str_member(&self, key: &str) -> Option<String> {
        let raw = match key {
            "name" => self.name?,
            "uri" => self.uri?,
            "taskId" => self.task_id?,
            _ => return None,
        };
        serde_json::from_str(raw.get()).ok()
    }
}

/// What a modern request's `_meta` says about its client (names as in
/// `protocol::META_*`).
#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    version: Option<String>,
    #[serde(rename = "io.modelcontextprotocol/clientInfo", borrow)]
    info: Option<&'a RawValue>,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities", borrow)]
    capabilities: Option<&'a RawValue>,
    #[serde(rename = "io.modelcontextprotocol/logLevel", borrow)]
    log_level: Option<&'a RawValue>,
}

/// Reads the request's params (see [`Params`]); params that are not an
/// object, or that repeat a member validation reads, are refused.
fn read_params(request: &Request) -> Result<Params<'_>, Rejection> {
    let Some(raw) = request.params.as_deref() else {
        return Ok(Params::default());
    };
    if !raw.get().trim_start().starts_with('{') {
        let why = request
            .params_object()
            .err()
            .map_or_else(|| "params must be an object".to_owned(), |e| e.message());
        return Err(reject(code::INVALID_PARAMS, why));
    }
    // A repeated member (or a `_meta` that is not an object) is refused with
    // what is wrong, rather than read one way here and another upstream.
    serde_json::from_str::<Params>(raw.get()).map_err(|e| {
        reject(
            code::INVALID_PARAMS,
            format!("params could not be read: {e}"),
        )
    })
}

/// Validates a modern request; returns the client identity and per-request
/// options (log opt-in, `Mcp-Param-*` headers to pass on) it carries.
pub fn validate(
    headers: &HeaderMap,
    request: &Request,
) -> Result<(ClientIdentity, RequestOptions), Rejection> {
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let params = read_params(request)?;
    let meta = &params.meta;
    let Some(version) = meta.version.as_deref() else {
        return Err(reject(
            code::INVALID_PARAMS,
            format!(
                "params._meta[\"{}\"] is required",
                protocol::META_PROTOCOL_VERSION
            ),
        ));
    };
    let Some(header_version) = header(protocol::HEADER_PROTOCOL_VERSION) else {
        return Err(reject(
            protocol::ERROR_HEADER_MISMATCH,
            "Header mismatch: MCP-Protocol-Version header is required",
        ));
    };
    if header_version != version.as_bytes() {
        return Err(reject(
            protocol::ERROR_HEADER_MISMATCH,
            format!(
                "Header mismatch: MCP-Protocol-Version header value '{}' does not match body value '{version}'",
                String::from_utf8_lossy(header_version)
            ),
        ));
    }
    if !protocol::is_modern_version(version) {
        let mut rejection = reject(
            protocol::ERROR_UNSUPPORTED_VERSION,
            "Unsupported protocol version",
        );
        rejection.error = rejection
            .error
            .with_data(json!({ "supported": protocol::all_versions(), "requested": version }));
        return Err(rejection);
    }
    let method = request.method.as_str();
    match header(protocol::HEADER_METHOD) {
        None => {
            return Err(reject(
                protocol::ERROR_HEADER_MISMATCH,
                "Header mismatch: Mcp-Method header is required",
            ));
        }
        Some(m) if m != method.as_bytes() => {
            return Err(reject(
                protocol::ERROR_HEADER_MISMATCH,
                format!(
                    "Header mismatch: Mcp-Method header value '{}' does not match body value '{method}'",
                    String::from_utf8_lossy(m)
                ),
            ));
        }
        Some(_) => {}
    }
    let mut name = None;
    if let Some(key) = request.method.name_param() {
        let body_value = params.str_member(key).unwrap_or_default();
        let Some(raw) = header(protocol::HEADER_NAME) else {
            return Err(reject(
                protocol::ERROR_HEADER_MISMATCH,
                "Header mismatch: Mcp-Name header is required",
            ));
        };
        let decoded = protocol::decode_header_value(raw);
        if decoded.as_deref() != Some(body_value.as_str()) {
            return Err(reject(
                protocol::ERROR_HEADER_MISMATCH,
                format!(
                    "Header mismatch: Mcp-Name header value '{}' does not match body value '{body_value}'",
                    String::from_utf8_lossy(raw)
                ),
            ));
        }
        name = Some(body_value);
    }
    let Some(capabilities) = meta.capabilities else {
        return Err(reject(
            code::INVALID_PARAMS,
            format!(
                "params._meta[\"{}\"] is required",
                protocol::META_CLIENT_CAPABILITIES
            ),
        ));
    };
    let options = RequestOptions {
        logs: meta.log_level.is_some(),
        meta_complete: meta.info.is_some(),
        name,
        param_headers: headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with(protocol::HEADER_PARAM_PREFIX))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    };
    // Legacy upstreams are offered the client's real capabilities: their
    // server→client requests reach it as `input_required` results.
    let identity = ClientIdentity {
        info: meta
            .info
            .map_or_else(|| ClientIdentity::tether().info, RawValue::to_owned),
        capabilities: capabilities.to_owned(),
        credentials: None,
    };
    Ok((identity, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, name: Option<&str>, version: &str) -> Request {
        let mut params = json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
        }});
        if let Some(n) = name {
            params["name"] = json!(n);
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let Ok(Incoming::Request(request)) = Incoming::parse(body.to_string().into()) else {
            panic!("a request")
        };
        request
    }

    use crate::downstream::test_headers as headers;

    #[test]
    fn accepts_matching_headers_including_sentinel() {
        let msg = request("tools/call", Some("héllo"), "2026-07-28");
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", &protocol::encode_header_value("héllo")),
        ]);
        assert!(validate(&h, &msg).is_ok());
    }

    #[test]
    fn a_repeated_member_is_refused_not_read_twice() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b",
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        let Ok(Incoming::Request(msg)) = Incoming::parse(body.into()) else {
            panic!("a request")
        };
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "b"),
        ]);
        let Err(r) = validate(&h, &msg) else {
            panic!("a repeated name is refused")
        };
        assert_eq!(r.error.code, code::INVALID_PARAMS);
        assert!(r.error.message.contains("duplicate"), "{}", r.error.message);
    }

    #[test]
    fn rejects_mismatches_and_unknown_versions() {
        let msg = request("tools/call", Some("a"), "2026-07-28");
        let cases = [
            (
                vec![("mcp-method", "tools/call"), ("mcp-name", "a")],
                protocol::ERROR_HEADER_MISMATCH,
            ),
            (
                vec![("mcp-protocol-version", "2026-07-28"), ("mcp-name", "a")],
                protocol::ERROR_HEADER_MISMATCH,
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/list"),
                    ("mcp-name", "a"),
                ],
                protocol::ERROR_HEADER_MISMATCH,
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                ],
                protocol::ERROR_HEADER_MISMATCH,
            ),
            (
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "b"),
                ],
                protocol::ERROR_HEADER_MISMATCH,
            ),
        ];
        for (pairs, code) in cases {
            let r = validate(&headers(&pairs), &msg).err().unwrap();
            assert_eq!(r.error.code, code, "{pairs:?}");
            assert_eq!(r.status, http::StatusCode::BAD_REQUEST);
        }
        let msg = request("tools/list", None, "2099-01-01");
        let h = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ]);
        let r = validate(&h, &msg).err().unwrap();
        assert_eq!(r.error.code, protocol::ERROR_UNSUPPORTED_VERSION);
        assert_eq!(r.error.data.unwrap()["requested"], "2099-01-01");
    }
}
