//! Shared stdio processes in a cluster: one process per upstream for the
//! whole cluster. The first node that needs it claims it in the store
//! (`tether_owners`) and runs it; the others reach it at that node's
//! [`PROCESS_PATH`] endpoint over the channel. A node that finds the owner
//! dead claims it in its place (compare-and-set); the dead node's process
//! died with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use http::HeaderMap;

use super::Cluster;
use super::channel::{FROM_HEADER, TOKEN_HEADER};
use super::members::Peer;
use crate::store::StoreError;
use crate::sync::lock;
use crate::upstream::{HttpEndpoint, ProcessPlacement, Upstream, UpstreamError};

/// Where a node serves the shared process it runs (followed by the upstream's name).
pub const PROCESS_PATH: &str = "/cluster/processes";

/// What the store calls the process of shared stdio upstream `upstream`.
pub fn process_resource(upstream: &str) -> String {
    format!("stdio:{upstream}")
}

/// An upstream's name and a node's id.
type ProcessKey = (Arc<str>, Arc<str>);

/// The placement of shared stdio processes over the cluster's nodes.
pub struct SharedProcesses {
    cluster: Arc<Cluster>,
    /// Endpoints to other nodes' processes, by (upstream, node).
    endpoints: Mutex<HashMap<ProcessKey, Arc<HttpEndpoint>>>,
}

impl SharedProcesses {
    /// Shared processes placed on the nodes of `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new(SharedProcesses {
            cluster,
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    /// Forgets the endpoints of a node that left or died.
    pub fn forget_node(&self, node: &str) {
        lock(&self.endpoints).retain(|(_, n), _| **n != *node);
    }

    /// The endpoint of `upstream`'s process on `peer`.
    fn endpoint(
        &self,
        upstream: &Upstream,
        peer: &Peer,
    ) -> Result<Arc<HttpEndpoint>, UpstreamError> {
        let key = (upstream.name.clone(), peer.node.clone());
        if let Some(known) = lock(&self.endpoints).get(&key) {
            return Ok(known.clone());
        }
        let channel = self
            .cluster
            .channel()
            .ok_or_else(|| UpstreamError::Protocol("no cluster channel".into()))?;
        let url = format!("{}{PROCESS_PATH}/{}", peer.address, upstream.name);
        let url = reqwest::Url::parse(&url)
            .map_err(|e| UpstreamError::Protocol(format!("node address {url:?}: {e}").into()))?;
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, channel.token());
        if let Ok(me) = self.cluster.node().parse() {
            headers.insert(FROM_HEADER, me);
        }
        let endpoint = Arc::new(HttpEndpoint::with_client(
            url,
            channel.client(),
            headers,
            upstream.config.timeout(),
        ));
        lock(&self.endpoints).insert(key, endpoint.clone());
        Ok(endpoint)
    }
}

fn store_failed(e: StoreError) -> UpstreamError {
    UpstreamError::Protocol(format!("placing the shared process: {e}").into())
}

impl ProcessPlacement for SharedProcesses {
    fn locate<'a>(
        &'a self,
        upstream: &'a Upstream,
    ) -> BoxFuture<'a, Result<Option<Arc<HttpEndpoint>>, UpstreamError>> {
        Box::pin(async move {
            // Without the channel no other node can be reached: run it here.
            if self.cluster.channel().is_none() {
                return Ok(None);
            }
            let resource = process_resource(&upstream.name);
            let (store, me) = (&self.cluster.store, self.cluster.node());
            // A lost claim reads the owner again, twice at most.
            for _ in 0..3 {
                let owner = store.owner(&resource).await.map_err(store_failed)?;
                let claimed = match owner.as_deref() {
                    Some(node) if node == &**me => return Ok(None),
                    Some(node) => match self.cluster.peer(node).await {
                        Some(peer) => return self.endpoint(upstream, &peer).map(Some),
                        None => store.claim(&resource, Some(node), me).await,
                    },
                    None => store.claim(&resource, None, me).await,
                };
                if claimed.map_err(store_failed)? {
                    tracing::info!(upstream = %upstream.name, "this node runs the cluster's shared process");
                    return Ok(None);
                }
            }
            Err(UpstreamError::Protocol(
                "the node running the shared process changed too often; retry".into(),
            ))
        })
    }

    fn unreachable(&self, endpoint: &Arc<HttpEndpoint>) {
        let node = lock(&self.endpoints)
            .iter()
            .find(|(_, e)| Arc::ptr_eq(e, endpoint))
            .map(|((_, node), _)| node.clone());
        if let Some(peer) = node.and_then(|n| self.cluster.known_peer(&n)) {
            self.cluster.unreachable(&peer);
        }
    }
}
