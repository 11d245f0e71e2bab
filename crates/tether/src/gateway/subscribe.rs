//! `resources/subscribe` for 2026-07-28 upstreams, which have no such method:
//! Tether keeps the client's subscribed URIs per upstream and holds one
//! `subscriptions/listen` stream for them, relaying `resources/updated` (and
//! list-change) notifications into the client's GET stream.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::{Gateway, Outcome, error};
use crate::jsonrpc::{self, Kind, Message, code};
use crate::protocol::Era;
use crate::session::ClientSession;
use crate::upstream::{Reply, Upstream, UpstreamSession};

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
                return error(
                    &msg,
                    code::INTERNAL_ERROR,
                    format!("upstream {} is unavailable: {e}", upstream.name),
                );
            }
        };
        if session.era == Era::Legacy {
            return self.forward(ctx, upstream, msg, raw, None).await;
        }
        let uris = ctx.update_subscriptions(&upstream.name, uri, on);
        let listener = (!uris.is_empty())
            .then(|| tokio::spawn(listen(ctx.clone(), session, uris)).abort_handle());
        ctx.set_subscription_listener(&upstream.name, listener);
        let id = msg.id.as_deref().expect("requests have ids");
        Outcome::Message(Bytes::from(jsonrpc::response(
            id,
            &jsonrpc::to_raw(&json!({})),
        )))
    }
}

/// Holds one `subscriptions/listen` stream for `uris` and relays its change
/// notifications to the client's GET stream (while one is open).
async fn listen(ctx: Arc<ClientSession>, session: Arc<UpstreamSession>, uris: Vec<String>) {
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
    let body = match session.prepare(&request, &Bytes::new(), None, None) {
        Ok(b) => b,
        Err(e) => return tracing::warn!(error = %e.message(), "cannot build subscriptions/listen"),
    };
    let mut stream = match session
        .request(body, "subscriptions/listen", None, &[])
        .await
    {
        Ok(Reply::Stream(stream)) => stream.without_idle_timeout(),
        Ok(_) => {
            return tracing::warn!(upstream = %session.upstream.name, "subscriptions/listen did not open a stream");
        }
        Err(e) => {
            return tracing::warn!(upstream = %session.upstream.name, error = %e, "subscriptions/listen failed");
        }
    };
    while let Some(Ok(bytes)) = stream.next_message().await {
        let Ok(msg) = Message::parse(&bytes) else {
            continue;
        };
        let relay = matches!(msg.kind(), Ok(Kind::Notification))
            && msg.method.as_deref() != Some("notifications/subscriptions/acknowledged");
        if relay && let Some(tx) = ctx.outbound() {
            let _ = tx.try_send(bytes);
        }
    }
}
