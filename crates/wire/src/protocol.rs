//! MCP protocol facts shared by every layer: versions, eras, header and
//! `_meta` names, MCP error codes and the header value encoding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Legacy (initialize + session) protocol versions Tether negotiates, newest first.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Modern (stateless, `_meta` per request) protocol versions, newest first.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];
/// The modern version Tether speaks to modern upstreams.
pub const MODERN_VERSION: &str = MODERN_VERSIONS[0];
/// The newest legacy version; the answer to an `initialize` asking for something unknown.
pub const LATEST_LEGACY_VERSION: &str = LEGACY_VERSIONS[0];
/// Version assumed when a legacy client sends no `MCP-Protocol-Version` header.
pub const DEFAULT_LEGACY_VERSION: &str = "2025-03-26";

/// HTTP header carrying the legacy session id.
pub const HEADER_SESSION_ID: &str = "mcp-session-id";
/// HTTP header carrying the protocol version.
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// Modern-era header mirroring the JSON-RPC method.
pub const HEADER_METHOD: &str = "mcp-method";
/// Modern-era header mirroring the tool/prompt name or resource URI.
pub const HEADER_NAME: &str = "mcp-name";
/// Prefix of modern-era headers mirroring tool arguments.
pub const HEADER_PARAM_PREFIX: &str = "mcp-param-";
/// SSE resumption header.
pub const HEADER_LAST_EVENT_ID: &str = "last-event-id";

/// `_meta` key with the modern request's protocol version.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key with the modern client's capabilities.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key with the modern client's implementation info.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key with the modern client's requested log level.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key carrying server identity on modern results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Modern-era error: a required header is missing or disagrees with the body.
pub const ERROR_HEADER_MISMATCH: i64 = -32020;
/// Modern-era error: the request's protocol version is not supported.
pub const ERROR_UNSUPPORTED_VERSION: i64 = -32022;
/// Modern-era error: the client lacks a capability the server requires.
pub const ERROR_MISSING_CAPABILITY: i64 = -32021;

/// The two families of MCP protocol revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Era {
    /// `initialize` handshake and `Mcp-Session-Id` (2024-11-05 … 2025-11-25).
    Legacy,
    /// Stateless, version and identity in every request's `_meta` (2026-07-28 …).
    Modern,
}

impl Era {
    /// Lower-case name used in logs, metrics and the admin view.
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

/// Whether `v` is a legacy version Tether accepts.
pub fn is_legacy_version(v: &str) -> bool {
    LEGACY_VERSIONS.contains(&v)
}

/// Whether `v` is a modern version Tether accepts.
pub fn is_modern_version(v: &str) -> bool {
    MODERN_VERSIONS.contains(&v)
}

/// Every version Tether speaks, modern first, for `-32022` answers and discovery.
pub fn all_versions() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .chain(LEGACY_VERSIONS)
        .copied()
        .collect()
}

/// The legacy version to answer an `initialize` that asked for `requested`.
pub fn negotiate_legacy(requested: &str) -> &'static str {
    LEGACY_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(LATEST_LEGACY_VERSION)
}

/// Whether a JSON-RPC error code proves the peer speaks the modern era.
/// Pre-release SDKs numbered these -32001/-32003/-32004, but that range is
/// implementation-defined for legacy servers (-32001 is often a timeout), so
/// only the final codes count.
pub fn is_modern_error_code(code: i64) -> bool {
    matches!(
        code,
        ERROR_HEADER_MISMATCH | ERROR_MISSING_CAPABILITY | ERROR_UNSUPPORTED_VERSION
    )
}

const SENTINEL_PREFIX: &str = "=?base64?";
const SENTINEL_SUFFIX: &str = "?=";

/// Encodes a value for a modern `Mcp-Name`/`Mcp-Param-*` header, using the
/// Base64 sentinel form when the plain value cannot travel in a header.
pub fn encode_header_value(value: &str) -> String {
    let plain_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) || b == b'\t')
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && !looks_like_sentinel(value);
    if plain_ok || value.is_empty() {
        value.to_owned()
    } else {
        format!(
            "{SENTINEL_PREFIX}{}{SENTINEL_SUFFIX}",
            STANDARD.encode(value.as_bytes())
        )
    }
}

fn looks_like_sentinel(value: &str) -> bool {
    value.starts_with(SENTINEL_PREFIX) && value.ends_with(SENTINEL_SUFFIX)
}

/// Decodes a modern header value, resolving the Base64 sentinel form.
/// Returns `None` when a sentinel's payload is not valid Base64 UTF-8.
pub fn decode_header_value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    if text.len() >= SENTINEL_PREFIX.len() + SENTINEL_SUFFIX.len() && looks_like_sentinel(text) {
        let inner = &text[SENTINEL_PREFIX.len()..text.len() - SENTINEL_SUFFIX.len()];
        let bytes = STANDARD.decode(inner).ok()?;
        return String::from_utf8(bytes).ok();
    }
    Some(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_round_trips() {
        assert_eq!(encode_header_value("get_weather"), "get_weather");
        assert_eq!(
            encode_header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(encode_header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(
            encode_header_value("line1\nline2"),
            "=?base64?bGluZTEKbGluZTI=?="
        );
        assert_eq!(
            encode_header_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        for v in [
            "Hello, 世界",
            " padded ",
            "=?base64?literal?=",
            "file:///a b",
        ] {
            assert_eq!(
                decode_header_value(encode_header_value(v).as_bytes()).unwrap(),
                v
            );
        }
        assert_eq!(decode_header_value(b"=?base64?!!!?="), None);
    }

    #[test]
    fn negotiates_versions() {
        assert_eq!(negotiate_legacy("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate_legacy("2099-01-01"), LATEST_LEGACY_VERSION);
        assert!(is_modern_error_code(-32022));
        assert!(!is_modern_error_code(-32602));
    }
}
