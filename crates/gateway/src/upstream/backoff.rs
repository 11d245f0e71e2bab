//! The reconnect policy every upstream transport shares: capped exponential
//! backoff with jitter, and log throttling so an upstream that stays down all
//! night writes a handful of lines, not thousands.

use std::time::{Duration, Instant};

/// Waits after consecutive failures, in seconds; the last one repeats.
const STEPS: [u64; 7] = [1, 2, 4, 8, 16, 30, 60];
/// Each wait varies by up to this fraction either way, so many nodes or
/// sessions do not retry in lockstep.
const JITTER: f64 = 0.2;

/// Failures of one upstream and when the next attempt is allowed.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// Records a failure at `now`: returns the wait before the next attempt
    /// and how many failures in a row that makes.
    pub fn failed(&mut self, now: Instant) -> (Duration, u32) {
        let step = STEPS[(self.failures as usize).min(STEPS.len() - 1)];
        self.failures = self.failures.saturating_add(1);
        let wait = jittered(Duration::from_secs(step), random_unit());
        self.until = Some(now + wait);
        (wait, self.failures)
    }

    /// Records a success; returns the failures it ends, if any.
    pub fn recovered(&mut self) -> Option<u32> {
        self.until = None;
        Some(std::mem::take(&mut self.failures)).filter(|n| *n > 0)
    }

    /// Whether attempts are held back at `now`.
    pub fn holding(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

/// `base` moved by up to ±[`JITTER`], `unit` being uniform in `[0, 1)`.
fn jittered(base: Duration, unit: f64) -> Duration {
    base.mul_f64(1.0 + JITTER * (2.0 * unit - 1.0))
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    // Jitter needs no cryptographic strength; without randomness it is zero.
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// Lets through the first few of a run of similar log lines, then only every
/// `every`-th, and says how many were held back.
#[derive(Debug)]
pub struct LogThrottle {
    first: u64,
    every: u64,
    seen: u64,
}

impl LogThrottle {
    /// Logs the first `first` events, then one in `every`.
    pub const fn new(first: u64, every: u64) -> Self {
        LogThrottle {
            first,
            every,
            seen: 0,
        }
    }

    /// Counts an event; `true` when it should be logged.
    pub fn allow(&mut self) -> bool {
        self.seen += 1;
        self.seen <= self.first || (self.seen - self.first).is_multiple_of(self.every.max(1))
    }

    /// Events counted since the last reset.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// Whether the `n`-th failure in a row of one upstream is worth a log line:
/// the first three, then every sixtieth (about hourly at the capped wait).
pub fn worth_logging(n: u32) -> bool {
    n <= 3 || n.is_multiple_of(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_a_cap_with_bounded_jitter() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..10 {
            waits.push(b.failed(now).0.as_secs_f64());
        }
        let expected = [1., 2., 4., 8., 16., 30., 60., 60., 60., 60.];
        for (w, e) in waits.iter().zip(expected) {
            assert!((e * 0.8..=e * 1.2).contains(w), "{w} not within 20% of {e}");
        }
        assert!(b.holding(now));
        assert!(!b.holding(now + Duration::from_secs(73)));
        assert_eq!(b.recovered(), Some(10));
        assert!(!b.holding(now));
        assert_eq!(b.recovered(), None);
        assert!((0.8..=1.2).contains(&b.failed(now).0.as_secs_f64()));
    }

    #[test]
    fn jitter_spans_both_directions() {
        let base = Duration::from_secs(10);
        assert_eq!(jittered(base, 0.5), base);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(8));
        assert!(jittered(base, 0.999_999) > Duration::from_millis(11_999));
    }

    #[test]
    fn a_night_of_failures_logs_a_handful_of_lines() {
        // One attempt a minute for ten hours.
        let logged = (1..=600).filter(|n| worth_logging(*n)).count();
        assert_eq!(logged, 3 + 10);
        let mut t = LogThrottle::new(5, 100);
        let allowed = (0..1000).filter(|_| t.allow()).count();
        assert_eq!(allowed, 5 + 9);
        assert_eq!(t.seen(), 1000);
    }
}
