//! Tether: an MCP gateway that federates upstream MCP servers behind one
//! endpoint, speaks every MCP era on both sides, and gives every client
//! session its own isolated upstream sessions.
//!
//! A request crosses the modules in this order (`docs/architecture.md` has
//! the whole chart, the invariants and where to add things):
//!
//! 1. [`downstream`]: the connection, the checks every request passes
//!    (metrics, edge, authentication, rate limit, in-flight caps), the
//!    endpoint of its transport, one parse of its envelope, its era;
//! 2. [`session`]: the client session it belongs to, held here or restored
//!    from the [`store`];
//! 3. [`router`]: its [`RequestContext`](router::RequestContext), which
//!    upstream(s) serve it, and relaying the reply;
//! 4. [`upstream`]: the upstream session it travels on, over Streamable
//!    HTTP, HTTP+SSE or stdio.
//!
//! Beside the path: [`config`], [`auth`], [`metrics`], [`lifecycle`] (which
//! upstreams exist) and [`serve`] (wiring and shutdown).

pub mod auth;
pub mod buckets;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod definitions;
pub mod downstream;
pub mod lifecycle;
pub mod metrics;
pub mod pattern;
pub mod router;
pub mod serve;
pub mod session;
pub mod shaping;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod upstream;
pub mod virtual_servers;

/// Installs ring as the process-wide rustls provider (idempotent). Call
/// before building any HTTP client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
