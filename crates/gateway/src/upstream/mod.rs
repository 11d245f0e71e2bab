//! Upstream MCP servers: how to reach one, which era it speaks, and the
//! sessions Tether holds with it on behalf of client sessions.

mod backoff;
mod discovery;
mod endpoint;
mod error;
mod health;
mod http1;
mod identity;
mod link;
mod placement;
mod pool;
mod reply;
mod response;
mod session;
mod session_set;
mod sse_transport;
mod stdio;
mod tool_headers;
mod upstream_set;

pub use discovery::Eras;
pub use endpoint::{BuildError, HttpEndpoint, MAX_UPSTREAM_MESSAGE, PostHeaders, TlsMaterial};
pub use error::{Cause, UpstreamError};
pub use health::{HealthChange, probe as probe_health, watch as watch_health};
pub use identity::ClientIdentity;
pub use placement::ProcessPlacement;
pub use reply::{EventStream, Reply, classify, first_response};
pub use session::UpstreamSession;
pub use session_set::SessionSet;
pub use tool_headers::ToolHeaders;
pub use upstream_set::{UpstreamSet, Upstreams};

use std::sync::Arc;
use std::sync::Mutex;

use http::HeaderValue;
use serde_json::value::RawValue;
use tether_wire::protocol::Era;

use crate::config::{EraPreference, RateLimit, Transport, UpstreamConfig};
use crate::metrics::UpstreamStats;
use crate::shaping::Shaping;
use crate::sync::lock;
use crate::telemetry::spans;
use discovery::Discovery;
use pool::SessionPool;

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
    /// How to reach it over HTTP (`None` for stdio upstreams).
    endpoint: Option<Arc<HttpEndpoint>>,
    wiring: Mutex<Option<Wiring>>,
    eras: Mutex<Option<Eras>>,
    discovered: Mutex<Option<Arc<RawValue>>>,
    /// Its tools' `Mcp-Param-*` declarations, as last listed (none: not yet).
    tool_headers: Mutex<Option<Arc<ToolHeaders>>>,
    detect: tokio::sync::Mutex<()>,
    pool: SessionPool,
    /// The one process of a shared stdio upstream.
    shared_process: tokio::sync::Mutex<Option<Arc<UpstreamSession>>>,
    /// Which node runs the shared process, in a cluster.
    placement: std::sync::OnceLock<Arc<dyn ProcessPlacement>>,
    /// Failed attempts to reach the upstream, and the last error (returned
    /// at once while attempts are held back).
    backoff: Mutex<(backoff::Backoff, Option<UpstreamError>)>,
    /// How its tools are served to clients (kept current with `definition`).
    serving: Mutex<Arc<Serving>>,
    /// Counters exported on `/metrics`.
    pub stats: UpstreamStats,
}

/// How an upstream's tools are served to clients: shaped, and limited.
#[derive(Debug)]
pub struct Serving {
    /// Its tool shapes, by its own tool names.
    pub shaping: Shaping,
    /// Tool calls per principal over all its tools.
    pub rate_limit: RateLimit,
    /// Permits for its tool calls in flight on this node (`None`: no cap).
    pub calls: Option<Arc<tokio::sync::Semaphore>>,
    /// `/u/<name>/mcp` lists the search and call meta-tools instead of the tools.
    pub progressive: bool,
    /// How many (0: no cap): what a changed definition is compared by, to
    /// keep `calls` (and the calls it counts) when the cap stays the same.
    cap: usize,
}

impl Serving {
    /// How `config` says to serve the tools; `previous` keeps its calls in
    /// flight counted when the cap is unchanged.
    fn new(config: &UpstreamConfig, previous: Option<&Serving>) -> Serving {
        let cap = config.max_concurrent_calls;
        let calls = match previous {
            Some(p) if p.cap == cap => p.calls.clone(),
            _ => (cap > 0).then(|| Arc::new(tokio::sync::Semaphore::new(cap))),
        };
        Serving {
            shaping: Shaping::new(&config.shape),
            rate_limit: config.rate_limit,
            calls,
            progressive: config.progressive_discovery,
            cap,
        }
    }

    /// Whether calls go through unchanged and unlimited (its own tool list
    /// and names are the clients').
    pub fn is_plain(&self) -> bool {
        self.shaping.is_empty()
            && !self.rate_limit.is_set()
            && self.calls.is_none()
            && !self.progressive
    }
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
    pub fn new(config: UpstreamConfig) -> Result<Arc<Upstream>, BuildError> {
        let tls = TlsMaterial::read(&config)?;
        let headers = config.resolved_headers().map_err(BuildError::Config)?;
        let endpoint = if config.is_stdio() {
            None
        } else {
            Some(Arc::new(HttpEndpoint::new(&config, &tls, &headers)?))
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
        let eras = match (config.era, wiring) {
            // The 2024-11-05 transport predates the modern era.
            (_, Some(Wiring::Sse)) | (EraPreference::Legacy, _) => Some(Eras::LEGACY),
            (EraPreference::Auto, _) => None,
            (EraPreference::Modern, _) => Some(Eras::MODERN),
        };
        Ok(Arc::new(Upstream {
            name: config.name.as_str().into(),
            endpoint,
            wiring: Mutex::new(wiring),
            eras: Mutex::new(eras),
            discovered: Mutex::new(None),
            tool_headers: Mutex::new(None),
            detect: tokio::sync::Mutex::new(()),
            pool: SessionPool::default(),
            shared_process: tokio::sync::Mutex::new(None),
            placement: std::sync::OnceLock::new(),
            backoff: Mutex::new(Default::default()),
            tls,
            definition: Mutex::new(config.clone()),
            serving: Mutex::new(Arc::new(Serving::new(&config, None))),
            retired: std::sync::atomic::AtomicBool::new(false),
            stats: UpstreamStats {
                healthy: 1.into(),
                ..Default::default()
            },
            config,
        }))
    }

    /// How to reach the upstream over HTTP (`None` for stdio upstreams).
    pub fn endpoint(&self) -> Option<&Arc<HttpEndpoint>> {
        self.endpoint.as_ref()
    }

    /// Its tools' `Mcp-Param-*` declarations as last listed, if listed.
    pub fn tool_headers(&self) -> Option<Arc<ToolHeaders>> {
        lock(&self.tool_headers).clone()
    }

    /// Keeps `table` as its tools' declarations.
    pub fn set_tool_headers(&self, table: Arc<ToolHeaders>) {
        *lock(&self.tool_headers) = Some(table);
    }

    /// The eras the upstream answers, if they are known yet (no probe).
    pub fn known_eras(&self) -> Option<Eras> {
        *lock(&self.eras)
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

    /// Probes the upstream (a span of its own in a traced request).
    async fn detect(&self, credentials: Option<&HeaderValue>) -> Result<Discovery, UpstreamError> {
        let attributes = || vec![spans::upstream_attribute(&self.name)];
        let probe = || self.probe(credentials);
        spans::internal("detect upstream era", attributes, spans::error_text, probe).await
    }

    /// Probes the upstream with `server/discover` over its transport (and,
    /// for `transport = "auto"`, settles the transport).
    async fn probe(&self, credentials: Option<&HeaderValue>) -> Result<Discovery, UpstreamError> {
        let Some(endpoint) = self.endpoint.as_ref() else {
            return discovery::detect_stdio(&self.name, &self.config).await;
        };
        let found = discovery::detect_era(endpoint, self.config.transport, credentials).await?;
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

    /// The definition as operators see it (cosmetic fields current).
    pub fn definition(&self) -> UpstreamConfig {
        lock(&self.definition).clone()
    }

    /// Takes the cosmetic and serving fields of `definition` (which connects
    /// like this one).
    pub fn describe(&self, definition: &UpstreamConfig) {
        *lock(&self.definition) = definition.clone();
        let mut serving = lock(&self.serving);
        *serving = Arc::new(Serving::new(definition, Some(&serving)));
    }

    /// How its tools are served to clients now.
    pub fn serving(&self) -> Arc<Serving> {
        lock(&self.serving).clone()
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

    /// Whether the upstream was replaced or removed.
    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records a health check's result; true when it changed the upstream's health.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.stats
            .healthy
            .swap(i64::from(healthy), std::sync::atomic::Ordering::AcqRel)
            != i64::from(healthy)
    }

    /// How Tether talks to the upstream (Streamable HTTP until detection says otherwise).
    pub fn wiring(&self) -> Wiring {
        lock(&self.wiring).unwrap_or(Wiring::StreamableHttp)
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
        let open = || async {
            if self.runs_one_process() {
                return self.open_on_process(client).await;
            }
            self.open_guarded(client, preferred).await
        };
        let attributes = || vec![spans::upstream_attribute(&self.name)];
        spans::internal("open upstream session", attributes, spans::error_text, open).await
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
    pub fn holding_back(&self) -> bool {
        lock(&self.backoff).0.holding(std::time::Instant::now())
    }

    /// Feeds the outcome of an attempt to reach the upstream into the backoff.
    fn note_attempt<T>(&self, result: &Result<T, UpstreamError>) {
        match result {
            Err(e) if e.is_unreachable() => {
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

    /// A session with the shared process: this node's, or in a cluster the
    /// one another node runs (when that node is found gone, its process is
    /// placed again, maybe here).
    async fn open_on_process(
        self: &Arc<Self>,
        client: &ClientIdentity,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        let Some(placement) = self.placement.get() else {
            return self.shared_process_session().await;
        };
        let mut attempt = 0;
        loop {
            let Some(node) = placement.locate(self).await? else {
                return self.shared_process_session().await;
            };
            match UpstreamSession::open_on_node(self.clone(), node.clone(), client).await {
                Err(UpstreamError::Connect(_)) if attempt == 0 => {
                    placement.unreachable(&node);
                    attempt += 1;
                }
                opened => return opened,
            }
        }
    }

    /// Whether every client session shares one process (a shared stdio upstream).
    pub fn runs_one_process(&self) -> bool {
        self.config.is_stdio() && self.config.shared
    }

    /// In a cluster, lets `placement` decide which node runs the shared
    /// process (set once, when the upstream is built).
    pub fn place_process(&self, placement: Arc<dyn ProcessPlacement>) {
        let _ = self.placement.set(placement);
    }

    /// This node's process of a shared stdio upstream, started (again) when
    /// it is not running; stopped after `idle_timeout_secs` without use.
    pub async fn shared_process_session(
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
        match self.pool.take() {
            Some(s) => Ok((s, false)),
            None => Ok((self.open_session(client, Era::Modern).await?, true)),
        }
    }

    /// Returns a session to the pool; hands it back when the pool is full
    /// (the caller closes it).
    pub fn checkin_pooled(&self, session: Arc<UpstreamSession>) -> Option<Arc<UpstreamSession>> {
        self.pool.give_back(session)
    }

    /// Closes every pooled session and the shared process (shutdown).
    pub async fn drain_pool(&self) {
        let sessions = self.pool.drain();
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
