//! Configuration: TOML file (optional) overlaid with `TETHER_*` environment
//! variables, validated once at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Top-level sections, the only keys `TETHER_*` variables may set.
const SECTIONS: &[&str] = &["server", "session", "store", "federation", "upstreams"];

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, limits and downstream behaviour.
    pub server: ServerConfig,
    /// Client session lifecycle.
    pub session: SessionConfig,
    /// Where session records live.
    pub store: StoreConfig,
    /// How `/mcp` merges upstream catalogues.
    pub federation: FederationConfig,
    /// The upstream MCP servers.
    pub upstreams: Vec<UpstreamConfig>,
}

/// Listener, edge checks and downstream limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Legacy clients get no session: every request uses fresh upstream sessions.
    pub stateless: bool,
    /// Host header values accepted (port ignored); `"*"` accepts any.
    pub allowed_hosts: Vec<String>,
    /// Origin header hosts accepted when present (scheme and port ignored); `"*"` accepts any.
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Interval between SSE keepalive comments in seconds; 0 disables them.
    pub sse_keepalive_secs: u64,
    /// How long shutdown waits for in-flight work and upstream closes, in seconds.
    pub shutdown_timeout_secs: u64,
    /// A client that leaves a relayed SSE message unread this long is cut off, in seconds.
    pub send_timeout_secs: u64,
    /// POSTs being served at once (SSE responses count until they end); more answer 503.
    pub max_inflight_requests: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            stateless: false,
            allowed_hosts: loopback_names(),
            allowed_origins: loopback_names(),
            max_body_bytes: 4 * 1024 * 1024,
            sse_keepalive_secs: 15,
            shutdown_timeout_secs: 10,
            send_timeout_secs: 30,
            max_inflight_requests: 4096,
        }
    }
}

fn loopback_names() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
}

/// The session store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path` (default: a file in the `tether-data` folder),
    /// `postgres://…` (several nodes), or `memory` (sessions end with the process).
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://tether-data/sessions.db".into(),
        }
    }
}

/// Client session lifecycle and caps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused for this many seconds ends (and closes its upstream sessions).
    pub idle_ttl_secs: u64,
    /// Most client sessions held at once; more answer 503 with `Retry-After`.
    pub max_sessions: usize,
    /// Most client sessions one principal holds; more answer 429 with `Retry-After`.
    pub max_sessions_per_principal: usize,
    /// A session ends this many seconds after it began however busy it is; 0: never.
    pub absolute_ttl_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_ttl_secs: 30 * 60,
            max_sessions: 10_000,
            max_sessions_per_principal: 1_000,
            absolute_ttl_secs: 0,
        }
    }
}

/// How names from several upstreams share one namespace on `/mcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Naming {
    /// Every tool and prompt is named `<upstream><separator><name>`.
    Prefix,
    /// Names are unchanged; on a collision the first upstream in config order wins and the
    /// collision is logged and counted.
    None,
    /// Names are unchanged unless two upstreams share one; those are prefixed.
    OnCollision,
}

/// Federation settings for `/mcp`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Naming policy.
    pub naming: Naming,
    /// Separator between upstream name and item name.
    pub separator: String,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            naming: Naming::Prefix,
            separator: "__".into(),
        }
    }
}

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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
}

fn default_upstream_timeout() -> u64 {
    60
}

fn default_process_idle() -> u64 {
    300
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
            timeout_secs: default_upstream_timeout(),
            era: EraPreference::Auto,
            shared: false,
            idle_timeout_secs: default_process_idle(),
        }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// Whether Tether runs the server as a child process (stdio).
    pub fn is_stdio(&self) -> bool {
        !self.command.is_empty()
    }

    fn validate_endpoint(&self) -> Result<(), ConfigError> {
        let fail = |what: &str| Err(ConfigError(format!("upstream {:?}: {what}", self.name)));
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

/// A configuration problem found at load time.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads defaults, then the TOML file (if any), then `TETHER_*` variables
    /// (`__` separates nesting: `TETHER_SERVER__LISTEN=127.0.0.1:9000`).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only keys naming a config section: other TETHER_* variables (TETHER_LOG,
        // TETHER_CONFIG, a caller's own) are not configuration.
        let fig = fig.merge(
            Env::prefixed("TETHER_")
                .filter(|key| {
                    let section = key.as_str().split("__").next().unwrap_or_default();
                    SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
                })
                .split("__"),
        );
        let config: Config = fig.extract().map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (no environment overlay); used by tests and `check-config`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sep = &self.federation.separator;
        if sep.is_empty() {
            return Err(ConfigError("federation.separator must not be empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for up in &self.upstreams {
            let valid = !up.name.is_empty()
                && up.name.len() <= 64
                && up
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ConfigError(format!(
                    "upstream name {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                    up.name
                )));
            }
            if up.name.contains(sep.as_str()) {
                return Err(ConfigError(format!(
                    "upstream name {:?} contains the federation separator {sep:?}",
                    up.name
                )));
            }
            if !seen.insert(up.name.as_str()) {
                return Err(ConfigError(format!(
                    "upstream name {:?} is used twice",
                    up.name
                )));
            }
            up.validate_endpoint()?;
            for (k, v) in &up.headers {
                http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    ConfigError(format!("upstream {:?}: bad header {k:?}", up.name))
                })?;
                http::HeaderValue::from_str(v).map_err(|_| {
                    ConfigError(format!(
                        "upstream {:?}: bad value for header {k:?}",
                        up.name
                    ))
                })?;
            }
        }
        if self.server.max_body_bytes == 0
            || self.session.max_sessions == 0
            || self.session.max_sessions_per_principal == 0
            || !(1..=1_000_000).contains(&self.server.max_inflight_requests)
        {
            return Err(ConfigError(
                "server.max_body_bytes and session.max_sessions must be > 0, server.max_inflight_requests in 1..=1000000"
                    .into(),
            ));
        }
        let hour = 3600;
        let bounded = [
            (
                "server.sse_keepalive_secs",
                self.server.sse_keepalive_secs,
                0,
                hour,
            ),
            (
                "server.shutdown_timeout_secs",
                self.server.shutdown_timeout_secs,
                1,
                hour,
            ),
            (
                "server.send_timeout_secs",
                self.server.send_timeout_secs,
                1,
                hour,
            ),
            (
                "session.idle_ttl_secs",
                self.session.idle_ttl_secs,
                1,
                30 * 24 * hour,
            ),
        ];
        let upstreams = self.upstreams.iter().flat_map(|u| {
            [
                ("upstreams.timeout_secs", u.timeout_secs, 1, hour),
                (
                    "upstreams.idle_timeout_secs",
                    u.idle_timeout_secs,
                    0,
                    24 * hour,
                ),
            ]
        });
        for (key, value, min, max) in bounded.into_iter().chain(upstreams) {
            if !(min..=max).contains(&value) {
                return Err(ConfigError(format!(
                    "{key} = {value} is outside {min}..={max}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams_and_defaults() {
        let c = Config::from_toml(
            r#"
            [federation]
            naming = "on-collision"
            [[upstreams]]
            name = "a"
            url = "http://127.0.0.1:1/mcp"
            headers = { Authorization = "Bearer x" }
            "#,
        )
        .unwrap();
        assert_eq!(c.federation.naming, Naming::OnCollision);
        assert_eq!(c.upstreams[0].timeout_secs, 60);
        assert_eq!(c.server.listen.port(), 8080);
    }

    #[test]
    fn parses_stdio_and_sse_upstreams() {
        let c = Config::from_toml(
            r#"
            [[upstreams]]
            name = "local"
            command = ["python", "server.py"]
            env = { TOKEN = "x" }
            cwd = "/srv"
            shared = true
            [[upstreams]]
            name = "old"
            url = "http://127.0.0.1:1/sse"
            transport = "sse"
            "#,
        )
        .unwrap();
        assert!(c.upstreams[0].is_stdio());
        assert_eq!(c.upstreams[0].env["TOKEN"], "x");
        assert_eq!(c.upstreams[0].idle_timeout_secs, 300);
        assert_eq!(c.upstreams[1].transport, Transport::Sse);
        assert!(!c.upstreams[1].is_stdio());
    }

    #[test]
    fn rejects_bad_upstreams() {
        for bad in [
            "[[upstreams]]\nname = \"a__b\"\nurl = \"http://x/\"",
            "[[upstreams]]\nname = \"a b\"\nurl = \"http://x/\"",
            "[[upstreams]]\nname = \"a\"\nurl = \"ftp://x/\"",
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://y/\"",
            "[server]\nunknown_key = 1",
            "[server]\nshutdown_timeout_secs = 0",
            "[server]\nsse_keepalive_secs = 99999999999",
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\ntimeout_secs = 0",
            "[[upstreams]]\nname = \"a\"",
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\ncommand = [\"srv\"]",
            "[[upstreams]]\nname = \"a\"\ncommand = []",
            "[[upstreams]]\nname = \"a\"\ncommand = [\"srv\"]\ntransport = \"sse\"",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }
}
