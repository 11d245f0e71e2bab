//! Forwarding one client request to one upstream and relaying the reply:
//! JSON as it is (adapted to the client's era), SSE live (progress and logs
//! as they come, server→client requests re-addressed), `input_required`
//! resolved for legacy clients. A request that failed because its upstream
//! session was lost is sent again on a fresh session — a `tools/call` only
//! when it provably never arrived ([invariant: no-replay]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, ErrorObject, Method, RawObject, Request, code};
use tether_wire::protocol::{ERROR_HEADER_MISMATCH, Era};
use tokio::sync::mpsc;

use super::connector::Connector;
use super::context::RequestContext;
use super::era_results::adapt_response;
use super::input_rounds::{self, InputRounds};
use super::outcome::{Outcome, error};
use super::param_mirror;
use super::progress_swap::ProgressSwap;
use super::reply_relay::ReplyRelay;
use super::waiting_calls::{Parked, Resume, WaitingCalls};
use crate::telemetry;
use crate::upstream::{EventStream, Reply, Upstream, UpstreamError, UpstreamSession};

/// Messages buffered between an upstream stream and the client; beyond this
/// the upstream read waits (backpressure, never unbounded memory).
const STREAM_QUEUE: usize = 32;

/// Forwards client requests to upstreams (see the module documentation).
pub struct Forwarder {
    connector: Arc<Connector>,
    waiting: Arc<WaitingCalls>,
    send_timeout: Duration,
}

impl Forwarder {
    /// Forwards on the sessions `connector` hands out; calls that wait for a
    /// modern client's input wait in `waiting`; a client that leaves a
    /// relayed message unread for `send_timeout` is cut off.
    pub fn new(
        connector: Arc<Connector>,
        waiting: Arc<WaitingCalls>,
        send_timeout: Duration,
    ) -> Self {
        Forwarder {
            connector,
            waiting,
            send_timeout,
        }
    }

    /// Sends `request` to `upstream` in the request's context. `params`
    /// replaces the request's params when the router rewrote them.
    pub async fn forward(
        &self,
        ctx: &Arc<RequestContext>,
        upstream: &Arc<Upstream>,
        request: Request,
        params: Option<RawObject>,
    ) -> Outcome {
        let cache = self.connector.cache();
        // Only a cached method's rewritten params are serialised for its key.
        let rewritten = (params.as_ref())
            .filter(|_| cache.caches(&request.method))
            .map(jsonrpc::to_raw);
        let sent = rewritten.as_deref().or(request.params.as_deref());
        let ask = cache.ask(&upstream.name, &request.method, sent, &ctx.caller.principal);
        if let Some(result) = ask.as_ref().and_then(|a| a.cached()) {
            let answer = Bytes::from(jsonrpc::response(&request.id, &result));
            return Outcome::Message(adapt_response(ctx.era, &request.method, answer));
        }
        let mut last_error = None;
        let mut relist = false;
        for attempt in 0..2 {
            let session = match self.connector.session_for(ctx, upstream).await {
                Ok(s) => s,
                Err(e) => return unavailable(&request, upstream, &e, false),
            };
            let level = ctx.log_level();
            let as_sent = ctx.options.meta_complete;
            let body = match session.prepare(&request, params.as_ref(), level.as_deref(), as_sent) {
                Ok(b) => b,
                Err(e) => return error(&request, code::INVALID_PARAMS, e.message()),
            };
            // Only a modern upstream is told the name (in `Mcp-Name`): the
            // one the client's request was validated with, unless the router
            // rewrote the params (a federated name without its prefix).
            let name = match session.era {
                Era::Legacy => None,
                Era::Modern if params.is_none() && request.method.name_param().is_some() => ctx
                    .options
                    .name
                    .clone()
                    .or_else(|| request.name_value(None)),
                Era::Modern => request.name_value(params.as_ref()),
            };
            // A legacy client renders no Mcp-Param-* headers; a modern
            // upstream wants those its tool declares. A modern client's
            // describe the arguments it sent: when the call goes with
            // others (fixed ones, a call_tool unwrapped), they are rendered
            // from those instead, and there is nothing of the client's to
            // check for a legacy upstream.
            let rewritten = ctx.rewritten_from().is_some();
            let mirrored = match (&name, ctx.era, session.era, &request.method) {
                (Some(tool), Era::Legacy, Era::Modern, Method::ToolsCall)
                | (Some(tool), Era::Modern, Era::Modern, Method::ToolsCall)
                    if ctx.era == Era::Legacy || rewritten =>
                {
                    let call = (tool.as_str(), &request, params.as_ref());
                    let connector = &self.connector;
                    Some(param_mirror::headers(connector, ctx, upstream, call, relist).await)
                }
                (_, Era::Modern, Era::Legacy, Method::ToolsCall) if !rewritten => {
                    let tool = request.name_value(params.as_ref()).unwrap_or_default();
                    let call = (tool.as_str(), &request, params.as_ref());
                    if let Err(why) =
                        param_mirror::check(&self.connector, ctx, upstream, call).await
                    {
                        return error(&request, ERROR_HEADER_MISMATCH, why);
                    }
                    None
                }
                _ => None,
            };
            let extra = mirrored.as_deref().unwrap_or(&ctx.options.param_headers);
            let reply = session
                .request(body, &request.method, name.as_deref(), extra)
                .await;
            match reply {
                Ok(Reply::Json(answer))
                    if attempt == 0 && mirrored.is_some() && param_mirror::refused(&answer) =>
                {
                    tracing::debug!(upstream = %upstream.name, "Mcp-Param headers refused; listing the tools again");
                    relist = true;
                }
                Ok(reply) => {
                    if let (Reply::Json(answer), Some(ask)) = (&reply, &ask) {
                        ask.keep(answer);
                    }
                    return self.relay(ctx, session, request, params, reply);
                }
                Err(e) => {
                    if e.poisons_session() {
                        ctx.upstreams().evict(&session);
                    }
                    tracing::debug!(upstream = %upstream.name, method = %request.method, error = %e, attempt, "upstream request failed");
                    if attempt == 0 && e.retryable(&request.method) {
                        last_error = Some(e);
                        continue;
                    }
                    let unknown = request.method == Method::ToolsCall && e.leaves_outcome_unknown();
                    return unavailable(&request, upstream, &e, unknown);
                }
            }
        }
        let e = last_error.unwrap_or(UpstreamError::Timeout);
        unavailable(&request, upstream, &e, false)
    }

    /// Turns the upstream's reply into the client's outcome.
    fn relay(
        &self,
        ctx: &Arc<RequestContext>,
        session: Arc<UpstreamSession>,
        request: Request,
        params: Option<RawObject>,
        reply: Reply,
    ) -> Outcome {
        let request_params = || {
            params
                .clone()
                .or_else(|| request.params_object().ok())
                .unwrap_or_default()
        };
        match reply {
            Reply::Json(body) if input_rounds::needed(ctx, &session, &body) => {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let rounds = InputRounds {
                    ctx: ctx.clone(),
                    session,
                    params: request_params(),
                    method: request.method,
                    client_id: request.id,
                    tx,
                    send_timeout: self.send_timeout,
                };
                telemetry::spawn(rounds.run(body));
                Outcome::Stream(rx)
            }
            Reply::Json(body) => Outcome::Message(adapt_response(ctx.era, &request.method, body)),
            Reply::Accepted => Outcome::Error(
                ErrorObject::new(
                    code::INTERNAL_ERROR,
                    "upstream accepted the request without answering it",
                ),
                Some(request.id),
            ),
            Reply::Stream(stream) => {
                // A listen stream carries change notifications for as long as
                // the client holds it; it is quiet most of the time.
                let stream = if request.method == Method::SubscriptionsListen {
                    stream.without_idle_timeout()
                } else {
                    stream
                };
                let call = Call {
                    ctx: ctx.clone(),
                    session,
                    method: request.method.clone(),
                    request_params: request_params(),
                    upstream_id: Some(request.id.clone()),
                };
                self.stream_reply(call, Some(request.id), *stream, None)
            }
        }
    }

    /// A modern retry carrying the input a call waiting inside Tether asked
    /// for (its Tether-issued `requestState` is `state`): the rest of the
    /// call's reply, answering the retry.
    pub async fn resume_waiting(
        &self,
        ctx: &Arc<RequestContext>,
        state: &str,
        retry: Request,
    ) -> Outcome {
        match self.waiting.resume(state, &retry, ctx).await {
            Resume::Continue(parked) => self.resume(*parked, &retry),
            Resume::Again(ask) => Outcome::Message(ask.to_response(&retry.id).into()),
            Resume::Unknown => error(
                &retry,
                code::INVALID_PARAMS,
                "requestState is unknown or expired (or names another call); send the request again without it",
            ),
        }
    }

    /// The upstream of the call waiting inside Tether under `state`, and
    /// the call's params as sent there.
    pub fn waiting_call(&self, state: &str) -> Option<(Arc<Upstream>, RawObject)> {
        self.waiting.call_under(state)
    }

    /// Gives up the call waiting inside Tether under `state` (its input will
    /// never come).
    pub async fn abandon_waiting(&self, state: &str) {
        self.waiting.cancel(state).await;
    }

    /// Continues a call that waited for a modern client's input: the
    /// upstream has the answer; the rest of its reply goes to `retry` (the
    /// client's new request).
    fn resume(&self, parked: Parked, retry: &Request) -> Outcome {
        let progress = ProgressSwap::new(&parked.request_params, retry);
        let call = Call {
            ctx: parked.ctx,
            session: parked.session,
            method: parked.method,
            request_params: parked.request_params,
            upstream_id: Some(parked.upstream_id),
        };
        self.stream_reply(call, Some(retry.id.clone()), parked.stream, progress)
    }

    /// Relays `stream`, the reply to `call`, to the client (who knows the
    /// call as `client_id`) as it arrives.
    fn stream_reply(
        &self,
        call: Call,
        client_id: Option<Box<RawValue>>,
        stream: EventStream,
        progress: Option<ProgressSwap>,
    ) -> Outcome {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let relay = ReplyRelay {
            ctx: call.ctx,
            session: call.session,
            method: call.method,
            upstream_id: call.upstream_id,
            client_id,
            tx,
            send_timeout: self.send_timeout,
            request_params: call.request_params,
            waiting: self.waiting.clone(),
            progress,
            cache: self.connector.cache().clone(),
        };
        telemetry::spawn(relay.run(stream));
        Outcome::Stream(rx)
    }
}

/// A call on its upstream session whose reply is being relayed.
struct Call {
    ctx: Arc<RequestContext>,
    session: Arc<UpstreamSession>,
    method: Method,
    request_params: RawObject,
    upstream_id: Option<Box<RawValue>>,
}

/// A JSON-RPC error explaining that an upstream could not serve the request.
fn unavailable(
    request: &Request,
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
        Some(request.id.clone()),
    )
}
