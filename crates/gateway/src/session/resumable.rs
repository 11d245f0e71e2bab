//! Resumable SSE streams (2025-11-25): every event Tether sends a client
//! session on a POST's response stream carries an id `<stream>-<seq>`, and the
//! last events of each stream are kept, so a client whose connection dropped
//! reconnects with `GET` + `Last-Event-ID` and gets what it missed on that
//! stream (never another stream's), then the rest as it comes.
//!
//! Bounded: the newest [`MAX_STREAMS`] streams per session, the newest
//! [`MAX_EVENTS`] events (at most [`MAX_LOG_BYTES`]) per stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, mpsc};

use crate::sync;
use tether_wire::sse;

/// Streams of one session whose events are kept.
pub const MAX_STREAMS: usize = 16;
/// Events kept per stream.
pub const MAX_EVENTS: usize = 64;
/// Bytes kept per stream (the newest event is kept whatever its size).
pub const MAX_LOG_BYTES: usize = 1024 * 1024;

/// One stream's recent events and the connection currently reading it.
pub struct StreamLog {
    id: u64,
    state: Mutex<LogState>,
    /// A connection is reading the stream right now.
    attached: AtomicBool,
}

struct LogState {
    events: VecDeque<(u64, Bytes)>,
    /// Total size of `events`.
    bytes: usize,
    next: u64,
    reader: Option<mpsc::Sender<Bytes>>,
    done: bool,
}

impl StreamLog {
    fn new(id: u64) -> Self {
        StreamLog {
            id,
            state: Mutex::new(LogState {
                events: VecDeque::new(),
                bytes: 0,
                next: 1,
                reader: None,
                done: false,
            }),
            attached: AtomicBool::new(false),
        }
    }

    /// Whether a connection is reading the stream.
    pub fn is_read(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Records a message and sends it to the current reader (if it reads in
    /// time; a reader that does not is dropped, the message stays logged).
    async fn push(&self, message: &[u8], send_timeout: Duration) {
        let mut state = self.state.lock().await;
        let seq = state.next;
        state.next += 1;
        let frame = sse::message_event_with_id(&format!("{}-{seq}", self.id), message);
        state.bytes += frame.len();
        state.events.push_back((seq, frame.clone()));
        // Bounded in count and in bytes; the newest event is always kept.
        while state.events.len() > 1
            && (state.events.len() > MAX_EVENTS || state.bytes > MAX_LOG_BYTES)
        {
            if let Some((_, old)) = state.events.pop_front() {
                state.bytes -= old.len();
            }
        }
        // Sent under the lock, so a resume never sees an event twice or misses one.
        if let Some(reader) = &state.reader
            && !matches!(
                tokio::time::timeout(send_timeout, reader.send(frame)).await,
                Ok(Ok(()))
            )
        {
            state.reader = None;
            self.attached.store(false, Ordering::Release);
        }
    }

    async fn finish(&self) {
        let mut state = self.state.lock().await;
        state.done = true;
        state.reader = None;
        self.attached.store(false, Ordering::Release);
    }

    /// A new reader: the events after `after`, then (if the stream is still
    /// running) the rest as it comes; the previous reader is dropped.
    async fn resume(&self, after: u64) -> mpsc::Receiver<Bytes> {
        let mut state = self.state.lock().await;
        let (tx, rx) = mpsc::channel(MAX_EVENTS + 16);
        for (_, frame) in state.events.iter().filter(|(seq, _)| *seq > after) {
            let _ = tx.try_send(frame.clone());
        }
        state.reader = (!state.done).then_some(tx);
        self.attached
            .store(state.reader.is_some(), Ordering::Release);
        rx
    }
}

/// The resumable streams of one client session.
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    logs: std::sync::Mutex<VecDeque<Arc<StreamLog>>>,
}

impl Streams {
    /// Makes `messages` a resumable stream: returns the framed events for the
    /// client's connection. The messages are drained (and logged) even after
    /// the connection drops, so the producer is never cut off by it.
    pub fn record(
        &self,
        mut messages: mpsc::Receiver<Bytes>,
        send_timeout: Duration,
    ) -> (Arc<StreamLog>, mpsc::Receiver<Bytes>) {
        let log = Arc::new(StreamLog::new(
            self.next.fetch_add(1, Ordering::Relaxed) + 1,
        ));
        {
            let mut logs = sync::lock(&self.logs);
            logs.push_back(log.clone());
            if logs.len() > MAX_STREAMS {
                logs.pop_front();
            }
        }
        let (tx, rx) = mpsc::channel(32);
        let reader_log = log.clone();
        log.attached.store(true, Ordering::Release);
        tokio::spawn(async move {
            reader_log.state.lock().await.reader = Some(tx);
            while let Some(message) = messages.recv().await {
                reader_log.push(&message, send_timeout).await;
            }
            reader_log.finish().await;
        });
        (log, rx)
    }

    /// A reader for the stream a `Last-Event-ID` names, or `None` when that
    /// stream is unknown (or no longer kept).
    pub async fn resume(&self, last_event_id: &str) -> Option<mpsc::Receiver<Bytes>> {
        let (stream, seq) = last_event_id.split_once('-')?;
        let (stream, seq): (u64, u64) = (stream.parse().ok()?, seq.parse().ok()?);
        let log = sync::lock(&self.logs)
            .iter()
            .find(|l| l.id == stream)
            .cloned()?;
        Some(log.resume(seq).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut rx: mpsc::Receiver<Bytes>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.push(String::from_utf8(b.to_vec()).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_dropped_reader_resumes_after_its_last_event() {
        let streams = Streams::default();
        let (tx, rx) = mpsc::channel(8);
        let (_, mut first) = streams.record(rx, Duration::from_millis(50));
        tx.send(Bytes::from_static(b"{\"n\":1}")).await.unwrap();
        let got = first.recv().await.unwrap();
        assert!(String::from_utf8_lossy(&got).contains("id: 1-1"));
        drop(first); // the connection drops
        tx.send(Bytes::from_static(b"{\"n\":2}")).await.unwrap();
        tx.send(Bytes::from_static(b"{\"n\":3}")).await.unwrap();
        drop(tx); // the stream ends
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resumed = drain(streams.resume("1-1").await.unwrap()).await;
        assert_eq!(resumed.len(), 2);
        assert!(resumed[0].contains("id: 1-2") && resumed[0].contains("{\"n\":2}"));
        assert!(resumed[1].contains("id: 1-3"));
        assert!(
            streams.resume("9-1").await.is_none(),
            "another stream's id finds nothing"
        );
        assert!(streams.resume("garbage").await.is_none());
    }
}
