//! The upstream lifecycle: which upstreams exist (the config file's, read-only
//! through the admin API, merged with those defined through the API and kept
//! in the store), and applying changes to them. A change that affects how
//! Tether connects ([invariant: evict-on-connect-change]) replaces the upstream and closes its
//! upstream sessions, in parallel and bounded in time; a cosmetic change
//! keeps them. Clients holding a stream hear that the lists changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

pub use crate::definitions::{Refusal, Source};

use crate::cluster::{Cluster, Event, SharedProcesses};
use crate::config::{Config, ConfigError, UpstreamConfig, VirtualServerConfig};
use crate::definitions::Definitions;
use crate::session::{Scope, SessionRegistry};
use crate::store::Store;
use crate::upstream::{self, HealthChange, TlsMaterial, Upstream, UpstreamSet};
use crate::virtual_servers::VirtualServers;

/// What a change did.
#[derive(Debug, Default, Serialize)]
pub struct Change {
    /// Upstreams that are new.
    pub added: Vec<String>,
    /// Upstreams rebuilt because how Tether connects to them changed.
    pub replaced: Vec<String>,
    /// Upstreams whose cosmetic fields changed (sessions kept).
    pub described: Vec<String>,
    /// Upstreams that are gone.
    pub removed: Vec<String>,
    /// Upstream sessions closed.
    pub closed_sessions: usize,
}

/// The upstream lifecycle (see the module documentation).
pub struct Lifecycle {
    set: Arc<UpstreamSet>,
    sessions: Arc<SessionRegistry>,
    store: Arc<Store>,
    config_path: Option<PathBuf>,
    /// The upstreams' definitions.
    defs: Definitions<UpstreamConfig>,
    /// The virtual servers, defined the same two ways.
    virtual_servers: Arc<VirtualServers>,
    /// One change at a time.
    changing: tokio::sync::Mutex<()>,
    close_timeout: Duration,
    /// The cluster told of changes made here.
    cluster: Option<Arc<Cluster>>,
    /// Where shared stdio processes run, in a cluster.
    processes: Option<Arc<SharedProcesses>>,
}

impl Lifecycle {
    /// The lifecycle over `set`; `file` are the config file's definitions and
    /// `config_path` the file a reload reads again.
    pub fn new(
        (set, virtual_servers): (Arc<UpstreamSet>, Arc<VirtualServers>),
        sessions: Arc<SessionRegistry>,
        store: Arc<Store>,
        config_path: Option<PathBuf>,
        close_timeout: Duration,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            set,
            sessions,
            store,
            config_path,
            defs: Definitions::default(),
            virtual_servers,
            changing: tokio::sync::Mutex::new(()),
            close_timeout,
            processes: cluster.clone().map(SharedProcesses::new),
            cluster,
        })
    }

    /// Starts with the config file's definitions plus those stored by the
    /// admin API (a stored one named like a file one is ignored, with a
    /// warning), then follows the store for changes other nodes make (in a
    /// cluster they are announced: see [`Lifecycle::follow_cluster`]).
    pub async fn start(
        self: &Arc<Self>,
        file: Vec<UpstreamConfig>,
        virtual_servers: Vec<VirtualServerConfig>,
    ) -> Result<Change, Refusal> {
        self.defs.restore_file(file);
        self.defs.load(&self.store).await?;
        let change = {
            let _one = self.changing.lock().await;
            self.apply().await?
        };
        self.virtual_servers.start(virtual_servers).await?;
        if self.store.is_durable() {
            // In a cluster changes are announced; the poll is the backstop
            // for an announcement lost.
            let every = if self.cluster.is_some() {
                STORE_BACKSTOP
            } else {
                STORE_SYNC
            };
            tokio::spawn(follow_store(Arc::downgrade(self), every));
        }
        Ok(change)
    }

    /// Applies what other nodes changed through their admin API.
    async fn sync(&self) -> Result<(), Refusal> {
        {
            let _one = self.changing.lock().await;
            if self.defs.load(&self.store).await? {
                self.apply().await?;
            }
        }
        let changed = self.virtual_servers.sync().await?;
        self.announce_virtual(&changed);
        Ok(())
    }

    /// Every definition with its source, in order (file first).
    pub fn definitions(&self) -> Vec<(UpstreamConfig, Source)> {
        let current = self.set.snapshot();
        let shown = |def: &UpstreamConfig| {
            current
                .get(&def.name)
                .map_or_else(|| def.clone(), |u| u.definition())
        };
        (self.defs.with_sources().into_iter())
            .map(|(d, source)| (shown(&d), source))
            .collect()
    }

    /// The virtual servers.
    pub fn virtual_servers(&self) -> &Arc<VirtualServers> {
        &self.virtual_servers
    }

    /// Adds an upstream (kept in the store).
    pub async fn create(&self, def: UpstreamConfig) -> Result<Change, Refusal> {
        let _one = self.changing.lock().await;
        if self.set.get(&def.name).is_some() {
            return Err(Refusal::Conflict(format!("upstream {:?} exists", def.name)));
        }
        self.check(&def)?;
        self.defs.put(&self.store, def).await?;
        self.applied_and_announced().await
    }

    /// Replaces an admin-defined upstream's definition.
    pub async fn update(&self, name: &str, def: UpstreamConfig) -> Result<Change, Refusal> {
        let _one = self.changing.lock().await;
        self.defs.editable(name)?;
        if def.name != name {
            return Err(Refusal::Invalid(ConfigError::Invalid(
                "the name cannot change".into(),
            )));
        }
        self.check(&def)?;
        self.defs.put(&self.store, def).await?;
        self.applied_and_announced().await
    }

    /// Removes an admin-defined upstream.
    pub async fn delete(&self, name: &str) -> Result<Change, Refusal> {
        let _one = self.changing.lock().await;
        self.defs.editable(name)?;
        self.defs.remove(&self.store, name).await?;
        self.applied_and_announced().await
    }

    /// Applies a change to the stored definitions, and tells the other nodes.
    async fn applied_and_announced(&self) -> Result<Change, Refusal> {
        let change = self.apply().await;
        if let Some(cluster) = &self.cluster {
            cluster.publish(Event::UpstreamsChanged).await;
        }
        change
    }

    /// Reads the config file again and applies its upstreams and virtual servers.
    pub async fn reload(&self) -> Result<Change, Refusal> {
        let _one = self.changing.lock().await;
        let config = Config::load(self.config_path.as_deref()).map_err(Refusal::Invalid)?;
        // Refused before anything applies: upstreams and virtual servers change together or not at all.
        self.virtual_servers.check_file(&config.virtual_servers)?;
        let previous = self.defs.replace_file(config.upstreams)?;
        let result = self.apply().await;
        if result.is_err() {
            // Nothing was applied: the running upstreams match the old file.
            self.defs.restore_file(previous);
        }
        let change = result?;
        let changed = self.virtual_servers.reload(config.virtual_servers).await?;
        self.announce_virtual(&changed);
        Ok(change)
    }

    /// Adds a virtual server (kept in the store).
    pub async fn create_virtual_server(&self, def: VirtualServerConfig) -> Result<(), Refusal> {
        let changed = self.virtual_servers.create(def).await?;
        self.virtual_servers_changed(&changed).await;
        Ok(())
    }

    /// Replaces an admin-defined virtual server's definition.
    pub async fn update_virtual_server(
        &self,
        name: &str,
        def: VirtualServerConfig,
    ) -> Result<(), Refusal> {
        let changed = self.virtual_servers.update(name, def).await?;
        self.virtual_servers_changed(&changed).await;
        Ok(())
    }

    /// Removes an admin-defined virtual server.
    pub async fn delete_virtual_server(&self, name: &str) -> Result<(), Refusal> {
        let changed = self.virtual_servers.delete(name).await?;
        self.virtual_servers_changed(&changed).await;
        Ok(())
    }

    /// Tells the clients of the `changed` virtual servers, and the other nodes.
    async fn virtual_servers_changed(&self, changed: &[String]) {
        self.announce_virtual(changed);
        if let Some(cluster) = &self.cluster {
            cluster.publish(Event::UpstreamsChanged).await;
        }
    }

    /// Tells the clients holding a stream of a `changed` virtual server that its lists changed.
    fn announce_virtual(&self, changed: &[String]) {
        if changed.is_empty() {
            return;
        }
        tracing::info!(virtual_servers = ?changed, "virtual servers changed");
        self.sessions.announce_list_changes(
            |scope| matches!(scope, Scope::Virtual(name) if changed.iter().any(|c| **c == **name)),
        );
        // `subscriptions/listen` streams hear of it as of any catalogue change.
        self.set.announce(Vec::new());
    }

    /// Closes every upstream session of `name` (the upstream stays), on
    /// every node; returns how many this node closed.
    pub async fn evict_sessions(&self, name: &str) -> Result<usize, Refusal> {
        let upstream = self.set.get(name).ok_or(Refusal::NotFound)?;
        // The stored bindings go too: the next use opens (and stores) new ones.
        self.store
            .forget_upstream(name)
            .await
            .map_err(Refusal::Store)?;
        let closed = self.close_sessions(&[upstream]).await;
        if let Some(cluster) = &self.cluster {
            cluster
                .publish(Event::UpstreamEvicted(name.to_owned()))
                .await;
        }
        Ok(closed)
    }

    /// Acts on what the other nodes did, and what this node found, until
    /// the cluster stops: sessions ended or moved elsewhere stop being
    /// served here, upstream changes apply at once, a dead node's HTTP+SSE
    /// sessions are ended, and after events may have been missed everything
    /// is read again.
    pub async fn follow_cluster(self: Arc<Self>, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::SessionEnded(id) => self.sessions.ended_elsewhere(&id),
                Event::SessionMoved { session, node } => self.sessions.moved(&session, &node),
                Event::UpstreamsChanged => self.sync_logged().await,
                Event::UpstreamEvicted(name) => {
                    if let Some(upstream) = self.set.get(&name) {
                        let closed = self.close_sessions(&[upstream]).await;
                        tracing::info!(upstream = %name, closed, "upstream sessions evicted on another node's request");
                    }
                }
                Event::NodeLeaving(node) => {
                    if let Some(cluster) = &self.cluster {
                        cluster.leaving(&node);
                    }
                    self.forget_node(&node);
                }
                Event::NodeGone(node) => {
                    self.forget_node(&node);
                    let sessions = self.sessions.clone();
                    tokio::spawn(async move { sessions.reap_node(&node).await });
                }
                Event::Resync => {
                    self.sync_logged().await;
                    self.sessions.resync().await;
                }
                Event::LeaseLost => self.sessions.let_go_all(),
            }
        }
    }

    /// Forgets what points at a node that left or died.
    fn forget_node(&self, node: &str) {
        self.sessions.forget_homes_on(node);
        if let Some(processes) = &self.processes {
            processes.forget_node(node);
        }
    }

    async fn sync_logged(&self) {
        if let Err(e) = self.sync().await {
            tracing::warn!(error = %e, "reading upstream definitions from the store failed");
        }
    }

    /// Validates a definition as the config file's would be, and builds it
    /// once (its TLS files must be readable PEM).
    fn check(&self, def: &UpstreamConfig) -> Result<(), Refusal> {
        let mut config = Config::default();
        config.upstreams.push(def.clone());
        config.validate().map_err(Refusal::Invalid)?;
        Upstream::new(def.clone())
            .map(drop)
            .map_err(|source| Refusal::Unbuildable {
                upstream: def.name.clone(),
                source,
            })
    }

    /// Makes the wanted definitions current: keeps upstreams that connect the
    /// same way (taking new cosmetic fields), builds the rest, and closes the
    /// sessions of the ones replaced or removed.
    async fn apply(&self) -> Result<Change, Refusal> {
        let wanted = self.defs.all();
        let current = self.set.snapshot();
        let mut change = Change::default();
        let mut next = Vec::with_capacity(wanted.len());
        let mut stale = Vec::new();
        for def in &wanted {
            let kept = current.get(&def.name).filter(|up| {
                up.config.connects_like(def) && TlsMaterial::read(def).is_ok_and(|t| t == up.tls)
            });
            match (kept, current.get(&def.name)) {
                (Some(up), _) => {
                    if up.definition() != *def {
                        up.describe(def);
                        change.described.push(def.name.clone());
                    }
                    next.push(up.clone());
                }
                (None, old) => {
                    let built =
                        Upstream::new(def.clone()).map_err(|source| Refusal::Unbuildable {
                            upstream: def.name.clone(),
                            source,
                        })?;
                    upstream::watch_health(&built, self.health_change());
                    if let Some(processes) = &self.processes
                        && built.runs_one_process()
                    {
                        built.place_process(processes.clone());
                    }
                    next.push(built);
                    match old {
                        Some(old) => {
                            stale.push(old.clone());
                            change.replaced.push(def.name.clone());
                        }
                        None => change.added.push(def.name.clone()),
                    }
                }
            }
        }
        for up in current
            .iter()
            .filter(|u| !wanted.iter().any(|d| d.name == *u.name))
        {
            stale.push(up.clone());
            change.removed.push(up.name.to_string());
        }
        self.set.replace(next);
        for up in &stale {
            up.retire();
            if let Err(e) = self.store.forget_upstream(&up.name).await {
                tracing::warn!(upstream = %up.name, error = %e, "stored upstream sessions not forgotten");
            }
        }
        change.closed_sessions = self.close_sessions(&stale).await;
        // A described upstream may show its tools differently now (its shapes).
        let touched: Vec<String> = change
            .added
            .iter()
            .chain(&change.replaced)
            .chain(&change.removed)
            .chain(&change.described)
            .cloned()
            .collect();
        if !touched.is_empty() {
            tracing::info!(added = ?change.added, replaced = ?change.replaced, removed = ?change.removed, closed_sessions = change.closed_sessions, "upstreams changed");
            self.sessions.announce_list_changes(|scope| match scope {
                Scope::Federated | Scope::Virtual(_) => true,
                Scope::Single(name) => touched.iter().any(|t| **t == **name),
            });
            self.set
                .announce(touched.iter().map(|t| Arc::from(t.as_str())).collect());
        }
        Ok(change)
    }

    /// Closes the upstream sessions (client sessions', pooled and shared
    /// processes) of `upstreams`, all in parallel, within the close timeout;
    /// returns how many there were.
    async fn close_sessions(&self, upstreams: &[Arc<Upstream>]) -> usize {
        let sessions: Vec<_> = upstreams
            .iter()
            .flat_map(|u| self.sessions.take_upstream_sessions(u))
            .collect();
        let n = sessions.len();
        let closes = sessions.iter().map(|s| s.close());
        let pools = upstreams.iter().map(|u| u.drain_pool());
        let all = futures_util::future::join(
            futures_util::future::join_all(closes),
            futures_util::future::join_all(pools),
        );
        if tokio::time::timeout(self.close_timeout, all).await.is_err() {
            tracing::warn!(
                sessions = n,
                "closing upstream sessions timed out; abandoned the rest"
            );
        }
        n
    }

    /// What happens when an upstream's health changes: clients are told the lists changed.
    fn health_change(&self) -> HealthChange {
        let sessions = Arc::downgrade(&self.sessions);
        let set = Arc::downgrade(&self.set);
        Arc::new(move |upstream: &Arc<Upstream>, _healthy: bool| {
            if let Some(sessions) = sessions.upgrade() {
                sessions.announce_list_changes(|scope| match scope {
                    Scope::Federated | Scope::Virtual(_) => true,
                    Scope::Single(name) => **name == *upstream.name,
                });
            }
            if let Some(set) = set.upgrade() {
                set.announce(vec![upstream.name.clone()]);
            }
        })
    }
}

/// How often a node looks for upstream definitions other nodes changed.
const STORE_SYNC: Duration = Duration::from_secs(5);
/// The same in a cluster, where changes are also announced at once.
const STORE_BACKSTOP: Duration = Duration::from_secs(30);

async fn follow_store(lifecycle: std::sync::Weak<Lifecycle>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(lifecycle) = lifecycle.upgrade() else {
            return;
        };
        lifecycle.sync_logged().await;
    }
}
