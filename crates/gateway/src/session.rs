//! Client (downstream) sessions: identity, the upstream sessions they own,
//! server→client requests awaiting the client's answer, and the registry
//! with its caps and idle reaper.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use dashmap::DashMap;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::auth::{Access, Caller};
use crate::metrics::Metrics;
use crate::store::{SessionRecord, Store, now_ms};
use crate::sync::lock;
use crate::upstream::{ClientIdentity, SessionSet, UpstreamSession, UpstreamSet};
use tether_wire::protocol::Era;

/// The principal of every caller when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// Resources one client session may subscribe to per upstream.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Server→client requests a client may leave unanswered at once.
pub const MAX_PENDING: usize = 64;
/// After this long an unanswered server→client request may be forgotten
/// (its asker has given up; a person answering an elicitation is slow).
const PENDING_TTL: Duration = Duration::from_secs(300);

/// How stored scopes mark sessions bound to one HTTP+SSE connection.
const STREAM_BOUND_MARK: &str = "sse:";

/// Which upstreams a session sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `/mcp`: every upstream, federated.
    Federated,
    /// `/u/<upstream>/mcp`: one upstream, names unchanged.
    Single(Arc<str>),
}

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
    Local(tokio::sync::oneshot::Sender<tether_wire::jsonrpc::Message>),
}

/// The client's subscriptions on one modern upstream.
#[derive(Default)]
struct Subscriptions {
    uris: std::collections::BTreeSet<String>,
    listener: Option<tokio::task::AbortHandle>,
}

/// Per-request settings a modern (sessionless) client sends with each request.
#[derive(Debug, Default, Clone)]
pub struct RequestOptions {
    /// The client asked for log messages (`_meta` log level); legacy sessions always get them.
    pub logs: bool,
    /// `Mcp-Param-*` headers to pass on to modern upstreams unchanged.
    pub param_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// One client session (or, when `ephemeral`, the context of one sessionless request).
pub struct ClientSession {
    /// The `Mcp-Session-Id` (empty for sessionless contexts).
    pub id: String,
    /// The endpoint the session was created on.
    pub scope: Scope,
    /// The session lives exactly as long as one HTTP+SSE (2024-11-05)
    /// connection on this node: no other transport or node may serve it.
    pub stream_bound: bool,
    /// The client's era.
    pub era: Era,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// What upstreams are told about the client.
    pub identity: ClientIdentity,
    /// The client's upstream sessions.
    pub upstreams: SessionSet,
    pending: Mutex<HashMap<String, (Instant, PendingRequest)>>,
    next_relay_id: AtomicU64,
    /// Modern per-request settings.
    pub options: RequestOptions,
    /// Its resumable SSE streams.
    pub streams: crate::resume::Streams,
    /// Resource subscriptions held for modern upstreams: URIs and the listen task, by upstream.
    subscriptions: Mutex<HashMap<Arc<str>, Subscriptions>>,
    log_level: Mutex<Option<String>>,
    outbound: Mutex<Option<mpsc::Sender<Bytes>>>,
    outbound_changed: tokio::sync::Notify,
    /// The log behind the GET stream (to tell whether a connection reads it).
    get_stream: Mutex<Option<Arc<crate::resume::StreamLog>>>,
    listening: Mutex<Vec<Weak<UpstreamSession>>>,
    /// When the session began (ms since the Unix epoch; kept across restores).
    created_ms: i64,
    /// Who the session belongs to: only requests by this principal reach it.
    pub principal: Arc<str>,
    /// What the principal may reach, and its credentials (from its latest request).
    access: Mutex<(Arc<Access>, Option<http::HeaderValue>)>,
    /// When it was last used (ms since the Unix epoch).
    last_seen_ms: AtomicI64,
    /// Used since its last-seen time was last written to the store.
    dirty: AtomicBool,
    /// Requests and messages the client sent in it (on this node).
    uses: AtomicU64,
    /// Requests it may have in flight at once (registered sessions only; a
    /// sessionless context serves one request).
    pub inflight: Option<Arc<tokio::sync::Semaphore>>,
    closed: AtomicBool,
}

impl ClientSession {
    fn new(
        id: String,
        ephemeral: bool,
        scope: Scope,
        era: Era,
        protocol_version: String,
        identity: ClientIdentity,
    ) -> Self {
        ClientSession {
            id,
            scope,
            stream_bound: false,
            era,
            protocol_version,
            identity,
            upstreams: SessionSet::new(ephemeral),
            pending: Mutex::new(HashMap::new()),
            next_relay_id: AtomicU64::new(1),
            options: RequestOptions {
                logs: true,
                param_headers: Vec::new(),
            },
            log_level: Mutex::new(None),
            streams: Default::default(),
            subscriptions: Mutex::new(HashMap::new()),
            outbound: Mutex::new(None),
            outbound_changed: tokio::sync::Notify::new(),
            get_stream: Mutex::new(None),
            listening: Mutex::new(Vec::new()),
            created_ms: now_ms(),
            principal: Arc::from(ANONYMOUS),
            access: Mutex::new((Arc::new(Access::everything()), None)),
            last_seen_ms: AtomicI64::new(now_ms()),
            dirty: AtomicBool::new(false),
            uses: AtomicU64::new(0),
            inflight: None,
            closed: AtomicBool::new(false),
        }
    }

    /// The context of one sessionless request (modern clients, stateless mode)
    /// by `caller`: never registered, closed once its reply is complete.
    pub fn sessionless(
        scope: Scope,
        era: Era,
        protocol_version: &str,
        identity: ClientIdentity,
        caller: &Caller,
    ) -> Self {
        let mut ctx = ClientSession::new(
            String::new(),
            true,
            scope,
            era,
            protocol_version.to_owned(),
            identity,
        );
        ctx.principal = caller.principal.clone();
        ctx.authorize(caller);
        ctx
    }

    /// Takes what `caller` (the session's principal) may reach now, and its credentials.
    pub fn authorize(&self, caller: &Caller) {
        *lock(&self.access) = (caller.access.clone(), caller.credentials.clone());
    }

    /// What the session's principal may reach.
    pub fn access(&self) -> Arc<Access> {
        lock(&self.access).0.clone()
    }

    /// The `Authorization` header of the principal's latest request.
    pub fn credentials(&self) -> Option<http::HeaderValue> {
        lock(&self.access).1.clone()
    }

    /// Replaces the per-request settings (modern requests).
    pub fn with_options(mut self, options: RequestOptions) -> Self {
        self.options = options;
        self
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

    /// Whether this context serves one sessionless request.
    pub fn is_ephemeral(&self) -> bool {
        self.upstreams.is_ephemeral()
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
    fn outlived(&self, absolute: Option<Duration>) -> bool {
        absolute.is_some_and(|ttl| now_ms() - self.created_ms > ttl.as_millis() as i64)
    }

    /// Whether it was used since the last call (clears the mark).
    fn take_dirty(&self) -> bool {
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
                match &self.scope {
                    Scope::Federated => "",
                    Scope::Single(name) => name,
                }
            ),
            principal: self.principal.to_string(),
            protocol_version: self.protocol_version.clone(),
            client_info: self.identity.info.get().to_owned(),
            client_capabilities: self.identity.capabilities.get().to_owned(),
            log_level: self.log_level(),
            created_ms: self.created_ms,
            last_seen_ms: self.last_seen_ms.load(Ordering::Relaxed),
            upstreams: Vec::new(),
        }
    }

    fn idle_for(&self) -> Duration {
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
    pub fn set_get_stream(&self, log: Arc<crate::resume::StreamLog>) {
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

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The total session cap is reached.
    Full,
    /// The principal's session cap is reached.
    PrincipalFull,
}

/// All client sessions of this node.
pub struct SessionRegistry {
    sessions: DashMap<String, Arc<ClientSession>>,
    store: Arc<Store>,
    upstreams: Arc<UpstreamSet>,
    max_sessions: usize,
    idle_ttl: Duration,
    close_timeout: Duration,
    max_per_principal: usize,
    absolute_ttl: Option<Duration>,
    max_inflight: usize,
    per_principal: DashMap<Arc<str>, usize>,
    metrics: Arc<Metrics>,
}

/// How often last-seen times are written to the store (batched).
const TOUCH_FLUSH: Duration = Duration::from_secs(2);
/// Stored sessions expired per reaper pass (the rest wait for the next one).
const REAP_BATCH: i64 = 256;

impl SessionRegistry {
    /// An empty registry over `store`; `upstreams` re-attach stored sessions.
    pub fn new(
        store: Arc<Store>,
        upstreams: Arc<UpstreamSet>,
        limits: RegistryLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        SessionRegistry {
            sessions: DashMap::new(),
            store,
            upstreams,
            max_sessions: limits.max_sessions,
            idle_ttl: limits.idle_ttl,
            close_timeout: limits.close_timeout,
            max_per_principal: limits.max_per_principal,
            absolute_ttl: limits.absolute_ttl,
            max_inflight: limits.max_inflight,
            per_principal: DashMap::new(),
            metrics,
        }
    }

    /// Reserves a place under the session cap (so concurrent creates cannot overshoot it).
    fn admit(&self, principal: &Arc<str>) -> Result<(), Admission> {
        {
            let mut held = self.per_principal.entry(principal.clone()).or_default();
            if *held >= self.max_per_principal {
                return Err(Admission::PrincipalFull);
            }
            *held += 1;
        }
        if self
            .metrics
            .downstream_sessions
            .fetch_add(1, Ordering::AcqRel)
            >= self.max_sessions as i64
        {
            self.release(principal);
            return Err(Admission::Full);
        }
        Ok(())
    }

    /// Gives back a place taken by [`SessionRegistry::admit`].
    fn release(&self, principal: &Arc<str>) {
        self.metrics
            .downstream_sessions
            .fetch_sub(1, Ordering::AcqRel);
        if let Some(mut held) = self.per_principal.get_mut(principal) {
            *held = held.saturating_sub(1);
        }
    }

    /// Forgets a held session (ended here or elsewhere) and gives back its place.
    fn unregister(&self, id: &str) -> Option<Arc<ClientSession>> {
        let (_, session) = self.sessions.remove(id)?;
        self.release(&session.principal);
        Some(session)
    }

    /// Adds a session of `caller` and stores it: under a fresh id, or under
    /// the id of the HTTP+SSE connection it is bound to (`stream`).
    pub async fn create(
        &self,
        scope: Scope,
        era: Era,
        protocol_version: String,
        identity: ClientIdentity,
        stream: Option<&str>,
        caller: &Caller,
    ) -> Result<Arc<ClientSession>, Admission> {
        self.admit(&caller.principal)?;
        let id = stream.map_or_else(new_session_id, str::to_owned);
        let mut session = ClientSession::new(id, false, scope, era, protocol_version, identity);
        session.stream_bound = stream.is_some();
        session.principal = caller.principal.clone();
        session.inflight = Some(Arc::new(tokio::sync::Semaphore::new(self.max_inflight)));
        session.authorize(caller);
        let session = Arc::new(session);
        session.touch();
        self.sessions.insert(session.id.clone(), session.clone());
        if let Err(e) = self.store.insert(&session.record()).await {
            tracing::warn!(error = %e, "client session not stored: it will not survive a restart");
        }
        Ok(session)
    }

    /// The session with this id, if `caller` owns it: held here, or restored
    /// from the store (after a restart, or created on another node) with its
    /// upstream sessions re-attached by their stored ids. Ids of invalid shape
    /// are never looked up; another principal's session is not found, exactly
    /// like an unknown one.
    pub async fn find(&self, id: &str, caller: &Caller) -> Option<Arc<ClientSession>> {
        if !is_valid_session_id(id) {
            return None;
        }
        let held = self.sessions.get(id).map(|s| s.clone());
        if let Some(s) = held {
            if s.stream_bound || s.principal != caller.principal {
                return None;
            }
            s.authorize(caller);
            if s.outlived(self.absolute_ttl) {
                self.end(id).await;
                return None;
            }
            return Some(s);
        }
        let record = match self.store.load(id).await {
            Ok(r) => r?,
            Err(e) => {
                tracing::warn!(error = %e, "session store lookup failed");
                return None;
            }
        };
        if record.scope.starts_with(STREAM_BOUND_MARK) || *record.principal != *caller.principal {
            return None;
        }
        let now = now_ms();
        let idle = now - record.last_seen_ms > self.idle_ttl.as_millis() as i64;
        let outlived = self
            .absolute_ttl
            .is_some_and(|t| now - record.created_ms > t.as_millis() as i64);
        if idle || outlived {
            return None;
        }
        let principal: Arc<str> = record.principal.as_str().into();
        self.admit(&principal).ok()?;
        let Some(session) = self.restore(record) else {
            self.release(&principal);
            return None;
        };
        match self.sessions.entry(id.to_owned()) {
            dashmap::Entry::Occupied(held) => {
                // Restored concurrently by another request: use that one.
                self.release(&principal);
                Some(held.get().clone())
            }
            dashmap::Entry::Vacant(slot) => {
                session.authorize(caller);
                session.touch();
                slot.insert(session.clone());
                tracing::debug!(session = %id, "restored client session from the store");
                Some(session)
            }
        }
    }

    /// Rebuilds a stored session (not registered); `None` if its endpoint is gone.
    fn restore(&self, record: crate::store::SessionRecord) -> Option<Arc<ClientSession>> {
        let stream_bound = record.scope.starts_with(STREAM_BOUND_MARK);
        let scope = match record.scope.trim_start_matches(STREAM_BOUND_MARK) {
            "" => Scope::Federated,
            name => Scope::Single(self.upstreams.get(name)?.name.clone()),
        };
        let raw = |text: &str| serde_json::value::RawValue::from_string(text.to_owned()).ok();
        let identity = ClientIdentity {
            info: raw(&record.client_info).unwrap_or_else(|| ClientIdentity::tether().info),
            capabilities: raw(&record.client_capabilities)
                .unwrap_or_else(|| ClientIdentity::tether().capabilities),
            credentials: None,
        };
        let created_ms = record.created_ms;
        let principal: Arc<str> = Arc::from(record.principal.as_str());
        let mut session = ClientSession::new(
            record.id,
            false,
            scope,
            Era::Legacy,
            record.protocol_version,
            identity,
        );
        session.created_ms = created_ms;
        session.principal = principal;
        session.inflight = Some(Arc::new(tokio::sync::Semaphore::new(self.max_inflight)));
        session.stream_bound = stream_bound;
        let session = Arc::new(session);
        if let Some(level) = record.log_level {
            session.set_log_level(level);
        }
        for binding in &record.upstreams {
            if let Some(upstream) = self.upstreams.get(binding.upstream.as_str()) {
                let reattached = UpstreamSession::reattach(upstream, binding, &session.identity);
                session.upstreams.seed(reattached);
            }
        }
        Some(session)
    }

    /// Ends a session: closes its upstream sessions and removes it from the
    /// store; true if it existed.
    pub async fn end(&self, id: &str) -> bool {
        let held = self.unregister(id);
        let stored = self.store.delete(id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "removing a session from the store failed");
            false
        });
        let Some(session) = held else {
            return stored;
        };
        session.close(self.close_timeout).await;
        true
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Ends sessions idle longer than the TTL (and not listening on a GET
    /// stream), here and in the store; returns how many ended.
    pub async fn reap_idle(&self) -> usize {
        let expired: Vec<String> = self
            .sessions
            .iter()
            // A client listening on its GET stream is using the session.
            .filter(|s| {
                (s.idle_for() > self.idle_ttl && !s.is_listening()) || s.outlived(self.absolute_ttl)
            })
            .map(|s| s.key().clone())
            .collect();
        let mut n = expired.len();
        futures_util::future::join_all(expired.iter().map(|id| self.end(id))).await;
        // Stored sessions no node holds any more (their node restarted or left).
        let before = now_ms() - self.idle_ttl.as_millis() as i64;
        let stale = self
            .store
            .expired(before, REAP_BATCH)
            .await
            .unwrap_or_default();
        for id in stale
            .iter()
            .filter(|id| !self.sessions.contains_key(id.as_str()))
        {
            if let Ok(Some(record)) = self.store.load(id).await
                && let Some(session) = self.restore(record)
            {
                session.close(self.close_timeout).await;
            }
            if self.store.delete(id).await.unwrap_or(false) {
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(count = n, "ended idle client sessions");
        }
        n
    }

    /// Writes the last-seen times of sessions used since the last flush.
    pub async fn flush_touches(&self) {
        let seen: Vec<(String, i64)> = self
            .sessions
            .iter()
            .filter(|s| s.take_dirty())
            .map(|s| (s.key().clone(), s.last_seen_ms.load(Ordering::Relaxed)))
            .collect();
        if seen.is_empty() {
            return;
        }
        match self.store.touch(&seen).await {
            // Ended on another node (DELETE, expiry): that node closed the
            // upstream sessions; this one just stops serving it.
            Ok(gone) => {
                for id in gone {
                    if let Some(session) = self.unregister(&id) {
                        session.forget();
                        tracing::debug!(session = %id, "session ended on another node");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "writing session last-seen times failed"),
        }
    }

    /// Runs the idle reaper and the last-seen flusher until the registry is dropped.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shortest = self
            .absolute_ttl
            .map_or(self.idle_ttl, |a| a.min(self.idle_ttl));
        let period = (shortest / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut next_reap = tokio::time::Instant::now() + period;
            loop {
                tokio::time::sleep(TOUCH_FLUSH.min(period)).await;
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.flush_touches().await;
                if tokio::time::Instant::now() >= next_reap {
                    registry.reap_idle().await;
                    next_reap = tokio::time::Instant::now() + period;
                }
            }
        });
    }

    /// Shutdown. With a durable store, sessions outlive this process: their
    /// last-seen times are written and their upstream sessions are kept for
    /// whichever node serves them next. In memory, every session ends (with
    /// its upstream sessions) in parallel. Bounded by the close timeout.
    /// Sessions bound to an HTTP+SSE connection end either way: their stream is gone.
    pub async fn shutdown(&self) {
        let durable = self.store.is_durable();
        if durable {
            self.flush_touches().await;
        }
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|s| !durable || s.stream_bound)
            .map(|s| s.key().clone())
            .collect();
        let all = futures_util::future::join_all(ids.iter().map(|id| self.end(id)));
        if tokio::time::timeout(self.close_timeout, all).await.is_err() {
            tracing::warn!("shutdown: some client sessions did not close in time; abandoned");
        }
    }

    /// Takes every client session's upstream session with `upstream` (that
    /// upstream object), for the caller to close.
    pub fn take_upstream_sessions(
        &self,
        upstream: &Arc<crate::upstream::Upstream>,
    ) -> Vec<Arc<UpstreamSession>> {
        self.sessions
            .iter()
            .filter_map(|s| s.upstreams.take(upstream))
            .collect()
    }

    /// Tells every client session that can hear it (a legacy session with an
    /// open stream) that the lists of the upstreams `affects` names changed.
    pub fn announce_list_changes(&self, affects: impl Fn(&Scope) -> bool) {
        const CHANGES: [&[u8]; 3] = [
            br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
        ];
        for session in self.sessions.iter().filter(|s| affects(&s.scope)) {
            if let Some(tx) = session.outbound() {
                for change in CHANGES {
                    // A client too slow to take a notification misses it, never blocks this.
                    let _ = tx.try_send(Bytes::from_static(change));
                }
            }
        }
    }

    /// The sessions this node holds.
    pub fn held(&self) -> Vec<Arc<ClientSession>> {
        self.sessions.iter().map(|s| s.clone()).collect()
    }

    /// Ends every session's GET stream (shutdown: they never finish on their own).
    pub fn close_streams(&self) {
        for s in self.sessions.iter() {
            s.close_outbound();
        }
    }
}

/// Caps and timeouts of a [`SessionRegistry`].
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    /// Most client sessions held at once.
    pub max_sessions: usize,
    /// Idle time after which a session ends.
    pub idle_ttl: Duration,
    /// Bound on closing one session's upstream sessions.
    pub close_timeout: Duration,
    /// Most client sessions one principal holds at once.
    pub max_per_principal: usize,
    /// Lifetime of a session however busy (`None`: no limit).
    pub absolute_ttl: Option<Duration>,
    /// Requests one session may have in flight.
    pub max_inflight: usize,
}

/// A new session id: 256 bits from the OS CSPRNG, URL-safe Base64 (43 chars).
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `id` has the shape of a session id: `[A-Za-z0-9_-]{1,128}`.
pub fn is_valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> SessionRegistry {
        let limits = RegistryLimits {
            max_sessions: 10,
            idle_ttl: Duration::from_secs(60),
            close_timeout: Duration::from_secs(1),
            max_per_principal: 10,
            absolute_ttl: None,
            max_inflight: 8,
        };
        let store = Arc::new(Store::Memory(Default::default()));
        SessionRegistry::new(store, Arc::default(), limits, Arc::new(Metrics::default()))
    }

    fn caller(principal: &str) -> Caller {
        Caller {
            principal: Arc::from(principal),
            access: Arc::new(Access::everything()),
            credentials: None,
        }
    }

    #[tokio::test]
    async fn another_principal_finds_nothing() {
        let reg = registry();
        let (alice, bob) = (caller("iss|alice"), caller("iss|bob"));
        let s = reg
            .create(
                Scope::Federated,
                Era::Legacy,
                "2025-11-25".into(),
                ClientIdentity::tether(),
                None,
                &alice,
            )
            .await
            .unwrap();
        assert!(reg.find(&s.id, &bob).await.is_none());
        assert!(reg.find(&s.id, &alice).await.is_some());
        // Nor from the store, as another node would look it up.
        reg.unregister(&s.id);
        assert!(reg.find(&s.id, &bob).await.is_none());
        assert!(reg.find(&s.id, &alice).await.is_some());
    }

    #[tokio::test]
    async fn sessions_bound_to_a_stream_are_never_served_elsewhere() {
        let reg = registry();
        let me = caller(ANONYMOUS);
        let id = new_session_id();
        let held = reg
            .create(
                Scope::Federated,
                Era::Legacy,
                "2024-11-05".into(),
                ClientIdentity::tether(),
                Some(&id),
                &me,
            )
            .await
            .unwrap();
        assert_eq!(held.id, id);
        assert!(held.stream_bound);
        assert!(held.record().scope.starts_with(STREAM_BOUND_MARK));
        assert!(
            reg.find(&id, &me).await.is_none(),
            "not over Streamable HTTP"
        );
        // Not from the store either (as another node would see it).
        reg.unregister(&id);
        assert!(reg.find(&id, &me).await.is_none());
        let record = reg.store.load(&id).await.unwrap().unwrap();
        let restored = reg.restore(record).unwrap();
        assert!(
            restored.stream_bound,
            "the reaper restores it as what it was"
        );
        assert_eq!(restored.scope, Scope::Federated);
    }

    #[test]
    fn session_ids_are_long_random_and_valid() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(is_valid_session_id(&a));
        assert!(!is_valid_session_id(""));
        assert!(!is_valid_session_id("a b"));
        assert!(!is_valid_session_id(&"a".repeat(129)));
        assert!(!is_valid_session_id("../etc"));
    }
}
