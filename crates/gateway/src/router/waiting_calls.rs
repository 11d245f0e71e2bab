//! Upstream calls waiting for a 2026-07-28 client's input. A legacy upstream
//! sent a server→client request (sampling, elicitation, roots) during a
//! modern client's call; the client got an `input_required` result and
//! answers with a new request carrying the `requestState`. Meanwhile the
//! upstream call, its session and its stream wait here: node-local, bounded
//! in number, bound to the call they belong to, and closed (the upstream
//! request refused and the call cancelled) when the client does not come back.
//! In a cluster the state names the node the call waits on
//! (`tether.<node>.<random>`), so a retry reaching another node is passed on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, ErrorObject, Message, Method, RawObject, Request, code};
use tether_wire::protocol::Era;

use super::context::RequestContext;
use crate::session::new_session_id;
use crate::sync::lock;
use crate::upstream::{EventStream, UpstreamSession};

/// Calls that may wait for client input at once on this node.
const MAX_WAITING: usize = 1024;
/// How long a call waits for the client's answer (a person may be answering).
const WAIT_TTL: Duration = Duration::from_secs(300);
/// The `inputRequests` key Tether uses for the upstream's request.
const INPUT_KEY: &str = "upstream_request";
/// Marks `requestState` values Tether issued (others belong to upstreams).
const STATE_PREFIX: &str = "tether.";

/// A call waiting for the client's input.
pub struct Parked {
    /// The request that made the call (it owns the upstream session).
    pub ctx: Arc<RequestContext>,
    /// The upstream session the call runs on.
    pub session: Arc<UpstreamSession>,
    /// The rest of the upstream's reply.
    pub stream: EventStream,
    /// The call's method.
    pub method: Method,
    /// The id the upstream will answer the call with.
    pub upstream_id: Box<RawValue>,
    /// The call's params as sent upstream.
    pub request_params: RawObject,
}

struct Entry {
    parked: Parked,
    /// The upstream's server→client request id, answered on resume.
    asked: Box<RawValue>,
    /// What the client was asked (asked again when a retry lacks the answer).
    ask: InputRequired,
    /// The method and arguments (or URI) of the call the state belongs to.
    call: (Method, Option<String>),
}

impl Entry {
    /// Refuses the upstream's request, cancels the call and closes its
    /// session (never returning it to a pool with a call still running).
    async fn abandon(self) {
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
        // Never back to a pool with a call still running.
        parked.ctx.upstreams().evict(&parked.session);
        parked.ctx.close().await;
    }
}

/// What the client is told to provide.
#[derive(Clone)]
pub struct InputRequired {
    method: Method,
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
pub struct Refused {
    /// The answer to the upstream's request.
    pub upstream_answer: Bytes,
    /// The error for the client's call.
    pub client_error: ErrorObject,
}

/// What a retry carrying a Tether `requestState` leads to.
pub enum Resume {
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
pub fn asks_modern_client(ctx: &RequestContext, call_method: &Method, ask: &Message) -> bool {
    let Some(capability) = ask.method.as_ref().and_then(Method::client_capability) else {
        return false;
    };
    let declared = serde_json::from_str::<RawObject>(ctx.identity().capabilities.get())
        .is_ok_and(|caps| caps.contains_key(capability));
    ctx.era == Era::Modern && declared && call_method.may_require_input()
}

/// The Tether-issued `requestState` a modern retry carries, if any (states
/// issued by modern upstreams pass through to them untouched).
pub fn request_state(request: &Request) -> Option<String> {
    if !jsonrpc::contains(&request.raw, STATE_PREFIX.as_bytes()) {
        return None;
    }
    request
        .str_param("requestState")
        .filter(|s| is_tether_state(s))
}

/// What identifies a call across its retries: the method and its arguments
/// (or URI), which reach the upstream byte-for-byte unless the router
/// rewrote them (a federated name never counts).
fn call_of(method: &Method, params: &RawObject) -> (Method, Option<String>) {
    let key = if *method == Method::ResourcesRead {
        "uri"
    } else {
        "arguments"
    };
    (method.clone(), params.get(key).map(|v| v.get().to_owned()))
}

/// An unguessable Tether token naming the cluster node `node` (none: a
/// single node), as `requestState` values and the ids of tasks Tether runs
/// are: `tether.<node>.<random>` (or `tether.<random>`).
pub fn node_token(node: Option<&str>) -> String {
    match node {
        Some(node) => format!("{STATE_PREFIX}{node}.{}", new_session_id()),
        None => format!("{STATE_PREFIX}{}", new_session_id()),
    }
}

/// Whether a `requestState` is one Tether issued (others are upstreams').
pub fn is_tether_state(state: &str) -> bool {
    state.starts_with(STATE_PREFIX)
}

/// The node a Tether-issued `requestState` (or task id) names, if it names one.
pub fn state_node(state: &str) -> Option<&str> {
    let (node, key) = state.strip_prefix(STATE_PREFIX)?.split_once('.')?;
    (!node.is_empty() && !key.is_empty()).then_some(node)
}

/// Calls waiting for client input on this node.
#[derive(Default)]
pub struct WaitingCalls {
    entries: Mutex<HashMap<String, Entry>>,
    /// This node's id in a cluster, named in the states it issues.
    node: Option<Arc<str>>,
}

impl WaitingCalls {
    /// Calls waiting on the cluster node `node` (none: a single node).
    pub fn on_node(node: Option<Arc<str>>) -> Self {
        WaitingCalls {
            entries: Mutex::new(HashMap::new()),
            node,
        }
    }

    /// Keeps `parked` until the client answers `ask` (or the wait expires).
    pub fn wait(self: &Arc<Self>, parked: Parked, ask: Message) -> Result<InputRequired, Refused> {
        let asked = ask
            .id
            .clone()
            .unwrap_or_else(|| jsonrpc::to_raw(&serde_json::Value::Null));
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_WAITING {
            let why = "too many calls are waiting for client input; retry later";
            return Err(Refused {
                upstream_answer: Bytes::from(
                    ErrorObject::new(code::INTERNAL_ERROR, why).to_response(Some(&asked)),
                ),
                client_error: ErrorObject::new(code::INTERNAL_ERROR, why),
            });
        }
        // Unguessable: the state is the only key to the waiting call.
        let state = node_token(self.node.as_deref());
        let request = InputRequired {
            method: ask.method.unwrap_or(Method::Other("".into())),
            params: ask.params,
            state: state.clone(),
        };
        // A call that went upstream with other arguments than the client
        // sent is known by the client's: its retry repeats those.
        let call = match parked.ctx.rewritten_from() {
            Some(sent) => (parked.method.clone(), sent.map(|a| a.get().to_owned())),
            None => call_of(&parked.method, &parked.request_params),
        };
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
        let calls = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(WAIT_TTL).await;
            let expired = calls
                .upgrade()
                .and_then(|calls| lock(&calls.entries).remove(&state));
            if let Some(entry) = expired {
                tracing::info!("a call waiting for client input expired; cancelling it");
                entry.abandon().await;
            }
        });
        Ok(request)
    }

    /// The upstream the call waiting under `state` runs on, and its params
    /// as sent there.
    pub fn call_under(&self, state: &str) -> Option<(Arc<crate::upstream::Upstream>, RawObject)> {
        let entries = lock(&self.entries);
        let parked = &entries.get(state)?.parked;
        Some((
            parked.session.upstream.clone(),
            parked.request_params.clone(),
        ))
    }

    /// Gives up a call whose `input_required` could not be delivered.
    pub async fn cancel(&self, state: &str) {
        let entry = lock(&self.entries).remove(state);
        if let Some(entry) = entry {
            entry.abandon().await;
        }
    }

    /// Takes the call a retry's `requestState` names and hands the upstream
    /// the client's answer.
    pub async fn resume(&self, state: &str, retry: &Request, by: &RequestContext) -> Resume {
        let params = retry.params_object().unwrap_or_default();
        let entry = {
            let mut entries = lock(&self.entries);
            let Some(entry) = entries.remove(state) else {
                return Resume::Unknown;
            };
            let call = call_of(&retry.method, &params);
            let owner = &entry.parked.ctx;
            // Only the principal that made the call, on the same endpoint, resumes it.
            if call != entry.call
                || owner.caller.principal != by.caller.principal
                || owner.scope != by.scope
            {
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
    pub async fn close_all(&self) {
        let entries: Vec<Entry> = lock(&self.entries).drain().map(|(_, e)| e).collect();
        futures_util::future::join_all(entries.into_iter().map(Entry::abandon)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_required_omits_absent_params() {
        let ask = InputRequired {
            method: Method::RootsList,
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
            let Ok(tether_wire::jsonrpc::Incoming::Request(request)) =
                tether_wire::jsonrpc::Incoming::parse(Bytes::from(body))
            else {
                panic!("a request")
            };
            request_state(&request)
        };
        assert_eq!(retry("tether.abc").as_deref(), Some("tether.abc"));
        assert_eq!(state_node("tether.abc"), None, "a single node's state");
        assert_eq!(state_node("tether.n1.abc"), Some("n1"));
        assert_eq!(state_node("tether..abc"), None);
        assert_eq!(state_node("other.n1.abc"), None);
        assert_eq!(retry("upstream-own-state"), None);
    }
}
