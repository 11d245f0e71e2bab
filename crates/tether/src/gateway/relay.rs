//! Forwarding one client request to one upstream and relaying the reply:
//! JSON as-is, SSE live (progress and logs as they come, server→client
//! requests re-addressed so the client's answer finds its way back).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::bridge::adapt_response;
use super::input::{self, InputBridge};
use super::{Gateway, Outcome, error};
use crate::jsonrpc::{self, ErrorObject, Kind, Message, RawObject, code};
use crate::protocol::{self, Era};
use crate::session::{ClientSession, PendingRequest};
use crate::upstream::{EventStream, Reply, Upstream, UpstreamError, UpstreamSession};

/// Messages buffered between an upstream stream and the client; beyond this
/// the upstream read waits (backpressure, never unbounded memory).
const STREAM_QUEUE: usize = 32;

impl Gateway {
    /// Sends `msg` to `upstream` in the client's session context. `params`
    /// replaces the request's params when the router rewrote them.
    pub(super) async fn forward(
        &self,
        ctx: &Arc<ClientSession>,
        upstream: &Arc<Upstream>,
        msg: Message,
        raw: Bytes,
        params: Option<RawObject>,
    ) -> Outcome {
        let method = msg.method.clone().unwrap_or_default();
        let name = header_name(&method, &msg, params.as_ref());
        let mut last_error = None;
        for attempt in 0..2 {
            let session = match self.upstream_session(ctx, upstream).await {
                Ok(s) => s,
                Err(e) => return unavailable(&msg, upstream, &e, false),
            };
            let level = ctx.log_level();
            let body = match session.prepare(&msg, &raw, params.clone(), level.as_deref()) {
                Ok(b) => b,
                Err(e) => return error(&msg, code::INVALID_PARAMS, e.message()),
            };
            match session
                .request(body, &method, name.as_deref(), &ctx.options.param_headers)
                .await
            {
                Ok(reply) => return self.relay(ctx, session, method, msg, params, reply),
                Err(e) => {
                    if e.poisons_session() {
                        ctx.upstreams.evict(&session);
                    }
                    let safe_to_retry = e.provably_not_delivered()
                        || (method != "tools/call" && matches!(e, UpstreamError::Transport(_)));
                    tracing::debug!(upstream = %upstream.name, %method, error = %e, attempt, "upstream request failed");
                    if attempt == 0 && safe_to_retry {
                        last_error = Some(e);
                        continue;
                    }
                    let unknown = method == "tools/call" && !e.provably_not_delivered();
                    return unavailable(&msg, upstream, &e, unknown);
                }
            }
        }
        let e = last_error.unwrap_or(UpstreamError::Timeout);
        unavailable(&msg, upstream, &e, false)
    }

    fn relay(
        &self,
        ctx: &Arc<ClientSession>,
        session: Arc<UpstreamSession>,
        method: String,
        msg: Message,
        params: Option<RawObject>,
        reply: Reply,
    ) -> Outcome {
        let id = msg.id.clone();
        let request_params = || {
            params
                .clone()
                .or_else(|| msg.params_object().ok())
                .unwrap_or_default()
        };
        match reply {
            Reply::Json(body) if input::bridges(ctx, &session, &body) => {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let bridge = InputBridge {
                    ctx: ctx.clone(),
                    session,
                    method,
                    client_id: id.expect("requests have ids"),
                    params: request_params(),
                    tx,
                    send_timeout: self.send_timeout,
                };
                tokio::spawn(bridge.run(body));
                Outcome::Stream(rx)
            }
            Reply::Json(body) => Outcome::Message(adapt_response(ctx.era, &method, body)),
            Reply::Accepted => Outcome::Error(
                ErrorObject::new(
                    code::INTERNAL_ERROR,
                    "upstream accepted the request without answering it",
                ),
                id,
            ),
            Reply::Stream(stream) => {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let pump = Pump {
                    request_params: request_params(),
                    send_timeout: self.send_timeout,
                    ctx: ctx.clone(),
                    session,
                    method,
                    id,
                    tx,
                    close_timeout: self.close_timeout,
                };
                tokio::spawn(pump.run(*stream));
                Outcome::Stream(rx)
            }
        }
    }
}

/// The `Mcp-Name` value for a modern upstream: the (rewritten) name or URI.
pub(super) fn header_name(
    method: &str,
    msg: &Message,
    params: Option<&RawObject>,
) -> Option<String> {
    let key = protocol::name_param_for(method)?;
    match params {
        Some(p) => jsonrpc::str_member(p, key),
        None => msg
            .params_object()
            .ok()
            .and_then(|p| jsonrpc::str_member(&p, key)),
    }
}

/// A JSON-RPC error explaining that an upstream could not serve the request.
fn unavailable(
    msg: &Message,
    upstream: &Upstream,
    e: &UpstreamError,
    outcome_unknown: bool,
) -> Outcome {
    let text = if outcome_unknown {
        format!(
            "upstream {} failed during tools/call ({e}); the call may or may not have run (outcome unknown), so it was not retried",
            upstream.name
        )
    } else {
        format!("upstream {} is unavailable: {e}", upstream.name)
    };
    let data =
        serde_json::json!({ "upstream": &*upstream.name, "outcomeUnknown": outcome_unknown });
    Outcome::Error(
        ErrorObject::new(code::INTERNAL_ERROR, text).with_data(data),
        msg.id.clone(),
    )
}

/// Relays one upstream SSE response to the client.
struct Pump {
    ctx: Arc<ClientSession>,
    session: Arc<UpstreamSession>,
    method: String,
    id: Option<Box<serde_json::value::RawValue>>,
    tx: mpsc::Sender<Bytes>,
    close_timeout: Duration,
    send_timeout: Duration,
    /// The request's params as sent upstream, for retries with client input.
    request_params: RawObject,
}

impl Pump {
    async fn run(self, mut stream: EventStream) {
        let own_id = self.id.as_deref().map(|i| i.get().to_owned());
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
                        self.ctx.upstreams.evict(&self.session);
                    }
                    break;
                }
            };
            let Ok(msg) = Message::parse(&bytes) else {
                continue;
            };
            let out = match msg.kind() {
                Ok(Kind::Response) if msg.id_text() == own_id.as_deref() => {
                    answered = true;
                    if input::bridges(&self.ctx, &self.session, &bytes) {
                        self.bridge_input(bytes).await;
                        break;
                    }
                    Some(adapt_response(self.ctx.era, &self.method, bytes))
                }
                Ok(Kind::Response) => None,
                Ok(Kind::Notification) => self.notification(&msg).then_some(bytes),
                Ok(Kind::Request) => relay_server_request(&self.ctx, &self.session, msg).await,
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
            let text = if self.method == "tools/call" {
                "the upstream stream ended before the tool call's result; the call may or may not have completed (outcome unknown)"
            } else {
                "the upstream stream ended before the response"
            };
            let err = ErrorObject::new(code::INTERNAL_ERROR, text)
                .with_data(serde_json::json!({ "upstream": &*self.session.upstream.name }));
            let _ = self
                .tx
                .send(Bytes::from(err.to_response(self.id.as_deref())))
                .await;
        }
        if self.ctx.is_ephemeral() {
            self.ctx.close(self.close_timeout).await;
        }
    }

    /// Completes an `input_required` answer by asking the client (same stream).
    async fn bridge_input(&self, body: Bytes) {
        let Some(client_id) = self.id.clone() else {
            return;
        };
        let bridge = InputBridge {
            ctx: self.ctx.clone(),
            session: self.session.clone(),
            method: self.method.clone(),
            client_id,
            params: self.request_params.clone(),
            tx: self.tx.clone(),
            send_timeout: self.send_timeout,
        };
        bridge.run(body).await;
    }

    /// Whether a notification goes to this client.
    fn notification(&self, msg: &Message) -> bool {
        // Modern clients that did not ask for a log level must not get log messages.
        self.ctx.options.logs || msg.method.as_deref() != Some("notifications/message")
    }

    /// A legacy upstream keeps working after a disconnect unless told to stop.
    /// (2025-11-25 says a disconnect is not a cancellation because the client
    /// may resume the stream; Tether keeps no event log to resume from yet, so
    /// the rest of the work would be lost anyway.)
    async fn cancel_upstream(&self) {
        let (Era::Legacy, Some(id)) = (self.session.era, self.id.as_deref()) else {
            return;
        };
        let note = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{},"reason":"client disconnected"}}}}"#,
            id.get()
        );
        let _ = self.session.send_message(Bytes::from(note)).await;
    }
}

/// Re-addresses a server→client request so the client's answer finds its way
/// back, or refuses it upstream when the client cannot answer (modern or
/// sessionless clients).
pub(super) async fn relay_server_request(
    ctx: &ClientSession,
    session: &Arc<UpstreamSession>,
    msg: Message,
) -> Option<Bytes> {
    let original_id = msg.id.clone()?;
    let relayable = ctx.era == Era::Legacy && !ctx.is_ephemeral();
    let pending = PendingRequest::Upstream {
        session: session.clone(),
        original_id: original_id.clone(),
    };
    if let Some(id) = relayable.then(|| ctx.register_pending(pending)).flatten() {
        let out = Message {
            id: Some(jsonrpc::to_raw(&id)),
            ..msg
        };
        return Some(Bytes::from(out.to_bytes()));
    }
    let err = ErrorObject::new(
        code::METHOD_NOT_FOUND,
        "this client cannot take server-to-client requests through the gateway (a modern or sessionless client, or too many unanswered requests)",
    );
    let _ = session
        .send_message(Bytes::from(err.to_response(Some(&original_id))))
        .await;
    None
}
