//! Finished spans on their way to the collector: a bounded queue (a span
//! that does not fit is dropped, never waited for) and one task that sends
//! them in batches, one export at a time, each bounded in time.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{Notify, mpsc, oneshot};

use super::SpanCounts;
use crate::config::TelemetryConfig;

/// Hands finished, sampled spans to the export task.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    counts: &'static SpanCounts,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.counts.dropped_queue_full.fetch_add(1, Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Asks the export task, once (at shutdown), to send what is queued now.
pub(super) struct FinalFlush {
    now: Arc<Notify>,
    done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl FinalFlush {
    /// Sends what is queued and waits for it, `within` at most; later spans
    /// still go out in later batches.
    pub(super) async fn flush(&self, within: Duration) {
        let Some(done) = self.done.lock().await.take() else {
            return;
        };
        self.now.notify_one();
        let _ = tokio::time::timeout(within, done).await;
    }
}

/// The processor to give the tracer provider, and the handle that flushes
/// its queue; the export task runs on the current runtime.
pub(super) fn start<E: SpanExporter + 'static>(
    exporter: E,
    config: &TelemetryConfig,
    counts: &'static SpanCounts,
) -> (QueueProcessor, FinalFlush) {
    let (queue, spans) = mpsc::channel(config.queue_size);
    let now = Arc::new(Notify::new());
    let (flushed, done) = oneshot::channel();
    let batches = Batches {
        spans,
        exporter,
        counts,
        size: config.batch_size,
        every: Duration::from_millis(config.flush_interval_ms.max(1)),
        timeout: Duration::from_millis(config.export_timeout_ms),
        failing: false,
    };
    tokio::spawn(batches.run(now.clone(), flushed));
    let final_flush = FinalFlush {
        now,
        done: tokio::sync::Mutex::new(Some(done)),
    };
    (QueueProcessor { queue, counts }, final_flush)
}

/// The export task's state.
struct Batches<E> {
    spans: mpsc::Receiver<SpanData>,
    exporter: E,
    counts: &'static SpanCounts,
    size: usize,
    every: Duration,
    timeout: Duration,
    /// The last export failed.
    failing: bool,
}

impl<E: SpanExporter> Batches<E> {
    async fn run(mut self, now: Arc<Notify>, flushed: oneshot::Sender<()>) {
        let mut batch = Vec::with_capacity(self.size);
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flushed = Some(flushed);
        loop {
            let room = self.size - batch.len();
            tokio::select! {
                received = self.spans.recv_many(&mut batch, room) => {
                    if received == 0 {
                        // Every sender is gone: nothing more will come.
                        self.export(&mut batch).await;
                        return;
                    }
                    if batch.len() >= self.size {
                        self.export(&mut batch).await;
                    }
                }
                _ = tick.tick() => self.export(&mut batch).await,
                _ = now.notified() => {
                    while let Ok(span) = self.spans.try_recv() {
                        batch.push(span);
                        if batch.len() >= self.size {
                            self.export(&mut batch).await;
                        }
                    }
                    self.export(&mut batch).await;
                    if let Some(flushed) = flushed.take() {
                        let _ = flushed.send(());
                    }
                }
            }
        }
    }

    /// Sends `batch` (emptying it); its spans count as exported or dropped.
    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let spans = std::mem::replace(batch, Vec::with_capacity(self.size));
        let failure = match tokio::time::timeout(self.timeout, self.exporter.export(spans)).await {
            Ok(Ok(())) => {
                self.counts.exported.fetch_add(n, Relaxed);
                self.failing = false;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.counts.dropped_export_failed.fetch_add(n, Relaxed);
        // Said once per outage; the count goes on in /metrics.
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(spans = n, error = %failure, "span export failed; spans are dropped until the collector answers");
        }
    }
}
