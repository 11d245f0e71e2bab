//! `resources/subscribe` for 2026-07-28 upstreams, which have no such method:
//! Tether keeps the client's subscribed URIs per upstream and holds one
//! `subscriptions/listen` stream for them (re-opened with backoff if the
//! upstream ends it), relaying `resources/updated` (and list-change)
//! notifications into the client's GET stream.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tether_wire::jsonrpc::{Kind, Message, Method, Request, code};
use tether_wire::protocol::Era;
use tokio::sync::oneshot;

use super::connector::Connector;
use super::context::RequestContext;
use super::forward::Forwarder;
use super::listen_stream::{ListenFailure, open};
use super::outcome::{Outcome, empty_answer, error};
use super::result_cache::ResultCache;
use crate::session::{ClientSession, MAX_SUBSCRIPTIONS};
use crate::telemetry;
use crate::upstream::{Upstream, UpstreamSession};

/// Longest wait between attempts to re-open a listen stream.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Subscribes (`on`) or unsubscribes the client to `uri` on `upstream`: a
/// legacy upstream gets the request itself; for a modern one the session's
/// listen stream is replaced by one for its URIs now.
pub async fn subscribe(
    connector: &Connector,
    forwarder: &Forwarder,
    ctx: &Arc<RequestContext>,
    upstream: &Arc<Upstream>,
    request: Request,
    uri: String,
) -> Outcome {
    let on = request.method == Method::ResourcesSubscribe;
    let session = match connector.session_for(ctx, upstream).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("upstream {} is unavailable: {e}", upstream.name);
            return error(&request, code::INTERNAL_ERROR, why);
        }
    };
    if session.era == Era::Legacy {
        return forwarder.forward(ctx, upstream, request, None).await;
    }
    let (ack_tx, ack_rx) = oneshot::channel();
    // Without a client session there is no stream to deliver changes on:
    // the upstream is only asked to accept the subscription.
    let mut asking = None;
    let listening = match ctx.session() {
        None => {
            if on {
                let cache = connector.cache().clone();
                let listener = listen(None, session.clone(), vec![uri], ack_tx, cache);
                asking = Some(AbortOnDrop(telemetry::spawn(listener).abort_handle()));
            }
            on
        }
        Some(client) => {
            let task = |uris| {
                let cache = connector.cache().clone();
                let listener = listen(Some(client.clone()), session.clone(), uris, ack_tx, cache);
                telemetry::spawn(listener).abort_handle()
            };
            match client.resubscribe(&upstream.name, uri, on, task) {
                Some(listening) => listening,
                None => {
                    let why = format!(
                        "at most {MAX_SUBSCRIPTIONS} subscriptions per upstream (or the session has ended)"
                    );
                    return error(&request, code::INVALID_REQUEST, why);
                }
            }
        }
    };
    if listening {
        // Answer only once the upstream accepted the subscription.
        match tokio::time::timeout(upstream.config.timeout(), ack_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(why))) => return error(&request, code::INTERNAL_ERROR, why.to_string()),
            _ => {
                return error(
                    &request,
                    code::INTERNAL_ERROR,
                    "the upstream did not acknowledge the subscription",
                );
            }
        }
    }
    drop(asking);
    empty_answer(&request)
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Holds a `subscriptions/listen` stream for `uris` and relays its change
/// notifications to the `client` session's GET stream (while one is open).
/// The first acknowledgement (or failure) is reported on `ack`; later the
/// stream is re-opened with capped backoff whenever the upstream ends it.
/// Without a client session, it ends once acknowledged.
async fn listen(
    client: Option<Arc<ClientSession>>,
    session: Arc<UpstreamSession>,
    uris: Vec<String>,
    ack: oneshot::Sender<Result<(), ListenFailure>>,
    cache: Arc<ResultCache>,
) {
    let mut ack = Some(ack);
    let mut backoff = Duration::from_secs(1);
    loop {
        match open(&session, json!({ "resourceSubscriptions": uris })).await {
            Ok(mut stream) => {
                while let Some(Ok(bytes)) = stream.next_message().await {
                    let Ok(msg) = Message::parse(&bytes) else {
                        continue;
                    };
                    if !matches!(msg.kind(), Ok(Kind::Notification)) {
                        break;
                    }
                    cache.invalidate_by(&session.upstream.name, &msg);
                    if msg.method == Some(Method::SubscriptionsAcknowledged) {
                        if let Some(ack) = ack.take() {
                            let _ = ack.send(Ok(()));
                        }
                        if client.is_none() {
                            return;
                        }
                        backoff = Duration::from_secs(1);
                    } else if let Some(tx) = client.as_ref().and_then(|c| c.outbound()) {
                        let _ = tx.try_send(bytes);
                    }
                }
            }
            Err(why) => {
                if let Some(ack) = ack.take() {
                    let _ = ack.send(Err(why));
                    return;
                }
                tracing::debug!(upstream = %session.upstream.name, %why, "re-opening subscriptions/listen failed");
            }
        }
        if let Some(ack) = ack.take() {
            let _ = ack.send(Err(ListenFailure::ClosedEarly));
            return;
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) || session.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
