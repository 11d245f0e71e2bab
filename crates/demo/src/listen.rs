//! `subscriptions/listen` (2026-07-28) for the demo server: the change
//! events the server publishes, the filter a listen request asks for, and
//! the SSE stream carrying them (acknowledgement first, every notification
//! tagged with the subscription id, keepalive comments in between).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use tether_wire::jsonrpc::Method;
use tether_wire::sse;
use tether_wire::subscriptions;

/// Interval between keepalive comments on a listen stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A change a listen stream may report. (The demo's resources never change,
/// so there are no resource variants: subscriptions to them are honoured but
/// stay quiet.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// The tool list changed.
    ToolsListChanged,
    /// The prompt list changed.
    PromptsListChanged,
}

/// The server's change feed (bounded; dropped without listeners).
pub(super) struct Changes(broadcast::Sender<Change>);

impl Default for Changes {
    fn default() -> Self {
        Changes(broadcast::Sender::new(64))
    }
}

impl Changes {
    /// Announces a change to every open listen stream; returns how many there are.
    pub(super) fn publish(&self, change: Change) -> usize {
        self.0.send(change).unwrap_or(0)
    }

    /// A receiver for changes published from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.0.subscribe()
    }
}

/// What kinds of change a server can report.
#[derive(Debug, Clone, Copy)]
pub(super) struct Support {
    /// Tool list changes.
    pub tools: bool,
    /// Prompt list changes.
    pub prompts: bool,
    /// Resource list changes.
    pub resources: bool,
    /// Whether a resource URI may be subscribed to.
    pub known_uri: fn(&str) -> bool,
}

/// The notification types one listen stream carries: the requested subset
/// the server supports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Filter(subscriptions::Filter);

impl Filter {
    /// The part of a request's `params.notifications` that `support` can honour.
    pub(super) fn honoured(requested: &Value, support: &Support) -> Filter {
        let mut f = subscriptions::Filter::requested(requested);
        f.tools &= support.tools;
        f.prompts &= support.prompts;
        f.resources &= support.resources;
        f.uris.retain(|u| (support.known_uri)(u));
        Filter(f)
    }

    /// Whether `change` passes the filter.
    pub(super) fn wants(&self, change: &Change) -> bool {
        self.0.wants(&change.method(), None)
    }
}

impl Change {
    /// The notification method announcing the change.
    pub(super) fn method(&self) -> Method {
        match self {
            Change::ToolsListChanged => Method::ToolsListChanged,
            Change::PromptsListChanged => Method::PromptsListChanged,
        }
    }
}

/// The notification reporting `change` on subscription `subscription`.
fn notification(change: &Change, subscription: &Value) -> Value {
    let bare = json!({"jsonrpc": "2.0", "method": change.method().as_str()});
    subscriptions::tagged(bare, subscription)
}

/// The SSE events of one listen stream: the acknowledgement, then each
/// wanted change as it is published, with keepalive comments, until the
/// client goes away. `changes` must be subscribed before the stream starts
/// so no change between the request and the acknowledgement is lost.
pub(super) fn events(
    changes: broadcast::Receiver<Change>,
    filter: Filter,
    subscription: Value,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let ack = subscriptions::acknowledged(&filter.0, &subscription);
    let ack = sse::message_event(ack.to_string().as_bytes());
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.reset();
    let state = (changes, filter, subscription, tick);
    let rest = stream::unfold(state, |(mut changes, filter, sub, mut tick)| async move {
        loop {
            let frame = tokio::select! {
                _ = tick.tick() => sse::keepalive(),
                change = changes.recv() => match change {
                    Ok(c) if filter.wants(&c) => {
                        sse::message_event(notification(&c, &sub).to_string().as_bytes())
                    }
                    Ok(_) => continue,
                    // Missed some changes: nothing to resend (lists are re-fetched).
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            return Some((Ok(frame), (changes, filter, sub, tick)));
        }
    });
    stream::once(async move { Ok(ack) }).chain(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUPPORT: Support = Support {
        tools: true,
        prompts: true,
        resources: false,
        known_uri: |u| u.starts_with("test://"),
    };

    #[test]
    fn honours_only_supported_requested_types() {
        let f = Filter::honoured(
            &json!({"toolsListChanged": true, "resourcesListChanged": true, "promptsListChanged": false,
                "resourceSubscriptions": ["test://a", "file:///x", 3]}),
            &SUPPORT,
        );
        assert_eq!(
            f.0.to_json(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["test://a"]})
        );
        assert!(f.wants(&Change::ToolsListChanged));
        assert!(!f.wants(&Change::PromptsListChanged));
        assert_eq!(
            Filter::honoured(&Value::Null, &SUPPORT).0.to_json(),
            json!({})
        );
    }

    #[tokio::test]
    async fn stream_acknowledges_then_filters() {
        let changes = Changes::default();
        let f = Filter::honoured(&json!({"toolsListChanged": true}), &SUPPORT);
        let mut s = Box::pin(events(changes.subscribe(), f, json!(1)));
        let first = s.next().await.and_then(Result::ok).unwrap_or_default();
        assert!(String::from_utf8_lossy(&first).contains("subscriptions/acknowledged"));
        assert_eq!(changes.publish(Change::PromptsListChanged), 1);
        assert_eq!(changes.publish(Change::ToolsListChanged), 1);
        let next = s.next().await.and_then(Result::ok).unwrap_or_default();
        let text = String::from_utf8_lossy(&next);
        assert!(
            text.contains("tools/list_changed")
                && text.contains(subscriptions::META_SUBSCRIPTION_ID),
            "{text}"
        );
    }
}
