//! The client's GET stream: each upstream session's own stream (requests and
//! notifications not tied to a client request) relayed into it.

use std::sync::Arc;
use std::time::Duration;

use super::Gateway;
use super::relay::relay_server_request;
use crate::session::ClientSession;
use crate::upstream::{ClientIdentity, Upstream, UpstreamError, UpstreamSession};
use tether_wire::jsonrpc::{Kind, Message};
use tether_wire::protocol::Era;

impl Gateway {
    /// The client's session with `upstream` (opened on first use); when the
    /// client listens on a GET stream, new upstream sessions are relayed into it.
    pub(super) async fn upstream_session(
        &self,
        ctx: &Arc<ClientSession>,
        upstream: &Arc<Upstream>,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        // An upstream that takes the client's own token gets it from the
        // first request (initialize) on.
        let forwarding;
        let identity = if upstream.config.forward_client_token {
            forwarding = ClientIdentity {
                credentials: ctx.credentials(),
                ..ctx.identity.clone()
            };
            &forwarding
        } else {
            &ctx.identity
        };
        let (mut session, mut opened) = ctx.upstreams.get(upstream, identity).await?;
        if !opened && session.needs_validation() && !session.validate().await {
            // Dead while idle (the upstream restarted, a proxy dropped it):
            // replace it before the client's request rather than fail it.
            tracing::debug!(upstream = %upstream.name, "idle upstream session failed its probe; replaced");
            upstream
                .stats
                .sessions_replaced
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.upstreams.evict(&session);
            (session, opened) = ctx.upstreams.get(upstream, identity).await?;
        }
        session.forward_credentials(ctx.credentials());
        if opened
            && !ctx.is_ephemeral()
            && session.is_reattachable()
            && let Err(e) = self.store.bind(&ctx.id, &session.binding()).await
        {
            tracing::warn!(error = %e, "upstream session not stored: a restart will open a new one");
        }
        if opened
            && session.era == Era::Legacy
            && let Some(level) = ctx.log_level()
        {
            // The client chose a log level before this upstream was in use.
            if let Err(e) = session
                .call("logging/setLevel", serde_json::json!({ "level": level }))
                .await
            {
                tracing::debug!(upstream = %upstream.name, error = %e, "logging/setLevel failed");
            }
        }
        if ctx.has_outbound() {
            self.relay_upstream_streams(ctx);
        }
        Ok(session)
    }

    /// Starts relaying the streams of upstream sessions not relayed yet into
    /// the client's GET stream.
    pub fn relay_upstream_streams(&self, ctx: &Arc<ClientSession>) {
        for session in ctx.unrelayed_upstreams() {
            if session.era == Era::Legacy {
                tokio::spawn(listen(ctx.clone(), session, self.send_timeout));
            }
        }
    }
}

/// Relays one upstream session's GET stream while the client listens on its
/// own; stops when no client stream is left, or the upstream stream ends. It
/// holds no sender of the client's stream while waiting, so ending that stream
/// (shutdown, a client too slow to read) takes effect at once.
async fn listen(ctx: Arc<ClientSession>, session: Arc<UpstreamSession>, send_timeout: Duration) {
    let mut stream = match session.listen().await {
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
            Ok(Kind::Request) => relay_server_request(&ctx, &session, msg).await,
            Ok(Kind::Notification) => Some(bytes),
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
