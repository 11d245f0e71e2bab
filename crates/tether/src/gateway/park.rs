//! Upstream calls waiting for a 2026-07-28 client's input. A legacy upstream
//! sent a server→client request (sampling, elicitation, roots) during a
//! modern client's call; the client got an `input_required` result and
//! answers with a new request carrying the `requestState`. Meanwhile the
//! upstream call, its session and its stream wait here: node-local, bounded
//! in number, and closed when the client does not come back in time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::jsonrpc::{self, ErrorObject, Message, RawObject, code};
use crate::protocol::Era;
use crate::session::{self, ClientSession};
use crate::sync::lock;
use crate::upstream::{EventStream, UpstreamSession};

/// Calls that may wait for client input at once on this node.
const MAX_PARKED: usize = 1024;
/// How long a call waits for the client's answer (a person may be answering).
const PARK_TTL: Duration = Duration::from_secs(300);
/// The `inputRequests` key Tether uses for the upstream's request.
const INPUT_KEY: &str = "upstream_request";

/// A call waiting for the client's input.
pub(super) struct Parked {
    /// The sessionless context that owns the upstream session.
    pub ctx: Arc<ClientSession>,
    pub session: Arc<UpstreamSession>,
    pub stream: EventStream,
    pub method: String,
    /// The id the upstream will answer the call with.
    pub upstream_id: Box<RawValue>,
    pub request_params: RawObject,
}

struct Entry {
    parked: Parked,
    /// The upstream's server→client request id, answered on resume.
    asked: Box<RawValue>,
}

/// What the client is told to provide.
pub(super) struct InputRequired {
    method: String,
    params: Option<Box<RawValue>>,
    state: String,
}

impl InputRequired {
    /// The `input_required` response to the client's request `id`.
    pub fn to_response(&self, id: &RawValue) -> Vec<u8> {
        let result = serde_json::json!({
            "resultType": "input_required",
            "inputRequests": { INPUT_KEY: { "method": self.method, "params": self.params } },
            "requestState": self.state,
        });
        jsonrpc::response(id, &jsonrpc::to_raw(&result))
    }
}

/// Why a call could not wait: what to tell the upstream and the client.
pub(super) struct Refused {
    pub upstream_answer: Bytes,
    pub client_error: ErrorObject,
}

/// Whether a server→client request during a modern client's call becomes an
/// `input_required` result (the only methods the spec allows it on).
pub(super) fn asks_modern_client(ctx: &ClientSession, call_method: &str, ask: &Message) -> bool {
    ctx.era == Era::Modern
        && matches!(call_method, "tools/call" | "prompts/get" | "resources/read")
        && matches!(
            ask.method.as_deref(),
            Some("sampling/createMessage" | "elicitation/create" | "roots/list")
        )
}

/// The `requestState` a modern retry carries, when it may name a parked call.
pub(super) fn request_state(raw: &[u8], params: &RawObject) -> Option<String> {
    if !jsonrpc::contains(raw, b"requestState") {
        return None;
    }
    jsonrpc::str_member(params, "requestState")
}

/// Calls waiting for client input on this node.
#[derive(Default)]
pub(super) struct ParkingLot {
    entries: Mutex<HashMap<String, Entry>>,
}

impl ParkingLot {
    /// Parks `parked` until the client answers `ask` (or the wait expires).
    pub fn park(
        self: &Arc<Self>,
        parked: Parked,
        ask: Message,
        close_timeout: Duration,
    ) -> Result<InputRequired, Refused> {
        let asked = ask
            .id
            .clone()
            .unwrap_or_else(|| jsonrpc::to_raw(&serde_json::Value::Null));
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_PARKED {
            let why = "too many calls are waiting for client input; retry later";
            return Err(Refused {
                upstream_answer: Bytes::from(
                    ErrorObject::new(code::INTERNAL_ERROR, why).to_response(Some(&asked)),
                ),
                client_error: ErrorObject::new(code::INTERNAL_ERROR, why),
            });
        }
        // Unguessable: the state is the only key to someone else's call.
        let state = session::new_session_id();
        entries.insert(state.clone(), Entry { parked, asked });
        drop(entries);
        let lot = Arc::downgrade(self);
        let key = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PARK_TTL).await;
            let expired = lot
                .upgrade()
                .and_then(|lot| lock(&lot.entries).remove(&key));
            if let Some(entry) = expired {
                tracing::info!(
                    "a call waiting for client input expired; closing its upstream session"
                );
                entry.parked.ctx.close(close_timeout).await;
            }
        });
        Ok(InputRequired {
            method: ask.method.unwrap_or_default(),
            params: ask.params,
            state,
        })
    }

    /// Takes the call a retry's `requestState` names, answering the upstream's
    /// request with the client's input (or an error when it gave none).
    pub async fn resume(&self, state: &str, params: &RawObject) -> Option<Parked> {
        let entry = lock(&self.entries).remove(state)?;
        let answer = params
            .get("inputResponses")
            .and_then(|r| serde_json::from_str::<RawObject>(r.get()).ok())
            .and_then(|mut answers| answers.shift_remove(INPUT_KEY));
        let back = match answer {
            Some(result) => jsonrpc::response(&entry.asked, &result),
            None => ErrorObject::new(
                code::INTERNAL_ERROR,
                "the client gave no answer to this request",
            )
            .to_response(Some(&entry.asked)),
        };
        if let Err(e) = entry.parked.session.send_message(Bytes::from(back)).await {
            tracing::warn!(upstream = %entry.parked.session.upstream.name, error = %e, "handing the client's input upstream failed");
        }
        Some(entry.parked)
    }
}
