//! Upstream MCP servers: how to reach one, which era it speaks, and the
//! sessions Tether holds with it on behalf of client sessions.

mod backoff;
mod client;
mod health;
mod link;
mod registry;
mod session;
mod set;
mod sse_client;
mod stdio;

pub use client::{EventStream, PostHeaders, Reply, UpstreamError, classify_reply, post, post_raw};
pub use health::HealthChange;
pub use registry::SessionSet;
pub use session::{UpstreamSession, first_response};
pub use set::{UpstreamSet, Upstreams};

use std::sync::Arc;
use std::sync::Mutex;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::value::RawValue;

use crate::config::{EraPreference, Transport, UpstreamConfig};
use crate::metrics::UpstreamStats;
use crate::sync::lock;
use tether_wire::protocol::Era;

/// Who the upstream session is opened for: the identity Tether presents upstream.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The client's `clientInfo` (Implementation object).
    pub info: Box<RawValue>,
    /// The client's capabilities object, as offered to upstreams.
    pub capabilities: Box<RawValue>,
    /// The client's `Authorization`, for upstreams with `forward_client_token`.
    pub credentials: Option<HeaderValue>,
}

impl ClientIdentity {
    /// Tether's own identity, used when no client told us theirs (stateless mode).
    pub fn tether() -> Self {
        ClientIdentity {
            info: tether_wire::jsonrpc::to_raw(&serde_json::json!({
                "name": "tether",
                "version": env!("CARGO_PKG_VERSION"),
            })),
            capabilities: tether_wire::jsonrpc::to_raw(&serde_json::json!({})),
            credentials: None,
        }
    }
}

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

/// How Tether talks to an upstream, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// Streamable HTTP: one POST per message.
    StreamableHttp,
    /// The 2024-11-05 HTTP+SSE transport: one event stream per session.
    Sse,
    /// A child process per session (or one shared), over stdin/stdout.
    Stdio,
}

/// Longest wait for a stdio server's answer to the era probe.
const STDIO_PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sessionless requests for a `shared = true` upstream reuse at most this many idle sessions.
const POOL_LIMIT: usize = 8;

/// The TLS files an upstream's definition names, as read when it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA certificates (PEM).
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM).
    pub identity: Option<Vec<u8>>,
}

impl TlsMaterial {
    /// Reads the files `config` names.
    pub fn read(config: &UpstreamConfig) -> Result<TlsMaterial, String> {
        let read = |path: &Option<std::path::PathBuf>| {
            path.as_ref()
                .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
                .transpose()
        };
        Ok(TlsMaterial {
            ca: read(&config.tls_ca_file)?,
            identity: read(&config.tls_client_identity_file)?,
        })
    }
}

/// One configured upstream MCP server.
pub struct Upstream {
    /// The configured name.
    pub name: Arc<str>,
    /// The configuration it was built from.
    pub config: UpstreamConfig,
    /// The TLS material it was built with (a reload rebuilds it when the files change).
    pub tls: TlsMaterial,
    /// The definition as operators see it: `config` with the cosmetic fields
    /// kept current (they change without rebuilding the upstream).
    definition: Mutex<UpstreamConfig>,
    /// Replaced or removed: its background tasks stop.
    retired: std::sync::atomic::AtomicBool,
    url: Option<reqwest::Url>,
    http: reqwest::Client,
    static_headers: HeaderMap,
    wiring: Mutex<Option<Wiring>>,
    eras: Mutex<Option<Eras>>,
    discovered: Mutex<Option<Arc<RawValue>>>,
    detect: tokio::sync::Mutex<()>,
    pool: Mutex<Vec<Arc<UpstreamSession>>>,
    /// The one process of a shared stdio upstream.
    shared_process: tokio::sync::Mutex<Option<Arc<UpstreamSession>>>,
    /// Failed attempts to reach the upstream, and the last error (returned
    /// at once while attempts are held back).
    backoff: Mutex<(backoff::Backoff, Option<UpstreamError>)>,
    /// Counters exported on `/metrics`.
    pub stats: UpstreamStats,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.config.url)
            .field("command", &self.config.command)
            .finish()
    }
}

impl Upstream {
    /// Builds an upstream from validated configuration.
    pub fn new(config: UpstreamConfig) -> Result<Arc<Upstream>, String> {
        let url = if config.is_stdio() {
            None
        } else {
            Some(reqwest::Url::parse(&config.url).map_err(|e| e.to_string())?)
        };
        let wiring = match (config.is_stdio(), config.transport) {
            (true, _) => Some(Wiring::Stdio),
            (false, Transport::Sse) => Some(Wiring::Sse),
            (false, Transport::StreamableHttp) => Some(Wiring::StreamableHttp),
            // Detection needs the era probe; with the era fixed there is none.
            (false, Transport::Auto) => {
                (config.era != EraPreference::Auto).then_some(Wiring::StreamableHttp)
            }
        };
        let mut static_headers = HeaderMap::new();
        for (k, v) in &config.resolved_headers()? {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let mut value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            value.set_sensitive(true);
            static_headers.insert(name, value);
        }
        let mut http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .connect_timeout(std::time::Duration::from_secs(10));
        let tls = TlsMaterial::read(&config)?;
        if let Some(ca) = &tls.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(|e| e.to_string())?;
            if certs.is_empty() {
                return Err("tls_ca_file holds no PEM certificate".into());
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &tls.identity {
            http = http.identity(reqwest::Identity::from_pem(identity).map_err(|e| e.to_string())?);
        }
        let http = http.build().map_err(|e| e.to_string())?;
        let eras = match (config.era, wiring) {
            // The 2024-11-05 transport predates the modern era.
            (_, Some(Wiring::Sse)) | (EraPreference::Legacy, _) => Some(Eras::LEGACY),
            (EraPreference::Auto, _) => None,
            (EraPreference::Modern, _) => Some(Eras::MODERN),
        };
        Ok(Arc::new(Upstream {
            name: config.name.as_str().into(),
            url,
            http,
            static_headers,
            wiring: Mutex::new(wiring),
            eras: Mutex::new(eras),
            discovered: Mutex::new(None),
            detect: tokio::sync::Mutex::new(()),
            pool: Mutex::new(Vec::new()),
            shared_process: tokio::sync::Mutex::new(None),
            backoff: Mutex::new(Default::default()),
            tls,
            definition: Mutex::new(config.clone()),
            retired: std::sync::atomic::AtomicBool::new(false),
            stats: UpstreamStats {
                healthy: 1.into(),
                ..Default::default()
            },
            config,
        }))
    }

    /// The eras the upstream answers, probing it once (concurrent callers
    /// share one probe; `credentials` go with the probe to an upstream that
    /// takes the client's token).
    pub async fn eras(&self, credentials: Option<&HeaderValue>) -> Result<Eras, UpstreamError> {
        if let Some(eras) = *lock(&self.eras) {
            return Ok(eras);
        }
        let _guard = self.detect.lock().await;
        if let Some(eras) = *lock(&self.eras) {
            return Ok(eras);
        }
        let found = self.detect(credentials).await?;
        let eras = found.eras;
        tracing::info!(upstream = %self.name, legacy = eras.legacy, modern = eras.modern, transport = ?self.wiring(), "detected upstream protocol eras");
        *lock(&self.discovered) = found.result.map(Arc::from);
        *lock(&self.eras) = Some(eras);
        Ok(eras)
    }

    /// Probes the upstream with `server/discover` over its transport (and,
    /// for `transport = "auto"`, settles the transport).
    async fn detect(
        &self,
        credentials: Option<&HeaderValue>,
    ) -> Result<client::Discovery, UpstreamError> {
        if self.wiring() == Wiring::Stdio {
            return self.detect_stdio().await;
        }
        let found = client::detect_era(self, credentials).await?;
        let mut wiring = lock(&self.wiring);
        if wiring.is_none() || found.sse {
            *wiring = Some(if found.sse {
                Wiring::Sse
            } else {
                Wiring::StreamableHttp
            });
        }
        Ok(found)
    }

    /// Runs the server once to ask it `server/discover`; a server that
    /// answers otherwise (or exits: some do on a request before
    /// `initialize`) speaks the legacy era.
    async fn detect_stdio(&self) -> Result<client::Discovery, UpstreamError> {
        let link = stdio::spawn(&self.name, &self.config, false).await?;
        let wait = self.config.timeout().min(STDIO_PROBE_WAIT);
        let reply = link.request(client::discover_request(), wait).await;
        link.close().await;
        let answer = match reply {
            Ok(reply) => session::first_response(reply).await.ok(),
            Err(_) => None,
        };
        Ok(answer.map_or_else(client::Discovery::legacy, |a| {
            client::classify_discovery(&a)
        }))
    }

    /// The definition as operators see it (cosmetic fields current).
    pub fn definition(&self) -> UpstreamConfig {
        lock(&self.definition).clone()
    }

    /// Takes the cosmetic fields of `definition` (which connects like this one).
    pub fn describe(&self, definition: &UpstreamConfig) {
        *lock(&self.definition) = definition.clone();
    }

    /// Whether the last health check succeeded (or none has run yet).
    pub fn is_healthy(&self) -> bool {
        self.stats
            .healthy
            .load(std::sync::atomic::Ordering::Acquire)
            == 1
    }

    /// Marks the upstream replaced or removed (its health checks stop).
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// How Tether talks to the upstream (Streamable HTTP until detection says otherwise).
    pub fn wiring(&self) -> Wiring {
        lock(&self.wiring).unwrap_or(Wiring::StreamableHttp)
    }

    /// The upstream's URL (HTTP upstreams).
    fn url(&self) -> Result<&reqwest::Url, UpstreamError> {
        self.url
            .as_ref()
            .ok_or_else(|| UpstreamError::Protocol("a stdio upstream has no URL".into()))
    }

    /// Whether sessionless requests borrow pooled sessions (a shared HTTP
    /// upstream; a shared stdio upstream has its one process instead).
    pub fn pools_sessions(&self) -> bool {
        self.config.shared && !self.config.is_stdio() && !self.config.forward_client_token
    }

    /// The modern upstream's `server/discover` result, fetched once and cached.
    pub async fn discover_result(
        &self,
        credentials: Option<&HeaderValue>,
    ) -> Result<Arc<RawValue>, UpstreamError> {
        if let Some(r) = lock(&self.discovered).clone() {
            return Ok(r);
        }
        let found = self.detect(credentials).await?;
        let result: Arc<RawValue> = found.result.map(Arc::from).ok_or_else(|| {
            UpstreamError::Protocol("upstream did not answer server/discover".into())
        })?;
        *lock(&self.discovered) = Some(result.clone());
        Ok(result)
    }

    /// Forgets the detected eras so the next use probes again (after the upstream changed).
    pub fn forget_era(&self) {
        if self.config.era == EraPreference::Auto {
            *lock(&self.eras) = None;
        }
    }

    /// Opens a new upstream session for `client`, in `preferred` era when the
    /// upstream answers both (legacy client sessions prefer legacy: a dual-era
    /// server keeps per-session state only there). A shared stdio upstream
    /// hands out its one process instead. After the upstream could not be
    /// reached, attempts are held back (capped exponential backoff) and fail
    /// at once, so a dead or hanging upstream does not make every caller wait
    /// out a timeout.
    pub async fn open_session(
        self: &Arc<Self>,
        client: &ClientIdentity,
        preferred: Era,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        if self.config.is_stdio() && self.config.shared {
            return self.shared_process_session().await;
        }
        self.open_guarded(client, preferred).await
    }

    async fn open_guarded(
        self: &Arc<Self>,
        client: &ClientIdentity,
        preferred: Era,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        if self.holding_back()
            && let Some(e) = lock(&self.backoff).1.clone()
        {
            return Err(e);
        }
        let result = match self.eras(client.credentials.as_ref()).await {
            Ok(eras) => self.open_in(eras, preferred, client).await,
            Err(e) => Err(e),
        };
        self.note_attempt(&result);
        result
    }

    /// Whether attempts to reach the upstream are held back after failures.
    fn holding_back(&self) -> bool {
        lock(&self.backoff).0.holding(std::time::Instant::now())
    }

    /// Feeds the outcome of an attempt to reach the upstream into the backoff.
    fn note_attempt<T>(&self, result: &Result<T, UpstreamError>) {
        match result {
            Err(
                e @ (UpstreamError::Connect(_)
                | UpstreamError::Timeout
                | UpstreamError::Transport(_)),
            ) => {
                let mut guard = lock(&self.backoff);
                let (wait, n) = guard.0.failed(std::time::Instant::now());
                guard.1 = Some(e.clone());
                if backoff::worth_logging(n) {
                    tracing::warn!(upstream = %self.name, attempt = n, retry_in = ?wait, error = %e, "upstream unreachable; new sessions wait for the next attempt");
                }
            }
            Err(e) if e.suggests_era_change() => self.forget_era(),
            _ => {
                if let Some(n) = lock(&self.backoff).0.recovered() {
                    tracing::info!(upstream = %self.name, failed_attempts = n, "upstream reachable again");
                }
            }
        }
    }

    /// The process of a shared stdio upstream, started (again) when it is
    /// not running; stopped after `idle_timeout_secs` without use.
    async fn shared_process_session(
        self: &Arc<Self>,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        let mut slot = self.shared_process.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| s.is_usable()) {
            return Ok(s.clone());
        }
        if let Some(old) = slot.take() {
            old.retire().await;
        }
        let session = self
            .open_guarded(&ClientIdentity::tether(), Era::Legacy)
            .await?;
        session.mark_shared();
        *slot = Some(session.clone());
        if self.config.idle_timeout_secs > 0 {
            tokio::spawn(stop_when_idle(
                Arc::downgrade(self),
                Arc::downgrade(&session),
                std::time::Duration::from_secs(self.config.idle_timeout_secs),
            ));
        }
        Ok(session)
    }

    /// Opens a session in the era `eras` and `preferred` pick; when legacy
    /// support was unknown, the attempt settles it (falling back to modern).
    async fn open_in(
        self: &Arc<Self>,
        eras: Eras,
        preferred: Era,
        client: &ClientIdentity,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        let era = eras.pick(preferred);
        let result = UpstreamSession::open(self.clone(), era, client).await;
        if era != Era::Legacy || eras.legacy.is_some() {
            return result;
        }
        match result {
            Ok(session) => {
                self.learn_legacy(true);
                Ok(session)
            }
            Err(e) if e.suggests_era_change() => {
                tracing::info!(upstream = %self.name, "upstream does not answer initialize: modern only");
                self.learn_legacy(false);
                UpstreamSession::open(self.clone(), Era::Modern, client).await
            }
            Err(e) => Err(e),
        }
    }

    fn learn_legacy(&self, answers_initialize: bool) {
        if let Some(eras) = lock(&self.eras).as_mut() {
            eras.legacy = Some(answers_initialize);
        }
    }

    /// Takes an idle pooled session (shared upstreams only), or opens one
    /// (then the flag is true).
    pub async fn checkout_pooled(
        self: &Arc<Self>,
        client: &ClientIdentity,
    ) -> Result<(Arc<UpstreamSession>, bool), UpstreamError> {
        let pooled = lock(&self.pool).pop();
        match pooled {
            Some(s) if !s.is_closed() => Ok((s, false)),
            _ => Ok((self.open_session(client, Era::Modern).await?, true)),
        }
    }

    /// Returns a session to the pool; hands it back when the pool is full
    /// (the caller closes it).
    pub fn checkin_pooled(&self, session: Arc<UpstreamSession>) -> Option<Arc<UpstreamSession>> {
        if session.is_closed() {
            return None;
        }
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_LIMIT {
            pool.push(session);
            None
        } else {
            Some(session)
        }
    }

    /// Closes every pooled session and the shared process (shutdown).
    pub async fn drain_pool(&self) {
        let sessions: Vec<_> = std::mem::take(&mut *lock(&self.pool));
        let shared = self.shared_process.lock().await.take();
        let closes = sessions.iter().map(|s| s.close());
        futures_util::future::join(futures_util::future::join_all(closes), async {
            if let Some(s) = shared {
                s.retire().await;
            }
        })
        .await;
    }
}

/// Stops a shared process once it has gone unused for `idle`; the next use
/// starts a new one.
async fn stop_when_idle(
    upstream: std::sync::Weak<Upstream>,
    session: std::sync::Weak<UpstreamSession>,
    idle: std::time::Duration,
) {
    let period = (idle / 4).max(std::time::Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let (Some(upstream), Some(session)) = (upstream.upgrade(), session.upgrade()) else {
            return;
        };
        if !session.is_usable() {
            return;
        }
        if session.idle_for() < idle {
            continue;
        }
        let mut slot = upstream.shared_process.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
            slot.take();
            drop(slot);
            tracing::info!(upstream = %upstream.name, ?idle, "stopping idle shared upstream process");
            session.retire().await;
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
