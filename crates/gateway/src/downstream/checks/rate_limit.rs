//! Requests per principal: a token bucket each, so one principal's flood is
//! answered 429 (with `Retry-After`) while everyone else is served.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use dashmap::DashMap;
use http::{HeaderValue, StatusCode, header};
use tether_wire::jsonrpc::code;

use super::layer::{Check, Verdict};
use crate::auth::Caller;
use crate::downstream::reply;
use crate::sync::lock;

/// The check: a caller (see [`authenticate`](super::authenticate)) that used
/// up its rate gets 429 with `Retry-After`.
#[derive(Clone)]
pub struct LimitRate(pub Arc<RateLimiter>);

impl Check for LimitRate {
    type Admitted = ();

    fn admit(&self, req: &mut Request) -> Verdict<()> {
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

/// Buckets kept before idle ones are forgotten.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The per-principal limiter (off when the rate is 0).
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<Arc<str>, Mutex<Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second, up to `burst` at once (0: the rate).
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = if burst == 0 { rate } else { burst };
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        }
    }

    /// Takes one request's token for `principal`; `Err(wait)` when there is none.
    pub fn take(&self, principal: &Arc<str>) -> Result<(), Duration> {
        self.take_at(principal, Instant::now())
    }

    fn take_at(&self, principal: &Arc<str>, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        if self.buckets.len() >= MAX_BUCKETS {
            // Full buckets of idle principals carry no information.
            let full = Duration::from_secs_f64(self.burst / self.rate);
            self.buckets
                .retain(|_, b| now.duration_since(lock(b).at) < full);
        }
        let entry = self.buckets.entry(principal.clone()).or_insert_with(|| {
            Mutex::new(Bucket {
                tokens: self.burst,
                at: now,
            })
        });
        let mut bucket = lock(&entry);
        let earned = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + earned).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_limited_per_principal() {
        let limiter = RateLimiter::new(10, 5);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.take_at(&a, t0).is_ok());
        }
        let wait = limiter.take_at(&a, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.take_at(&b, t0).is_ok(), "others are unaffected");
        assert!(limiter.take_at(&a, t0 + Duration::from_millis(100)).is_ok());
        assert!(RateLimiter::new(0, 0).take_at(&a, t0).is_ok(), "off");
    }
}
