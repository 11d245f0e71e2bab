//! Upstream calls waiting for a 2026-07-28 client's input. A legacy upstream
//! sent a server→client request (sampling, elicitation, roots) during a
//! modern client's call; the client got an `input_required` result and
//! answers with a new request carrying the `requestState`. Meanwhile the
//! upstream call, its session and its stream wait here: node-local, bounded
//! in number, bound to the call they belong to, and closed (the upstream
//! request refused and the call cancelled) when the client does not come back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::session::{self, ClientSession};
use crate::sync::lock;
use crate::upstream::{EventStream, UpstreamSession};
use tether_wire::jsonrpc::{self, ErrorObject, Message, RawObject, code};
use tether_wire::protocol::Era;

/// Calls that may wait for client input at once on this node.
const MAX_PARKED: usize = 1024;
/// How long a call waits for the client's answer (a person may be answering).
const PARK_TTL: Duration = Duration::from_secs(300);
/// The `inputRequests` key Tether uses for the upstream's request.
const INPUT_KEY: &str = "upstream_request";
/// Marks `requestState` values Tether issued (others belong to upstreams).
const STATE_PREFIX: &str = "tether.";

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
    /// What the client was asked (asked again when a retry lacks the answer).
    ask: InputRequired,
    /// The method and arguments (or URI) of the call the state belongs to.
    call: (String, Option<String>),
}

impl Entry {
    /// Refuses the upstream's request, cancels the call and closes its
    /// session (never returning it to a pool with a call still running).
    async fn abandon(self, close_timeout: Duration) {
        let Entry { parked, asked, .. } = self;
        let refuse = ErrorObject::new(code::INTERNAL_ERROR, "the client did not answer in time");
        let _ = parked
            .session
            .send_message(Bytes::from(refuse.to_response(Some(&asked))))
            .await;
        let cancel = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{},"reason":"client input never came"}}}}"#,
            parked.upstream_id.get()
        );
        let _ = parked.session.send_message(Bytes::from(cancel)).await;
        parked.ctx.upstreams.evict(&parked.session);
        parked.ctx.close(close_timeout).await;
    }
}

/// What the client is told to provide.
#[derive(Clone)]
pub(super) struct InputRequired {
    method: String,
    params: Option<Box<RawValue>>,
    state: String,
}

impl InputRequired {
    /// The state handed to the client.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The `input_required` response to the client's request `id`.
    pub fn to_response(&self, id: &RawValue) -> Vec<u8> {
        let mut request = serde_json::json!({ "method": self.method });
        if let Some(params) = &self.params {
            request["params"] = serde_json::to_value(params).unwrap_or_default();
        }
        let result = serde_json::json!({
            "resultType": "input_required",
            "inputRequests": { INPUT_KEY: request },
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

/// What a retry carrying a Tether `requestState` leads to.
pub(super) enum Resume {
    /// The upstream has the client's answer; relay the rest of its call.
    Continue(Box<Parked>),
    /// The retry lacks the answer: ask again (same state).
    Again(InputRequired),
    /// No such waiting call (expired, already resumed, or another call's).
    Unknown,
}

/// Whether a server→client request during a modern client's call becomes an
/// `input_required` result: only on the methods the spec allows it on, and
/// only for what the client declared it can do.
pub(super) fn asks_modern_client(ctx: &ClientSession, call_method: &str, ask: &Message) -> bool {
    let capability = match ask.method.as_deref() {
        Some("sampling/createMessage") => "sampling",
        Some("elicitation/create") => "elicitation",
        Some("roots/list") => "roots",
        _ => return false,
    };
    let declared = serde_json::from_str::<RawObject>(ctx.identity.capabilities.get())
        .is_ok_and(|caps| caps.contains_key(capability));
    ctx.era == Era::Modern
        && declared
        && matches!(call_method, "tools/call" | "prompts/get" | "resources/read")
}

/// The Tether-issued `requestState` a modern retry carries, if any (states
/// issued by modern upstreams pass through to them untouched).
pub(super) fn request_state(raw: &[u8], msg: &Message) -> Option<String> {
    if !jsonrpc::contains(raw, STATE_PREFIX.as_bytes()) {
        return None;
    }
    let params = msg.params_object().ok()?;
    jsonrpc::str_member(&params, "requestState").filter(|s| s.starts_with(STATE_PREFIX))
}

/// What identifies a call across its retries: the method and its arguments
/// (or URI), which reach the upstream byte-for-byte (a federated name does not).
fn call_of(method: &str, params: &RawObject) -> (String, Option<String>) {
    let key = if method == "resources/read" {
        "uri"
    } else {
        "arguments"
    };
    (
        method.to_owned(),
        params.get(key).map(|v| v.get().to_owned()),
    )
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
        // Unguessable: the state is the only key to the waiting call.
        let state = format!("{STATE_PREFIX}{}", session::new_session_id());
        let request = InputRequired {
            method: ask.method.unwrap_or_default(),
            params: ask.params,
            state: state.clone(),
        };
        let call = call_of(&parked.method, &parked.request_params);
        entries.insert(
            state.clone(),
            Entry {
                parked,
                asked,
                ask: request.clone(),
                call,
            },
        );
        drop(entries);
        let lot = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(PARK_TTL).await;
            let expired = lot
                .upgrade()
                .and_then(|lot| lock(&lot.entries).remove(&state));
            if let Some(entry) = expired {
                tracing::info!("a call waiting for client input expired; cancelling it");
                entry.abandon(close_timeout).await;
            }
        });
        Ok(request)
    }

    /// Gives up a call whose `input_required` could not be delivered.
    pub async fn cancel(&self, state: &str, close_timeout: Duration) {
        let entry = lock(&self.entries).remove(state);
        if let Some(entry) = entry {
            entry.abandon(close_timeout).await;
        }
    }

    /// Takes the call a retry's `requestState` names and hands the upstream
    /// the client's answer.
    pub async fn resume(&self, state: &str, retry: &Message, by: &ClientSession) -> Resume {
        let params = retry.params_object().unwrap_or_default();
        let entry = {
            let mut entries = lock(&self.entries);
            let Some(entry) = entries.remove(state) else {
                return Resume::Unknown;
            };
            let call = call_of(retry.method.as_deref().unwrap_or_default(), &params);
            let owner = &entry.parked.ctx;
            // Only the principal that made the call, on the same endpoint, resumes it.
            if call != entry.call || owner.principal != by.principal || owner.scope != by.scope {
                // Not the call this state belongs to: leave it for the real retry.
                entries.insert(state.to_owned(), entry);
                return Resume::Unknown;
            }
            let answer = params
                .get("inputResponses")
                .and_then(|r| serde_json::from_str::<RawObject>(r.get()).ok())
                .and_then(|mut answers| answers.shift_remove(INPUT_KEY));
            let Some(answer) = answer else {
                let again = entry.ask.clone();
                entries.insert(state.to_owned(), entry);
                return Resume::Again(again);
            };
            (entry, answer)
        };
        let (entry, answer) = entry;
        let back = jsonrpc::response(&entry.asked, &answer);
        if let Err(e) = entry.parked.session.send_message(Bytes::from(back)).await {
            tracing::warn!(upstream = %entry.parked.session.upstream.name, error = %e, "handing the client's input upstream failed");
        }
        Resume::Continue(Box::new(entry.parked))
    }

    /// Abandons every waiting call (shutdown), in parallel.
    pub async fn close_all(&self, close_timeout: Duration) {
        let entries: Vec<Entry> = lock(&self.entries).drain().map(|(_, e)| e).collect();
        futures_util::future::join_all(entries.into_iter().map(|e| e.abandon(close_timeout))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_required_omits_absent_params() {
        let ask = InputRequired {
            method: "roots/list".into(),
            params: None,
            state: "tether.x".into(),
        };
        let text = String::from_utf8(ask.to_response(&jsonrpc::to_raw(&1))).unwrap();
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","id":1,"result":{"inputRequests":{"upstream_request":{"method":"roots/list"}},"requestState":"tether.x","resultType":"input_required"}}"#
        );
    }

    #[test]
    fn only_tether_states_are_intercepted() {
        let retry = |state: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"t","requestState":"{state}"}}}}"#
            );
            let msg = Message::parse(body.as_bytes()).unwrap();
            request_state(body.as_bytes(), &msg)
        };
        assert_eq!(retry("tether.abc").as_deref(), Some("tether.abc"));
        assert_eq!(retry("upstream-own-state"), None);
    }
}
