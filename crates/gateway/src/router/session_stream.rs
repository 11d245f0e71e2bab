//! The client's GET stream: each upstream session's own stream (requests
//! and notifications not tied to a client request) relayed into it while
//! the client listens.

use std::sync::Arc;
use std::time::Duration;

use tether_wire::jsonrpc::{Kind, Message};
use tether_wire::protocol::Era;
use tokio::sync::oneshot;

use super::result_cache::ResultCache;
use super::server_requests::relay_server_request;
use crate::session::ClientSession;
use crate::upstream::{UpstreamError, UpstreamSession};

/// An upstream session whose stream a relay was started for, and a signal
/// that fires once the relay has opened that stream (or failed to).
pub type Started = (Arc<UpstreamSession>, oneshot::Receiver<()>);

/// Starts relaying the streams of `client`'s upstream sessions that are not
/// relayed yet into its GET stream; returns the relays started.
pub fn relay_upstream_streams(
    client: &Arc<ClientSession>,
    send_timeout: Duration,
    cache: &Arc<ResultCache>,
) -> Vec<Started> {
    let mut started = Vec::new();
    for session in client.unrelayed_upstreams() {
        if session.era == Era::Legacy {
            let (opened, open) = oneshot::channel();
            let relay = relay(
                client.clone(),
                session.clone(),
                send_timeout,
                cache.clone(),
                opened,
            );
            tokio::spawn(relay);
            started.push((session, open));
        }
    }
    started
}

/// Relays one upstream session's GET stream while the client listens on its
/// own; stops when no client stream is left, or the upstream stream ends. It
/// holds no sender of the client's stream while waiting, so ending that stream
/// (shutdown, a client too slow to read) takes effect at once.
async fn relay(
    ctx: Arc<ClientSession>,
    session: Arc<UpstreamSession>,
    send_timeout: Duration,
    cache: Arc<ResultCache>,
    opened: oneshot::Sender<()>,
) {
    let listening = session.listen().await;
    let _ = opened.send(());
    let mut stream = match listening {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(upstream = %session.upstream.name, error = %e, "no upstream GET stream");
            if !matches!(e, UpstreamError::Status { status: 405, .. }) {
                // Maybe transient: let a later request try again.
                ctx.forget_listener(&session);
            }
            return;
        }
    };
    loop {
        let changed = ctx.outbound_changed();
        if ctx.outbound().is_none() {
            if ctx.release_listener(&session) {
                return;
            }
            continue;
        }
        let item = tokio::select! {
            item = stream.next_message() => item,
            _ = changed => continue,
        };
        let Some(Ok(bytes)) = item else {
            ctx.forget_listener(&session);
            return;
        };
        let Ok(msg) = Message::parse(&bytes) else {
            continue;
        };
        let out = match msg.kind() {
            Ok(Kind::Request) => relay_server_request(Some(&ctx), &session, msg).await,
            Ok(Kind::Notification) => {
                cache.invalidate_by(&session.upstream.name, &msg);
                Some(bytes)
            }
            _ => None,
        };
        let Some(out) = out else { continue };
        let Some(tx) = ctx.outbound() else { continue };
        if !matches!(
            tokio::time::timeout(send_timeout, tx.send(out)).await,
            Ok(Ok(()))
        ) {
            tracing::warn!(session = %ctx.id, "client stopped reading its GET stream; closing it");
            ctx.close_outbound();
        }
    }
}
