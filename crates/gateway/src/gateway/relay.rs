//! Forwarding one client request to one upstream and relaying the reply:
//! JSON as-is, SSE live (progress and logs as they come, server→client
//! requests re-addressed so the client's answer finds its way back).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::bridge::adapt_response;
use super::input::{self, InputBridge};
use super::pump::Pump;
use super::{Gateway, Outcome, error};
use crate::session::{ClientSession, PendingRequest};
use crate::upstream::{Reply, Upstream, UpstreamError, UpstreamSession};
use tether_wire::jsonrpc::{self, ErrorObject, Message, RawObject, code};
use tether_wire::protocol::{self, Era};

/// Messages buffered between an upstream stream and the client; beyond this
/// the upstream read waits (backpressure, never unbounded memory).
pub(super) const STREAM_QUEUE: usize = 32;

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
            let body = match session.prepare(&msg, &raw, params.as_ref(), level.as_deref()) {
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
                    tracing::debug!(upstream = %upstream.name, %method, error = %e, attempt, "upstream request failed");
                    if attempt == 0 && e.retryable(&method) {
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
                    upstream_id: id.clone(),
                    client_id: id,
                    tx,
                    close_timeout: self.close_timeout,
                    lot: self.lot.clone(),
                };
                // A listen stream carries change notifications for as long as
                // the client holds it; it is quiet most of the time.
                let stream = if pump.method == "subscriptions/listen" {
                    stream.without_idle_timeout()
                } else {
                    stream
                };
                tokio::spawn(pump.run(*stream));
                Outcome::Stream(rx)
            }
        }
    }
}

/// The `Mcp-Name` value for a modern upstream: the (rewritten) name or URI.
pub fn header_name(method: &str, msg: &Message, params: Option<&RawObject>) -> Option<String> {
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

impl Gateway {
    /// Continues a call parked for a modern client's input: the upstream has
    /// its answer; the rest of its stream goes to this (new) request.
    pub(super) fn resume_parked(&self, parked: super::park::Parked, msg: &Message) -> Outcome {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let pump = Pump {
            ctx: parked.ctx,
            session: parked.session,
            method: parked.method,
            upstream_id: Some(parked.upstream_id),
            client_id: msg.id.clone(),
            tx,
            close_timeout: self.close_timeout,
            send_timeout: self.send_timeout,
            request_params: parked.request_params,
            lot: self.lot.clone(),
        };
        tokio::spawn(pump.run(parked.stream));
        Outcome::Stream(rx)
    }
}
