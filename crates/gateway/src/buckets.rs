//! Token buckets by key, bounded in number: the rate limits per principal
//! (`downstream/checks/rate_limit.rs`) and per principal and tool
//! (`router/call_limits.rs`).

use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::sync::lock;

/// Buckets kept before idle ones are forgotten.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// How long it takes to fill up from empty (its own rate and burst).
    fills_in: Duration,
}

impl Bucket {
    /// The tokens it holds at `now`, refilled at `rate` up to `burst`.
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let earned = now.duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(burst);
        self.at = now;
        self.fills_in = Duration::from_secs_f64(burst / rate);
    }

    /// How long until it holds a whole token, at `rate`.
    fn wait(&self, rate: f64) -> Duration {
        Duration::from_secs_f64((1.0 - self.tokens) / rate)
    }
}

/// One bucket per key, each refilled at its own rate.
pub struct TokenBuckets<K: Hash + Eq> {
    buckets: DashMap<K, Mutex<Bucket>>,
}

impl<K: Hash + Eq> Default for TokenBuckets<K> {
    fn default() -> Self {
        TokenBuckets {
            buckets: DashMap::new(),
        }
    }
}

impl<K: Hash + Eq> TokenBuckets<K> {
    /// Takes a token from `key`'s bucket, refilled at `rate` a second and
    /// holding at most `burst` (a new bucket is full); `Err(wait)` until the
    /// next token when there is none.
    pub fn take(&self, key: K, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_BUCKETS {
            // A full bucket carries no information: forget those of idle keys.
            self.buckets.retain(|_, b| {
                let b = lock(b);
                now.duration_since(b.at) < b.fills_in
            });
        }
        let entry = self.buckets.entry(key).or_insert_with(|| {
            Mutex::new(Bucket {
                tokens: burst,
                at: now,
                fills_in: Duration::ZERO,
            })
        });
        let mut bucket = lock(&entry);
        bucket.refill(rate, burst, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(bucket.wait(rate))
        }
    }

    /// Whether [`TokenBuckets::take`] would succeed now, taking nothing.
    pub fn peek(&self, key: &K, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let Some(entry) = self.buckets.get(key) else {
            return Ok(()); // A new bucket is full.
        };
        let mut bucket = lock(&entry);
        bucket.refill(rate, burst, now);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(bucket.wait(rate))
        }
    }
}
