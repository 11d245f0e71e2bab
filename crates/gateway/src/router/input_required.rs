//! The 2026-07-28 `input_required` result: an upstream asks for client
//! input (sampling, elicitation, roots) and is called again with the answers
//! (multi round-trip requests).

use bytes::Bytes;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, Message, Method, RawObject};

/// One request for client input.
#[derive(Deserialize)]
pub struct InputRequest {
    /// What the client is asked to do.
    pub method: Method,
    /// Its parameters.
    #[serde(default)]
    pub params: Option<Box<RawValue>>,
}

/// What an `input_required` result asks for.
pub struct InputRequired {
    /// The requests, by the key the answers go under.
    pub requests: IndexMap<String, InputRequest>,
    /// The opaque state to send back with the answers.
    pub state: Option<Box<RawValue>>,
}

/// What an `input_required` response asks for; `None` for any other message.
pub fn parse(body: &[u8]) -> Option<InputRequired> {
    let msg = Message::parse(body).ok()?;
    let result: RawObject = serde_json::from_str(msg.result?.get()).ok()?;
    if jsonrpc::str_member(&result, "resultType").as_deref() != Some("input_required") {
        return None;
    }
    let requests = match result.get("inputRequests") {
        Some(r) => serde_json::from_str(r.get()).ok()?,
        None => IndexMap::new(),
    };
    Some(InputRequired {
        requests,
        state: result.get("requestState").cloned(),
    })
}

/// Whether an upstream answer is an `input_required` result.
pub fn is_input_required(body: &Bytes) -> bool {
    jsonrpc::contains(body, b"input_required") && parse(body).is_some()
}
