//! OpenTelemetry traces: a server span for every client request, a client
//! span for every request sent upstream (its child), and spans for session
//! restores, era probes and opening upstream sessions; exported over
//! OTLP/HTTP (protobuf) to the collector `[telemetry]` names.
//!
//! Off unless an endpoint is configured, and then nothing is built: every
//! hook on the request path first asks [`get`], one atomic load. On, the
//! request's span is the current OpenTelemetry context while the request is
//! served (its futures run inside it), so the spans below it find their
//! parent without being handed it (work a request spawns is spawned in it:
//! [`spawn`]). Trace context comes in from W3C `traceparent`/`tracestate`
//! headers or a request's `_meta`, and goes out to upstreams in `_meta`
//! (every era: the MCP carrier, which SDK servers read) and, over HTTP, in
//! the headers too — see [`carrier`].
//!
//! Export never holds up a request: finished spans go to a bounded queue
//! that a background task empties in batches; what does not fit, or what
//! the collector does not take in time, is dropped and counted
//! ([`SpanCounts`], in `/metrics`).

pub mod carrier;
mod export;
pub mod spans;

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter as _};

use crate::config::{ConfigError, TelemetryConfig};

/// Tracing as started: the tracer spans come from, and the export queue's
/// last flush.
pub struct Telemetry {
    tracer: SdkTracer,
    /// Kept so the tracer's processor lives as long as the process.
    _provider: SdkTracerProvider,
    final_flush: export::FinalFlush,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Spans finished and what became of them, since the process started.
#[derive(Debug, Default)]
pub struct SpanCounts {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the export queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans dropped because their export failed or took too long.
    pub dropped_export_failed: AtomicU64,
}

static COUNTS: SpanCounts = SpanCounts {
    exported: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    dropped_export_failed: AtomicU64::new(0),
};

/// The span counts of this process.
pub fn counts() -> &'static SpanCounts {
    &COUNTS
}

/// Tracing, if it is on.
#[inline]
pub fn get() -> Option<&'static Telemetry> {
    TELEMETRY.get()
}

/// Starts tracing as `config` (and the standard `OTEL_*` variables) say;
/// nothing when no endpoint is named. Call once, inside the runtime, before
/// serving.
pub fn start(config: &TelemetryConfig) -> Result<(), ConfigError> {
    let Some(exporting) = config.exporting(|name| std::env::var(name).ok()) else {
        return Ok(());
    };
    crate::config::check_telemetry_url(&exporting.traces_url)?;
    let timeout = Duration::from_millis(config.export_timeout_ms);
    let invalid = |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("telemetry: {e}"));
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| invalid(&e))?;
    let resource = Resource::builder()
        .with_service_name(exporting.service_name.clone())
        .build();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&exporting.traces_url)
        .with_timeout(timeout)
        .build()
        .map_err(|e| invalid(&e))?;
    exporter.set_resource(&resource);
    let (processor, final_flush) = export::start(exporter, config, &COUNTS);
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("tether");
    let started = Telemetry {
        tracer,
        _provider: provider,
        final_flush,
    };
    if TELEMETRY.set(started).is_err() {
        return Err(ConfigError::Invalid("telemetry is already started".into()));
    }
    let endpoint = without_credentials(&exporting.traces_url);
    tracing::info!(%endpoint, service = %exporting.service_name, sample_ratio = config.sample_ratio, "exporting traces over OTLP/HTTP");
    Ok(())
}

/// `url` without a user or password in it (for logs).
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "<unparsable>".into(),
    }
}

/// Exports the spans still queued, waiting `within` at most (shutdown).
pub async fn flush(within: Duration) {
    if let Some(telemetry) = get() {
        telemetry.final_flush.flush(within).await;
    }
}

/// The trace and span ids (hex) of the span current on this thread, when a
/// sampled request is being served (for log lines: their trace is exported).
pub fn current_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    get()?;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let ids = span.span_context();
    (ids.is_valid() && ids.is_sampled())
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

/// The current span's context as it is sent on, when a sampled request is
/// being served.
pub fn current_context() -> Option<carrier::Outgoing> {
    use opentelemetry::trace::TraceContextExt;
    get()?;
    let cx = opentelemetry::Context::current();
    let sampled = cx.span().span_context().is_sampled();
    sampled.then(|| carrier::Outgoing::of(&cx))
}

/// Spawns `task`, in the current trace context when tracing is on: work a
/// request hands to a task of its own (a streamed reply, a call turned into
/// a task) stays in the request's trace.
pub fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use opentelemetry::context::FutureExt;
    match get() {
        Some(_) => tokio::spawn(task.with_current_context()),
        None => tokio::spawn(task),
    }
}

impl Telemetry {
    fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }
}
