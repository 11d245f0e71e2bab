//! Resumable POST streams (legacy Streamable HTTP, SEP-1699 polling): a
//! small bounded per-session log of events a client can fetch again with a
//! GET carrying `Last-Event-ID`.
//!
//! Event ids are `<stream>-<seq>`: `seq` is unique within the session and
//! `stream` names the POST stream the event belongs to, so a replay serves
//! only that stream's events. `<stream>-0` is the stream's priming event.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::watch;

/// Most events kept per session; older ones are dropped.
pub(super) const MAX_EVENTS: usize = 64;

/// One logged event.
struct Entry {
    stream: u64,
    seq: u64,
    data: Vec<u8>,
    /// The stream's final message (its JSON-RPC response).
    last: bool,
}

#[derive(Default)]
struct Inner {
    next_stream: u64,
    next_seq: u64,
    entries: VecDeque<Entry>,
}

/// A session's recent events of resumable streams.
pub(super) struct EventLog {
    inner: Mutex<Inner>,
    /// Bumped on every append, to wake replaying GET streams.
    appended: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Mutex::default(),
            appended: watch::Sender::new(0),
        }
    }
}

/// What a replay found after a cursor.
pub(super) struct Replay {
    /// `(event id, data)` in order.
    pub(super) events: Vec<(String, Vec<u8>)>,
    /// The `seq` of the last event returned (the new cursor).
    pub(super) cursor: u64,
    /// Whether the stream's final message was among them.
    pub(super) done: bool,
}

/// Formats an event id.
pub(super) fn event_id(stream: u64, seq: u64) -> String {
    format!("{stream}-{seq}")
}

/// Parses an event id from `Last-Event-ID` into `(stream, seq)`.
pub(super) fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (stream, seq) = id.trim().split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a resumable stream and returns its id (its priming event is `<id>-0`).
    pub(super) fn open_stream(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_stream += 1;
        inner.next_stream
    }

    /// Whether `stream` was ever opened in this session.
    pub(super) fn knows(&self, stream: u64) -> bool {
        stream >= 1 && stream <= self.lock().next_stream
    }

    /// Logs one event of `stream` (`last` for its final message); returns its id.
    pub(super) fn append(&self, stream: u64, data: Vec<u8>, last: bool) -> String {
        let seq = {
            let mut inner = self.lock();
            inner.next_seq += 1;
            let seq = inner.next_seq;
            if inner.entries.len() >= MAX_EVENTS {
                inner.entries.pop_front();
            }
            inner.entries.push_back(Entry {
                stream,
                seq,
                data,
                last,
            });
            seq
        };
        self.appended.send_replace(seq);
        event_id(stream, seq)
    }

    /// The events of `stream` after `cursor`.
    pub(super) fn after(&self, stream: u64, cursor: u64) -> Replay {
        let inner = self.lock();
        let mut replay = Replay {
            events: Vec::new(),
            cursor,
            done: false,
        };
        for e in inner
            .entries
            .iter()
            .filter(|e| e.stream == stream && e.seq > cursor)
        {
            replay
                .events
                .push((event_id(stream, e.seq), e.data.clone()));
            replay.cursor = e.seq;
            replay.done |= e.last;
        }
        replay
    }

    /// A receiver woken on every append.
    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_event_id(&event_id(3, 17)), Some((3, 17)));
        assert_eq!(parse_event_id(" 1-0 "), Some((1, 0)));
        for bad in ["", "1", "a-1", "1-b", "-1", "1--1"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn replays_one_stream_bounded() {
        let log = EventLog::default();
        let (a, b) = (log.open_stream(), log.open_stream());
        assert!(log.knows(a) && log.knows(b) && !log.knows(0) && !log.knows(b + 1));
        log.append(a, b"a1".to_vec(), false);
        log.append(b, b"b1".to_vec(), false);
        let id = log.append(a, b"a2".to_vec(), true);
        let r = log.after(a, 0);
        let data: Vec<_> = r.events.iter().map(|(_, d)| d.as_slice()).collect();
        assert_eq!(data, [b"a1".as_slice(), b"a2"]);
        assert!(r.done);
        assert_eq!(r.events[1].0, id);
        let r = log.after(a, r.cursor);
        assert!(r.events.is_empty() && !r.done);
        assert_eq!(log.after(b, 0).events.len(), 1);
        for _ in 0..2 * MAX_EVENTS {
            log.append(b, Vec::new(), false);
        }
        assert!(log.after(a, 0).events.is_empty());
        assert_eq!(log.after(b, 0).events.len(), MAX_EVENTS);
    }
}
