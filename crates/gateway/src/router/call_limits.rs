//! Limits on tool calls, counted on the real tool whatever name or endpoint
//! the call came through: token buckets per principal for an upstream's
//! tools together and for one tool, and a cap on an upstream's calls in
//! flight on this node. In a cluster each node allows its share of a rate
//! (the rate divided by the live nodes), as for the per-principal request
//! rate. A refused call gets -32029 with `data.retryAfterMs`, and over
//! Streamable HTTP a 429 with `Retry-After`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_wire::jsonrpc::{ErrorObject, code};
use tokio::sync::OwnedSemaphorePermit;

use crate::buckets::TokenBuckets;
use crate::cluster::Cluster;
use crate::config::RateLimit;
use crate::upstream::{Serving, Upstream};

/// How soon a call refused for the concurrency cap is told to try again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// What a bucket counts: a principal's calls of an upstream's tools (`tool`
/// empty) or of one tool.
#[derive(Debug, Hash, PartialEq, Eq)]
struct Key {
    principal: Arc<str>,
    upstream: Arc<str>,
    tool: String,
}

/// The call limits of every upstream (see the module documentation).
pub struct CallLimits {
    buckets: TokenBuckets<Key>,
    cluster: Option<Arc<Cluster>>,
}

/// A call admitted under a concurrency cap: the cap counts it until this is dropped.
pub type CallPermit = Option<OwnedSemaphorePermit>;

impl CallLimits {
    /// The limits; in `cluster`, rates are shared by its live nodes.
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        CallLimits {
            buckets: TokenBuckets::default(),
            cluster,
        }
    }

    /// Admits `principal`'s call of `tool` (the upstream's own name) on
    /// `upstream` (served as `serving` says), or says why not and when to
    /// try again, naming the tool as the client did (`exposed`). A refused
    /// call takes nothing: the rates are looked at, then the cap's place
    /// taken, then the rates' tokens.
    pub fn admit(
        &self,
        principal: &Arc<str>,
        (upstream, serving): (&Upstream, &Serving),
        tool: &str,
        exposed: &str,
    ) -> Result<CallPermit, ErrorObject> {
        let limits = [
            (serving.rate_limit, ""),
            (serving.shaping.rate_limit(tool), tool),
        ];
        let now = Instant::now();
        let buckets = limits.map(|(limit, counted)| {
            limit.is_set().then(|| {
                let key = Key {
                    principal: principal.clone(),
                    upstream: upstream.name.clone(),
                    tool: counted.to_owned(),
                };
                (key, self.rate_and_burst(limit), limit.per_minute)
            })
        });
        for (key, (rate, burst), per_minute) in buckets.iter().flatten() {
            if let Err(wait) = self.buckets.peek(key, *rate, *burst, now) {
                let scope = if key.tool.is_empty() {
                    format!("the tools of the upstream behind {exposed}")
                } else {
                    format!("tool {exposed}")
                };
                let why = format!(
                    "Rate limit exceeded: {per_minute} calls a minute for {scope}; retry later"
                );
                return Err(refusal(why, wait, "rate"));
            }
        }
        let permit = match &serving.calls {
            None => None,
            Some(calls) => match calls.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let why = format!(
                        "Concurrency limit reached: the upstream behind {exposed} has as many tool calls in flight as it allows; retry later"
                    );
                    return Err(refusal(why, BUSY_RETRY, "concurrency"));
                }
            },
        };
        for (key, (rate, burst), _) in buckets.into_iter().flatten() {
            if let Err(wait) = self.buckets.take(key, rate, burst, now) {
                // Taken by a call of the same principal since the look.
                let why = format!("Rate limit exceeded for {exposed}; retry later");
                return Err(refusal(why, wait, "rate"));
            }
        }
        Ok(permit)
    }

    /// A limit's refill rate (a second) and burst on this node: its share of
    /// the cluster's.
    fn rate_and_burst(&self, limit: RateLimit) -> (f64, f64) {
        let nodes = self.cluster.as_ref().map_or(1, |c| c.live_nodes()).max(1) as f64;
        let burst = if limit.burst == 0 {
            limit.per_minute
        } else {
            limit.burst
        };
        let rate = f64::from(limit.per_minute) / 60.0 / nodes;
        (rate, (f64::from(burst) / nodes).max(1.0))
    }
}

/// The error refusing a call: -32029, saying when to retry.
fn refusal(message: String, wait: Duration, limit: &str) -> ErrorObject {
    let retry_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    ErrorObject::new(code::LIMIT_EXCEEDED, message)
        .with_data(json!({ "retryAfterMs": retry_ms, "limit": limit }))
}

/// How long a refusal says to wait before retrying, if it is one.
pub fn retry_after(error: &ErrorObject) -> Option<Duration> {
    if error.code != code::LIMIT_EXCEEDED {
        return None;
    }
    let ms = error.data.as_ref()?.get("retryAfterMs")?.as_u64()?;
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    fn upstream(mut def: serde_json::Value) -> Arc<Upstream> {
        def["name"] = "u".into();
        def["url"] = "http://127.0.0.1:1/mcp".into();
        Upstream::new(serde_json::from_value::<UpstreamConfig>(def).unwrap()).unwrap()
    }

    #[test]
    fn a_tools_rate_is_per_principal_and_per_tool() {
        let up = upstream(json!({"shape": {"t": {"rate_limit": {"per_minute": 2}}}}));
        let serving = up.serving();
        let limits = CallLimits::new(None);
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        for _ in 0..2 {
            assert!(limits.admit(&alice, (&up, &serving), "t", "t").is_ok());
        }
        let refused = limits.admit(&alice, (&up, &serving), "t", "t").unwrap_err();
        assert_eq!(refused.code, code::LIMIT_EXCEEDED);
        let wait = retry_after(&refused).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            limits.admit(&bob, (&up, &serving), "t", "t").is_ok(),
            "another principal"
        );
        assert!(
            limits
                .admit(&alice, (&up, &serving), "other", "other")
                .is_ok(),
            "another tool"
        );
    }

    #[test]
    fn an_upstreams_rate_counts_all_its_tools() {
        let up = upstream(json!({"rate_limit": {"per_minute": 60, "burst": 2}}));
        let serving = up.serving();
        let limits = CallLimits::new(None);
        let alice: Arc<str> = "alice".into();
        assert!(limits.admit(&alice, (&up, &serving), "a", "a").is_ok());
        assert!(limits.admit(&alice, (&up, &serving), "b", "b").is_ok());
        assert!(limits.admit(&alice, (&up, &serving), "c", "c").is_err());
    }

    #[test]
    fn a_refused_call_takes_nothing() {
        let up = upstream(json!({
            "rate_limit": {"per_minute": 6, "burst": 2},
            "max_concurrent_calls": 1,
            "shape": {"t": {"rate_limit": {"per_minute": 1}}}
        }));
        let serving = up.serving();
        let limits = CallLimits::new(None);
        let alice: Arc<str> = "alice".into();
        let held = limits.admit(&alice, (&up, &serving), "t", "t").unwrap();
        // Refused by the tool's rate, then by the cap: the upstream's bucket keeps its token.
        assert!(limits.admit(&alice, (&up, &serving), "t", "t").is_err());
        assert!(limits.admit(&alice, (&up, &serving), "u", "u").is_err());
        drop(held);
        assert!(limits.admit(&alice, (&up, &serving), "u", "u").is_ok());
        let empty = limits.admit(&alice, (&up, &serving), "u", "u").unwrap_err();
        let wait = retry_after(&empty).unwrap();
        assert!(
            wait > Duration::from_secs(5),
            "the upstream's 2 are used: {wait:?}"
        );
    }

    #[test]
    fn the_cap_counts_calls_in_flight() {
        let up = upstream(json!({"max_concurrent_calls": 1}));
        let serving = up.serving();
        let limits = CallLimits::new(None);
        let alice: Arc<str> = "alice".into();
        let first = limits.admit(&alice, (&up, &serving), "a", "a").unwrap();
        assert!(first.is_some());
        let busy = limits.admit(&alice, (&up, &serving), "a", "a").unwrap_err();
        assert_eq!(retry_after(&busy), Some(BUSY_RETRY));
        drop(first);
        assert!(limits.admit(&alice, (&up, &serving), "a", "a").is_ok());
    }
}
