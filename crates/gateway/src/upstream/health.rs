//! Health checks: each upstream is probed on connections of its own (never
//! a client's session) every `health_interval_secs`; an unhealthy upstream
//! leaves the federated catalogue until it answers again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::backoff;
use super::{Upstream, UpstreamError, Wiring, client, sse_client};

/// The longest a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Called when an upstream turns healthy (`true`) or unhealthy.
pub type HealthChange = Arc<dyn Fn(&Arc<Upstream>, bool) + Send + Sync>;

impl Upstream {
    /// Probes the upstream once: any MCP or HTTP answer means it is up; no
    /// connection, no answer in time or a 5xx means it is not. A stdio
    /// upstream is up unless starting it keeps failing.
    pub async fn probe_health(&self) -> bool {
        let probe = async {
            match self.wiring() {
                Wiring::Stdio => !self.holding_back(),
                Wiring::Sse => sse_client::probe(self).await,
                Wiring::StreamableHttp => match client::detect_era(self, None).await {
                    Ok(_) => true,
                    Err(UpstreamError::Status { status, .. }) => status < 500,
                    Err(_) => false,
                },
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .unwrap_or(false)
    }

    /// Records a probe result; true when it changed the upstream's health.
    fn set_healthy(&self, healthy: bool) -> bool {
        self.stats
            .healthy
            .swap(i64::from(healthy), Ordering::AcqRel)
            != i64::from(healthy)
    }

    /// Starts the upstream's health checks (none when its interval is 0);
    /// they stop when it is retired or dropped.
    pub fn watch_health(self: &Arc<Self>, on_change: HealthChange) {
        let interval = Duration::from_secs(self.config.health_interval_secs);
        if interval.is_zero() {
            return;
        }
        tokio::spawn(watch(Arc::downgrade(self), interval, on_change));
    }
}

async fn watch(upstream: Weak<Upstream>, interval: Duration, on_change: HealthChange) {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(interval).await;
        let Some(up) = upstream.upgrade() else { return };
        if up.retired.load(Ordering::Acquire) {
            return;
        }
        let healthy = up.probe_health().await;
        if healthy {
            failures = 0;
        } else {
            failures += 1;
        }
        if up.set_healthy(healthy) {
            if healthy {
                tracing::info!(upstream = %up.name, "upstream healthy again: back in the catalogue");
            } else {
                tracing::warn!(upstream = %up.name, "upstream unhealthy: left out of the catalogue until it recovers");
            }
            on_change(&up, healthy);
        } else if !healthy && backoff::worth_logging(failures) {
            tracing::warn!(upstream = %up.name, failed_checks = failures, "upstream still unhealthy");
        }
    }
}
