//! Prometheus metrics kept in fixed arrays of atomics: recording is lock-free
//! and allocation-free on the hot path; `/metrics` renders the text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tether_wire::jsonrpc::{Incoming, Method};
use tether_wire::method::CLIENT_REQUESTS;

/// What a downstream request counts as, beyond the JSON-RPC request methods
/// tracked by name; in parentheses (but `other`) so no client-chosen method
/// name can land in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A request for a method not tracked by name.
    OtherMethod,
    /// A POSTed notification.
    Notification,
    /// A POSTed response (to a server→client request).
    Response,
    /// A GET opening a session's stream.
    Stream,
    /// A DELETE ending a session.
    Delete,
    /// Refused before a message was parsed (checks, bad body, bad method).
    Rejected,
}

/// The `method` label values of the non-method kinds, in [`Kind`] order.
const KIND_LABELS: [&str; 6] = [
    "other",
    "(notification)",
    "(response)",
    "(stream)",
    "(delete)",
    "(rejected)",
];

/// Rows of the request metrics: the tracked methods, then the kinds.
const ROWS: usize = CLIENT_REQUESTS.len() + KIND_LABELS.len();

/// The `method` label of a downstream request: a row of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

impl Label {
    /// A GET opening a session's stream.
    pub const STREAM: Label = Label::kind(Kind::Stream);
    /// A DELETE ending a session.
    pub const DELETE: Label = Label::kind(Kind::Delete);
    /// Refused before a message was parsed.
    pub const REJECTED: Label = Label::kind(Kind::Rejected);

    const fn kind(kind: Kind) -> Label {
        Label(CLIENT_REQUESTS.len() + kind as usize)
    }

    /// A request for `method`.
    pub fn request(method: &Method) -> Label {
        method
            .client_request_index()
            .map_or(Label::kind(Kind::OtherMethod), Label)
    }

    /// What a parsed client message counts as.
    pub fn of(incoming: &Incoming) -> Label {
        match incoming {
            Incoming::Request(r) => Label::request(&r.method),
            Incoming::Notification(_) => Label::kind(Kind::Notification),
            Incoming::Response(_) => Label::kind(Kind::Response),
        }
    }

    /// The label's value.
    fn name(self) -> &'static str {
        match CLIENT_REQUESTS.get(self.0) {
            Some(method) => method.as_str(),
            None => KIND_LABELS[self.0 - CLIENT_REQUESTS.len()],
        }
    }
}

/// HTTP statuses tracked by value; anything else lands in the last slot (`other`).
const STATUSES: &[u16] = &[
    200, 202, 400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 421, 429, 431, 500, 502, 503, 504,
    0,
];

/// Histogram bucket upper bounds in microseconds.
const BUCKETS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len() - 1)
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, us: u64) {
        if let Some(i) = BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// Per-upstream counters, owned by each upstream and rendered with its name.
#[derive(Default, Debug)]
pub struct UpstreamStats {
    /// Upstream sessions opened (initialize or modern first use).
    pub sessions_created: AtomicU64,
    /// Upstream sessions currently open.
    pub sessions_live: AtomicI64,
    /// Requests sent (their replies' heads received, or failed).
    pub requests: AtomicU64,
    /// Microseconds from sending a request to its reply's head, summed.
    pub latency_us: AtomicU64,
    /// Requests that failed at the transport or HTTP level.
    pub errors: AtomicU64,
    /// Idle upstream sessions probed before reuse.
    pub sessions_validated: AtomicU64,
    /// Idle upstream sessions replaced because their probe failed.
    pub sessions_replaced: AtomicU64,
    /// 1 while the last health check succeeded.
    pub healthy: AtomicI64,
}

impl UpstreamStats {
    /// Records one request sent to the upstream: its time to the reply's
    /// head, and whether it failed.
    pub fn record(&self, elapsed: Duration, failed: bool) {
        self.requests.fetch_add(1, Relaxed);
        self.latency_us.fetch_add(micros(elapsed), Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
    }
}

fn micros(elapsed: Duration) -> u64 {
    elapsed.as_micros().min(u64::MAX as u128) as u64
}

/// Downstream requests summed over every method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Of which with an HTTP status of 400 or more.
    pub errors: u64,
    /// Their latencies summed, in microseconds.
    pub latency_us: u64,
}

/// Process-wide metrics.
pub struct Metrics {
    started: std::time::Instant,
    requests: Vec<[AtomicU64; STATUSES.len()]>,
    latency: Vec<Histogram>,
    /// Client sessions currently held.
    pub downstream_sessions: AtomicI64,
    /// Names a list had twice: several upstreams' in a federated catalogue
    /// (naming = none / on-collision), or an alias taking a tool's name.
    pub catalog_collisions: AtomicU64,
    /// Requests passed on to the node serving them, answered.
    pub passed_on: AtomicU64,
    /// Requests passed on whose node stopped answering (outcome unknown).
    pub passed_on_failed: AtomicU64,
    /// Client sessions this node adopted from a node that left or died.
    pub sessions_adopted: AtomicU64,
    /// Upstream results served from the cache.
    pub cache_hits: AtomicU64,
    /// Cacheable upstream requests the cache could not answer.
    pub cache_misses: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: std::time::Instant::now(),
            requests: (0..ROWS).map(|_| Default::default()).collect(),
            latency: (0..ROWS).map(|_| Histogram::default()).collect(),
            downstream_sessions: AtomicI64::new(0),
            catalog_collisions: AtomicU64::new(0),
            passed_on: AtomicU64::new(0),
            passed_on_failed: AtomicU64::new(0),
            sessions_adopted: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records one downstream request.
    pub fn record(&self, label: Label, status: u16, elapsed: Duration) {
        self.requests[label.0][status_slot(status)].fetch_add(1, Relaxed);
        self.latency[label.0].observe(micros(elapsed));
    }

    /// How long since the metrics began (the process started).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every downstream request so far, summed over methods.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for (row, histogram) in self.requests.iter().zip(&self.latency) {
            for (status, n) in STATUSES.iter().zip(row) {
                let n = n.load(Relaxed);
                totals.requests += n;
                if *status >= 400 {
                    totals.errors += n;
                }
            }
            totals.latency_us += histogram.sum_us.load(Relaxed);
        }
        totals
    }

    /// Renders the Prometheus text exposition format.
    pub fn render<'a>(
        &self,
        upstreams: impl Iterator<Item = (&'a str, &'a UpstreamStats)>,
    ) -> String {
        let mut out = String::with_capacity(8192);
        let spans = crate::telemetry::counts();
        out.push_str("# HELP tether_requests_total Downstream MCP requests by JSON-RPC method and HTTP status.\n# TYPE tether_requests_total counter\n");
        for (i, row) in self.requests.iter().enumerate() {
            let m = Label(i).name();
            for (s, n) in STATUSES.iter().zip(row) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let status = if *s == 0 {
                        "other".to_string()
                    } else {
                        s.to_string()
                    };
                    let _ = writeln!(
                        out,
                        "tether_requests_total{{method=\"{m}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP tether_request_duration_seconds Downstream request latency until the response head (SSE streams: until the stream starts).\n# TYPE tether_request_duration_seconds histogram\n");
        for (i, h) in self.latency.iter().enumerate() {
            let m = Label(i).name();
            let count = h.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (b, n) in BUCKETS_US.iter().zip(&h.buckets) {
                cumulative += n.load(Relaxed);
                let le = *b as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "tether_request_duration_seconds_bucket{{method=\"{m}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "tether_request_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "tether_request_duration_seconds_sum{{method=\"{m}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "tether_request_duration_seconds_count{{method=\"{m}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tether_downstream_sessions Client sessions currently held.\n# TYPE tether_downstream_sessions gauge\ntether_downstream_sessions {}",
            self.downstream_sessions.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tether_catalog_collisions_total Names a tool list had twice: shared by several upstreams in a federated catalogue, or an alias taking another tool's name (counted per list built).\n# TYPE tether_catalog_collisions_total counter\ntether_catalog_collisions_total {}",
            self.catalog_collisions.load(Relaxed)
        );
        for (name, help, value) in [
            (
                "tether_passed_on_total",
                "Requests passed on to the cluster node serving them.",
                &self.passed_on,
            ),
            (
                "tether_passed_on_failed_total",
                "Requests passed on whose node stopped answering (outcome unknown).",
                &self.passed_on_failed,
            ),
            (
                "tether_sessions_adopted_total",
                "Client sessions adopted from a cluster node that left or died.",
                &self.sessions_adopted,
            ),
            (
                "tether_cache_hits_total",
                "Upstream list and resources/read results served from the cache.",
                &self.cache_hits,
            ),
            (
                "tether_cache_misses_total",
                "Cacheable upstream requests the cache could not answer.",
                &self.cache_misses,
            ),
            (
                "tether_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
                &spans.exported,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
        out.push_str("# HELP tether_trace_spans_dropped_total Spans dropped instead of exported: the queue was full, or the collector failed or was too slow.\n# TYPE tether_trace_spans_dropped_total counter\n");
        for (reason, n) in [
            ("queue_full", &spans.dropped_queue_full),
            ("export_failed", &spans.dropped_export_failed),
        ] {
            let _ = writeln!(
                out,
                "tether_trace_spans_dropped_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        let upstreams: Vec<_> = upstreams.collect();
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&UpstreamStats) -> i64,
        );
        let families: [Family; 7] = [
            (
                "tether_upstream_sessions",
                "gauge",
                "Upstream sessions currently open.",
                |s| s.sessions_live.load(Relaxed),
            ),
            (
                "tether_upstream_sessions_created_total",
                "counter",
                "Upstream sessions opened.",
                |s| s.sessions_created.load(Relaxed) as i64,
            ),
            (
                "tether_upstream_requests_total",
                "counter",
                "Requests sent to the upstream.",
                |s| s.requests.load(Relaxed) as i64,
            ),
            (
                "tether_upstream_errors_total",
                "counter",
                "Upstream requests that failed at transport or HTTP level.",
                |s| s.errors.load(Relaxed) as i64,
            ),
            (
                "tether_upstream_sessions_validated_total",
                "counter",
                "Idle upstream sessions probed before reuse.",
                |s| s.sessions_validated.load(Relaxed) as i64,
            ),
            (
                "tether_upstream_sessions_replaced_total",
                "counter",
                "Idle upstream sessions replaced because their probe failed.",
                |s| s.sessions_replaced.load(Relaxed) as i64,
            ),
            (
                "tether_upstream_healthy",
                "gauge",
                "1 while the upstream's last health check succeeded.",
                |s| s.healthy.load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (up, stats) in &upstreams {
                let _ = writeln!(out, "{name}{{upstream=\"{up}\"}} {}", get(stats));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        let label = |method: &str| Label::request(&Method::parse(method));
        m.record(label("tools/call"), 200, Duration::from_micros(300));
        m.record(label("weird/method"), 418, Duration::from_millis(2));
        m.record(label("notification"), 200, Duration::from_millis(2));
        m.record(
            Label::kind(Kind::Notification),
            202,
            Duration::from_millis(2),
        );
        assert_eq!(label("x").name(), "other");
        assert_eq!(Label::REJECTED.name(), "(rejected)");
        assert_eq!(Label::kind(Kind::Notification).name(), "(notification)");
        assert_eq!(label("subscriptions/listen").name(), "subscriptions/listen");
        let stats = UpstreamStats::default();
        stats.sessions_created.fetch_add(2, Relaxed);
        let text = m.render([("demo", &stats)].into_iter());
        assert!(text.contains("tether_requests_total{method=\"tools/call\",status=\"200\"} 1"));
        assert!(text.contains("tether_requests_total{method=\"other\",status=\"other\"} 1"));
        assert!(text.contains("tether_requests_total{method=\"other\",status=\"200\"} 1"));
        assert!(text.contains("tether_requests_total{method=\"(notification)\",status=\"202\"} 1"));
        assert!(text.contains(
            "tether_request_duration_seconds_bucket{method=\"tools/call\",le=\"0.00025\"} 0"
        ));
        assert!(text.contains(
            "tether_request_duration_seconds_bucket{method=\"tools/call\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains("tether_upstream_sessions_created_total{upstream=\"demo\"} 2"));
    }
}
