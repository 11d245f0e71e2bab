//! Tether: an MCP gateway that federates upstream MCP servers behind one
//! endpoint, speaks every MCP era on both sides, and gives every client
//! session its own isolated upstream sessions.

pub mod auth;
pub mod config;
pub mod control;
pub mod downstream;
pub mod gateway;
pub mod metrics;
pub mod resume;
pub mod serve;
pub mod session;
pub mod store;
pub mod sync;
pub mod upstream;

/// Installs ring as the process-wide rustls provider (idempotent). Call
/// before building any HTTP client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
