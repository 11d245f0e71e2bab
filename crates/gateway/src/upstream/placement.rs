//! Where the one process of a shared stdio upstream runs when several nodes
//! serve it: on exactly one of them, which the others reach over HTTP (see
//! docs/architecture.md, "Cluster"). A single node has no placement and
//! runs the process itself.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::Upstream;
use super::endpoint::HttpEndpoint;
use super::error::UpstreamError;

/// Decides which node runs a shared stdio upstream's process.
pub trait ProcessPlacement: Send + Sync {
    /// `None`: this node runs it (it claimed it); else the endpoint of the
    /// node that does.
    fn locate<'a>(
        &'a self,
        upstream: &'a Upstream,
    ) -> BoxFuture<'a, Result<Option<Arc<HttpEndpoint>>, UpstreamError>>;

    /// The node behind `endpoint` (from [`ProcessPlacement::locate`])
    /// refused a connection: it is gone, and its process with it.
    fn unreachable(&self, endpoint: &Arc<HttpEndpoint>);
}
