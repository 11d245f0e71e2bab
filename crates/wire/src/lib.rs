//! The MCP wire formats Tether speaks on both sides, with no knowledge of
//! sessions, upstreams or HTTP serving: the JSON-RPC envelope (parsed only
//! as far as routing needs, payloads kept raw), Server-Sent Events framing,
//! newline-delimited framing for stdio, and the protocol's facts (versions,
//! eras, header and `_meta` names, header value encoding).

pub mod fields;
pub mod jsonrpc;
pub mod lines;
pub mod method;
pub mod param_headers;
pub mod protocol;
pub mod sse;
pub mod subscriptions;
pub mod tasks;
