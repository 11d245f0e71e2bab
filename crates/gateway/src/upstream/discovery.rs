//! What an upstream speaks: the era probe the 2026-07-28 spec describes (a
//! modern `server/discover` first; a modern answer or error code means
//! modern, any other 4xx legacy) and, for `transport = "auto"`, whether the
//! URL serves the 2024-11-05 HTTP+SSE transport instead.

use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;
use tether_wire::jsonrpc::{self, Message, Method, Request};
use tether_wire::protocol::{self, Era};

use super::endpoint::{HttpEndpoint, PostHeaders};
use super::error::UpstreamError;
use super::identity::ClientIdentity;
use super::reply::{self, Reply};
use super::{sse_transport, stdio};
use crate::config::{Transport, UpstreamConfig};
use crate::telemetry;

/// Longest wait for a stdio server's answer to the era probe.
const STDIO_PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which eras an upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eras {
    /// It answers `initialize` (sessions); `None` while unknown (a modern
    /// server need not list the legacy versions it also speaks).
    pub legacy: Option<bool>,
    /// It answers 2026-07-28 requests.
    pub modern: bool,
}

impl Eras {
    /// Only the legacy era.
    pub const LEGACY: Eras = Eras {
        legacy: Some(true),
        modern: false,
    };
    /// Only the modern era.
    pub const MODERN: Eras = Eras {
        legacy: Some(false),
        modern: true,
    };

    /// The era to speak when the caller prefers `preferred` (with legacy
    /// support unknown, a caller preferring it tries it).
    pub fn pick(self, preferred: Era) -> Era {
        match (self.legacy, self.modern) {
            (_, false) => Era::Legacy,
            (Some(false), true) => Era::Modern,
            (_, true) => preferred,
        }
    }
}

/// The `server/discover` request Tether probes upstreams with.
pub fn discover_request() -> Bytes {
    let identity = ClientIdentity::tether();
    let params = json!({"_meta": {
        protocol::META_PROTOCOL_VERSION: protocol::MODERN_VERSION,
        protocol::META_CLIENT_INFO: identity.info,
        protocol::META_CLIENT_CAPABILITIES: identity.capabilities,
    }});
    let id = jsonrpc::to_raw("tether-discover");
    Request::new(id, Method::ServerDiscover, Some(jsonrpc::to_raw(&params))).raw
}

/// Probes an HTTP upstream's era: a modern `server/discover` first; a modern
/// answer (result or modern error code) means modern, any other 4xx means
/// legacy — or, with `transport = "auto"`, a 404/405 from a URL that opens an
/// HTTP+SSE stream means the 2024-11-05 transport.
pub async fn detect_era(
    upstream: &HttpEndpoint,
    transport: Transport,
    credentials: Option<&HeaderValue>,
) -> Result<Discovery, UpstreamError> {
    // Probed inside a traced request: the probe carries its trace on.
    let (body, trace) = match telemetry::current_context() {
        Some(outgoing) => (outgoing.into_meta(discover_request()), outgoing.headers()),
        None => (discover_request(), Vec::new()),
    };
    let headers = PostHeaders {
        protocol_version: Some(protocol::MODERN_VERSION),
        method: Some(Method::ServerDiscover.as_str()),
        credentials: credentials.cloned(),
        trace: &trace,
        ..Default::default()
    };
    let reply = match upstream.post(body, headers).await {
        Ok(resp) => reply::classify(resp, upstream.timeout(), false, || None).await,
        Err(e) => Err(e),
    };
    let answer = match reply {
        Ok(Reply::Json(b)) => b,
        Ok(Reply::Stream(mut s)) => match s.next_message().await {
            Some(Ok(b)) => b,
            _ => return Ok(Discovery::legacy()),
        },
        Ok(Reply::Accepted) => return Ok(Discovery::legacy()),
        // Unauthorized/forbidden says nothing about the era.
        Err(
            e @ UpstreamError::Status {
                status: 401 | 403, ..
            },
        ) => return Err(e),
        Err(UpstreamError::Status {
            status: 404 | 405, ..
        }) if transport == Transport::Auto && sse_transport::probe(upstream).await => {
            return Ok(Discovery {
                sse: true,
                ..Discovery::legacy()
            });
        }
        Err(UpstreamError::Status {
            status: 400..=499, ..
        }) => return Ok(Discovery::legacy()),
        Err(e) => return Err(e),
    };
    Ok(classify_discovery(&answer))
}

/// Runs a stdio server once to ask it `server/discover`; a server that
/// answers otherwise (or exits: some do on a request before `initialize`)
/// speaks the legacy era.
pub async fn detect_stdio(
    name: &std::sync::Arc<str>,
    config: &UpstreamConfig,
) -> Result<Discovery, UpstreamError> {
    let link = stdio::spawn(name, config, false).await?;
    let wait = config.timeout().min(STDIO_PROBE_WAIT);
    let reply = link.request(discover_request(), wait).await;
    link.close().await;
    let answer = match reply {
        Ok(reply) => reply::first_response(reply).await.ok(),
        Err(_) => None,
    };
    Ok(answer.map_or_else(Discovery::legacy, |a| classify_discovery(&a)))
}

/// What a `server/discover` answer says about the eras a server speaks.
pub fn classify_discovery(answer: &[u8]) -> Discovery {
    let Ok(mut msg) = Message::parse(answer) else {
        return Discovery::legacy();
    };
    if let Some(result) = msg.result.take() {
        let versions = versions_in(result.get(), &["supportedVersions"]);
        if versions.iter().any(|v| protocol::is_modern_version(v)) {
            let legacy = versions
                .iter()
                .any(|v| protocol::is_legacy_version(v))
                .then_some(true);
            return Discovery {
                eras: Eras {
                    legacy,
                    modern: true,
                },
                result: Some(result),
                sse: false,
            };
        }
        return Discovery::legacy();
    }
    if !modern_error_body(answer) {
        return Discovery::legacy();
    }
    // A modern server refusing the probe (e.g. -32022) may list what it speaks.
    let supported = versions_in(
        &String::from_utf8_lossy(answer),
        &["error", "data", "supported"],
    );
    let legacy = supported
        .iter()
        .any(|v| protocol::is_legacy_version(v))
        .then_some(true);
    Discovery {
        eras: Eras {
            legacy,
            modern: true,
        },
        result: None,
        sse: false,
    }
}

/// The string array at `path` in a JSON document (empty when absent).
fn versions_in(json: &str, path: &[&str]) -> Vec<String> {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    for key in path {
        value = value.get(*key).cloned().unwrap_or_default();
    }
    serde_json::from_value(value).unwrap_or_default()
}

/// What probing an upstream found.
pub struct Discovery {
    /// The eras it answers.
    pub eras: Eras,
    /// The `server/discover` result, for modern upstreams that answered it.
    pub result: Option<Box<serde_json::value::RawValue>>,
    /// The URL serves the 2024-11-05 HTTP+SSE transport.
    pub sse: bool,
}

impl Discovery {
    /// A legacy-only server over Streamable HTTP (or stdio).
    pub fn legacy() -> Self {
        Discovery {
            eras: Eras::LEGACY,
            result: None,
            sse: false,
        }
    }
}

/// Whether a body is a JSON-RPC error carrying one of the modern-era codes.
fn modern_error_body(body: &[u8]) -> bool {
    jsonrpc::error_code(body).is_some_and(protocol::is_modern_error_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_lists() {
        let d = r#"{"supportedVersions":["2026-07-28","2025-11-25"]}"#;
        assert_eq!(
            versions_in(d, &["supportedVersions"]),
            ["2026-07-28", "2025-11-25"]
        );
        let e = r#"{"error":{"code":-32022,"data":{"supported":["2026-07-28"]}}}"#;
        assert_eq!(
            versions_in(e, &["error", "data", "supported"]),
            ["2026-07-28"]
        );
        assert!(versions_in("{}", &["supportedVersions"]).is_empty());
        assert!(versions_in("not json", &["x"]).is_empty());
    }

    #[test]
    fn recognises_modern_error_bodies() {
        assert!(modern_error_body(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"x"}}"#
        ));
        assert!(!modern_error_body(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request"}}"#
        ));
        assert!(!modern_error_body(b"Bad Request"));
    }

    #[test]
    fn picks_the_preferred_era_only_when_both_are_spoken() {
        let both = Eras {
            legacy: Some(true),
            modern: true,
        };
        assert_eq!(both.pick(Era::Legacy), Era::Legacy);
        assert_eq!(both.pick(Era::Modern), Era::Modern);
        let unknown = Eras {
            legacy: None,
            modern: true,
        };
        assert_eq!(
            unknown.pick(Era::Legacy),
            Era::Legacy,
            "tried, with a fallback"
        );
        assert_eq!(unknown.pick(Era::Modern), Era::Modern);
        assert_eq!(Eras::MODERN.pick(Era::Legacy), Era::Modern);
        assert_eq!(Eras::LEGACY.pick(Era::Modern), Era::Legacy);
    }
}
