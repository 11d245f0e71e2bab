//! Passing a client's request on to the node that serves what it names
//! (its session's home, the node holding its HTTP+SSE stream or its waiting
//! call), and relaying that node's answer back as it is produced — a live
//! SSE stream included ([invariant: one-home]).

use std::sync::Arc;

use futures_util::StreamExt;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use tether_wire::jsonrpc::code;

use super::App;
use super::reply;
use crate::cluster::{Cluster, Peer, SendError};
use crate::telemetry;

/// Largest answer relayed in one piece rather than as a stream.
const MAX_WHOLE_ANSWER: u64 = 1024 * 1024;

/// Marks a request another node passed on to this one (its proof of the
/// cluster secret checked): it is served here or refused, never passed on again.
#[derive(Debug, Clone, Copy)]
pub struct PassedOn;

/// Whether another node passed this request on.
pub fn is_passed_on(parts: &Parts) -> bool {
    parts.extensions.get::<PassedOn>().is_some()
}

/// Why a request passed on got no answer to relay.
pub enum Failure {
    /// The peer refused the connection: it is gone, nothing was sent.
    Unreachable,
    /// The peer knows a newer home than the one this node used (421).
    Misdirected,
    /// The answer to relay instead (the outcome is unknown, or the channel
    /// is off).
    Answer(Response),
}

/// Passes the request (`parts` and its `body`) on to `peer` and relays its answer.
pub async fn send(
    app: &App,
    cluster: &Arc<Cluster>,
    peer: &Peer,
    parts: &Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let Some(channel) = cluster.channel() else {
        return Err(Failure::Answer(reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::INTERNAL_ERROR,
            format!(
                "this request is served by node {}, which this node cannot reach: set cluster.secret on every node",
                peer.node
            ),
        )));
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    // A traced request continues, on the other node, under this node's span
    // (which reads the context from `_meta` first, then the headers).
    let (headers, body) = match telemetry::current_context() {
        Some(outgoing) => {
            let mut headers = parts.headers.clone();
            outgoing.replace_in(&mut headers);
            (std::borrow::Cow::Owned(headers), outgoing.into_meta(body))
        }
        None => (std::borrow::Cow::Borrowed(&parts.headers), body),
    };
    let sending = channel.send(
        peer,
        cluster.node(),
        parts.method.clone(),
        path,
        &headers,
        body,
    );
    // A node that stops heartbeating while it holds the request (frozen,
    // cut off) is not waited for beyond that: the outcome is unknown.
    let sent = tokio::select! {
        sent = sending => sent,
        () = cluster.until_dead(&peer.node) => {
            return Err(broken(app, peer, &"it stopped heartbeating"));
        }
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(SendError::Refused(_)) => {
            cluster.unreachable(peer);
            return Err(Failure::Unreachable);
        }
        Err(e @ SendError::NotSent(_)) => {
            tracing::warn!(node = %peer.node, error = %e, "a request could not be passed on");
            return Err(Failure::Answer(reply::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node serving this request could not be reached; retry",
            )));
        }
        Err(e @ SendError::Broken(_)) => return Err(broken(app, peer, &e)),
    };
    if answer.status() == StatusCode::MISDIRECTED_REQUEST {
        return Err(Failure::Misdirected);
    }
    app.metrics.passed_on.fetch_add(1, Relaxed);
    let mut resp = Response::builder().status(answer.status());
    if let Some(headers) = resp.headers_mut() {
        for (name, value) in answer.headers() {
            if crate::cluster::channel::relays_back(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    // A whole answer of known, bounded size is relayed in one piece (fewer
    // writes and wake-ups than a chunked relay); a stream as it comes.
    let whole = answer
        .content_length()
        .is_some_and(|n| n <= MAX_WHOLE_ANSWER);
    let body = if whole {
        match answer.bytes().await {
            Ok(bytes) => Body::from(bytes),
            Err(e) => return Err(broken(app, peer, &e)),
        }
    } else if parts.method == http::Method::GET {
        // A session's GET stream: resumable, so it ends with this node.
        Body::from_stream(answer.bytes_stream().take_until(app.relays.closed()))
    } else {
        // A POST's answer streams until its response: the shutdown waits
        // for it like for any request in flight.
        Body::from_stream(answer.bytes_stream())
    };
    resp.body(body).map_err(|_| {
        Failure::Answer(reply::error(
            StatusCode::BAD_GATEWAY,
            code::INTERNAL_ERROR,
            "malformed answer from another node",
        ))
    })
}

/// The answer to a request whose node stopped answering: its outcome is unknown.
fn broken(app: &App, peer: &Peer, why: &dyn std::fmt::Display) -> Failure {
    tracing::warn!(node = %peer.node, error = %why, "a request passed on got no answer");
    app.metrics.passed_on_failed.fetch_add(1, Relaxed);
    Failure::Answer(reply::error(
        StatusCode::BAD_GATEWAY,
        code::INTERNAL_ERROR,
        format!(
            "node {} serving this request stopped answering; its outcome is unknown",
            peer.node
        ),
    ))
}

/// The answer to a request passed on to a node that does not serve what it
/// names (its sender knew an older home): the sender looks again.
pub fn misdirected() -> Response {
    reply::error(
        StatusCode::MISDIRECTED_REQUEST,
        code::INTERNAL_ERROR,
        "this node does not serve that session (any more)",
    )
}
