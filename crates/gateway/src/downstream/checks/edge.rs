//! Edge checks applied before any MCP processing: Host and Origin allowlists
//! (DNS-rebinding protection), the header and body size limits, and the time
//! a client may take to send its body.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tether_wire::jsonrpc::code;

use super::layer::{Check, Verdict};
use crate::config::ServerConfig;
use crate::downstream::reply;

/// The check: the header checks ([`EdgePolicy::check`]) before anything else.
#[derive(Clone)]
pub struct CheckEdge(pub Arc<EdgePolicy>);

impl Check for CheckEdge {
    type Admitted = ();

    fn admit(&self, req: &mut Request) -> Verdict<()> {
        match self.0.check(req.headers()) {
            Ok(()) => Verdict::Pass(()),
            Err(rejection) => Verdict::Refuse(rejection.response()),
        }
    }
}

/// Host/Origin allowlists.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    hosts: Vec<String>,
    origins: Vec<String>,
    max_body: usize,
    max_headers: usize,
    body_timeout: std::time::Duration,
}

/// Why the edge refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeRejection {
    /// Host header not allowed (403).
    Host,
    /// Origin header not allowed (403).
    Origin,
    /// Body larger than the limit (413).
    TooLarge,
    /// The body could not be read.
    BadBody,
    /// Headers larger than the limit (431).
    HeadersTooLarge,
    /// The body did not arrive in time (408).
    SlowBody,
}

impl EdgeRejection {
    /// The answer to a request the edge refused.
    pub fn response(self) -> Response {
        let (status, code, text) = match self {
            EdgeRejection::Host => (
                StatusCode::FORBIDDEN,
                code::INVALID_REQUEST,
                "Forbidden: Host header not allowed",
            ),
            EdgeRejection::Origin => (
                StatusCode::FORBIDDEN,
                code::INVALID_REQUEST,
                "Forbidden: Origin not allowed",
            ),
            EdgeRejection::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                code::INVALID_REQUEST,
                "request body too large",
            ),
            EdgeRejection::BadBody => (
                StatusCode::BAD_REQUEST,
                code::PARSE_ERROR,
                "could not read request body",
            ),
            EdgeRejection::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                code::INVALID_REQUEST,
                "request headers too large",
            ),
            EdgeRejection::SlowBody => (
                StatusCode::REQUEST_TIMEOUT,
                code::INVALID_REQUEST,
                "the request body did not arrive in time",
            ),
        };
        reply::error(status, code, text)
    }
}

/// Whether the request's `Content-Type` is JSON.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

impl EdgePolicy {
    /// Builds the policy from the server config.
    pub fn new(server: &ServerConfig) -> Self {
        let norm = |v: &Vec<String>| {
            v.iter()
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
                .collect()
        };
        EdgePolicy {
            hosts: norm(&server.allowed_hosts),
            origins: norm(&server.allowed_origins),
            max_body: server.max_body_bytes,
            max_headers: server.max_header_bytes,
            body_timeout: std::time::Duration::from_secs(server.body_timeout_secs.max(1)),
        }
    }

    /// The largest request body accepted, in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Checks the header size, Host and (when present) Origin.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), EdgeRejection> {
        let size: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if size > self.max_headers {
            return Err(EdgeRejection::HeadersTooLarge);
        }
        if let Some(host) = headers.get(http::header::HOST) {
            let host = host.to_str().map_err(|_| EdgeRejection::Host)?;
            if !allowed(&self.hosts, host_part(host)) {
                return Err(EdgeRejection::Host);
            }
        }
        if let Some(origin) = headers.get(http::header::ORIGIN) {
            let origin = origin.to_str().map_err(|_| EdgeRejection::Origin)?;
            let authority = origin
                .split_once("://")
                .map(|(_, rest)| rest)
                .ok_or(EdgeRejection::Origin)?;
            if !allowed(&self.origins, host_part(authority)) {
                return Err(EdgeRejection::Origin);
            }
        }
        Ok(())
    }

    /// Reads the body, refusing anything over the limit or slower than the body timeout.
    pub async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, EdgeRejection> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(EdgeRejection::TooLarge);
        }
        let read =
            tokio::time::timeout(self.body_timeout, axum::body::to_bytes(body, self.max_body));
        read.await
            .map_err(|_| EdgeRejection::SlowBody)?
            .map_err(|e| {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                if too_large {
                    EdgeRejection::TooLarge
                } else {
                    EdgeRejection::BadBody
                }
            })
    }
}

fn allowed(list: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    list.iter().any(|h| h == "*" || *h == host)
}

/// The host of `host[:port]`, `[v6]:port` or `[v6]`, without brackets.
fn host_part(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let authority = authority.split('/').next().unwrap_or(authority);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::downstream::test_headers as headers;

    #[test]
    fn loopback_defaults() {
        let p = EdgePolicy::new(&ServerConfig::default());
        assert!(p.check(&headers(&[("host", "127.0.0.1:8080")])).is_ok());
        assert!(
            p.check(&headers(&[
                ("host", "[::1]:8080"),
                ("origin", "http://localhost:3000")
            ]))
            .is_ok()
        );
        assert_eq!(
            p.check(&headers(&[("host", "evil.example:8080")])),
            Err(EdgeRejection::Host)
        );
        assert_eq!(
            p.check(&headers(&[
                ("host", "localhost"),
                ("origin", "http://evil.example")
            ])),
            Err(EdgeRejection::Origin)
        );
        assert_eq!(
            p.check(&headers(&[("host", "localhost"), ("origin", "null")])),
            Err(EdgeRejection::Origin)
        );
    }

    #[test]
    fn host_parts() {
        assert_eq!(host_part("a.b:80"), "a.b");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert_eq!(host_part("user@h:1/x"), "h");
    }
}
