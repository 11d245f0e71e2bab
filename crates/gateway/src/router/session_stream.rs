//! The client's GET stream: each upstream session's own stream (requests
//! and notifications not tied to a client request) relayed into it while
//! the client listens. A legacy upstream's is its GET stream; a modern
//! upstream has none, so its list changes come from a
//! `subscriptions/listen` stream of the upstream session, told to the
//! (legacy) client as plain list-changed notifications.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tether_wire::jsonrpc::{Kind, Message, Method};
use tether_wire::method::LIST_CHANGED;
use tether_wire::protocol::Era;
use tether_wire::subscriptions::Filter;

use super::listen_stream::{self, ListenFailure};
use super::result_cache::ResultCache;
use super::server_requests::relay_server_request;
use crate::session::ClientSession;
use crate::upstream::{EventStream, UpstreamError, UpstreamSession};

/// Starts relaying the streams of `client`'s upstream sessions that are not
/// relayed yet into its GET stream.
pub fn relay_upstream_streams(
    client: &Arc<ClientSession>,
    send_timeout: Duration,
    cache: &Arc<ResultCache>,
) {
    for session in client.unrelayed_upstreams() {
        tokio::spawn(relay(client.clone(), session, send_timeout, cache.clone()));
    }
}

/// The filter of the listen stream opened on a modern upstream for a legacy
/// client: the list changes it could hear of on a legacy server's stream.
fn list_changes() -> Filter {
    Filter {
        tools: true,
        prompts: true,
        resources: true,
        uris: Vec::new(),
    }
}

/// The stream of its own `session` has: a legacy upstream's GET stream, a
/// modern one's listen stream for list changes. On failure, why, and
/// whether a later request should try again.
async fn own_stream(session: &Arc<UpstreamSession>) -> Result<Box<EventStream>, (String, bool)> {
    match session.era {
        Era::Legacy => match session.listen().await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => {
                // 405: the upstream has no GET stream, now or later.
                let transient = !matches!(e, UpstreamError::Status { status: 405, .. });
                Err((e.to_string(), transient))
            }
        },
        Era::Modern => match listen_stream::open_acknowledged(session, &list_changes()).await {
            Ok((stream, _)) => Ok(stream),
            Err(e) => {
                // Only an unreachable or failing upstream may do better later.
                let transient = match &e {
                    ListenFailure::Upstream(UpstreamError::Status { status, .. }) => {
                        matches!(status, 408 | 429 | 500..)
                    }
                    ListenFailure::Upstream(_) | ListenFailure::ClosedEarly => true,
                    _ => false,
                };
                Err((e.to_string(), transient))
            }
        },
    }
}

/// A modern upstream's list change as a legacy client is told it (without
/// the subscription's `_meta`); `None` for anything else on the stream.
fn list_change(method: Option<&Method>) -> Option<Bytes> {
    let method = method?;
    let (_, change) = LIST_CHANGED.iter().find(|(m, _)| m == method)?;
    Some(Bytes::from_static(change))
}

/// Relays one upstream session's own stream while the client listens on
/// its GET stream; stops when no client stream is left, the upstream stream
/// ends, or the upstream session is closed (a modern upstream's listen
/// stream does not end with it). It holds no sender of the client's stream
/// while waiting, so ending that stream (shutdown, a client too slow to
/// read) takes effect at once.
async fn relay(
    ctx: Arc<ClientSession>,
    session: Arc<UpstreamSession>,
    send_timeout: Duration,
    cache: Arc<ResultCache>,
) {
    let listening = own_stream(&session).await;
    session.own_stream_tried();
    let mut stream = match listening {
        Ok(s) => s,
        Err((why, transient)) => {
            tracing::debug!(upstream = %session.upstream.name, error = %why, "no upstream stream of its own");
            if transient {
                // Let a later request try again.
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
            () = session.closed() => return,
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
                match session.era {
                    Era::Legacy => Some(bytes),
                    Era::Modern => list_change(msg.method.as_ref()),
                }
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
