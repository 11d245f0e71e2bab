//! What the router produces for one client message, and the answers it
//! makes itself (results, Tether's own JSON-RPC errors).

use bytes::Bytes;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, ErrorObject, Request, code};
use tether_wire::protocol::Era;
use tokio::sync::mpsc;

/// What the router produced for one client message.
pub enum Outcome {
    /// One JSON-RPC message (a response).
    Message(Bytes),
    /// A JSON-RPC error made by Tether itself, for the request with this id.
    Error(ErrorObject, Option<Box<RawValue>>),
    /// Messages relayed live from the upstream, ending with the response.
    Stream(mpsc::Receiver<Bytes>),
    /// A notification or response was taken (HTTP 202).
    Accepted,
}

/// A successful response to `request`.
pub fn answer(request: &Request, result: &RawValue) -> Outcome {
    Outcome::Message(request.answer(result))
}

/// The empty result `{}` for `request`.
pub fn empty_answer(request: &Request) -> Outcome {
    answer(request, &jsonrpc::to_raw(&serde_json::json!({})))
}

/// A Tether-made JSON-RPC error for `request`.
pub fn error(request: &Request, code: i64, message: impl Into<String>) -> Outcome {
    Outcome::Error(ErrorObject::new(code, message), Some(request.id.clone()))
}

/// The answer when the caller's policy does not reach `what`.
pub fn forbidden(request: &Request, what: &str) -> Outcome {
    error(
        request,
        code::FORBIDDEN,
        format!("Forbidden: {what} is not permitted for this principal"),
    )
}

/// The answer for a method the endpoint does not serve (in `era`'s terms).
pub fn method_not_found(request: &Request, era: Era) -> Outcome {
    let method = &request.method;
    let text = if method.exists_in(era) {
        format!("Method not found: {method}")
    } else {
        format!(
            "Method not found: {method} does not exist in {}",
            tether_wire::protocol::MODERN_VERSION
        )
    };
    error(request, code::METHOD_NOT_FOUND, text)
}

/// The answer when no upstream serves the resource `uri`.
pub fn resource_not_found(request: &Request, era: Era, uri: &str) -> Outcome {
    // 2026-07-28 retired -32002 in favour of -32602.
    let code = match era {
        Era::Modern => code::INVALID_PARAMS,
        Era::Legacy => code::RESOURCE_NOT_FOUND,
    };
    Outcome::Error(
        ErrorObject::new(
            code,
            format!("Resource not found: no upstream serves {uri}"),
        )
        .with_data(serde_json::json!({ "uri": uri })),
        Some(request.id.clone()),
    )
}

impl Outcome {
    /// The response this outcome ends with, waiting for a stream's last
    /// message (its notifications are dropped); `None` when there is none.
    pub async fn into_response(self) -> Option<Bytes> {
        match self {
            Outcome::Message(body) => Some(body),
            Outcome::Error(err, id) => Some(Bytes::from(err.to_response(id.as_deref()))),
            Outcome::Accepted => None,
            Outcome::Stream(mut rx) => {
                while let Some(message) = rx.recv().await {
                    let parsed = jsonrpc::Message::parse(&message);
                    if parsed.is_ok_and(|m| matches!(m.kind(), Ok(jsonrpc::Kind::Response))) {
                        return Some(message);
                    }
                }
                None
            }
        }
    }
}
