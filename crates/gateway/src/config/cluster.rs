//! `[cluster]`: how this node finds, and is found by, the other nodes that
//! share its Postgres store (see docs/architecture.md, "Cluster").

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// This node's place in a cluster. Only used with a `postgres://` store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, 1-64 characters of `[A-Za-z0-9_-]`; empty: a random
    /// one at every start (a restarted node is a new member).
    pub node_id: String,
    /// The base URL other nodes reach this node at (`http://10.0.0.5:8080`);
    /// empty: `http://` + `server.listen` (which must then be a specific address).
    pub advertise: String,
    /// The secret every node of the cluster shares; requests between nodes
    /// carry proof of it. Empty: this node neither forwards nor accepts
    /// forwarded requests. Usually set through `TETHER_CLUSTER__SECRET`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// How often this node writes its heartbeat, in ms.
    pub heartbeat_ms: u64,
    /// A node silent this long is dead: its sessions are adopted by the others, in ms.
    pub dead_after_ms: u64,
    /// On SIGTERM, how long the node reports not-ready (so load balancers
    /// stop sending to it) before it stops accepting, in seconds. Only
    /// waited for while another node is alive to take the traffic.
    pub drain_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            advertise: String::new(),
            secret: String::new(),
            heartbeat_ms: 1000,
            dead_after_ms: 5000,
            drain_secs: 5,
        }
    }
}

/// Whether `id` is a valid node id.
pub fn is_valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClusterConfig {
    /// Checks the section's own rules.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.node_id.is_empty() && !is_valid_node_id(&self.node_id) {
            return Err(ConfigError::Invalid(format!(
                "cluster.node_id {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                self.node_id
            )));
        }
        if !self.advertise.is_empty() {
            let url = url::Url::parse(&self.advertise).map_err(|e| {
                ConfigError::Invalid(format!("cluster.advertise {:?}: {e}", self.advertise))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(ConfigError::Invalid(format!(
                    "cluster.advertise {:?} must be an http(s) base URL",
                    self.advertise
                )));
            }
        }
        if self.dead_after_ms < 2 * self.heartbeat_ms {
            return Err(ConfigError::Invalid(format!(
                "cluster.dead_after_ms ({}) must be at least twice cluster.heartbeat_ms ({})",
                self.dead_after_ms, self.heartbeat_ms
            )));
        }
        Ok(())
    }
}
