//! Upstream MCP servers: how to reach one, which era it speaks, and the
//! sessions Tether holds with it on behalf of client sessions.

mod client;
mod registry;
mod session;

pub use client::{EventStream, PostHeaders, Reply, UpstreamError, classify_reply, post, post_raw};
pub use registry::SessionSet;
pub use session::{UpstreamSession, first_response};

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
    eras: Mutex<Option<Eras>>,
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
        let eras = match config.era {
            EraPreference::Auto => None,
            EraPreference::Legacy => Some(Eras::LEGACY),
            EraPreference::Modern => Some(Eras::MODERN),
        };
        Ok(Arc::new(Upstream {
            name: config.name.as_str().into(),
            url,
            http,
            static_headers,
            eras: Mutex::new(eras),
            discovered: Mutex::new(None),
            detect: tokio::sync::Mutex::new(()),
            pool: Mutex::new(Vec::new()),
            unreachable: Mutex::new(None),
            stats: UpstreamStats::default(),
            config,
        }))
    }

    /// The eras the upstream answers, probing it once (concurrent callers
    /// share one probe).
    pub async fn eras(&self) -> Result<Eras, UpstreamError> {
        if let Some(eras) = *lock(&self.eras) {
            return Ok(eras);
        }
        let _guard = self.detect.lock().await;
        if let Some(eras) = *lock(&self.eras) {
            return Ok(eras);
        }
        let found = client::detect_era(self).await?;
        let eras = found.eras;
        tracing::info!(upstream = %self.name, legacy = eras.legacy, modern = eras.modern, "detected upstream protocol eras");
        *lock(&self.discovered) = found.result.map(Arc::from);
        *lock(&self.eras) = Some(eras);
        Ok(eras)
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

    /// Forgets the detected eras so the next use probes again (after the upstream changed).
    pub fn forget_era(&self) {
        if self.config.era == EraPreference::Auto {
            *lock(&self.eras) = None;
        }
    }

    /// Opens a new upstream session for `client`, in `preferred` era when the
    /// upstream answers both (legacy client sessions prefer legacy: a dual-era
    /// server keeps per-session state only there). Right after the upstream
    /// could not be reached, further attempts fail at once for a moment, so a
    /// dead or hanging upstream does not make every caller wait out a timeout.
    pub async fn open_session(
        self: &Arc<Self>,
        client: &ClientIdentity,
        preferred: Era,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        if let Some((since, e)) = lock(&self.unreachable).clone()
            && since.elapsed() < FAIL_FAST
        {
            return Err(e);
        }
        let result = match self.eras().await {
            Ok(eras) => self.open_in(eras, preferred, client).await,
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

    /// Closes every pooled session (shutdown).
    pub async fn drain_pool(&self) {
        let sessions: Vec<_> = std::mem::take(&mut *lock(&self.pool));
        futures_util::future::join_all(sessions.iter().map(|s| s.close())).await;
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
