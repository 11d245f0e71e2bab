//! The upstream sessions of one client session, or of one sessionless
//! request, keyed by upstream: created on first use (concurrent first uses
//! share one initialize), reused after, evicted on failure, and all closed
//! exactly once when their owner ends ([invariant: isolation],
//! [invariant: close-once]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_wire::protocol::Era;
use tokio::sync::OnceCell;

use super::Upstream;
use super::error::UpstreamError;
use super::identity::ClientIdentity;
use super::session::UpstreamSession;
use crate::store::UpstreamBinding;
use crate::sync::lock;

type Slot = Arc<OnceCell<Arc<UpstreamSession>>>;

/// Who owns a set of upstream sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A client session: sessions are legacy where the upstream speaks both
    /// eras (a dual-era server keeps per-session state only there).
    Session,
    /// One sessionless request: shared upstreams lend pooled sessions, and
    /// dual-era upstreams are spoken to in the modern era (no handshake per call).
    Request,
}

/// Upstream sessions owned by one client session or one sessionless request.
pub struct SessionSet {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
    /// What the store recorded for sessions evicted since (by upstream):
    /// forgotten there before their replacement is recorded.
    evicted: Mutex<HashMap<Arc<str>, UpstreamBinding>>,
    closed: AtomicBool,
    owner: Owner,
}

impl SessionSet {
    /// The set of a client session.
    pub fn for_session() -> Self {
        SessionSet::new(Owner::Session)
    }

    /// The set of one sessionless request.
    pub fn for_request() -> Self {
        SessionSet::new(Owner::Request)
    }

    fn new(owner: Owner) -> Self {
        SessionSet {
            slots: Mutex::new(HashMap::new()),
            evicted: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            owner,
        }
    }

    /// Puts a re-attached session in place (restoring a stored client session).
    pub fn seed(&self, session: Arc<UpstreamSession>) {
        let slot = Arc::new(OnceCell::new_with(Some(session.clone())));
        lock(&self.slots).insert(session.upstream.name.clone(), slot);
    }

    /// Whether sessions for `upstream` are borrowed from its pool.
    fn borrows_from(&self, upstream: &Upstream) -> bool {
        self.owner == Owner::Request && upstream.pools_sessions()
    }

    /// The session with `upstream`, opening it on first use; the flag is true
    /// when this call opened it.
    pub async fn get(
        &self,
        upstream: &Arc<Upstream>,
        client: &ClientIdentity,
    ) -> Result<(Arc<UpstreamSession>, bool), UpstreamError> {
        let slot = {
            let mut slots = lock(&self.slots);
            if self.closed.load(Ordering::Acquire) {
                return Err(UpstreamError::Protocol("client session has ended".into()));
            }
            slots.entry(upstream.name.clone()).or_default().clone()
        };
        let mut opened = false;
        let session = slot
            .get_or_try_init(|| async {
                let (session, fresh) = if self.borrows_from(upstream) {
                    upstream.checkout_pooled(client).await?
                } else {
                    let preferred = match self.owner {
                        Owner::Session => Era::Legacy,
                        Owner::Request => Era::Modern,
                    };
                    (upstream.open_session(client, preferred).await?, true)
                };
                opened = fresh;
                Ok::<_, UpstreamError>(session)
            })
            .await?
            .clone();
        if self.closed.load(Ordering::Acquire) {
            // The owner ended while this one was opening: don't leak it.
            session.close().await;
            return Err(UpstreamError::Protocol("client session has ended".into()));
        }
        Ok((session, opened))
    }

    /// Drops `session` from the set (if it is still the current one) so the
    /// next use opens a fresh session; closes it in the background.
    pub fn evict(&self, session: &Arc<UpstreamSession>) {
        {
            let mut slots = lock(&self.slots);
            let current = slots.get(&session.upstream.name).and_then(|s| s.get());
            if current.is_some_and(|c| Arc::ptr_eq(c, session)) {
                slots.remove(&session.upstream.name);
                if session.is_reattachable() {
                    lock(&self.evicted).insert(session.upstream.name.clone(), session.binding());
                }
            }
        }
        let session = session.clone();
        tokio::spawn(async move { session.close().await });
    }

    /// The stored binding of the session with `upstream` evicted last, if
    /// it was not taken since.
    pub fn take_evicted(&self, upstream: &str) -> Option<UpstreamBinding> {
        lock(&self.evicted).remove(upstream)
    }

    /// Puts `adopted` in place of `opened` (another node opened the same
    /// client's session with that upstream first); false when `opened` is no
    /// longer the set's session.
    pub fn adopt(&self, opened: &Arc<UpstreamSession>, adopted: Arc<UpstreamSession>) -> bool {
        let mut slots = lock(&self.slots);
        let name = &opened.upstream.name;
        let current = slots.get(name).and_then(|s| s.get());
        if !current.is_some_and(|c| Arc::ptr_eq(c, opened)) {
            return false;
        }
        slots.insert(name.clone(), Arc::new(OnceCell::new_with(Some(adopted))));
        true
    }

    /// Takes out the session with `upstream` (that very upstream object, not
    /// a newer one of the same name), for the caller to close.
    pub fn take(&self, upstream: &Arc<Upstream>) -> Option<Arc<UpstreamSession>> {
        let mut slots = lock(&self.slots);
        let current = slots.get(&upstream.name)?.get()?.clone();
        if !Arc::ptr_eq(&current.upstream, upstream) {
            return None;
        }
        slots.remove(&upstream.name);
        Some(current)
    }

    /// The sessions opened so far.
    pub fn sessions(&self) -> Vec<Arc<UpstreamSession>> {
        lock(&self.slots)
            .values()
            .filter_map(|s| s.get().cloned())
            .collect()
    }

    /// Takes every session out and marks the set ended: borrowed sessions go
    /// back to their pool; the rest are returned for the caller to close.
    fn drain(&self) -> Vec<Arc<UpstreamSession>> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        lock(&self.slots)
            .drain()
            .filter_map(|(_, s)| s.get().cloned())
            .filter_map(|s| {
                if self.borrows_from(&s.upstream) {
                    let upstream = s.upstream.clone();
                    upstream.checkin_pooled(s)
                } else {
                    Some(s)
                }
            })
            .collect()
    }

    /// Closes every session in parallel, once; each close is bounded in time.
    pub async fn close_all(&self, timeout: Duration) {
        close_bounded(self.drain(), timeout).await;
    }

    /// Ends the set without waiting: borrowed sessions go back to their pool
    /// at once (the next sessionless request finds them), the rest close in
    /// the background, bounded by `timeout`.
    pub fn release(&self, timeout: Duration) {
        let sessions = self.drain();
        if sessions.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_bounded(sessions, timeout));
        }
    }
}

/// Closes `sessions` in parallel, abandoning whatever is not done in `timeout`.
async fn close_bounded(sessions: Vec<Arc<UpstreamSession>>, timeout: Duration) {
    let closes = sessions.iter().map(|s| s.close());
    if tokio::time::timeout(timeout, futures_util::future::join_all(closes))
        .await
        .is_err()
    {
        tracing::warn!("closing upstream sessions timed out; abandoned the rest");
    }
}
