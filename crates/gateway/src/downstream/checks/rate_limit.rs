//! Requests per principal: a token bucket each, so one principal's flood is
//! answered 429 (with `Retry-After`) while everyone else is served. In a
//! cluster each node allows its share, the rate divided by the live nodes:
//! exact when the load balancer spreads a principal's requests evenly over
//! the nodes (round-robin does), stricter when it does not. Requests passed
//! on between nodes were counted where they arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use http::{HeaderValue, StatusCode, header};
use tether_wire::jsonrpc::code;

use super::layer::{Check, Verdict};
use crate::auth::Caller;
use crate::buckets::TokenBuckets;
use crate::cluster::Cluster;
use crate::downstream::pass_on::PassedOn;
use crate::downstream::reply;

/// The check: a caller (see [`authenticate`](super::authenticate)) that used
/// up its rate gets 429 with `Retry-After`.
#[derive(Clone)]
pub struct LimitRate(pub Arc<RateLimiter>);

impl Check for LimitRate {
    type Admitted = ();

    fn admit(&self, req: &mut Request) -> Verdict<()> {
        if req.extensions().get::<PassedOn>().is_some() {
            return Verdict::Pass(());
        }
        let Some(caller) = req.extensions().get::<Caller>() else {
            return Verdict::Pass(());
        };
        let Err(wait) = self.0.take(&caller.principal) else {
            return Verdict::Pass(());
        };
        let mut r = reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            code::INTERNAL_ERROR,
            "too many requests from this principal; retry later",
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Verdict::Refuse(r)
    }
}

/// The per-principal limiter (off when the rate is 0).
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: TokenBuckets<Arc<str>>,
    /// The cluster whose live nodes share the rate.
    cluster: Option<Arc<Cluster>>,
}

impl RateLimiter {
    /// `rate` requests per second, up to `burst` at once (0: the rate),
    /// shared by the live nodes of `cluster`.
    pub fn new(rate: u32, burst: u32, cluster: Option<Arc<Cluster>>) -> Self {
        let burst = if burst == 0 { rate } else { burst };
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: TokenBuckets::default(),
            cluster,
        }
    }

    /// Takes one request's token for `principal`; `Err(wait)` when there is none.
    pub fn take(&self, principal: &Arc<str>) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let nodes = self.cluster.as_ref().map_or(1, |c| c.live_nodes());
        self.take_at(principal, Instant::now(), nodes)
    }

    /// [`RateLimiter::take`] at `now`, this node allowing a `1/nodes` share.
    fn take_at(&self, principal: &Arc<str>, now: Instant, nodes: usize) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let share = nodes.max(1) as f64;
        let (rate, burst) = (self.rate / share, (self.burst / share).max(1.0));
        self.buckets.take(principal.clone(), rate, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_limited_per_principal() {
        let limiter = RateLimiter::new(10, 5, None);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.take_at(&a, t0, 1).is_ok());
        }
        let wait = limiter.take_at(&a, t0, 1).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.take_at(&b, t0, 1).is_ok(), "others are unaffected");
        assert!(
            limiter
                .take_at(&a, t0 + Duration::from_millis(100), 1)
                .is_ok()
        );
        assert!(
            RateLimiter::new(0, 0, None).take_at(&a, t0, 1).is_ok(),
            "off"
        );
    }

    #[test]
    fn each_node_allows_its_share() {
        let limiter = RateLimiter::new(30, 30, None);
        let a: Arc<str> = "a".into();
        let t0 = Instant::now();
        let allowed = (0..30)
            .filter(|_| limiter.take_at(&a, t0, 3).is_ok())
            .count();
        assert_eq!(allowed, 10, "a third of the burst on each of 3 nodes");
        let wait = limiter.take_at(&a, t0, 3).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "a third of the rate: {wait:?}"
        );
    }
}
