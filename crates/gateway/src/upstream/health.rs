//! Health checks: each upstream is probed on connections of its own (never
//! a client's session) every `health_interval_secs`; an unhealthy upstream
//! leaves the federated catalogue until it answers again.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::backoff;
use super::error::UpstreamError;
use super::{Upstream, Wiring, discovery, sse_transport};

/// The longest a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Called when an upstream turns healthy (`true`) or unhealthy.
pub type HealthChange = Arc<dyn Fn(&Arc<Upstream>, bool) + Send + Sync>;

/// Probes `upstream` once: any MCP or HTTP answer means it is up; no
/// connection, no answer in time or a 5xx means it is not. A stdio upstream
/// is up unless starting it keeps failing.
pub async fn probe(upstream: &Upstream) -> bool {
    let probe = async {
        let Some(endpoint) = upstream.endpoint() else {
            return !upstream.holding_back();
        };
        match upstream.wiring() {
            Wiring::Stdio => !upstream.holding_back(),
            Wiring::Sse => sse_transport::probe(endpoint).await,
            Wiring::StreamableHttp => {
                match discovery::detect_era(endpoint, upstream.config.transport, None).await {
                    Ok(_) => true,
                    Err(UpstreamError::Status { status, .. }) => status < 500,
                    Err(_) => false,
                }
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or(false)
}

/// Starts the upstream's health checks (none when its interval is 0); they
/// stop when it is retired or dropped.
pub fn watch(upstream: &Arc<Upstream>, on_change: HealthChange) {
    let interval = Duration::from_secs(upstream.config.health_interval_secs);
    if interval.is_zero() {
        return;
    }
    tokio::spawn(check_every(Arc::downgrade(upstream), interval, on_change));
}

async fn check_every(upstream: Weak<Upstream>, interval: Duration, on_change: HealthChange) {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(interval).await;
        let Some(up) = upstream.upgrade() else { return };
        if up.is_retired() {
            return;
        }
        let healthy = probe(&up).await;
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
