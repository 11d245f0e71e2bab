//! One client session: who it belongs to, the upstream sessions it owns,
//! the server→client requests awaiting the client's answer, its GET stream
//! and resumable streams, and its resource subscriptions. It ends exactly
//! once, and its upstream sessions with it ([invariant: close-once]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::Response;
use tokio::sync::mpsc;

use super::quota::Seat;
use super::resumable::{StreamLog, Streams};
use super::scope::Scope;
use crate::clock::now_ms;
use crate::store::SessionRecord;
use crate::sync::lock;
use crate::upstream::{ClientIdentity, SessionSet, UpstreamSession};

/// Resources one client session may subscribe to per upstream.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Server→client requests a client may leave unanswered at once.
pub const MAX_PENDING: usize = 64;
/// After this long an unanswered server→client request may be forgotten
/// (its asker has given up; a person answering an elicitation is slow).
const PENDING_TTL: Duration = Duration::from_secs(300);

/// How stored scopes mark sessions bound to one HTTP+SSE connection.
pub(super) const STREAM_BOUND_MARK: &str = "sse:";

/// A request Tether sent to the client, waiting for the client's answer.
pub enum PendingRequest {
    /// A legacy upstream's server→client request: the answer goes back to
    /// that upstream session under the id the upstream used.
    Upstream {
        /// The upstream session that asked.
        session: Arc<UpstreamSession>,
        /// The upstream's id, restored on the way back.
        original_id: Box<RawValue>,
    },
    /// Input a 2026-07-28 upstream asked for (`input_required`): Tether itself
    /// awaits the answer to retry the upstream request with it.
    Local(tokio::sync::oneshot::Sender<Response>),
}

/// The client's subscriptions on one modern upstream.
#[derive(Default)]
struct Subscriptions {
    uris: std::collections::BTreeSet<String>,
    listener: Option<tokio::task::AbortHandle>,
}

/// One client session (legacy era: `initialize` + `Mcp-Session-Id`, or an
/// HTTP+SSE connection).
pub struct ClientSession {
    /// The `Mcp-Session-Id` (or the HTTP+SSE connection's `session_id`).
    pub id: String,
    /// The endpoint the session was created on.
    pub scope: Scope,
    /// The session lives exactly as long as one HTTP+SSE (2024-11-05)
    /// connection on this node: no other transport or node may serve it.
    pub stream_bound: bool,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// What upstreams are told about the client.
    pub identity: ClientIdentity,
    /// The client's upstream sessions.
    pub upstreams: SessionSet,
    pending: Mutex<HashMap<String, (Instant, PendingRequest)>>,
    next_relay_id: AtomicU64,
    /// Its resumable SSE streams.
    pub streams: Streams,
    /// Resource subscriptions held for modern upstreams: URIs and the listen task, by upstream.
    subscriptions: Mutex<HashMap<Arc<str>, Subscriptions>>,
    log_level: Mutex<Option<String>>,
    outbound: Mutex<Option<mpsc::Sender<Bytes>>>,
    outbound_changed: tokio::sync::Notify,
    /// The log behind the GET stream (to tell whether a connection reads it).
    get_stream: Mutex<Option<Arc<StreamLog>>>,
    listening: Mutex<Vec<Weak<UpstreamSession>>>,
    /// When the session began (ms since the Unix epoch; kept across restores).
    created_ms: i64,
    /// Who the session belongs to: only requests by this principal reach it.
    pub principal: Arc<str>,
    /// When it was last used (ms since the Unix epoch).
    last_seen_ms: AtomicI64,
    /// Used since its last-seen time was last written to the store.
    dirty: AtomicBool,
    /// Requests and messages the client sent in it (on this node).
    uses: AtomicU64,
    /// Requests it may have in flight at once.
    pub inflight: Arc<tokio::sync::Semaphore>,
    closed: AtomicBool,
    /// Its place under the session caps (none for a session bound to an
    /// HTTP+SSE connection: the connection holds that place).
    seat: Mutex<Option<Seat>>,
}

/// What a new or restored [`ClientSession`] is made of.
pub struct Founding {
    /// The session id.
    pub id: String,
    /// The endpoint.
    pub scope: Scope,
    /// Bound to an HTTP+SSE connection.
    pub stream_bound: bool,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// The client's identity.
    pub identity: ClientIdentity,
    /// Whose it is.
    pub principal: Arc<str>,
    /// When it began (ms since the Unix epoch).
    pub created_ms: i64,
    /// Requests it may have in flight at once.
    pub max_inflight: usize,
    /// Its place under the session caps.
    pub seat: Option<Seat>,
}

impl ClientSession {
    /// A session made of `founding`, used now.
    pub fn new(founding: Founding) -> Self {
        ClientSession {
            id: founding.id,
            scope: founding.scope,
            stream_bound: founding.stream_bound,
            protocol_version: founding.protocol_version,
            identity: founding.identity,
            upstreams: SessionSet::for_session(),
            pending: Mutex::new(HashMap::new()),
            next_relay_id: AtomicU64::new(1),
            log_level: Mutex::new(None),
            streams: Default::default(),
            subscriptions: Mutex::new(HashMap::new()),
            outbound: Mutex::new(None),
            outbound_changed: tokio::sync::Notify::new(),
            get_stream: Mutex::new(None),
            listening: Mutex::new(Vec::new()),
            created_ms: founding.created_ms,
            principal: founding.principal,
            last_seen_ms: AtomicI64::new(now_ms()),
            dirty: AtomicBool::new(false),
            uses: AtomicU64::new(0),
            inflight: Arc::new(tokio::sync::Semaphore::new(founding.max_inflight)),
            closed: AtomicBool::new(false),
            seat: Mutex::new(founding.seat),
        }
    }

    /// Gives back the session's place under the caps (it is no longer held here).
    pub(super) fn vacate(&self) {
        lock(&self.seat).take();
    }

    /// Remembers the log level the client chose (`logging/setLevel`).
    pub fn set_log_level(&self, level: String) {
        *lock(&self.log_level) = Some(level);
    }

    /// The log level the client chose, if any.
    pub fn log_level(&self) -> Option<String> {
        lock(&self.log_level).clone()
    }

    /// Adds (`on`) or removes `uri` from the client's subscriptions on an
    /// upstream and replaces the task listening for them: `listen` is called
    /// with the URIs subscribed afterwards (none: no task). Done under one
    /// lock, so concurrent changes cannot lose each other. `None` when the
    /// session has ended or the URI cap is reached.
    pub fn resubscribe(
        &self,
        upstream: &Arc<str>,
        uri: String,
        on: bool,
        listen: impl FnOnce(Vec<String>) -> tokio::task::AbortHandle,
    ) -> Option<bool> {
        let mut all = lock(&self.subscriptions);
        if self.is_closed() {
            return None;
        }
        let entry = all.entry(upstream.clone()).or_default();
        if on && !entry.uris.contains(&uri) && entry.uris.len() >= MAX_SUBSCRIPTIONS {
            return None;
        }
        if on {
            entry.uris.insert(uri);
        } else {
            entry.uris.remove(&uri);
        }
        if let Some(old) = entry.listener.take() {
            old.abort();
        }
        if entry.uris.is_empty() {
            return Some(false);
        }
        entry.listener = Some(listen(entry.uris.iter().cloned().collect()));
        Some(true)
    }

    /// Marks the session used now.
    pub fn touch(&self) {
        self.last_seen_ms.store(now_ms(), Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        self.uses.fetch_add(1, Ordering::Relaxed);
    }

    /// When it began and was last used (ms since the Unix epoch), and how
    /// many times the client used it on this node.
    pub fn activity(&self) -> (i64, i64, u64) {
        (
            self.created_ms,
            self.last_seen_ms.load(Ordering::Relaxed),
            self.uses.load(Ordering::Relaxed),
        )
    }

    /// Whether the session has outlived an absolute lifetime (`None`: no limit).
    pub(super) fn outlived(&self, absolute: Option<Duration>) -> bool {
        absolute.is_some_and(|ttl| now_ms() - self.created_ms > ttl.as_millis() as i64)
    }

    /// Whether it was used since the last call (clears the mark).
    pub(super) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// The session as stored (upstream sessions are added as they open).
    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            scope: format!(
                "{}{}",
                if self.stream_bound {
                    STREAM_BOUND_MARK
                } else {
                    ""
                },
                self.scope.label()
            ),
            principal: self.principal.to_string(),
            protocol_version: self.protocol_version.clone(),
            client_info: self.identity.info.get().to_owned(),
            client_capabilities: self.identity.capabilities.get().to_owned(),
            log_level: self.log_level(),
            created_ms: self.created_ms,
            last_seen_ms: self.last_seen_ms.load(Ordering::Relaxed),
            upstreams: Vec::new(),
            home_node: None,
        }
    }

    pub(super) fn idle_for(&self) -> Duration {
        let idle = now_ms() - self.last_seen_ms.load(Ordering::Relaxed);
        Duration::from_millis(idle.max(0) as u64)
    }

    /// Registers a server→client request and returns the id the client will see.
    /// `None` when the client already owes [`MAX_PENDING`] answers.
    pub fn register_pending(&self, request: PendingRequest) -> Option<String> {
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING {
            // Requests whose answer can no longer matter make room; the rest stay.
            pending.retain(|_, (since, _)| since.elapsed() < PENDING_TTL);
        }
        if pending.len() >= MAX_PENDING {
            return None;
        }
        let n = self.next_relay_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("tether-relay-{n}");
        let key = serde_json::to_string(&id).expect("string serializes");
        pending.insert(key, (Instant::now(), request));
        Some(id)
    }

    /// Takes the pending request a client response answers (by raw id text).
    pub fn take_pending(&self, raw_id: &str) -> Option<PendingRequest> {
        lock(&self.pending)
            .remove(raw_id)
            .map(|(_, request)| request)
    }

    /// Installs the sender of the session's GET stream, replacing an older one.
    pub fn set_outbound(&self, tx: mpsc::Sender<Bytes>) {
        *lock(&self.outbound) = Some(tx);
        self.outbound_changed.notify_waiters();
    }

    /// Resolves at the next change of the client's GET stream (opened or ended).
    pub fn outbound_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.outbound_changed.notified()
    }

    /// The sender of the client's current GET stream, if one is open.
    pub fn outbound(&self) -> Option<mpsc::Sender<Bytes>> {
        lock(&self.outbound)
            .as_ref()
            .filter(|tx| !tx.is_closed())
            .cloned()
    }

    /// Whether the client has a GET stream open.
    pub fn has_outbound(&self) -> bool {
        self.outbound().is_some()
    }

    /// Remembers the log behind the GET stream.
    pub fn set_get_stream(&self, log: Arc<StreamLog>) {
        *lock(&self.get_stream) = Some(log);
    }

    /// Whether a connection is reading the GET stream now (a kept but unread
    /// stream is not a sign of life), or holds the session's HTTP+SSE stream.
    pub fn is_listening(&self) -> bool {
        self.has_outbound()
            && (self.stream_bound || lock(&self.get_stream).as_ref().is_some_and(|l| l.is_read()))
    }

    /// Ends the client's GET stream (shutdown, or a client too slow to read it).
    pub fn close_outbound(&self) {
        lock(&self.outbound).take();
        self.outbound_changed.notify_waiters();
    }

    /// The upstream sessions whose own streams are not relayed yet; marks them relayed.
    pub fn unrelayed_upstreams(&self) -> Vec<Arc<UpstreamSession>> {
        let mut listening = lock(&self.listening);
        listening.retain(|w| w.strong_count() > 0);
        let fresh: Vec<_> = self
            .upstreams
            .sessions()
            .into_iter()
            .filter(|s| {
                !listening
                    .iter()
                    .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(s)))
            })
            .collect();
        listening.extend(fresh.iter().map(Arc::downgrade));
        fresh
    }

    /// Called by a relay whose client stream closed: true when it should stop
    /// (no stream is open; it is forgotten so the next GET starts it again),
    /// false when a newer stream is open and the relay carries on into it.
    /// Decided under the stream lock, so a concurrent GET never misses it.
    pub fn release_listener(&self, session: &Arc<UpstreamSession>) -> bool {
        let slot = lock(&self.outbound);
        if slot.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return false;
        }
        self.forget_listener(session);
        true
    }

    /// Forgets a relay whose upstream stream ended.
    pub fn forget_listener(&self, session: &Arc<UpstreamSession>) {
        lock(&self.listening).retain(|w| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(session)));
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops serving a session another node ended (it closed the upstream
    /// sessions): marks it closed and ends its GET stream, without upstream DELETEs.
    pub fn forget(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.stop_local();
        }
    }

    /// Ends what this node runs for the session: its GET stream, pending
    /// requests and subscription listeners.
    fn stop_local(&self) {
        self.close_outbound();
        lock(&self.pending).clear();
        // Under the same lock `resubscribe` checks `closed` with: no listener
        // can be installed after this.
        for (_, s) in lock(&self.subscriptions).drain() {
            if let Some(listener) = s.listener {
                listener.abort();
            }
        }
    }

    /// Ends the session once: closes its upstream sessions and its GET stream.
    pub async fn close(&self, timeout: Duration) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop_local();
        self.upstreams.close_all(timeout).await;
    }
}
