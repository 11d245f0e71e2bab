//! Configuration: TOML file (optional) overlaid with `TETHER_*` environment
//! variables, validated once at start-up.

use std::net::SocketAddr;
use std::path::Path;

mod auth;
mod cluster;
mod shaping;
mod telemetry;
mod upstream;
mod virtual_server;

pub use auth::{AuthConfig, AuthMode, JwtConfig, Policy};
pub use cluster::{ClusterConfig, is_valid_node_id};
pub use shaping::{RateLimit, ToolShape, is_valid_tool_name};
pub use telemetry::{Exporting, TelemetryConfig, check_url as check_telemetry_url};
pub use upstream::{COSMETIC_FIELDS, EraPreference, SERVING_FIELDS, Transport, UpstreamConfig};
pub use virtual_server::VirtualServerConfig;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Whether `name` may name an upstream or a virtual server (it is part of
/// their endpoints' paths): 1-64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Top-level sections, the only keys `TETHER_*` variables may set.
const SECTIONS: &[&str] = &[
    "server",
    "session",
    "store",
    "federation",
    "cache",
    "tasks",
    "upstreams",
    "virtual_servers",
    "admin",
    "auth",
    "cluster",
    "telemetry",
];

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
    /// Gateway-side caching of upstream results (`[cache]`).
    pub cache: CacheConfig,
    /// Tasks (the 2026-07-28 tasks extension) Tether runs itself (`[tasks]`).
    pub tasks: TasksConfig,
    /// The upstream MCP servers.
    pub upstreams: Vec<UpstreamConfig>,
    /// Curated parts of the catalogue, at `/v/<name>/mcp`.
    pub virtual_servers: Vec<VirtualServerConfig>,
    /// The admin API.
    pub admin: AdminConfig,
    /// Authentication and authorization of clients.
    pub auth: AuthConfig,
    /// This node's place in a cluster (with a `postgres://` store).
    pub cluster: ClusterConfig,
    /// OpenTelemetry traces (`[telemetry]`).
    pub telemetry: TelemetryConfig,
}

/// The admin API (`/admin/…`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token the admin API requires; empty: the API is off.
    /// Usually set through `TETHER_ADMIN__TOKEN`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
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
    /// Requests one client session may have in flight; more answer 429.
    pub max_inflight_per_session: usize,
    /// Largest total size of a request's headers in bytes; more answer 431.
    pub max_header_bytes: usize,
    /// Seconds a client may take to send a request body; slower answers 408.
    pub body_timeout_secs: u64,
    /// Requests per second one principal may make (a token bucket); 0: no limit.
    pub rate_limit_per_principal: u32,
    /// How many requests above the rate a principal may burst; 0: the rate itself.
    pub rate_limit_burst: u32,
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
            max_inflight_per_session: 64,
            max_header_bytes: 16 * 1024,
            body_timeout_secs: 30,
            rate_limit_per_principal: 0,
            rate_limit_burst: 0,
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
    /// `/mcp` lists the search and call meta-tools instead of the catalogue.
    pub progressive_discovery: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            naming: Naming::Prefix,
            separator: "__".into(),
            progressive_discovery: false,
        }
    }
}

/// Caching of upstream list and `resources/read` results, as far as their
/// `ttlMs`/`cacheScope` allow.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether results are cached at all.
    pub enabled: bool,
    /// Results kept at most.
    pub max_entries: usize,
    /// Bytes of results kept at most (one result at most a quarter of it).
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_entries: 1024,
            max_bytes: 16 << 20,
        }
    }
}

/// Tasks (the 2026-07-28 tasks extension): a modern client that declares
/// the extension may get a task handle for a `tools/call`. Upstreams that
/// run tasks answer with their own (relayed); for the others Tether turns a
/// call still running after `promote_after_ms` into a task it runs itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// Whether Tether runs tasks itself (relayed upstream tasks always work).
    pub enabled: bool,
    /// How long a call runs before it becomes a task.
    pub promote_after_ms: u64,
    /// How long a task is kept after it was created.
    pub ttl_ms: u64,
    /// The polling interval suggested to clients.
    pub poll_interval_ms: u64,
    /// Tasks one node runs at once; beyond this, calls stay synchronous.
    pub max_running: usize,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            enabled: true,
            promote_after_ms: 1000,
            ttl_ms: 3_600_000,
            poll_interval_ms: 500,
            max_running: 1024,
        }
    }
}

/// A configuration problem found at load time.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file named does not exist.
    NotFound(std::path::PathBuf),
    /// The file or the environment does not read as a configuration.
    Read(Box<figment::Error>),
    /// A value breaks a rule (the message says which and why).
    Invalid(String),
    /// An environment variable a header value comes from is not set.
    UnsetVariable {
        /// The variable.
        variable: String,
        /// The header it was to fill.
        header: String,
        /// Why it could not be read.
        source: std::env::VarError,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::NotFound(path) => write!(f, "config file {} not found", path.display()),
            ConfigError::Read(e) => write!(f, "{e}"),
            ConfigError::Invalid(why) => f.write_str(why),
            ConfigError::UnsetVariable {
                variable, header, ..
            } => write!(f, "headers_env: {variable} (for {header}) is not set"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read(e) => Some(e.as_ref()),
            ConfigError::UnsetVariable { source, .. } => Some(source),
            ConfigError::NotFound(_) | ConfigError::Invalid(_) => None,
        }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Read(Box::new(e))
    }
}

impl Config {
    /// Loads defaults, then the TOML file (if any), then `TETHER_*` variables
    /// (`__` separates nesting: `TETHER_SERVER__LISTEN=127.0.0.1:9000`).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::NotFound(path.to_owned()));
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
        let config: Config = fig.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration with every secret replaced (for printing).
    pub fn redacted(&self) -> Config {
        const HIDDEN: &str = "<redacted>";
        let mut c = self.clone();
        for up in &mut c.upstreams {
            for v in up.headers.values_mut().chain(up.env.values_mut()) {
                *v = HIDDEN.into();
            }
        }
        for secret in [
            &mut c.admin.token,
            &mut c.auth.jwt.hs256_secret,
            &mut c.cluster.secret,
        ] {
            if !secret.is_empty() {
                *secret = HIDDEN.into();
            }
        }
        c
    }

    /// Parses a TOML document (no environment overlay); used by tests and `check-config`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tasks.ttl_ms == 0 || self.tasks.poll_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "tasks.ttl_ms and tasks.poll_interval_ms must be positive".into(),
            ));
        }
        let sep = &self.federation.separator;
        if sep.is_empty() {
            return Err(ConfigError::Invalid(
                "federation.separator must not be empty".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for up in &self.upstreams {
            if !is_valid_name(&up.name) {
                return Err(ConfigError::Invalid(format!(
                    "upstream name {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                    up.name
                )));
            }
            if up.name.contains(sep.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "upstream name {:?} contains the federation separator {sep:?}",
                    up.name
                )));
            }
            if !seen.insert(up.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "upstream name {:?} is used twice",
                    up.name
                )));
            }
            up.validate_endpoint()?;
            up.validate_headers()?;
            up.validate_shapes()?;
            if up.max_concurrent_calls > 1_000_000 {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?}: max_concurrent_calls must be at most 1000000",
                    up.name
                )));
            }
            for (k, v) in &up.headers {
                http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    ConfigError::Invalid(format!("upstream {:?}: bad header {k:?}", up.name))
                })?;
                http::HeaderValue::from_str(v).map_err(|_| {
                    ConfigError::Invalid(format!(
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
            return Err(ConfigError::Invalid(
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
                "server.body_timeout_secs",
                self.server.body_timeout_secs,
                1,
                hour,
            ),
            (
                "server.max_header_bytes",
                self.server.max_header_bytes as u64,
                1024,
                1024 * 1024,
            ),
            (
                "server.max_inflight_per_session",
                self.server.max_inflight_per_session as u64,
                1,
                100_000,
            ),
            (
                "session.idle_ttl_secs",
                self.session.idle_ttl_secs,
                1,
                30 * 24 * hour,
            ),
            (
                "cluster.heartbeat_ms",
                self.cluster.heartbeat_ms,
                100,
                60_000,
            ),
            (
                "cluster.dead_after_ms",
                self.cluster.dead_after_ms,
                200,
                600_000,
            ),
            ("cluster.drain_secs", self.cluster.drain_secs, 0, 600),
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
                return Err(ConfigError::Invalid(format!(
                    "{key} = {value} is outside {min}..={max}"
                )));
            }
        }
        let mut virtual_names = std::collections::HashSet::new();
        for server in &self.virtual_servers {
            server.validate()?;
            if !virtual_names.insert(server.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "virtual server name {:?} is used twice",
                    server.name
                )));
            }
        }
        self.cluster.validate()?;
        self.telemetry.validate()
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
    fn printing_hides_secrets() {
        let mut c = Config::from_toml(
            "[admin]\ntoken = \"t0ken\"\n[auth.jwt]\nhs256_secret = \"s3cret\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\nheaders = { Authorization = \"Bearer k3y\" }\n",
        )
        .unwrap();
        c.cluster.secret = "cl0ster".into();
        let shown = serde_json::to_string(&c.redacted()).unwrap();
        for secret in ["t0ken", "s3cret", "k3y", "cl0ster"] {
            assert!(!shown.contains(secret), "{shown}");
        }
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
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\nheaders = { Mcp-Session-Id = \"x\" }",
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\nheaders = { Connection = \"close\" }",
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\nheaders_env = { Mcp-Param-X = \"V\" }",
            "[cluster]\nnode_id = \"a.b\"",
            "[cluster]\nadvertise = \"ftp://x\"",
            "[cluster]\nheartbeat_ms = 1000\ndead_after_ms = 1500",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }
}
