//! Upstream MCP servers: how to reach one, which era it speaks, and the
//! sessions Tether holds with it on behalf of client sessions.

mod client;
mod registry;
mod session;

pub use client::{EventStream, Reply, UpstreamError};
pub use registry::SessionSet;
pub use session::UpstreamSession;

use std::sync::Arc;
use std::sync::Mutex;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::value::RawValue;

use crate::config::{EraPreference, UpstreamConfig};
use crate::metrics::UpstreamStats;
use crate::protocol::Era;
use crate::sync::lock;

/// Who the upstream session is opened for: the identity Tether presents upstream.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The client's `clientInfo` (Implementation object).
    pub info: Box<RawValue>,
    /// The client's capabilities object, as offered to upstreams.
    pub capabilities: Box<RawValue>,
}

impl ClientIdentity {
    /// Tether's own identity, used when no client told us theirs (stateless mode).
    pub fn tether() -> Self {
        ClientIdentity {
            info: crate::jsonrpc::to_raw(&serde_json::json!({
                "name": "tether",
                "version": env!("CARGO_PKG_VERSION"),
            })),
            capabilities: crate::jsonrpc::to_raw(&serde_json::json!({})),
        }
    }
}

/// How long new sessions fail at once after the upstream could not be reached.
const FAIL_FAST: std::time::Duration = std::time::Duration::from_secs(2);

/// Sessionless requests for a `shared = true` upstream reuse at most this many idle sessions.
const POOL_LIMIT: usize = 8;

/// One configured upstream MCP server.
pub struct Upstream {
    /// The configured name.
    pub name: Arc<str>,
    /// The configuration it was built from.
    pub config: UpstreamConfig,
    url: reqwest::Url,
    http: reqwest::Client,
    static_headers: HeaderMap,
    era: Mutex<Option<Era>>,
    discovered: Mutex<Option<Arc<RawValue>>>,
    detect: tokio::sync::Mutex<()>,
    pool: Mutex<Vec<Arc<UpstreamSession>>>,
    unreachable: Mutex<Option<(std::time::Instant, UpstreamError)>>,
    /// Counters exported on `/metrics`.
    pub stats: UpstreamStats,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Upstream {
    /// Builds an upstream from validated configuration.
    pub fn new(config: UpstreamConfig) -> Result<Arc<Upstream>, String> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| e.to_string())?;
        let mut static_headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let mut value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            value.set_sensitive(true);
            static_headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let era = match config.era {
            EraPreference::Auto => None,
            EraPreference::Legacy => Some(Era::Legacy),
            EraPreference::Modern => Some(Era::Modern),
        };
        Ok(Arc::new(Upstream {
            name: config.name.as_str().into(),
            url,
            http,
            static_headers,
            era: Mutex::new(era),
            discovered: Mutex::new(None),
            detect: tokio::sync::Mutex::new(()),
            pool: Mutex::new(Vec::new()),
            unreachable: Mutex::new(None),
            stats: UpstreamStats::default(),
            config,
        }))
    }

    /// The upstream's era, probing it once (concurrent callers share one probe).
    pub async fn era(&self) -> Result<Era, UpstreamError> {
        if let Some(era) = *lock(&self.era) {
            return Ok(era);
        }
        let _guard = self.detect.lock().await;
        if let Some(era) = *lock(&self.era) {
            return Ok(era);
        }
        let found = client::detect_era(self).await?;
        let era = found.era;
        tracing::info!(upstream = %self.name, era = era.as_str(), "detected upstream protocol era");
        *lock(&self.discovered) = found.result.map(Arc::from);
        *lock(&self.era) = Some(era);
        Ok(era)
    }

    /// The modern upstream's `server/discover` result, fetched once and cached.
    pub async fn discover_result(&self) -> Result<Arc<RawValue>, UpstreamError> {
        if let Some(r) = lock(&self.discovered).clone() {
            return Ok(r);
        }
        let found = client::detect_era(self).await?;
        let result: Arc<RawValue> = found.result.map(Arc::from).ok_or_else(|| {
            UpstreamError::Protocol("upstream did not answer server/discover".into())
        })?;
        *lock(&self.discovered) = Some(result.clone());
        Ok(result)
    }

    /// Forgets a detected era so the next use probes again (after the upstream changed).
    pub fn forget_era(&self) {
        if self.config.era == EraPreference::Auto {
            *lock(&self.era) = None;
        }
    }

    /// Opens a new upstream session for `client`. Right after the upstream
    /// could not be reached, further attempts fail at once for a moment, so a
    /// dead or hanging upstream does not make every caller wait out a timeout.
    pub async fn open_session(
        self: &Arc<Self>,
        client: &ClientIdentity,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        if let Some((since, e)) = lock(&self.unreachable).clone()
            && since.elapsed() < FAIL_FAST
        {
            return Err(e);
        }
        let result = match self.era().await {
            Ok(era) => UpstreamSession::open(self.clone(), era, client).await,
            Err(e) => Err(e),
        };
        match &result {
            Err(e @ (UpstreamError::Connect(_) | UpstreamError::Timeout)) => {
                *lock(&self.unreachable) = Some((std::time::Instant::now(), e.clone()));
            }
            Err(e) if e.suggests_era_change() => self.forget_era(),
            _ => *lock(&self.unreachable) = None,
        }
        result
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
            _ => Ok((self.open_session(client).await?, true)),
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

    /// Closes every pooled session (shutdown).
    pub async fn drain_pool(&self) {
        let sessions: Vec<_> = std::mem::take(&mut *lock(&self.pool));
        futures_util::future::join_all(sessions.iter().map(|s| s.close())).await;
    }
}
