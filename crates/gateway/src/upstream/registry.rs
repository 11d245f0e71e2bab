//! The upstream sessions of one client session, keyed by upstream: created
//! on first use (concurrent first uses share one initialize), reused after,
//! evicted on failure, all closed exactly once when the client session ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{ClientIdentity, Upstream, UpstreamError, UpstreamSession};
use crate::sync::lock;
use tether_wire::protocol::Era;

type Slot = Arc<OnceCell<Arc<UpstreamSession>>>;

/// Upstream sessions owned by one client session (or one sessionless request).
pub struct SessionSet {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
    closed: AtomicBool,
    /// Sessionless: shared upstreams lend pooled sessions instead of opening new ones.
    ephemeral: bool,
}

impl SessionSet {
    /// An empty set. `ephemeral` sets serve one sessionless request.
    pub fn new(ephemeral: bool) -> Self {
        SessionSet {
            slots: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            ephemeral,
        }
    }

    /// Puts a re-attached session in place (restoring a stored client session).
    pub fn seed(&self, session: Arc<UpstreamSession>) {
        let slot = Arc::new(OnceCell::new_with(Some(session.clone())));
        lock(&self.slots).insert(session.upstream.name.clone(), slot);
    }

    /// Whether the set serves one sessionless request.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
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
        let pooled = self.ephemeral && upstream.pools_sessions();
        let mut opened = false;
        let session = slot
            .get_or_try_init(|| async {
                let (session, fresh) = if pooled {
                    upstream.checkout_pooled(client).await?
                } else {
                    // A client session (legacy) keeps per-session state in a dual-era
                    // upstream only in the legacy era; sessionless requests avoid a
                    // handshake per call in the modern one.
                    let preferred = if self.ephemeral {
                        Era::Modern
                    } else {
                        Era::Legacy
                    };
                    (upstream.open_session(client, preferred).await?, true)
                };
                opened = fresh;
                Ok::<_, UpstreamError>(session)
            })
            .await?
            .clone();
        if self.closed.load(Ordering::Acquire) {
            // The client session ended while this one was opening: don't leak it.
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
            }
        }
        let session = session.clone();
        tokio::spawn(async move { session.close().await });
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

    /// Returns pooled sessions to their upstream's pool right away (so the next
    /// sessionless request finds them); yields the ones that must be closed.
    fn release(&self, session: Arc<UpstreamSession>) -> Option<Arc<UpstreamSession>> {
        if self.ephemeral && session.upstream.pools_sessions() {
            let upstream = session.upstream.clone();
            upstream.checkin_pooled(session)
        } else {
            Some(session)
        }
    }

    /// Hands pooled sessions back to their upstream's pool now, so the next
    /// sessionless request finds them; returns those the full pool refused.
    pub fn release_pooled(&self) -> Vec<Arc<UpstreamSession>> {
        if !self.ephemeral {
            return Vec::new();
        }
        let mut slots = lock(&self.slots);
        let shared: Vec<Arc<str>> = slots
            .iter()
            .filter(|(_, s)| s.get().is_some_and(|s| s.upstream.pools_sessions()))
            .map(|(k, _)| k.clone())
            .collect();
        shared
            .iter()
            .filter_map(|k| slots.remove(k)?.get().cloned())
            .filter_map(|s| self.release(s))
            .collect()
    }

    /// Closes every session in parallel, once; each close is bounded in time.
    /// Sessions of a sessionless request that belong to a pool go back to it.
    pub async fn close_all(&self, timeout: Duration) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let sessions: Vec<_> = lock(&self.slots)
            .drain()
            .filter_map(|(_, s)| s.get().cloned())
            .filter_map(|s| self.release(s))
            .collect();
        let closes = sessions.iter().map(|s| s.close());
        if tokio::time::timeout(timeout, futures_util::future::join_all(closes))
            .await
            .is_err()
        {
            tracing::warn!("closing upstream sessions timed out; abandoned the rest");
        }
    }
}
