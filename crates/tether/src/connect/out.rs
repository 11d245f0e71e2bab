//! What the client reads: the remote's messages, each checked to be one
//! JSON-RPC message, and the errors that stand in for answers the remote
//! could not give.

use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use tether_gateway::upstream::UpstreamError;
use tether_wire::jsonrpc::{ErrorObject, Message, code};

/// The client's side of the single stdout writer.
pub(super) struct Output {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Output {
    /// Writes through the given writer channel.
    pub(super) fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        Output { tx }
    }

    /// Queues one message for stdout (dropped when stdout is gone).
    pub(super) async fn send(&self, message: Vec<u8>) {
        let _ = self.tx.send(message).await;
    }

    /// Writes a message from the remote if it is one JSON-RPC message, and
    /// says whether it was a response. An error response without an id (the
    /// remote rejected the HTTP request itself) that answers `request` gets
    /// that request's id, so the client can match it.
    pub(super) async fn relay(&self, body: &[u8], request: Option<&RawValue>) -> bool {
        let Some(mut msg) = acceptable(body) else {
            tracing::warn!(
                bytes = body.len(),
                "dropped a message from the remote that is not JSON-RPC"
            );
            return false;
        };
        let response = msg.method.is_none();
        let anonymous = msg.id_text().is_none_or(|id| id == "null");
        match request {
            Some(id) if response && anonymous => {
                msg.id = Some(id.to_owned());
                self.send(msg.to_bytes()).await;
            }
            _ => self.send(body.to_vec()).await,
        }
        response
    }
}

/// A valid JSON-RPC message, or an error response with a null or missing id
/// (which [`Message::parse`] rejects but JSON-RPC allows).
fn acceptable(body: &[u8]) -> Option<Message> {
    Message::parse(body).ok().or_else(|| {
        serde_json::from_slice::<Message>(body).ok().filter(|m| {
            m.jsonrpc.as_deref().map(RawValue::get) == Some("\"2.0\"")
                && m.error.is_some()
                && m.method.is_none()
                && m.result.is_none()
                && m.id_text().is_none_or(|id| id == "null")
        })
    })
}

/// The JSON-RPC error answering request `id` (of `method`) that the remote
/// could not answer. A `tools/call` whose connection broke after it was sent
/// may or may not have run: the error says its outcome is unknown.
pub(super) fn failure(id: &RawValue, method: &str, e: &UpstreamError) -> Vec<u8> {
    let unknown =
        method == "tools/call" && matches!(e, UpstreamError::Transport(_) | UpstreamError::Timeout);
    let message = if unknown {
        format!(
            "the connection to the remote MCP server failed after the tools/call was sent ({e}); its outcome is unknown, so it was not retried"
        )
    } else {
        format!("the remote MCP server could not answer: {e}")
    };
    let mut data = json!({"outcomeUnknown": unknown});
    if let UpstreamError::Status { status, .. } = e {
        data["status"] = json!(status);
    }
    ErrorObject::new(code::INTERNAL_ERROR, message)
        .with_data(data)
        .to_response(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::jsonrpc::to_raw;

    async fn relayed(body: &[u8], request: Option<&RawValue>) -> (bool, Option<String>) {
        let (tx, mut rx) = mpsc::channel(1);
        let response = Output::new(tx).relay(body, request).await;
        let written = rx.try_recv().ok().map(|m| String::from_utf8(m).unwrap());
        (response, written)
    }

    #[tokio::test]
    async fn relays_messages_and_names_anonymous_errors() {
        let id = to_raw(&7);
        let note = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
        assert_eq!(
            relayed(note, Some(&id)).await,
            (false, Some(String::from_utf8(note.to_vec()).unwrap()))
        );
        let result = br#"{"jsonrpc":"2.0","id":7,"result":{"n":1.50}}"#;
        assert_eq!(
            relayed(result, Some(&id)).await.1.unwrap(),
            r#"{"jsonrpc":"2.0","id":7,"result":{"n":1.50}}"#
        );
        let rejected = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"no"}}"#;
        let (response, written) = relayed(rejected, Some(&id)).await;
        assert!(response);
        assert_eq!(
            written.unwrap(),
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"no"}}"#
        );
        assert!(
            relayed(rejected, None)
                .await
                .1
                .unwrap()
                .contains("\"id\":null")
        );
        assert_eq!(relayed(b"<html>", Some(&id)).await, (false, None));
        assert_eq!(
            relayed(br#"{"id":null,"error":{}}"#, None).await,
            (false, None)
        );
    }

    #[test]
    fn only_broken_tool_calls_are_of_unknown_outcome() {
        let id = to_raw(&1);
        let text = |method, e| String::from_utf8(failure(&id, method, &e)).unwrap();
        let unknown = text("tools/call", UpstreamError::Transport("reset".into()));
        assert!(
            unknown.contains("outcome is unknown") && unknown.contains("\"outcomeUnknown\":true")
        );
        let known = text("tools/list", UpstreamError::Transport("reset".into()));
        assert!(known.contains("\"outcomeUnknown\":false"));
        let status = text(
            "tools/call",
            UpstreamError::Status {
                status: 502,
                body: "bad gateway".into(),
            },
        );
        assert!(
            status.contains("HTTP 502") && status.contains("\"status\":502"),
            "{status}"
        );
    }
}
