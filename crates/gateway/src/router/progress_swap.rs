//! Progress of a call resumed by a 2026-07-28 client's retry. The upstream
//! keeps reporting progress under the token of the request it was sent; the
//! client now waits on its retry, and knows that request's token (or asked
//! for no progress at all).

use bytes::Bytes;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, Message, Method, RawObject, Request};

/// The `_meta` member naming a request's progress token.
const PROGRESS_TOKEN: &str = "progressToken";

/// Renames the progress of a resumed call (see the module documentation).
pub struct ProgressSwap {
    /// The token the upstream was sent, as raw JSON.
    sent: String,
    /// The retry's token; `None`: the retry asked for no progress.
    now: Option<Box<RawValue>>,
}

impl ProgressSwap {
    /// The swap for a call sent upstream with `sent_params`, resumed by
    /// `retry`; `None` when the upstream was sent no token (it reports no
    /// progress) or the retry names the same one.
    pub fn new(sent_params: &RawObject, retry: &Request) -> Option<Self> {
        let sent = token(sent_params)?;
        let now = retry.params_object().ok().as_ref().and_then(token);
        if now.as_ref().map(|t| t.get()) == Some(sent.get()) {
            return None;
        }
        Some(ProgressSwap {
            sent: sent.get().to_owned(),
            now,
        })
    }

    /// What of the upstream's notification `msg` (`bytes`) the client gets:
    /// progress under the sent token renamed (or dropped); anything else as
    /// it is.
    pub fn apply(&self, msg: &Message, bytes: Bytes) -> Option<Bytes> {
        if msg.method != Some(Method::Progress) {
            return Some(bytes);
        }
        let Some(mut params) = msg
            .params
            .as_deref()
            .and_then(|p| serde_json::from_str::<RawObject>(p.get()).ok())
        else {
            return Some(bytes);
        };
        if params.get(PROGRESS_TOKEN).map(|t| t.get()) != Some(self.sent.as_str()) {
            return Some(bytes);
        }
        params.insert(PROGRESS_TOKEN.to_owned(), self.now.clone()?);
        let renamed = Message {
            jsonrpc: msg.jsonrpc.clone(),
            id: None,
            method: msg.method.clone(),
            params: Some(jsonrpc::to_raw(&params)),
            result: None,
            error: None,
        };
        Some(Bytes::from(renamed.to_bytes()))
    }
}

/// The progress token in `params._meta`, raw.
fn token(params: &RawObject) -> Option<Box<RawValue>> {
    let meta: RawObject = serde_json::from_str(params.get("_meta")?.get()).ok()?;
    meta.get(PROGRESS_TOKEN).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(params: &str) -> Request {
        let raw = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{params}}}"#);
        match tether_wire::jsonrpc::Incoming::parse(Bytes::from(raw)) {
            Ok(tether_wire::jsonrpc::Incoming::Request(r)) => r,
            _ => panic!("a request"),
        }
    }

    fn sent(token: &str) -> RawObject {
        serde_json::from_str(&format!(
            r#"{{"name":"t","_meta":{{"progressToken":{token}}}}}"#
        ))
        .unwrap()
    }

    fn progress(token: &str) -> (Message, Bytes) {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{token},"progress":1}}}}"#
        );
        (Message::parse(raw.as_bytes()).unwrap(), Bytes::from(raw))
    }

    #[test]
    fn progress_under_the_sent_token_takes_the_retrys() {
        let swap = ProgressSwap::new(
            &sent(r#""a""#),
            &request(r#"{"name":"t","_meta":{"progressToken":7}}"#),
        )
        .unwrap();
        let (msg, bytes) = progress(r#""a""#);
        let out: serde_json::Value =
            serde_json::from_slice(&swap.apply(&msg, bytes).unwrap()).unwrap();
        assert_eq!(out["params"]["progressToken"], 7);
        assert_eq!(out["params"]["progress"], 1);
        let (other, bytes) = progress(r#""b""#);
        assert_eq!(
            swap.apply(&other, bytes.clone()),
            Some(bytes),
            "another token passes as it is"
        );
    }

    #[test]
    fn a_retry_without_a_token_gets_no_progress() {
        let swap = ProgressSwap::new(&sent("1"), &request(r#"{"name":"t"}"#)).unwrap();
        let (msg, bytes) = progress("1");
        assert_eq!(swap.apply(&msg, bytes), None);
    }

    #[test]
    fn nothing_to_swap_without_a_sent_token_or_with_the_same_one() {
        let retry = request(r#"{"name":"t","_meta":{"progressToken":"a"}}"#);
        let none: RawObject = serde_json::from_str(r#"{"name":"t"}"#).unwrap();
        assert!(ProgressSwap::new(&none, &retry).is_none());
        assert!(ProgressSwap::new(&sent(r#""a""#), &retry).is_none());
    }
}
