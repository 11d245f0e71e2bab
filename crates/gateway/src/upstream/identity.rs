//! Who an upstream session is opened for: the identity Tether presents
//! upstream on a client's behalf.

use http::HeaderValue;
use serde_json::value::RawValue;

/// Who the upstream session is opened for: the identity Tether presents upstream.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The client's `clientInfo` (Implementation object).
    pub info: Box<RawValue>,
    /// The client's capabilities object, as offered to upstreams.
    pub capabilities: Box<RawValue>,
    /// The client's `Authorization`, for upstreams with `forward_client_token`.
    pub credentials: Option<HeaderValue>,
}

impl ClientIdentity {
    /// Tether's own identity, used when no client told us theirs (stateless mode).
    pub fn tether() -> Self {
        ClientIdentity {
            info: tether_wire::jsonrpc::to_raw(&serde_json::json!({
                "name": "tether",
                "version": env!("CARGO_PKG_VERSION"),
            })),
            capabilities: tether_wire::jsonrpc::to_raw(&serde_json::json!({})),
            credentials: None,
        }
    }
}
