//! The cluster: several nodes sharing one Postgres store behind any load
//! balancer (see docs/architecture.md, "Cluster"). Each node registers and
//! heartbeats in the store; each client session has one home node that
//! holds everything bound to it (its upstream sessions, streams, waiting
//! requests), and the other nodes pass its requests there over the
//! authenticated [`channel`]. A node that dies stops heartbeating or
//! refuses connections; the next node a request for one of its sessions
//! reaches adopts it (moving its home by compare-and-set). What one node
//! changes, the others hear at once through [`events`].

pub mod channel;
pub mod events;
mod members;
mod shared_processes;

pub use channel::{Channel, SendError};
pub use events::Event;
pub use members::Peer;
use shared_processes::process_resource;
pub use shared_processes::{PROCESS_PATH, SharedProcesses};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::ClusterConfig;
use crate::store::{NodeRow, Store, StoreError};
use members::Members;

/// Least time between two reads of the nodes for a node id not heard of
/// yet (so requests naming made-up nodes cannot flood the store).
const LOOKUP_GAP: Duration = Duration::from_millis(100);

/// Where a stored session is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// By this node.
    Here,
    /// By another live node.
    Peer(Peer),
    /// By no live node: the first node to reach it adopts it.
    Vacant,
}

/// Why this node could not join the cluster.
#[derive(Debug)]
pub enum JoinError {
    /// The store failed.
    Store(StoreError),
    /// No address other nodes could reach this one at.
    NoAddress(SocketAddr),
    /// The channel's HTTP client could not be built.
    Channel(reqwest::Error),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Store(e) => write!(f, "cluster: {e}"),
            JoinError::NoAddress(listen) => write!(
                f,
                "cluster: set cluster.advertise to the URL other nodes reach this one at (listening on {listen} names no single address)"
            ),
            JoinError::Channel(e) => write!(f, "cluster: channel client: {e}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// This node's membership of the cluster (see the module documentation).
pub struct Cluster {
    node: Arc<str>,
    address: String,
    store: Arc<Store>,
    members: Members,
    channel: Option<Channel>,
    draining: AtomicBool,
    heartbeat: Duration,
    dead_after: Duration,
    drain: Duration,
    /// When the nodes were last read for an unknown id (held while reading).
    looked_up: tokio::sync::Mutex<Option<Instant>>,
    /// The heartbeat has failed for longer than `dead_after`: the other
    /// nodes may have taken this one's sessions over.
    lease_lost: AtomicBool,
}

impl Cluster {
    /// Joins the cluster of the nodes sharing `store` (none when the store
    /// is not shared: one node, no cluster). Returns the cluster and the
    /// events this node must act on; heartbeats and listening run until the
    /// receiver is dropped.
    pub async fn join(
        store: Arc<Store>,
        config: &ClusterConfig,
        listen: SocketAddr,
    ) -> Result<Option<(Arc<Cluster>, mpsc::Receiver<Event>)>, JoinError> {
        let Some(url) = store.shared_url().map(str::to_owned) else {
            return Ok(None);
        };
        let node: Arc<str> = if config.node_id.is_empty() {
            random_node_id().into()
        } else {
            config.node_id.as_str().into()
        };
        let address = if !config.advertise.is_empty() {
            config.advertise.trim_end_matches('/').to_owned()
        } else if listen.ip().is_unspecified() && !config.secret.is_empty() {
            return Err(JoinError::NoAddress(listen));
        } else {
            format!("http://{listen}")
        };
        let channel = if config.secret.is_empty() {
            tracing::warn!(
                "cluster.secret is not set: this node cannot pass requests to other nodes sharing its store (nor take theirs); run one node per store or set the secret on every node"
            );
            None
        } else {
            Some(Channel::new(&config.secret).map_err(JoinError::Channel)?)
        };
        let dead_after = Duration::from_millis(config.dead_after_ms);
        let earlier_lives = store
            .register_node(&node, &address)
            .await
            .map_err(JoinError::Store)?;
        let cluster = Arc::new(Cluster {
            members: Members::new(node.clone(), dead_after),
            node: node.clone(),
            address,
            store,
            channel,
            draining: AtomicBool::new(false),
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            dead_after,
            drain: Duration::from_secs(config.drain_secs),
            looked_up: tokio::sync::Mutex::new(None),
            lease_lost: AtomicBool::new(false),
        });
        if let Ok(rows) = cluster.store.nodes().await {
            cluster.members.refresh(rows);
        }
        tracing::info!(node = %cluster.node, address = %cluster.address, "joined the cluster");
        let (tx, rx) = mpsc::channel(1024);
        // What an earlier life of this node held is cleaned up like a dead node's.
        for earlier in earlier_lives {
            tracing::info!(node = %earlier, "replaced an earlier node at this address");
            let _ = tx.try_send(Event::NodeGone(earlier));
        }
        tokio::spawn(events::listen(url, node, tx.clone()));
        tokio::spawn(heartbeat(Arc::downgrade(&cluster), tx));
        Ok(Some((cluster, rx)))
    }

    /// This node's id.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// The channel to the other nodes (none without the cluster secret).
    pub fn channel(&self) -> Option<&Channel> {
        self.channel.as_ref()
    }

    /// Where a session whose stored home is `stored` is served.
    pub async fn home(&self, stored: Option<&str>) -> Home {
        match stored {
            None => Home::Vacant,
            Some(node) if node == &*self.node => Home::Here,
            Some(node) => self.peer(node).await.map_or(Home::Vacant, Home::Peer),
        }
    }

    /// Every node the store knows, as it knows them now.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.store.nodes().await
    }

    /// Whether a node as the store knows it counts as alive.
    pub fn counts_alive(&self, node: &NodeRow) -> bool {
        *node.id == *self.node || node.silent_ms < self.dead_after.as_millis() as i64
    }

    /// The live node `id`, if it is another node. A node not heard of yet
    /// (it joined since the last heartbeat) is looked up in the store first.
    pub async fn peer(&self, id: &str) -> Option<Peer> {
        if id != &*self.node && !self.members.knows(id) {
            self.look_up_nodes().await;
        }
        self.members.peer(id)
    }

    /// The live node `id` as last read (no store lookup).
    pub fn known_peer(&self, id: &str) -> Option<Peer> {
        self.members.peer(id)
    }

    /// Reads the nodes again, unless that was done in the last
    /// [`LOOKUP_GAP`]; callers arriving meanwhile wait for the read under way.
    pub async fn look_up_nodes(&self) {
        let mut last = self.looked_up.lock().await;
        if last.is_some_and(|at| at.elapsed() < LOOKUP_GAP) {
            return;
        }
        match self.store.nodes().await {
            Ok(rows) => self.members.refresh(rows),
            Err(e) => tracing::warn!(error = %e, "reading the cluster's nodes failed"),
        }
        *last = Some(Instant::now());
    }

    /// Makes this node the session's home if its home is still `from`,
    /// telling the other nodes in the same transaction; true when it did.
    pub async fn adopt(&self, session: &str, from: Option<&str>) -> Result<bool, StoreError> {
        let moved = Event::SessionMoved {
            session: session.to_owned(),
            node: self.node.to_string(),
        };
        let announce = moved.encode(&self.node).unwrap_or_default();
        self.store
            .move_home(session, from, &self.node, &announce)
            .await
    }

    /// Whether the store names this node as the one running shared stdio
    /// upstream `upstream`'s process.
    pub async fn runs_process(&self, upstream: &str) -> Result<bool, StoreError> {
        let owner = self.store.owner(&process_resource(upstream)).await?;
        Ok(owner.as_deref() == Some(&*self.node))
    }

    /// Whether this node should not be sent requests: it is leaving, or it
    /// has lost touch with the store (its sessions may be served elsewhere).
    pub fn is_unready(&self) -> bool {
        self.is_draining() || self.lease_lost.load(Ordering::Acquire)
    }

    /// Resolves once node `id` counts as dead (checked every heartbeat).
    pub async fn until_dead(&self, id: &str) {
        while self.members.answering(id) {
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    /// Records that `peer` refused a connection: it counts as dead.
    pub fn unreachable(&self, peer: &Peer) {
        tracing::warn!(node = %peer.node, address = %peer.address, "node refused a connection; taking over what it served");
        self.members.unreachable(&peer.node);
    }

    /// Live nodes, this one included.
    pub fn live_nodes(&self) -> usize {
        self.members.live()
    }

    /// Tells the other nodes (best effort: a node that misses it resyncs).
    pub async fn publish(&self, event: Event) {
        let Some(payload) = event.encode(&self.node) else {
            return;
        };
        if let Err(e) = self.store.notify(&payload).await {
            tracing::warn!(error = %e, "cluster event not sent");
        }
    }

    /// Whether this node is leaving.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts leaving: reports not-ready, and waits the drain period while
    /// another node is serving to take the traffic.
    pub async fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        let _ = self.store.heartbeat(&self.node, true).await;
        if self.members.others_serving() && !self.drain.is_zero() {
            tracing::info!(drain = ?self.drain, "draining: reporting not ready before leaving");
            tokio::time::sleep(self.drain).await;
        }
    }

    /// Tells the other nodes this one serves no session any more, and gives
    /// them a heartbeat's time to hear it before its connections close (so
    /// none of them sends a request on a connection being closed).
    pub async fn announce_leaving(&self) {
        self.publish(Event::NodeLeaving(self.node.to_string()))
            .await;
        if self.members.others_serving() {
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    /// Another node announced it is leaving: no new requests go to it (it
    /// answers those it already holds).
    pub fn leaving(&self, node: &str) {
        self.members.leaving(node);
    }

    /// A live node that is not leaving, other than this one, if any.
    pub fn serving_peer(&self) -> Option<Peer> {
        self.members.serving_peer()
    }

    /// Leaves the cluster: what this node owned is free for the others.
    pub async fn leave(&self) {
        if let Err(e) = self.store.release_owned(&self.node).await {
            tracing::warn!(error = %e, "releasing owned resources failed");
        }
        if let Err(e) = self.store.remove_node(&self.node, None).await {
            tracing::warn!(error = %e, "leaving the cluster failed");
        }
    }
}

fn random_node_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS provides random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A store operation, failed as [`StoreError::TimedOut`] when it takes
/// longer than `limit`.
async fn within<T>(
    limit: Duration,
    operation: &'static str,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or(Err(StoreError::TimedOut(operation)))
}

/// Heartbeats and membership until the cluster is dropped: writes this
/// node's heartbeat, reads the others', and removes nodes silent for twice
/// `dead_after` (the node whose removal succeeds cleans up after them). A
/// node whose heartbeat fails for longer than `dead_after` counts itself as
/// taken for dead: it lets go of its sessions ([`Event::LeaseLost`]) and
/// reports not ready until a heartbeat succeeds again.
async fn heartbeat(cluster: std::sync::Weak<Cluster>, events: mpsc::Sender<Event>) {
    let mut last_written = Instant::now();
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let period = c.heartbeat;
        // Bounded: a store that stops answering must cost the lease, not
        // stall the loop until the connection times out.
        let heartbeat = c.store.heartbeat(&c.node, c.is_draining());
        let written = within(c.dead_after, "heartbeat", heartbeat).await;
        if written.is_ok() {
            last_written = Instant::now();
            if c.lease_lost.swap(false, Ordering::AcqRel) {
                tracing::info!("the store is reachable again; serving");
                if events.send(Event::Resync).await.is_err() {
                    return;
                }
            }
        } else if last_written.elapsed() > c.dead_after
            && !c.lease_lost.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(dead_after = ?c.dead_after, "no heartbeat written for longer than dead_after: letting go of this node's sessions");
            if events.send(Event::LeaseLost).await.is_err() {
                return;
            }
        }
        match written {
            Ok(true) => {}
            Ok(false) if !c.is_draining() => {
                tracing::warn!(node = %c.node, "this node was taken for dead and removed; joining again");
                if c.store.register_node(&c.node, &c.address).await.is_ok()
                    && events.send(Event::Resync).await.is_err()
                {
                    return;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "heartbeat not written"),
        }
        match within(c.dead_after, "list nodes", c.store.nodes()).await {
            Ok(rows) => {
                let gone_after = 2 * c.dead_after.as_millis() as i64;
                let dead: Vec<String> = rows
                    .iter()
                    .filter(|r| r.silent_ms > gone_after && *r.id != *c.node)
                    .map(|r| r.id.clone())
                    .collect();
                c.members.refresh(rows);
                for id in dead {
                    if let Ok(true) = c.store.remove_node(&id, Some(gone_after)).await {
                        tracing::info!(node = %id, "removed a dead node");
                        let _ = c.store.release_owned(&id).await;
                        if events.send(Event::NodeGone(id)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the cluster's nodes failed"),
        }
        drop(c);
        tokio::time::sleep(period).await;
    }
}
