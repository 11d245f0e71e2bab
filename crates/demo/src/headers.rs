//! 2026-07-28 HTTP header validation for the demo server (SEP-2243): the
//! `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers, and the
//! `Mcp-Param-*` headers mirroring tool arguments whose schema carries
//! `x-mcp-header`, must be present and agree with the body. Every failure is
//! -32020 HeaderMismatch (HTTP 400).
//!
//! Values are compared after trimming optional whitespace (RFC 9110 §5.5)
//! and resolving the `=?base64?…?=` sentinel (`Mcp-Name`, `Mcp-Param-*`).

use axum::http::HeaderMap;
use serde_json::Value;

use super::err;
use tether_wire::jsonrpc::{ErrorObject, Method};
use tether_wire::{param_headers, protocol};

fn mismatch(message: impl Into<String>) -> ErrorObject {
    err(
        protocol::ERROR_HEADER_MISMATCH,
        format!("Header mismatch: {}", message.into()),
    )
}

/// A header's value with surrounding spaces/tabs removed; `None` when absent,
/// -32020 when it is not visible ASCII/space/tab.
fn raw_value<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ErrorObject> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(v) => Ok(Some(v.trim_matches([' ', '\t']))),
        Err(_) => Err(mismatch(format!("{name} header has invalid characters"))),
    }
}

/// A header's value after sentinel decoding; -32020 for a bad sentinel.
fn decoded(headers: &HeaderMap, name: &str) -> Result<Option<String>, ErrorObject> {
    match raw_value(headers, name)? {
        None => Ok(None),
        Some(raw) => protocol::decode_header_value(raw.as_bytes())
            .map(Some)
            .ok_or_else(|| mismatch(format!("{name} header is not valid Base64-encoded UTF-8"))),
    }
}

/// The trimmed `MCP-Protocol-Version` header, if present (lossy on bad bytes;
/// a bad value then fails the comparison with the body).
pub(super) fn protocol_version(headers: &HeaderMap) -> Option<String> {
    headers.get(protocol::HEADER_PROTOCOL_VERSION).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim_matches([' ', '\t'])
            .to_owned()
    })
}

/// Validates a modern request's headers against its body. `input_schema` is
/// the called tool's input schema (for `tools/call`), whose `x-mcp-header`
/// properties name the `Mcp-Param-*` headers to check.
pub(super) fn validate(
    headers: &HeaderMap,
    method: &str,
    params: &Value,
    input_schema: Option<&Value>,
) -> Result<(), ErrorObject> {
    if raw_value(headers, protocol::HEADER_PROTOCOL_VERSION)?.is_none() {
        return Err(mismatch("MCP-Protocol-Version header is required"));
    }
    match raw_value(headers, protocol::HEADER_METHOD)? {
        None => return Err(mismatch("Mcp-Method header is required")),
        Some(m) if m != method => {
            return Err(mismatch(format!(
                "Mcp-Method header value '{m}' does not match body value '{method}'"
            )));
        }
        Some(_) => {}
    }
    if let Some(body) = Method::parse(method)
        .name_param()
        .and_then(|k| params.get(k)?.as_str())
    {
        match decoded(headers, protocol::HEADER_NAME)? {
            None => return Err(mismatch("Mcp-Name header is required")),
            Some(h) if h != body => {
                return Err(mismatch(format!(
                    "Mcp-Name header value '{h}' does not match body value '{body}'"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(schema) = input_schema {
        let declared = param_headers::declarations(schema).map_err(mismatch)?;
        let arguments = params.get("arguments").unwrap_or(&Value::Null);
        param_headers::check(&declared, arguments, |name| {
            headers.get(name).map(|v| v.as_bytes())
        })
        .map_err(mismatch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(*k), HeaderValue::from_str(v)) {
                h.append(k, v);
            }
        }
        h
    }

    fn base<'a>(extra: &[(&'a str, &'a str)]) -> HeaderMap {
        let mut pairs = vec![("mcp-protocol-version", "2026-07-28")];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    fn code(r: Result<(), ErrorObject>) -> Option<i64> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn method_and_name() {
        let list = json!({});
        assert!(
            validate(
                &base(&[("Mcp-Method", "tools/list")]),
                "tools/list",
                &list,
                None
            )
            .is_ok()
        );
        assert!(
            validate(
                &base(&[("MCP-METHOD", " tools/list ")]),
                "tools/list",
                &list,
                None
            )
            .is_ok()
        );
        for bad in [
            base(&[]),
            base(&[("mcp-method", "prompts/list")]),
            base(&[("mcp-method", "TOOLS/LIST")]),
            headers(&[("mcp-method", "tools/list")]),
        ] {
            assert_eq!(
                code(validate(&bad, "tools/list", &list, None)),
                Some(protocol::ERROR_HEADER_MISMATCH)
            );
        }
        let call = json!({"name": "t", "arguments": {}});
        let ok = |name: &str| {
            validate(
                &base(&[("mcp-method", "tools/call"), ("mcp-name", name)]),
                "tools/call",
                &call,
                None,
            )
        };
        assert!(ok("t").is_ok() && ok("  t  ").is_ok() && ok("=?base64?dA==?=").is_ok());
        assert!(ok("u").is_err() && ok("=?base64?!!?=").is_err());
        assert!(
            validate(
                &base(&[("mcp-method", "tools/call")]),
                "tools/call",
                &call,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn param_headers() {
        let schema = json!({"properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "priority": {"type": "integer", "x-mcp-header": "Priority"},
            "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
            "query": {"type": "string"}}});
        let check = |args: serde_json::Value, extra: &[(&str, &str)]| {
            let mut pairs = vec![("mcp-method", "tools/call"), ("mcp-name", "t")];
            pairs.extend_from_slice(extra);
            validate(
                &base(&pairs),
                "tools/call",
                &json!({"name": "t", "arguments": args}),
                Some(&schema),
            )
        };
        let hello = json!({"region": "Hello"});
        assert!(
            check(
                hello.clone(),
                &[("Mcp-Param-Region", "=?base64?SGVsbG8=?=")]
            )
            .is_ok()
        );
        assert!(check(hello.clone(), &[("mcp-param-region", "Hello")]).is_ok());
        assert!(check(hello.clone(), &[("Mcp-Param-Region", "=?base64?SGVsbG8?=")]).is_err());
        assert!(
            check(
                hello.clone(),
                &[("Mcp-Param-Region", "=?base64?SGVs!!!bG8=?=")]
            )
            .is_err()
        );
        assert!(check(hello, &[]).is_err());
        assert!(
            check(
                json!({"region": "SGVsbG8="}),
                &[("Mcp-Param-Region", "SGVsbG8=")]
            )
            .is_ok()
        );
        assert!(
            check(
                json!({"region": "=?base64?SGVsbG8="}),
                &[("Mcp-Param-Region", "=?base64?SGVsbG8=")]
            )
            .is_ok()
        );
        assert!(check(json!({"region": null, "query": "q"}), &[]).is_ok());
        let all = json!({"region": "r", "priority": 42, "verbose": false});
        let h = [
            ("mcp-param-region", "r"),
            ("mcp-param-priority", "42.0"),
            ("mcp-param-verbose", "false"),
        ];
        assert!(check(all.clone(), &h).is_ok());
        let h = [
            ("mcp-param-region", "r"),
            ("mcp-param-priority", "41"),
            ("mcp-param-verbose", "false"),
        ];
        assert!(check(all, &h).is_err());
    }
}
