//! All client sessions of this node: creation under the caps, lookup (held
//! here, restored from the store with the same upstream sessions
//! re-attached: [invariant: stale-session], or in a cluster, served by
//! another node: [invariant: one-home]), ending, the idle reaper and the
//! batched last-seen writes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tether_wire::method::LIST_CHANGED;

use super::client_session::{ClientSession, Founding, STREAM_BOUND_MARK};
use super::id::{is_valid_session_id, new_session_id};
use super::quota::{Admission, Seat, SessionQuota};
use super::scope::Scope;
use crate::auth::Caller;
use crate::clock::now_ms;
use crate::cluster::{Cluster, Event, Home, Peer};
use crate::metrics::Metrics;
use crate::store::{CapReached, SessionCaps, SessionRecord, Store};
use crate::telemetry::spans;
use crate::upstream::{ClientIdentity, UpstreamSession, UpstreamSet};

/// All client sessions of this node.
pub struct SessionRegistry {
    sessions: DashMap<String, Arc<ClientSession>>,
    store: Arc<Store>,
    /// The cluster this node is part of, if any.
    cluster: Option<Arc<Cluster>>,
    /// Homes of sessions other nodes serve, as last seen (bounded; a stale
    /// entry costs one misdirected request, which reads the store again).
    homes: DashMap<String, Arc<str>>,
    upstreams: Arc<UpstreamSet>,
    quota: Arc<SessionQuota>,
    /// The caps, counted cluster-wide in a cluster.
    caps: SessionCaps,
    metrics: Arc<Metrics>,
    idle_ttl: Duration,
    close_timeout: Duration,
    absolute_ttl: Option<Duration>,
    max_inflight: usize,
}

/// How often last-seen times are written to the store (batched).
const TOUCH_FLUSH: Duration = Duration::from_secs(2);
/// Stored sessions expired per reaper pass (the rest wait for the next one).
const REAP_BATCH: i64 = 256;
/// Homes of other nodes' sessions remembered at most (then forgotten at once).
const MAX_HOMES: usize = 65_536;

/// Where a client session is served.
pub enum Located {
    /// Here (held, restored or adopted).
    Here(Arc<ClientSession>),
    /// By another node: pass the request on.
    Peer(Peer),
    /// By another node, but this request was passed on to this one: the
    /// node that passed it on knew an older home.
    Misdirected,
    /// Nowhere: unknown, ended, expired or another principal's.
    Nowhere,
    /// Not known now: the store could not be read (retry later).
    Unavailable,
}

impl SessionRegistry {
    /// An empty registry over `store`; `upstreams` re-attach stored sessions;
    /// in a `cluster`, sessions have homes and the caps count cluster-wide.
    pub fn new(
        store: Arc<Store>,
        upstreams: Arc<UpstreamSet>,
        limits: RegistryLimits,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        SessionRegistry {
            sessions: DashMap::new(),
            store,
            cluster,
            homes: DashMap::new(),
            upstreams,
            quota: SessionQuota::new(
                limits.max_sessions,
                limits.max_per_principal,
                metrics.clone(),
            ),
            metrics,
            caps: SessionCaps {
                total: limits.max_sessions,
                per_principal: limits.max_per_principal,
            },
            idle_ttl: limits.idle_ttl,
            close_timeout: limits.close_timeout,
            absolute_ttl: limits.absolute_ttl,
            max_inflight: limits.max_inflight,
        }
    }

    /// Takes a place under the session caps for `principal`: for a session,
    /// or for an HTTP+SSE connection that becomes one.
    pub fn admit(&self, principal: &Arc<str>) -> Result<Seat, Admission> {
        self.quota.admit(principal)
    }

    /// Forgets a held session (ended here or elsewhere) and gives back its place.
    fn unregister(&self, id: &str) -> Option<Arc<ClientSession>> {
        let (_, session) = self.sessions.remove(id)?;
        crate::sync::shrink_dashmap_when_sparse(&self.sessions);
        session.vacate();
        Some(session)
    }

    /// Adds a legacy session of `caller` on `scope` under a fresh id, and stores it.
    pub async fn create(
        &self,
        scope: Scope,
        protocol_version: String,
        identity: ClientIdentity,
        caller: &Caller,
    ) -> Result<Arc<ClientSession>, Admission> {
        let seat = self.admit(&caller.principal)?;
        let session = self.found(
            new_session_id(),
            false,
            scope,
            protocol_version,
            identity,
            caller,
            Some(seat),
        );
        self.register(session).await
    }

    /// Adds the session of the HTTP+SSE connection `stream` (which holds its
    /// place under this node's caps), and stores it.
    pub async fn create_bound(
        &self,
        stream: &str,
        scope: Scope,
        protocol_version: String,
        identity: ClientIdentity,
        caller: &Caller,
    ) -> Result<Arc<ClientSession>, Admission> {
        let session = self.found(
            stream.to_owned(),
            true,
            scope,
            protocol_version,
            identity,
            caller,
            None,
        );
        self.register(session).await
    }

    #[allow(clippy::too_many_arguments)]
    fn found(
        &self,
        id: String,
        stream_bound: bool,
        scope: Scope,
        protocol_version: String,
        identity: ClientIdentity,
        caller: &Caller,
        seat: Option<Seat>,
    ) -> ClientSession {
        ClientSession::new(Founding {
            id,
            scope,
            stream_bound,
            protocol_version,
            identity,
            principal: caller.principal.clone(),
            created_ms: now_ms(),
            max_inflight: self.max_inflight,
            seat,
        })
    }

    /// Stores a new session (under the cluster-wide caps in a cluster, homed
    /// here) and holds it.
    async fn register(&self, session: ClientSession) -> Result<Arc<ClientSession>, Admission> {
        let session = Arc::new(session);
        session.touch();
        let mut record = session.record();
        let stored = match &self.cluster {
            Some(cluster) => {
                record.home_node = Some(cluster.node().to_string());
                match self.store.insert_capped(&record, self.caps).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(reached)) => {
                        session.vacate();
                        return Err(match reached {
                            CapReached::Total => Admission::Full,
                            CapReached::Principal => Admission::PrincipalFull,
                        });
                    }
                    Err(e) => Err(e),
                }
            }
            None => self.store.insert(&record).await,
        };
        if let Err(e) = stored {
            tracing::warn!(error = %e, "client session not stored: it will not survive a restart");
        }
        self.sessions.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// Where the session with this id is served, if `caller` owns it: held
    /// here, restored from the store (after a restart, or adopted from a
    /// node that left or died) with its upstream sessions re-attached by
    /// their stored ids, or served by its home node. `passed_on`: another
    /// node passed the request on, so it is never passed on again. Ids of
    /// invalid shape are never looked up; another principal's session is
    /// not found, exactly like an unknown one.
    pub async fn locate(&self, id: &str, caller: &Caller, passed_on: bool) -> Located {
        if !is_valid_session_id(id) {
            return Located::Nowhere;
        }
        let held = self.sessions.get(id).map(|s| s.clone());
        if let Some(s) = held {
            if s.stream_bound || s.principal != caller.principal {
                return Located::Nowhere;
            }
            if s.outlived(self.absolute_ttl) {
                self.end(id).await;
                return Located::Nowhere;
            }
            return Located::Here(s);
        }
        if !passed_on
            && let Some(cluster) = &self.cluster
            && let Some(home) = self.homes.get(id).map(|h| h.clone())
        {
            match cluster.known_peer(&home) {
                Some(peer) => return Located::Peer(peer),
                None => self.forget_home(id),
            }
        }
        let from_store = || self.locate_stored(id, caller, passed_on);
        let attributes = || vec![spans::session_attribute(id)];
        let unavailable = |found: &Located| {
            matches!(found, Located::Unavailable).then(|| "the session store failed".to_owned())
        };
        spans::internal(
            "restore client session",
            attributes,
            unavailable,
            from_store,
        )
        .await
    }

    /// Where the session `id`, not held here, is served, as its stored
    /// record says: held here (restored, or adopted from a node gone), or on
    /// its home node.
    async fn locate_stored(&self, id: &str, caller: &Caller, passed_on: bool) -> Located {
        // Twice at most: a lost race to adopt it reads it again.
        for _ in 0..2 {
            let record = match self.store.load(id).await {
                Ok(Some(r)) => r,
                Ok(None) => return Located::Nowhere,
                Err(e) => {
                    tracing::warn!(error = %e, "session store lookup failed");
                    return Located::Unavailable;
                }
            };
            if !self.servable(&record, caller) {
                return Located::Nowhere;
            }
            if let Some(cluster) = &self.cluster {
                let from = record.home_node.as_deref();
                match cluster.home(from).await {
                    Home::Here => {}
                    Home::Peer(_) if passed_on => return Located::Misdirected,
                    Home::Peer(peer) => {
                        self.remember_home(id, &peer.node);
                        return Located::Peer(peer);
                    }
                    // A leaving node adopts nothing: the request is passed on
                    // to a node that stays, or back to the one that sent it.
                    Home::Vacant if cluster.is_draining() => {
                        return match cluster.serving_peer() {
                            Some(peer) if !passed_on => Located::Peer(peer),
                            _ => Located::Misdirected,
                        };
                    }
                    Home::Vacant => match cluster.adopt(id, from).await {
                        Ok(true) => {
                            tracing::info!(session = %id, from = from.unwrap_or("-"), "adopted a client session");
                            self.metrics
                                .sessions_adopted
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "adopting a client session failed");
                            return Located::Unavailable;
                        }
                    },
                }
            }
            return match self.hold(record, caller) {
                Some(s) => Located::Here(s),
                None => Located::Nowhere,
            };
        }
        Located::Nowhere
    }

    /// Whether a stored session may be served to `caller`: not bound to an
    /// HTTP+SSE connection, theirs, and neither idle nor outlived.
    fn servable(&self, record: &SessionRecord, caller: &Caller) -> bool {
        if record.scope.starts_with(STREAM_BOUND_MARK) || *record.principal != *caller.principal {
            return false;
        }
        let now = now_ms();
        let idle = now - record.last_seen_ms > self.idle_ttl.as_millis() as i64;
        let outlived = self
            .absolute_ttl
            .is_some_and(|t| now - record.created_ms > t.as_millis() as i64);
        !idle && !outlived
    }

    /// Restores a stored session and holds it (or the copy a concurrent
    /// request restored first).
    fn hold(&self, record: SessionRecord, caller: &Caller) -> Option<Arc<ClientSession>> {
        let id = record.id.clone();
        let seat = self.admit(&caller.principal).ok()?;
        let session = self.restore(record, Some(seat))?;
        match self.sessions.entry(id) {
            dashmap::Entry::Occupied(held) => {
                session.vacate();
                Some(held.get().clone())
            }
            dashmap::Entry::Vacant(slot) => {
                session.touch();
                tracing::debug!(session = %slot.key(), "restored client session from the store");
                slot.insert(session.clone());
                Some(session)
            }
        }
    }

    fn remember_home(&self, id: &str, node: &Arc<str>) {
        if self.homes.len() >= MAX_HOMES {
            self.homes.clear();
        }
        self.homes.insert(id.to_owned(), node.clone());
    }

    /// Forgets where another node serves the session (that node says it
    /// does not): the next lookup reads the store.
    pub fn forget_home(&self, id: &str) {
        self.homes.remove(id);
        crate::sync::shrink_dashmap_when_sparse(&self.homes);
    }

    /// Forgets every session home on `node` (it is leaving).
    pub fn forget_homes_on(&self, node: &str) {
        self.homes.retain(|_, home| **home != *node);
        crate::sync::shrink_dashmap_when_sparse(&self.homes);
    }

    /// Stops serving a session another node ended or took over: forgets it
    /// without closing its upstream sessions (they are not this node's now).
    pub fn let_go(&self, id: &str) {
        self.forget_home(id);
        if let Some(session) = self.unregister(id) {
            session.forget();
            tracing::debug!(session = %id, "session ended or moved on another node");
        }
    }

    /// Another node ended the session: stops serving it and closes the
    /// upstream sessions this node holds for it (in the background).
    pub fn ended_elsewhere(&self, id: &str) {
        self.forget_home(id);
        if let Some(session) = self.unregister(id) {
            let timeout = self.close_timeout;
            tokio::spawn(async move { session.close(timeout).await });
            tracing::debug!(session = %id, "session ended on another node");
        }
    }

    /// Lets go of every session (not those bound to a connection here): this
    /// node can no longer tell whether another one took them over.
    pub fn let_go_all(&self) {
        self.homes.clear();
        for session in self.held().into_iter().filter(|s| !s.stream_bound) {
            self.let_go(&session.id);
        }
    }

    /// Another node is now the session's home.
    pub fn moved(&self, id: &str, node: &str) {
        self.let_go(id);
        if let Some(peer) = self.cluster.as_ref().and_then(|c| c.known_peer(node)) {
            self.remember_home(id, &peer.node);
        }
    }

    /// Checks every held session against the store (events may have been
    /// missed): lets go of those ended, or homed elsewhere now.
    pub async fn resync(&self) {
        self.homes.clear();
        let Some(cluster) = &self.cluster else { return };
        for session in self.held().into_iter().filter(|s| !s.stream_bound) {
            match self.store.load(&session.id).await {
                Ok(Some(r)) if r.home_node.as_deref() == Some(&**cluster.node()) => {}
                Ok(_) => self.let_go(&session.id),
                Err(e) => {
                    tracing::warn!(error = %e, "resync: session store lookup failed");
                    return;
                }
            }
        }
    }

    /// Leaving the cluster (after the drain period, before connections
    /// close): lets go of every session (not those bound to a connection,
    /// which end with it), leaves them without a home for the next node a
    /// request reaches, and tells the other nodes.
    pub async fn release_homes(&self) {
        let Some(cluster) = &self.cluster else { return };
        self.flush_touches().await;
        // Homeless in the store first: from then on, a request for one of
        // them here is passed on (this node is draining), never held again.
        match self.store.release_homes(cluster.node()).await {
            Ok(n) => tracing::info!(sessions = n, "left client sessions for the other nodes"),
            Err(e) => tracing::warn!(error = %e, "releasing client sessions failed"),
        }
        for session in self.held().into_iter().filter(|s| !s.stream_bound) {
            self.let_go(&session.id);
        }
        cluster.announce_leaving().await;
    }

    /// Ends the sessions a dead node held bound to its HTTP+SSE connections
    /// (no other node can serve them): closes their upstream sessions.
    pub async fn reap_node(&self, node: &str) {
        let ids = match self.store.sessions_homed(node, STREAM_BOUND_MARK).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing a dead node's sessions failed");
                return;
            }
        };
        for id in &ids {
            self.end_stored(id).await;
        }
        if !ids.is_empty() {
            tracing::info!(
                node,
                count = ids.len(),
                "ended a dead node's HTTP+SSE sessions"
            );
        }
    }

    /// Ends a session no node holds: closes its upstream sessions and
    /// removes it; true if it was stored.
    async fn end_stored(&self, id: &str) -> bool {
        if let Ok(Some(record)) = self.store.load(id).await
            && let Some(session) = self.restore(record, None)
        {
            session.close(self.close_timeout).await;
        }
        let ended = self.store.delete(id).await.unwrap_or(false);
        if ended {
            self.announce_end(id).await;
        }
        ended
    }

    async fn announce_end(&self, id: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.publish(Event::SessionEnded(id.to_owned())).await;
        }
    }

    /// Rebuilds a stored session (not registered) holding `seat`; `None` if
    /// its endpoint is gone.
    fn restore(&self, record: SessionRecord, seat: Option<Seat>) -> Option<Arc<ClientSession>> {
        let stream_bound = record.scope.starts_with(STREAM_BOUND_MARK);
        let scope = Scope::from_label(record.scope.trim_start_matches(STREAM_BOUND_MARK), |n| {
            Some(self.upstreams.get(n)?.name.clone())
        })?;
        let raw = |text: &str| serde_json::value::RawValue::from_string(text.to_owned()).ok();
        let identity = ClientIdentity {
            info: raw(&record.client_info).unwrap_or_else(|| ClientIdentity::tether().info),
            capabilities: raw(&record.client_capabilities)
                .unwrap_or_else(|| ClientIdentity::tether().capabilities),
            credentials: None,
        };
        let session = Arc::new(ClientSession::new(Founding {
            id: record.id,
            scope,
            stream_bound,
            protocol_version: record.protocol_version,
            identity,
            principal: Arc::from(record.principal.as_str()),
            created_ms: record.created_ms,
            max_inflight: self.max_inflight,
            seat,
        }));
        if let Some(level) = record.log_level {
            session.set_log_level(level);
        }
        for binding in &record.upstreams {
            let reattached = self
                .upstreams
                .get(binding.upstream.as_str())
                .and_then(|up| UpstreamSession::reattach(up, binding, &session.identity));
            if let Some(reattached) = reattached {
                session.upstreams.seed(reattached);
            }
        }
        Some(session)
    }

    /// Ends a session: closes its upstream sessions and removes it from the
    /// store; true if it existed. One held by no node (or by another node,
    /// which then lets go of it) is ended from its stored record.
    pub async fn end(&self, id: &str) -> bool {
        let Some(session) = self.unregister(id) else {
            return self.end_stored(id).await;
        };
        match self.store.delete(id).await {
            Ok(true) => self.announce_end(id).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "removing a session from the store failed"),
        }
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
            if self.served_elsewhere(id).await {
                continue;
            }
            if self.end_stored(id).await {
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(count = n, "ended idle client sessions");
        }
        n
    }

    /// Whether another live node is the stored session's home (it reaps it).
    async fn served_elsewhere(&self, id: &str) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        match self.store.load(id).await {
            Ok(Some(r)) => matches!(cluster.home(r.home_node.as_deref()).await, Home::Peer(_)),
            _ => false,
        }
    }

    /// Writes the last-seen times of sessions used since the last flush.
    pub async fn flush_touches(&self) {
        let seen: Vec<(String, i64)> = self
            .sessions
            .iter()
            .filter(|s| s.take_dirty())
            .map(|s| (s.key().clone(), s.activity().1))
            .collect();
        if seen.is_empty() {
            return;
        }
        let home = self.cluster.as_ref().map(|c| &**c.node());
        match self.store.touch(&seen, home).await {
            // Ended on another node (DELETE, expiry), which closed the
            // upstream sessions, or taken over by another node: this one
            // just stops serving it.
            Ok(gone) => {
                for id in gone {
                    self.let_go(&id);
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
        for session in self.sessions.iter().filter(|s| affects(&s.scope)) {
            if let Some(tx) = session.outbound() {
                for (_, change) in LIST_CHANGED {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ANONYMOUS, Access};

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
        SessionRegistry::new(
            store,
            Arc::default(),
            limits,
            Arc::new(Metrics::default()),
            None,
        )
    }

    fn caller(principal: &str) -> Caller {
        Caller {
            principal: Arc::from(principal),
            access: Arc::new(Access::everything()),
            credentials: None,
        }
    }

    impl SessionRegistry {
        async fn find(&self, id: &str, caller: &Caller) -> Option<Arc<ClientSession>> {
            match self.locate(id, caller, false).await {
                Located::Here(s) => Some(s),
                _ => None,
            }
        }
    }

    #[tokio::test]
    async fn another_principal_finds_nothing() {
        let reg = registry();
        let (alice, bob) = (caller("iss|alice"), caller("iss|bob"));
        let s = reg
            .create(
                Scope::Federated,
                "2025-11-25".into(),
                ClientIdentity::tether(),
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
            .create_bound(
                &id,
                Scope::Federated,
                "2024-11-05".into(),
                ClientIdentity::tether(),
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
        let restored = reg.restore(record, None).unwrap();
        assert!(
            restored.stream_bound,
            "the reaper restores it as what it was"
        );
        assert_eq!(restored.scope, Scope::Federated);
    }
}
