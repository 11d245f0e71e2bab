//! Cluster events: what one node does that the others must know at once
//! (a session ended or moved, upstream definitions changed, an upstream's
//! sessions evicted), carried by Postgres `NOTIFY`, plus what this node
//! itself finds (a dead node removed, events possibly missed while the
//! listening connection was down).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use crate::store::CHANNEL;

/// Something another node did, or this node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session ended (DELETE, expiry): stop serving it.
    SessionEnded(String),
    /// A session's home is now `node`.
    SessionMoved {
        /// The session.
        session: String,
        /// Its new home.
        node: String,
    },
    /// Upstream definitions changed through the admin API.
    UpstreamsChanged,
    /// Every session with this upstream was evicted (admin API).
    UpstreamEvicted(String),
    /// This node is leaving and serves no session any more: what it served
    /// is adopted by the next node a request reaches.
    NodeLeaving(String),
    /// This node removed a dead node: clean up after it.
    NodeGone(String),
    /// Events may have been missed: read the shared state again.
    Resync,
    /// This node could not write its heartbeat for longer than `dead_after`:
    /// the others may have taken its sessions over.
    LeaseLost,
}

impl Event {
    /// The `NOTIFY` payload for an event this node sends (none for the
    /// events a node only finds itself).
    pub fn encode(&self, from: &str) -> Option<String> {
        Some(match self {
            Event::SessionEnded(id) => format!("{from} ended {id}"),
            Event::SessionMoved { session, node } => format!("{from} moved {session} {node}"),
            Event::UpstreamsChanged => format!("{from} upstreams"),
            Event::UpstreamEvicted(name) => format!("{from} evicted {name}"),
            Event::NodeLeaving(node) => format!("{from} leaving {node}"),
            Event::NodeGone(_) | Event::Resync | Event::LeaseLost => return None,
        })
    }

    /// The event a payload carries, unless it came from `me` (a node acts on
    /// its own events as it makes them) or is not one Tether sends.
    pub fn decode(payload: &str, me: &str) -> Option<Event> {
        let mut words = payload.split(' ');
        let from = words.next()?;
        if from == me {
            return None;
        }
        let event = match (words.next()?, words.next(), words.next()) {
            ("ended", Some(id), None) => Event::SessionEnded(id.to_owned()),
            ("moved", Some(session), Some(node)) => Event::SessionMoved {
                session: session.to_owned(),
                node: node.to_owned(),
            },
            ("upstreams", None, None) => Event::UpstreamsChanged,
            ("evicted", Some(name), None) => Event::UpstreamEvicted(name.to_owned()),
            ("leaving", Some(node), None) => Event::NodeLeaving(node.to_owned()),
            _ => return None,
        };
        words.next().is_none().then_some(event)
    }
}

/// Longest wait between attempts to listen again.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Listens on the store's `NOTIFY` channel until `events` closes; each time
/// listening (re)starts, sends [`Event::Resync`] first.
pub async fn listen(url: String, me: Arc<str>, events: mpsc::Sender<Event>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "cluster events: cannot listen");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
                continue;
            }
        };
        wait = Duration::from_millis(100);
        if events.send(Event::Resync).await.is_err() {
            return;
        }
        // `None`: the connection was lost (notifications may be missed):
        // listen again from scratch, which resyncs.
        while let Ok(Some(notification)) = listener.try_recv().await {
            if let Some(event) = Event::decode(notification.payload(), &me)
                && events.send(event).await.is_err()
            {
                return;
            }
        }
        tracing::warn!("cluster events: listening connection lost; listening again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_own_events_are_skipped() {
        for event in [
            Event::SessionEnded("abc".into()),
            Event::SessionMoved {
                session: "abc".into(),
                node: "n2".into(),
            },
            Event::UpstreamsChanged,
            Event::UpstreamEvicted("demo".into()),
            Event::NodeLeaving("n1".into()),
        ] {
            let payload = event.encode("n1").unwrap();
            assert_eq!(Event::decode(&payload, "n2"), Some(event.clone()));
            assert_eq!(Event::decode(&payload, "n1"), None, "its own");
        }
        assert_eq!(Event::NodeGone("x".into()).encode("n1"), None);
        for junk in ["", "n1", "n1 ended", "n1 ended a b", "n1 what x"] {
            assert_eq!(Event::decode(junk, "n2"), None, "{junk:?}");
        }
    }
}
