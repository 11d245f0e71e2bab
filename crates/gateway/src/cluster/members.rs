//! Who is in the cluster, as this node last read it from the store: each
//! node's address, how long it has been silent, whether it is draining; and
//! which nodes this node found unreachable since (a refused connection is
//! a surer sign of death than a missed heartbeat, and a faster one), or
//! heard announce that they are leaving (no longer a home for anything,
//! though they still answer the requests they hold).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::NodeRow;
use crate::sync::{read, write};

/// Another node, as requests reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub node: Arc<str>,
    /// Its base URL.
    pub address: Arc<str>,
}

struct Member {
    address: Arc<str>,
    /// Its last heartbeat, on this node's monotonic clock (none: longer ago
    /// than this clock goes back).
    heard: Option<Instant>,
    draining: bool,
}

/// The nodes of the cluster (see the module documentation).
pub struct Members {
    me: Arc<str>,
    dead_after: Duration,
    nodes: RwLock<HashMap<Arc<str>, Member>>,
    /// Nodes that refused a connection, and when.
    unreachable: RwLock<HashMap<Arc<str>, Instant>>,
    /// Nodes that announced they are leaving.
    leaving: RwLock<HashSet<Arc<str>>>,
    /// Live nodes as of the last change (read on every rate-limited request).
    live: AtomicUsize,
}

impl Members {
    /// No members known yet; `me` is this node.
    pub fn new(me: Arc<str>, dead_after: Duration) -> Self {
        Members {
            me,
            dead_after,
            nodes: RwLock::new(HashMap::new()),
            unreachable: RwLock::new(HashMap::new()),
            leaving: RwLock::new(HashSet::new()),
            live: AtomicUsize::new(1),
        }
    }

    /// Takes in the store's list of nodes, read just now.
    pub fn refresh(&self, rows: Vec<NodeRow>) {
        let now = Instant::now();
        let nodes: HashMap<Arc<str>, Member> = rows
            .into_iter()
            .map(|row| {
                let silent = Duration::from_millis(row.silent_ms.max(0) as u64);
                let member = Member {
                    address: row.address.into(),
                    heard: now.checked_sub(silent),
                    draining: row.draining,
                };
                (Arc::from(row.id), member)
            })
            .collect();
        // A leaving node drains until it is gone; a row that does not drain
        // (gone, or started again under its id) is not leaving.
        write(&self.leaving).retain(|id| nodes.get(id).is_some_and(|m| m.draining));
        *write(&self.nodes) = nodes;
        write(&self.unreachable).retain(|_, at| at.elapsed() < self.dead_after);
        self.count_live();
    }

    fn count_live(&self) {
        let live = self.others().count() + 1;
        self.live.store(live, Ordering::Relaxed);
    }

    /// Marks `node` unreachable (it refused a connection): it counts as
    /// dead until it proves otherwise or `dead_after` passes.
    pub fn unreachable(&self, node: &str) {
        if let Some(id) = self.known_id(node) {
            write(&self.unreachable).insert(id, Instant::now());
            self.count_live();
        }
    }

    /// Marks `node` leaving (it said so): no longer a peer to pass requests
    /// on to, though it still answers those it holds until it stops.
    pub fn leaving(&self, node: &str) {
        if let Some(id) = self.known_id(node) {
            write(&self.leaving).insert(id);
            self.count_live();
        }
    }

    fn known_id(&self, node: &str) -> Option<Arc<str>> {
        read(&self.nodes)
            .get_key_value(node)
            .map(|(id, _)| id.clone())
    }

    /// Whether `id` was among the nodes last read.
    pub fn knows(&self, id: &str) -> bool {
        read(&self.nodes).contains_key(id)
    }

    /// The node `id` if it is alive, not leaving and not this one.
    pub fn peer(&self, id: &str) -> Option<Peer> {
        if id == &*self.me {
            return None;
        }
        let nodes = read(&self.nodes);
        let (node, member) = nodes.get_key_value(id)?;
        self.alive(id, member).then(|| Peer {
            node: node.clone(),
            address: member.address.clone(),
        })
    }

    /// Whether node `id` still answers: it heartbeats and has not refused a
    /// connection (leaving or not).
    pub fn answering(&self, id: &str) -> bool {
        read(&self.nodes)
            .get(id)
            .is_some_and(|member| self.answers(id, member))
    }

    fn answers(&self, id: &str, member: &Member) -> bool {
        member
            .heard
            .is_some_and(|at| at.elapsed() < self.dead_after)
            && read(&self.unreachable)
                .get(id)
                .is_none_or(|at| at.elapsed() >= self.dead_after)
    }

    /// Answers, and has not announced it is leaving.
    fn alive(&self, id: &str, member: &Member) -> bool {
        self.answers(id, member) && !read(&self.leaving).contains(id)
    }

    /// For each other live node (not leaving), whether it is serving (not draining).
    fn others(&self) -> impl Iterator<Item = bool> {
        let nodes = read(&self.nodes);
        nodes
            .iter()
            .filter(|(id, m)| **id != self.me && self.alive(id, m))
            .map(|(_, m)| !m.draining)
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Live nodes, this one included (at least 1), as of the last
    /// refresh or unreachable node.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// A live node that is serving (not draining), other than this one.
    pub fn serving_peer(&self) -> Option<Peer> {
        let nodes = read(&self.nodes);
        nodes
            .iter()
            .find(|(id, m)| **id != self.me && !m.draining && self.alive(id, m))
            .map(|(id, m)| Peer {
                node: id.clone(),
                address: m.address.clone(),
            })
    }

    /// Whether another live node is serving (not leaving).
    pub fn others_serving(&self) -> bool {
        self.others().any(|serving| serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, silent_ms: i64, draining: bool) -> NodeRow {
        NodeRow {
            id: id.into(),
            address: format!("http://{id}"),
            silent_ms,
            draining,
        }
    }

    #[test]
    fn silent_and_unreachable_nodes_are_dead() {
        let members = Members::new("me".into(), Duration::from_secs(5));
        members.refresh(vec![
            row("me", 0, false),
            row("a", 100, false),
            row("b", 9_000, false),
            row("c", 0, true),
        ]);
        assert_eq!(members.peer("me"), None, "this node is no peer");
        assert_eq!(members.peer("a").unwrap().address.as_ref(), "http://a");
        assert_eq!(members.peer("b"), None, "silent longer than dead_after");
        assert_eq!(members.peer("zz"), None, "unknown");
        assert_eq!(members.live(), 3, "me, a and the draining c");
        assert!(members.others_serving());
        assert_eq!(members.serving_peer().unwrap().node.as_ref(), "a");
        members.unreachable("a");
        assert_eq!(members.serving_peer(), None, "c is leaving");
        assert_eq!(members.peer("a"), None, "refused a connection");
        assert!(!members.others_serving(), "c is leaving");
        assert_eq!(members.live(), 2);
        assert!(!members.answering("a"), "refused a connection");
    }

    #[test]
    fn a_leaving_node_takes_no_work_but_still_answers_what_it_holds() {
        let members = Members::new("me".into(), Duration::from_secs(5));
        members.refresh(vec![
            row("me", 0, false),
            row("a", 0, true),
            row("b", 0, false),
        ]);
        members.leaving("a");
        assert_eq!(
            members.peer("a"),
            None,
            "no new requests for a leaving node"
        );
        assert!(
            members.answering("a"),
            "its requests in flight are still answered"
        );
        assert_eq!(members.live(), 2, "me and b");
        members.refresh(vec![
            row("me", 0, false),
            row("a", 9_000, true),
            row("b", 0, false),
        ]);
        assert!(!members.answering("a"), "silent longer than dead_after");
        members.refresh(vec![
            row("me", 0, false),
            row("a", 0, false),
            row("b", 0, false),
        ]);
        assert!(
            members.peer("a").is_some(),
            "started again under its id: not leaving"
        );
    }
}
