//! Era bridge for client input: a 2026-07-28 upstream asks for sampling,
//! elicitation or roots with an `input_required` result (multi round-trip
//! requests); a legacy client expects server→client requests instead. Tether
//! asks the client on its SSE stream, collects the answers and retries the
//! upstream request with them, until the upstream completes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::relay::header_name;
use crate::session::{ClientSession, PendingRequest};
use crate::upstream::{Reply, UpstreamSession};
use tether_wire::jsonrpc::{self, ErrorObject, Kind, Message, RawObject, code};
use tether_wire::protocol::Era;

/// Input rounds one request may take before Tether gives up on it.
const MAX_ROUNDS: usize = 8;

/// Whether an upstream answer is an `input_required` result.
pub(super) fn is_input_required(body: &[u8]) -> bool {
    jsonrpc::contains(body, b"input_required") && input_request(body).is_some()
}

/// Whether Tether must resolve an `input_required` answer itself: the
/// upstream is modern and the client a legacy session that can be asked.
pub(super) fn bridges(ctx: &ClientSession, session: &UpstreamSession, body: &[u8]) -> bool {
    ctx.era == Era::Legacy
        && !ctx.is_ephemeral()
        && session.era == Era::Modern
        && is_input_required(body)
}

#[derive(Deserialize)]
struct InputRequest {
    method: String,
    #[serde(default)]
    params: Option<Box<RawValue>>,
}

/// What an `input_required` result asks for.
struct Needed {
    requests: IndexMap<String, InputRequest>,
    state: Option<Box<RawValue>>,
}

fn input_request(body: &[u8]) -> Option<Needed> {
    let msg = Message::parse(body).ok()?;
    let result: RawObject = serde_json::from_str(msg.result?.get()).ok()?;
    if jsonrpc::str_member(&result, "resultType").as_deref() != Some("input_required") {
        return None;
    }
    let requests = match result.get("inputRequests") {
        Some(r) => serde_json::from_str(r.get()).ok()?,
        None => IndexMap::new(),
    };
    Some(Needed {
        requests,
        state: result.get("requestState").cloned(),
    })
}

/// One request being completed on behalf of a legacy client.
pub(super) struct InputBridge {
    pub ctx: Arc<ClientSession>,
    pub session: Arc<UpstreamSession>,
    pub method: String,
    /// The client's request id (the final answer carries it).
    pub client_id: Box<RawValue>,
    /// The request's params as sent upstream (before `_meta` is added).
    pub params: RawObject,
    pub tx: mpsc::Sender<Bytes>,
    pub send_timeout: Duration,
}

impl InputBridge {
    /// Resolves `body` (an `input_required` answer) round by round and sends
    /// the client the final answer, or an error saying why there is none.
    pub async fn run(self, mut body: Bytes) {
        for round in 0..MAX_ROUNDS {
            let Some(needed) = input_request(&body) else {
                let done = Message::parse(&body).map(|m| Message {
                    id: Some(self.client_id.clone()),
                    ..m
                });
                match done {
                    Ok(m) => {
                        self.send(Bytes::from(m.to_bytes())).await;
                    }
                    Err(_) => {
                        self.fail("the upstream answered something that is not JSON-RPC")
                            .await
                    }
                }
                return;
            };
            let answers = match self.ask_client(needed.requests).await {
                Ok(a) => a,
                Err(why) => return self.fail(&why).await,
            };
            body = match self.retry(round, answers, needed.state).await {
                Ok(b) => b,
                Err(why) => return self.fail(&why).await,
            };
        }
        self.fail("the upstream kept asking for more input").await;
    }

    async fn send(&self, message: Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.send_timeout, self.tx.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn fail(&self, why: &str) {
        let err = ErrorObject::new(code::INTERNAL_ERROR, why)
            .with_data(serde_json::json!({ "upstream": &*self.session.upstream.name }));
        self.send(Bytes::from(err.to_response(Some(&self.client_id))))
            .await;
    }

    /// Sends every input request to the client at once and waits for all answers.
    async fn ask_client(
        &self,
        requests: IndexMap<String, InputRequest>,
    ) -> Result<RawObject, String> {
        let mut waiting = Vec::new();
        for (key, request) in requests {
            let (answer_tx, answer_rx) = oneshot::channel();
            let Some(id) = self.ctx.register_pending(PendingRequest::Local(answer_tx)) else {
                return Err("too many requests to the client are unanswered".into());
            };
            let ask = Message {
                jsonrpc: Some(jsonrpc::to_raw("2.0")),
                id: Some(jsonrpc::to_raw(&id)),
                method: Some(request.method),
                params: request.params,
                result: None,
                error: None,
            };
            if !self.send(Bytes::from(ask.to_bytes())).await {
                return Err("the client stopped reading".into());
            }
            waiting.push((key, answer_rx));
        }
        let wait = self.session.upstream.config.timeout();
        let mut answers = RawObject::new();
        for (key, answer_rx) in waiting {
            let answer = match tokio::time::timeout(wait, answer_rx).await {
                Ok(Ok(a)) => a,
                Ok(Err(_)) => {
                    return Err(
                        "the client session ended while the upstream waited for input".into(),
                    );
                }
                Err(_) => {
                    return Err(format!(
                        "the client did not answer the upstream's {key:?} request in time"
                    ));
                }
            };
            match (answer.kind(), answer.result, answer.error) {
                (Ok(Kind::Response), Some(result), _) => {
                    answers.insert(key, result);
                }
                (_, _, Some(error)) => {
                    return Err(format!(
                        "the client refused the upstream's {key:?} request: {}",
                        error.get()
                    ));
                }
                _ => return Err("the client answered with something that is not a response".into()),
            }
        }
        Ok(answers)
    }

    /// Repeats the request upstream with the answers (and the opaque state).
    async fn retry(
        &self,
        round: usize,
        answers: RawObject,
        state: Option<Box<RawValue>>,
    ) -> Result<Bytes, String> {
        let mut params = self.params.clone();
        params.insert("inputResponses".into(), jsonrpc::to_raw(&answers));
        match state {
            Some(s) => params.insert("requestState".into(), s),
            None => params.shift_remove("requestState"),
        };
        let retry = Message {
            jsonrpc: Some(jsonrpc::to_raw("2.0")),
            id: Some(jsonrpc::to_raw(&format!("tether-input-{round}"))),
            method: Some(self.method.clone()),
            params: None,
            result: None,
            error: None,
        };
        let name = header_name(&self.method, &retry, Some(&params));
        let level = self.ctx.log_level();
        let body = self
            .session
            .prepare(&retry, &Bytes::new(), Some(&params), level.as_deref())
            .map_err(|e| e.message())?;
        let reply = self
            .session
            .request(body, &self.method, name.as_deref(), &[])
            .await
            .map_err(|e| format!("upstream failed while retrying with the client's input: {e}"))?;
        match reply {
            Reply::Json(b) => Ok(b),
            Reply::Accepted => Err("upstream accepted the retry without answering it".into()),
            Reply::Stream(mut stream) => {
                // Progress and log notifications of the retry still reach the client.
                while let Some(item) = stream.next_message().await {
                    let bytes = item.map_err(|e| e.to_string())?;
                    match Message::parse(&bytes).ok().and_then(|m| m.kind().ok()) {
                        Some(Kind::Response) => return Ok(bytes),
                        Some(Kind::Notification) => {
                            self.send(bytes).await;
                        }
                        _ => {}
                    }
                }
                Err("the upstream stream ended before the response".into())
            }
        }
    }
}
