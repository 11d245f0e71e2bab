//! Relaying one upstream SSE response to the client as it arrives: the final
//! response, request-scoped notifications, and server→client requests, which
//! reach legacy clients re-addressed, and modern clients as `input_required`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{ErrorObject, Kind, Message, Method, RawObject, code};
use tether_wire::protocol::Era;
use tokio::sync::mpsc;

use super::context::RequestContext;
use super::era_results::adapt_response;
use super::input_rounds::{self, InputRounds};
use super::progress_swap::ProgressSwap;
use super::result_cache::ResultCache;
use super::server_requests::relay_server_request;
use super::waiting_calls::{self, Parked, WaitingCalls};
use crate::upstream::{EventStream, UpstreamSession};

/// Relays one upstream SSE response to the client.
pub struct ReplyRelay {
    /// The request the reply answers.
    pub ctx: Arc<RequestContext>,
    /// The upstream session it arrives on.
    pub session: Arc<UpstreamSession>,
    /// The request's method.
    pub method: Method,
    /// The id the upstream answers with.
    pub upstream_id: Option<Box<RawValue>>,
    /// The id the client expects (differs after a modern client's retry).
    pub client_id: Option<Box<RawValue>>,
    /// Where the client's messages go.
    pub tx: mpsc::Sender<Bytes>,
    /// How long a client may leave a message unread before it is cut off.
    pub send_timeout: Duration,
    /// The request's params as sent upstream, for retries with client input.
    pub request_params: RawObject,
    /// Calls waiting for a modern client's input.
    pub waiting: Arc<WaitingCalls>,
    /// A call resumed by a modern client's retry: its progress renamed.
    pub progress: Option<ProgressSwap>,
    /// What the upstream's notifications make stale is dropped here.
    pub cache: Arc<ResultCache>,
}

impl ReplyRelay {
    /// Relays `stream` until the response (or the client leaves).
    pub async fn run(self, mut stream: EventStream) {
        let own_id = self.upstream_id.as_deref().map(|i| i.get().to_owned());
        let mut answered = false;
        let mut client_gone = false;
        loop {
            // A client that hangs up is noticed at once, not at the next event.
            let item = tokio::select! {
                item = stream.next_message() => item,
                _ = self.tx.closed() => {
                    client_gone = true;
                    break;
                }
            };
            let bytes = match item {
                None => break,
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    tracing::debug!(upstream = %self.session.upstream.name, error = %e, "upstream stream failed");
                    if e.poisons_session() {
                        self.ctx.upstreams().evict(&self.session);
                    }
                    break;
                }
            };
            let Ok(msg) = Message::parse(&bytes) else {
                continue;
            };
            if matches!(msg.kind(), Ok(Kind::Notification)) {
                self.cache.invalidate_by(&self.session.upstream.name, &msg);
            }
            let out = match msg.kind() {
                Ok(Kind::Response) if msg.id_text() == own_id.as_deref() => {
                    answered = true;
                    if input_rounds::needed(&self.ctx, &self.session, &bytes) {
                        self.ask_for_input(bytes).await;
                        break;
                    }
                    Some(adapt_response(
                        self.ctx.era,
                        &self.method,
                        self.for_client(msg, bytes),
                    ))
                }
                Ok(Kind::Response) => None,
                Ok(Kind::Notification) if !self.notification(&msg) => None,
                Ok(Kind::Notification) => match &self.progress {
                    Some(swap) => swap.apply(&msg, bytes),
                    None => Some(bytes),
                },
                Ok(Kind::Request)
                    if waiting_calls::asks_modern_client(&self.ctx, &self.method, &msg) =>
                {
                    // The client answers with a new request; the upstream call waits.
                    return self.wait_for_input(msg, stream).await;
                }
                Ok(Kind::Request) => {
                    let client = self.ctx.askable_session().map(|s| &**s);
                    relay_server_request(client, &self.session, msg).await
                }
                Err(_) => None,
            };
            if let Some(out) = out
                && !matches!(
                    tokio::time::timeout(self.send_timeout, self.tx.send(out)).await,
                    Ok(Ok(()))
                )
            {
                // Gone, or stopped reading: either way nobody takes the rest.
                client_gone = true;
                break;
            }
            if answered {
                break;
            }
        }
        if client_gone {
            self.cancel_upstream().await;
        } else if !answered {
            let text = if self.method == Method::ToolsCall {
                "the upstream stream ended before the tool call's result; the call may or may not have completed (outcome unknown)"
            } else {
                "the upstream stream ended before the response"
            };
            let err = ErrorObject::new(code::INTERNAL_ERROR, text)
                .with_data(serde_json::json!({ "upstream": &*self.session.upstream.name }));
            let _ = self
                .tx
                .send(Bytes::from(err.to_response(self.client_id.as_deref())))
                .await;
        }
    }

    /// The final response under the id the client used.
    fn for_client(&self, msg: Message, bytes: Bytes) -> Bytes {
        if self.client_id.as_deref().map(RawValue::get) == msg.id_text() {
            return bytes;
        }
        Bytes::from(
            Message {
                id: self.client_id.clone(),
                ..msg
            }
            .to_bytes(),
        )
    }

    /// Keeps the upstream call waiting and answers the modern client `input_required`.
    async fn wait_for_input(self, ask: Message, stream: EventStream) {
        let (Some(client_id), Some(upstream_id)) = (self.client_id, self.upstream_id) else {
            return;
        };
        let parked = Parked {
            ctx: self.ctx.clone(),
            session: self.session.clone(),
            stream,
            method: self.method,
            upstream_id,
            request_params: self.request_params,
        };
        match self.waiting.wait(parked, ask) {
            Ok(request) => {
                let answer = Bytes::from(request.to_response(&client_id));
                let sent = tokio::time::timeout(self.send_timeout, self.tx.send(answer)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    // Nobody will come back with the answer.
                    self.waiting.cancel(request.state()).await;
                }
            }
            Err(refused) => {
                let _ = self.session.send_message(refused.upstream_answer).await;
                let err = refused.client_error.to_response(Some(&client_id));
                let _ =
                    tokio::time::timeout(self.send_timeout, self.tx.send(Bytes::from(err))).await;
            }
        }
    }

    /// Completes an `input_required` answer by asking the client (same stream).
    async fn ask_for_input(&self, body: Bytes) {
        let Some(client_id) = self.client_id.clone() else {
            return;
        };
        let rounds = InputRounds {
            ctx: self.ctx.clone(),
            session: self.session.clone(),
            method: self.method.clone(),
            client_id,
            params: self.request_params.clone(),
            tx: self.tx.clone(),
            send_timeout: self.send_timeout,
        };
        rounds.run(body).await;
    }

    /// Whether a notification goes to this client.
    fn notification(&self, msg: &Message) -> bool {
        // Modern clients that did not ask for a log level must not get log messages.
        self.ctx.options.logs || msg.method != Some(Method::LogMessage)
    }

    /// A legacy upstream keeps working after a disconnect unless told to stop.
    /// This only happens for sessionless requests (2026-07-28: closing the
    /// stream cancels the request); a client session's streams are drained
    /// into a resumable log instead (see `session/resumable.rs`), so they never close here.
    async fn cancel_upstream(&self) {
        let (Era::Legacy, Some(id)) = (self.session.era, self.upstream_id.as_deref()) else {
            return;
        };
        let note = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{},"reason":"client disconnected"}}}}"#,
            id.get()
        );
        let _ = self.session.send_message(Bytes::from(note)).await;
    }
}
