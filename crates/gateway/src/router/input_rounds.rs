//! Client input across eras: a 2026-07-28 upstream asks for sampling,
//! elicitation or roots with an `input_required` result (multi round-trip
//! requests); a legacy client expects server→client requests instead. Tether
//! asks the client on its SSE stream, collects the answers and retries the
//! upstream request with them, until the upstream completes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{
    self, EnvelopeError, ErrorObject, Kind, Message, Method, RawObject, Request, code,
};
use tether_wire::protocol::Era;
use tokio::sync::{mpsc, oneshot};

use super::context::RequestContext;
use super::input_required::{self, InputRequest, is_input_required};
use crate::session::PendingRequest;
use crate::upstream::{Reply, UpstreamError, UpstreamSession};

/// Input rounds one request may take before Tether gives up on it.
const MAX_ROUNDS: usize = 8;

/// Whether Tether must resolve an `input_required` answer itself: the
/// upstream is modern and the client a legacy session that can be asked.
pub fn needed(ctx: &RequestContext, session: &UpstreamSession, body: &Bytes) -> bool {
    ctx.askable_session().is_some() && session.era == Era::Modern && is_input_required(body)
}

/// Why a request could not be completed with the client's input (the text
/// goes to the client).
#[derive(Debug)]
pub enum InputFailure {
    /// The client is not a session that can be asked.
    NotAskable,
    /// The client owes too many answers already.
    TooManyPending,
    /// The client stopped reading its stream.
    ClientGone,
    /// The client session ended while the upstream waited.
    SessionEnded,
    /// The client did not answer this input request in time.
    NoAnswer(String),
    /// The client answered this input request with an error.
    Refused(String, Box<RawValue>),
    /// The upstream's answer is not JSON-RPC.
    NotJsonRpc,
    /// The retry could not be built.
    Retry(EnvelopeError),
    /// The upstream failed while retrying.
    Upstream(UpstreamError),
    /// The retry's stream failed.
    Stream(UpstreamError),
    /// The upstream accepted the retry without answering it.
    Unanswered,
    /// The upstream's stream ended before the response.
    StreamEnded,
    /// The upstream kept asking for more input.
    TooManyRounds,
}

impl std::fmt::Display for InputFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputFailure::NotAskable => f.write_str("this client cannot be asked for input"),
            InputFailure::TooManyPending => {
                f.write_str("too many requests to the client are unanswered")
            }
            InputFailure::ClientGone => f.write_str("the client stopped reading"),
            InputFailure::SessionEnded => {
                f.write_str("the client session ended while the upstream waited for input")
            }
            InputFailure::NoAnswer(key) => write!(
                f,
                "the client did not answer the upstream's {key:?} request in time"
            ),
            InputFailure::Refused(key, error) => write!(
                f,
                "the client refused the upstream's {key:?} request: {}",
                error.get()
            ),
            InputFailure::NotJsonRpc => {
                f.write_str("the upstream answered something that is not JSON-RPC")
            }
            InputFailure::Retry(e) => f.write_str(&e.message()),
            InputFailure::Upstream(e) => write!(
                f,
                "upstream failed while retrying with the client's input: {e}"
            ),
            InputFailure::Stream(e) => write!(f, "{e}"),
            InputFailure::Unanswered => {
                f.write_str("upstream accepted the retry without answering it")
            }
            InputFailure::StreamEnded => {
                f.write_str("the upstream stream ended before the response")
            }
            InputFailure::TooManyRounds => f.write_str("the upstream kept asking for more input"),
        }
    }
}

impl std::error::Error for InputFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InputFailure::Upstream(e) | InputFailure::Stream(e) => Some(e),
            _ => None,
        }
    }
}

/// One request being completed on behalf of a legacy client.
pub struct InputRounds {
    /// The request being completed.
    pub ctx: Arc<RequestContext>,
    /// The upstream session that asks.
    pub session: Arc<UpstreamSession>,
    /// The request's method.
    pub method: Method,
    /// The client's request id (the final answer carries it).
    pub client_id: Box<RawValue>,
    /// The request's params as sent upstream (before `_meta` is added).
    pub params: RawObject,
    /// Where the client's messages go.
    pub tx: mpsc::Sender<Bytes>,
    /// How long a client may leave a message unread before it is cut off.
    pub send_timeout: Duration,
}

impl InputRounds {
    /// Resolves `body` (an `input_required` answer) round by round and sends
    /// the client the final answer, or an error saying why there is none.
    pub async fn run(self, mut body: Bytes) {
        for round in 0..MAX_ROUNDS {
            let Some(needed) = input_required::parse(&body) else {
                let done = Message::parse(&body).map(|m| Message {
                    id: Some(self.client_id.clone()),
                    ..m
                });
                match done {
                    Ok(m) => {
                        self.send(Bytes::from(m.to_bytes())).await;
                    }
                    Err(_) => self.fail(InputFailure::NotJsonRpc).await,
                }
                return;
            };
            let answers = match self.ask_client(needed.requests).await {
                Ok(a) => a,
                Err(why) => return self.fail(why).await,
            };
            body = match self.retry(round, answers, needed.state).await {
                Ok(b) => b,
                Err(why) => return self.fail(why).await,
            };
        }
        self.fail(InputFailure::TooManyRounds).await;
    }

    async fn send(&self, message: Bytes) -> bool {
        matches!(
            tokio::time::timeout(self.send_timeout, self.tx.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn fail(&self, why: InputFailure) {
        let err = ErrorObject::new(code::INTERNAL_ERROR, why.to_string())
            .with_data(serde_json::json!({ "upstream": &*self.session.upstream.name }));
        self.send(Bytes::from(err.to_response(Some(&self.client_id))))
            .await;
    }

    /// Sends every input request to the client at once and waits for all answers.
    async fn ask_client(
        &self,
        requests: IndexMap<String, InputRequest>,
    ) -> Result<RawObject, InputFailure> {
        let mut waiting = Vec::new();
        let Some(client) = self.ctx.askable_session() else {
            return Err(InputFailure::NotAskable);
        };
        for (key, request) in requests {
            let (answer_tx, answer_rx) = oneshot::channel();
            let Some(id) = client.register_pending(PendingRequest::Local(answer_tx)) else {
                return Err(InputFailure::TooManyPending);
            };
            let ask = Message::new(Some(jsonrpc::to_raw(&id)), request.method, request.params);
            if !self.send(Bytes::from(ask.to_bytes())).await {
                return Err(InputFailure::ClientGone);
            }
            waiting.push((key, answer_rx));
        }
        let wait = self.session.upstream.config.timeout();
        let mut answers = RawObject::new();
        for (key, answer_rx) in waiting {
            let answer = match tokio::time::timeout(wait, answer_rx).await {
                Ok(Ok(a)) => a,
                Ok(Err(_)) => return Err(InputFailure::SessionEnded),
                Err(_) => return Err(InputFailure::NoAnswer(key)),
            };
            match answer.outcome {
                Ok(result) => {
                    answers.insert(key, result);
                }
                Err(error) => return Err(InputFailure::Refused(key, error)),
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
    ) -> Result<Bytes, InputFailure> {
        let mut params = self.params.clone();
        params.insert("inputResponses".into(), jsonrpc::to_raw(&answers));
        match state {
            Some(s) => params.insert("requestState".into(), s),
            None => params.shift_remove("requestState"),
        };
        let retry = Request::new(
            jsonrpc::to_raw(&format!("tether-input-{round}")),
            self.method.clone(),
            None,
        );
        let name = retry.name_value(Some(&params));
        let level = self.ctx.log_level();
        let body = self
            .session
            .prepare(&retry, Some(&params), level.as_deref(), false)
            .map_err(InputFailure::Retry)?;
        let reply = self
            .session
            .request(body, &self.method, name.as_deref(), &[])
            .await
            .map_err(InputFailure::Upstream)?;
        match reply {
            Reply::Json(b) => Ok(b),
            Reply::Accepted => Err(InputFailure::Unanswered),
            Reply::Stream(mut stream) => {
                // Progress and log notifications of the retry still reach the client.
                while let Some(item) = stream.next_message().await {
                    let bytes = item.map_err(InputFailure::Stream)?;
                    match Message::parse(&bytes).ok().and_then(|m| m.kind().ok()) {
                        Some(Kind::Response) => return Ok(bytes),
                        Some(Kind::Notification) => {
                            self.send(bytes).await;
                        }
                        _ => {}
                    }
                }
                Err(InputFailure::StreamEnded)
            }
        }
    }
}
