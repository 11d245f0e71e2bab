//! One upstream's definition: how to reach it (every field but the
//! cosmetic ones; changing any of them closes its upstream sessions) and how
//! it is described (changing that keeps them).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::shaping::{RateLimit, ToolShape, validate_shapes};

/// How Tether reaches an upstream over HTTP (`command` upstreams use stdio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Detect the upstream's era and transport: Streamable HTTP, else the
    /// 2024-11-05 HTTP+SSE transport when the URL answers POST with 404/405
    /// and GET with an SSE stream announcing its `endpoint`.
    #[default]
    Auto,
    /// Streamable HTTP (legacy sessions or modern stateless).
    StreamableHttp,
    /// The 2024-11-05 HTTP+SSE transport: `url` is the SSE endpoint.
    Sse,
}

/// Which protocol era Tether speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EraPreference {
    /// Probe with a modern request; fall back to `initialize` on a non-modern 4xx.
    #[default]
    Auto,
    /// Always `initialize` + session.
    Legacy,
    /// Always stateless 2026-07-28.
    Modern,
}

/// One upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name; the prefix of its tools on `/mcp` and the `<upstream>` of `/u/<upstream>/mcp`.
    pub name: String,
    /// The upstream's MCP endpoint URL (HTTP upstreams).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The server program and its arguments (stdio upstreams; instead of `url`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables set for the `command` (added to Tether's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory of the `command` (default: Tether's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<std::path::PathBuf>,
    /// Transport selection.
    #[serde(default)]
    pub transport: Transport,
    /// Static headers sent with every request (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables (header name →
    /// variable name), so secrets stay out of the config file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_env: BTreeMap<String, String>,
    /// Forward the client's own `Authorization` header to this upstream
    /// (and never pool its sessions across clients).
    #[serde(default)]
    pub forward_client_token: bool,
    /// Per-request timeout in seconds.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
    /// Which era to speak; `auto` probes the way the 2026-07-28 spec describes.
    #[serde(default)]
    pub era: EraPreference,
    /// The upstream keeps no per-session state, so sessionless requests may share a small
    /// pool of its sessions instead of opening one per call; a `command` upstream then
    /// runs one process for every client session instead of one each.
    #[serde(default)]
    pub shared: bool,
    /// A shared `command` process unused this many seconds is stopped (started again
    /// on next use); 0 keeps it running. Per-session processes end with their session.
    #[serde(default = "default_process_idle")]
    pub idle_timeout_secs: u64,
    /// An upstream session unused this many seconds is probed (`ping`) before
    /// it is used again, and replaced if the probe fails; 0: never probed.
    #[serde(default = "default_idle_validation")]
    pub idle_validation_secs: u64,
    /// Seconds between health checks (each on a connection of its own); 0: none.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u64,
    /// PEM file of CA certificates to trust for the upstream's TLS (besides the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// PEM file with a client certificate chain and its private key (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_identity_file: Option<std::path::PathBuf>,
    /// What the upstream is for (cosmetic).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels for operators (cosmetic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A friendlier name for people (cosmetic).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Tool calls in flight to this upstream on this node at most (0: no cap).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_concurrent_calls: usize,
    /// Tool calls per principal, over all of this upstream's tools.
    #[serde(default, skip_serializing_if = "RateLimit::is_unset")]
    pub rate_limit: RateLimit,
    /// How its tools are shown and limited, by the upstream's own tool name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shape: BTreeMap<String, ToolShape>,
    /// `/u/<name>/mcp` lists the search and call meta-tools instead of its tools.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progressive_discovery: bool,
}

/// The fields of an upstream definition that only describe it.
pub const COSMETIC_FIELDS: &[&str] = &["description", "tags", "display_name"];

/// The fields that say how its tools are served to clients (shown, limited).
/// Neither these nor the cosmetic ones affect how Tether connects; changing
/// any other field closes the upstream's sessions.
pub const SERVING_FIELDS: &[&str] = &[
    "max_concurrent_calls",
    "rate_limit",
    "shape",
    "progressive_discovery",
];

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_upstream_timeout() -> u64 {
    60
}

fn default_process_idle() -> u64 {
    300
}

fn default_idle_validation() -> u64 {
    60
}

fn default_health_interval() -> u64 {
    30
}

impl UpstreamConfig {
    /// An HTTP upstream with defaults for everything else.
    pub fn http(name: &str, url: &str) -> Self {
        UpstreamConfig {
            name: name.into(),
            url: url.into(),
            command: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            transport: Transport::Auto,
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            forward_client_token: false,
            timeout_secs: default_upstream_timeout(),
            era: EraPreference::Auto,
            shared: false,
            idle_timeout_secs: default_process_idle(),
            idle_validation_secs: default_idle_validation(),
            health_interval_secs: default_health_interval(),
            tls_ca_file: None,
            tls_client_identity_file: None,
            description: String::new(),
            tags: Vec::new(),
            display_name: String::new(),
            max_concurrent_calls: 0,
            rate_limit: RateLimit::default(),
            shape: BTreeMap::new(),
            progressive_discovery: false,
        }
    }

    /// The definition without its cosmetic and serving fields.
    fn connect_part(&self) -> UpstreamConfig {
        UpstreamConfig {
            description: String::new(),
            tags: Vec::new(),
            display_name: String::new(),
            max_concurrent_calls: 0,
            rate_limit: RateLimit::default(),
            shape: BTreeMap::new(),
            progressive_discovery: false,
            ..self.clone()
        }
    }

    /// Checks its tool shapes.
    pub(super) fn validate_shapes(&self) -> Result<(), ConfigError> {
        validate_shapes(&format!("upstream {:?}", self.name), &self.shape, true)
    }

    /// Whether `other` connects the same way (they differ in cosmetic fields at most).
    pub fn connects_like(&self, other: &UpstreamConfig) -> bool {
        // Compared in their serialized form: a field added later takes part
        // without anyone remembering to list it here.
        serde_json::to_value(self.connect_part()).ok()
            == serde_json::to_value(other.connect_part()).ok()
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// The static headers: `headers` plus the values `headers_env` names.
    pub fn resolved_headers(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut all = self.headers.clone();
        for (header, var) in &self.headers_env {
            let value = std::env::var(var).map_err(|source| ConfigError::UnsetVariable {
                variable: var.clone(),
                header: header.clone(),
                source,
            })?;
            all.insert(header.clone(), value);
        }
        Ok(all)
    }

    /// Whether Tether runs the server as a child process (stdio).
    pub fn is_stdio(&self) -> bool {
        !self.command.is_empty()
    }

    /// Static headers must not be ones Tether sets itself or that belong to
    /// one connection hop.
    pub(super) fn validate_headers(&self) -> Result<(), ConfigError> {
        const RESERVED: &[&str] = &[
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
            "trailer",
            "upgrade",
            "host",
            "content-length",
            "content-type",
            "accept",
            "mcp-session-id",
            "mcp-protocol-version",
            "mcp-method",
            "mcp-name",
            "last-event-id",
        ];
        for name in self.headers.keys().chain(self.headers_env.keys()) {
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str()) || lower.starts_with("mcp-param-") {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: header {name:?} is set by Tether (or is hop-by-hop) and cannot be configured",
                    self.name
                )));
            }
        }
        Ok(())
    }

    pub(super) fn validate_endpoint(&self) -> Result<(), ConfigError> {
        let fail = |what: &str| {
            Err(ConfigError::Invalid(format!(
                "upstream {:?}: {what}",
                self.name
            )))
        };
        match (self.url.is_empty(), self.command.is_empty()) {
            (true, true) => return fail("set url (HTTP) or command (stdio)"),
            (false, false) => return fail("set either url or command, not both"),
            (true, false) => {
                if self.command[0].is_empty() {
                    return fail("command[0] must name a program");
                }
                if self.transport != Transport::Auto {
                    return fail("transport applies to url upstreams only");
                }
                return Ok(());
            }
            (false, true) => {}
        }
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) => u,
            Err(e) => return fail(&format!("bad url: {e}")),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return fail("url must be http or https");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field set to a non-default value, so all of them serialize.
    fn full() -> UpstreamConfig {
        UpstreamConfig {
            name: "n".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            command: vec!["srv".into()],
            env: BTreeMap::from([("K".into(), "V".into())]),
            cwd: Some("/srv".into()),
            transport: Transport::Sse,
            headers: BTreeMap::from([("Authorization".into(), "Bearer x".into())]),
            headers_env: BTreeMap::from([("X-Key".into(), "KEY_VAR".into())]),
            forward_client_token: true,
            timeout_secs: 5,
            era: EraPreference::Legacy,
            shared: true,
            idle_timeout_secs: 1,
            idle_validation_secs: 2,
            health_interval_secs: 3,
            tls_ca_file: Some("/ca.pem".into()),
            tls_client_identity_file: Some("/id.pem".into()),
            description: "d".into(),
            tags: vec!["t".into()],
            display_name: "N".into(),
            max_concurrent_calls: 2,
            rate_limit: RateLimit {
                per_minute: 1,
                burst: 1,
            },
            shape: BTreeMap::from([("t".into(), ToolShape::default())]),
            progressive_discovery: true,
        }
    }

    /// Fields that change how Tether connects. A new field must be added
    /// here, to [`COSMETIC_FIELDS`] or to [`SERVING_FIELDS`], or this test fails.
    const CONNECT_FIELDS: &[&str] = &[
        "name",
        "url",
        "command",
        "env",
        "cwd",
        "transport",
        "headers",
        "headers_env",
        "forward_client_token",
        "timeout_secs",
        "era",
        "shared",
        "idle_timeout_secs",
        "idle_validation_secs",
        "health_interval_secs",
        "tls_ca_file",
        "tls_client_identity_file",
    ];

    #[test]
    fn every_field_is_classified() {
        let value = serde_json::to_value(full()).unwrap();
        let mut fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut classified: Vec<&str> = CONNECT_FIELDS
            .iter()
            .chain(COSMETIC_FIELDS)
            .chain(SERVING_FIELDS)
            .copied()
            .collect();
        classified.sort_unstable();
        assert_eq!(
            fields, classified,
            "classify new upstream fields as connect-affecting or cosmetic"
        );
    }

    #[test]
    fn only_cosmetic_changes_connect_alike() {
        let base = full();
        let cosmetic = UpstreamConfig {
            description: "other".into(),
            tags: Vec::new(),
            display_name: String::new(),
            max_concurrent_calls: 0,
            shape: BTreeMap::new(),
            progressive_discovery: false,
            ..base.clone()
        };
        assert!(base.connects_like(&cosmetic));
        for field in CONNECT_FIELDS {
            let mut changed = serde_json::to_value(&base).unwrap();
            changed[*field] = match &changed[*field] {
                serde_json::Value::String(s) => format!("{s}x").into(),
                serde_json::Value::Number(n) => (n.as_u64().unwrap() + 1).into(),
                serde_json::Value::Bool(b) => (!b).into(),
                serde_json::Value::Array(_) => serde_json::json!(["other"]),
                serde_json::Value::Object(_) => serde_json::json!({"Other": "x"}),
                other => panic!("{field}: {other}"),
            };
            if *field == "transport" {
                changed[*field] = "auto".into();
            }
            if *field == "era" {
                changed[*field] = "modern".into();
            }
            let changed: UpstreamConfig = serde_json::from_value(changed).unwrap();
            assert!(
                !base.connects_like(&changed),
                "{field} must count as connect-affecting"
            );
        }
    }
}
