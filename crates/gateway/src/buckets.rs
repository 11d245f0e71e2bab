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
            // Full buckets of idle keys carry no information.
            let full = Duration::from_secs_f64(burst / rate);
            self.buckets
                .retain(|_, b| now.duration_since(lock(b).at) < full);
        }
        let entry = self.buckets.entry(key).or_insert_with(|| {
            Mutex::new(Bucket {
                tokens: burst,
                at: now,
            })
        });
        let mut bucket = lock(&entry);
        let earned = now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}
