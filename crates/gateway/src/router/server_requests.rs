//! Requests an upstream sends the client (sampling, elicitation, roots) on
//! a reply stream or its own stream: re-addressed so the client's answer
//! finds its way back to that upstream session, or refused upstream at once
//! when the client cannot be asked (a modern or sessionless client).

use std::sync::Arc;

use bytes::Bytes;
use tether_wire::jsonrpc::{self, ErrorObject, Message, code};

use crate::session::{ClientSession, PendingRequest};
use crate::upstream::UpstreamSession;

/// The message to send the client for the upstream's request `msg`, or
/// `None` when it was refused upstream instead.
pub async fn relay_server_request(
    client: Option<&ClientSession>,
    session: &Arc<UpstreamSession>,
    msg: Message,
) -> Option<Bytes> {
    let original_id = msg.id.clone()?;
    let pending = PendingRequest::Upstream {
        session: session.clone(),
        original_id: original_id.clone(),
    };
    if let Some(id) = client.and_then(|c| c.register_pending(pending)) {
        let out = Message {
            id: Some(jsonrpc::to_raw(&id)),
            ..msg
        };
        return Some(Bytes::from(out.to_bytes()));
    }
    let err = ErrorObject::new(
        code::METHOD_NOT_FOUND,
        "this client cannot take server-to-client requests through the gateway (a modern or sessionless client, or too many unanswered requests)",
    );
    let _ = session
        .send_message(Bytes::from(err.to_response(Some(&original_id))))
        .await;
    None
}
