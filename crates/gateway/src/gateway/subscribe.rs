//! `resources/subscribe` for 2026-07-28 upstreams, which have no such method:
//! Tether keeps the client's subscribed URIs per upstream and holds one
//! `subscriptions/listen` stream for them (re-opened with backoff if the
//! upstream ends it), relaying `resources/updated` (and list-change)
//! notifications into the client's GET stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::oneshot;

use super::{Gateway, Outcome, empty_answer, error};
use crate::session::{ClientSession, MAX_SUBSCRIPTIONS};
use crate::upstream::{EventStream, Reply, Upstream, UpstreamSession};
use tether_wire::jsonrpc::{self, Kind, Message, code};
use tether_wire::protocol::Era;

/// Longest wait between attempts to re-open a listen stream.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Gateway {
    /// Subscribes (`on`) or unsubscribes the client to `uri` on `upstream`.
    pub(super) async fn subscribe(
        &self,
        ctx: &Arc<ClientSession>,
        upstream: &Arc<Upstream>,
        msg: Message,
        raw: Bytes,
        uri: String,
        on: bool,
    ) -> Outcome {
        let session = match self.upstream_session(ctx, upstream).await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("upstream {} is unavailable: {e}", upstream.name);
                return error(&msg, code::INTERNAL_ERROR, why);
            }
        };
        if session.era == Era::Legacy {
            return self.forward(ctx, upstream, msg, raw, None).await;
        }
        let (ack_tx, ack_rx) = oneshot::channel();
        let task =
            |uris| tokio::spawn(listen(ctx.clone(), session.clone(), uris, ack_tx)).abort_handle();
        let listening = match ctx.resubscribe(&upstream.name, uri, on, task) {
            Some(listening) => listening,
            None => {
                let why = format!(
                    "at most {MAX_SUBSCRIPTIONS} subscriptions per upstream (or the session has ended)"
                );
                return error(&msg, code::INVALID_REQUEST, why);
            }
        };
        if listening {
            // Answer only once the upstream accepted the subscription.
            match tokio::time::timeout(upstream.config.timeout(), ack_rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(why))) => return error(&msg, code::INTERNAL_ERROR, why),
                _ => {
                    return error(
                        &msg,
                        code::INTERNAL_ERROR,
                        "the upstream did not acknowledge the subscription",
                    );
                }
            }
        }
        empty_answer(&msg)
    }
}

/// Holds a `subscriptions/listen` stream for `uris` and relays its change
/// notifications to the client's GET stream (while one is open). The first
/// acknowledgement (or failure) is reported on `ack`; later the stream is
/// re-opened with capped backoff whenever the upstream ends it.
async fn listen(
    ctx: Arc<ClientSession>,
    session: Arc<UpstreamSession>,
    uris: Vec<String>,
    ack: oneshot::Sender<Result<(), String>>,
) {
    let mut ack = Some(ack);
    let mut backoff = Duration::from_secs(1);
    loop {
        match open(&session, &uris).await {
            Ok(mut stream) => {
                while let Some(Ok(bytes)) = stream.next_message().await {
                    let Ok(msg) = Message::parse(&bytes) else {
                        continue;
                    };
                    if !matches!(msg.kind(), Ok(Kind::Notification)) {
                        break;
                    }
                    if msg.method.as_deref() == Some("notifications/subscriptions/acknowledged") {
                        if let Some(ack) = ack.take() {
                            let _ = ack.send(Ok(()));
                        }
                        backoff = Duration::from_secs(1);
                    } else if let Some(tx) = ctx.outbound() {
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
            let _ = ack.send(Err(
                "the upstream closed the subscription stream before acknowledging it".into(),
            ));
            return;
        }
        if ctx.is_closed() || session.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn open(session: &Arc<UpstreamSession>, uris: &[String]) -> Result<Box<EventStream>, String> {
    let request = Message {
        jsonrpc: Some(jsonrpc::to_raw("2.0")),
        id: Some(jsonrpc::to_raw("tether-listen")),
        method: Some("subscriptions/listen".into()),
        params: Some(jsonrpc::to_raw(
            &json!({ "notifications": { "resourceSubscriptions": uris } }),
        )),
        result: None,
        error: None,
    };
    let body = session
        .prepare(&request, &Bytes::new(), None, None)
        .map_err(|e| e.message())?;
    match session
        .request(body, "subscriptions/listen", None, &[])
        .await
    {
        Ok(Reply::Stream(stream)) => Ok(stream.without_idle_timeout()),
        Ok(Reply::Json(body)) => Err(format!(
            "the upstream refused subscriptions/listen: {}",
            String::from_utf8_lossy(&body)
        )),
        Ok(Reply::Accepted) => {
            Err("the upstream accepted subscriptions/listen without a stream".into())
        }
        Err(e) => Err(format!("subscriptions/listen failed: {e}")),
    }
}
