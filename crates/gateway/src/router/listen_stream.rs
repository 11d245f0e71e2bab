//! A `subscriptions/listen` stream opened on a modern upstream session (its
//! stand-in for a legacy server's GET stream), and why one was not held.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tether_wire::jsonrpc::{self, EnvelopeError, Message, Method, Request};
use tether_wire::subscriptions::Filter;

use crate::upstream::{EventStream, Reply, UpstreamError, UpstreamSession};

/// Why a `subscriptions/listen` stream was not held.
#[derive(Debug)]
pub(super) enum ListenFailure {
    /// The request could not be built.
    Request(EnvelopeError),
    /// The upstream could not be reached.
    Upstream(UpstreamError),
    /// The upstream answered with a message instead of a stream.
    Refused(Bytes),
    /// The upstream accepted the request without a stream.
    NoStream,
    /// The stream ended before the upstream acknowledged the subscription.
    ClosedEarly,
}

impl std::fmt::Display for ListenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenFailure::Request(e) => f.write_str(&e.message()),
            ListenFailure::Upstream(e) => write!(f, "subscriptions/listen failed: {e}"),
            ListenFailure::Refused(body) => write!(
                f,
                "the upstream refused subscriptions/listen: {}",
                String::from_utf8_lossy(body)
            ),
            ListenFailure::NoStream => {
                f.write_str("the upstream accepted subscriptions/listen without a stream")
            }
            ListenFailure::ClosedEarly => {
                f.write_str("the upstream closed the subscription stream before acknowledging it")
            }
        }
    }
}

/// Opens a `subscriptions/listen` stream on a modern upstream session for
/// `notifications` (a `SubscriptionFilter`).
pub(super) async fn open(
    session: &Arc<UpstreamSession>,
    notifications: serde_json::Value,
) -> Result<Box<EventStream>, ListenFailure> {
    let request = Request::new(
        jsonrpc::to_raw("tether-listen"),
        Method::SubscriptionsListen,
        Some(jsonrpc::to_raw(&json!({ "notifications": notifications }))),
    );
    let body = session
        .prepare(&request, None, None, false)
        .map_err(ListenFailure::Request)?;
    match session.request(body, &request.method, None, &[]).await {
        Ok(Reply::Stream(stream)) => Ok(stream.without_idle_timeout()),
        Ok(Reply::Json(body)) => Err(ListenFailure::Refused(body)),
        Ok(Reply::Accepted) => Err(ListenFailure::NoStream),
        Err(e) => Err(ListenFailure::Upstream(e)),
    }
}

/// Opens a listen stream on a modern upstream session for `filter` and
/// reads it up to the upstream's acknowledgement: only then does the
/// upstream hold the subscription. Returns the stream and what the
/// upstream took of the filter.
pub(super) async fn open_acknowledged(
    session: &Arc<UpstreamSession>,
    filter: &Filter,
) -> Result<(Box<EventStream>, Filter), ListenFailure> {
    let mut stream = open(session, filter.to_json()).await?;
    while let Some(Ok(bytes)) = stream.next_message().await {
        let Ok(msg) = Message::parse(&bytes) else {
            continue;
        };
        if msg.method == Some(Method::SubscriptionsAcknowledged) {
            let taken = msg
                .params
                .as_deref()
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok())
                .map(|p| Filter::requested(&p["notifications"]))
                .unwrap_or_default();
            return Ok((stream, taken));
        }
    }
    Err(ListenFailure::ClosedEarly)
}
