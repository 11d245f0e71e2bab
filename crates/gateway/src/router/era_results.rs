//! Era bridging on results: what a modern client must see that a legacy
//! upstream does not send, and what a legacy client cannot receive.

use bytes::Bytes;
use tether_wire::fields;
use tether_wire::jsonrpc::{self, Message, Method, RawObject};
use tether_wire::protocol::Era;

use super::input_required::is_input_required;

/// Adapts a response from an upstream to the client's era.
/// Modern clients get `resultType` (and `ttlMs`/`cacheScope` on cacheable
/// results) when the upstream did not send them; legacy clients get an error
/// in place of an `input_required` result they could not act on.
pub fn adapt_response(client_era: Era, method: &Method, body: Bytes) -> Bytes {
    match client_era {
        Era::Modern => complete_for_modern(method, body),
        Era::Legacy => reject_input_required(body),
    }
}

fn complete_for_modern(method: &Method, body: Bytes) -> Bytes {
    // Most modern upstreams send what a modern client needs: find that out
    // in one pass, without building the message or its result.
    let needed: &[&str] = if method.is_cacheable() {
        &["resultType", "ttlMs", "cacheScope"]
    } else {
        &["resultType"]
    };
    let all = (1u64 << needed.len()) - 1;
    let complete = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| fields::member_keys_present(text, "result", needed));
    if complete == Some(all) {
        return body;
    }
    let Ok(mut msg) = Message::parse(&body) else {
        return body;
    };
    if msg.error.is_some() {
        return renumber_retired_error(msg, body);
    }
    let Some(result) = msg.result.as_ref() else {
        return body;
    };
    let Ok(mut obj) = serde_json::from_str::<RawObject>(result.get()) else {
        return body;
    };
    let mut changed = false;
    if !obj.contains_key("resultType") {
        obj.insert("resultType".into(), jsonrpc::to_raw("complete"));
        changed = true;
    }
    if method.is_cacheable() {
        changed |= add_cache_fields(&mut obj);
    }
    if !changed {
        return body;
    }
    msg.result = Some(jsonrpc::to_raw(&obj));
    Bytes::from(msg.to_bytes())
}

/// 2026-07-28 retired -32002 (resource not found) in favour of -32602.
fn renumber_retired_error(mut msg: Message, body: Bytes) -> Bytes {
    let Some(error) = msg.error.as_ref() else {
        return body;
    };
    let Ok(mut obj) = serde_json::from_str::<RawObject>(error.get()) else {
        return body;
    };
    if obj.get("code").map(|c| c.get()) != Some("-32002") {
        return body;
    }
    obj.insert(
        "code".into(),
        jsonrpc::to_raw(&jsonrpc::code::INVALID_PARAMS),
    );
    msg.error = Some(jsonrpc::to_raw(&obj));
    Bytes::from(msg.to_bytes())
}

/// Adds `ttlMs: 0` and `cacheScope: "private"` when absent (a gateway cannot
/// vouch for freshness or for the result being user-independent).
pub fn add_cache_fields(obj: &mut RawObject) -> bool {
    let mut changed = false;
    if !obj.contains_key("ttlMs") {
        obj.insert("ttlMs".into(), jsonrpc::to_raw(&0));
        changed = true;
    }
    if !obj.contains_key("cacheScope") {
        obj.insert("cacheScope".into(), jsonrpc::to_raw("private"));
        changed = true;
    }
    changed
}

/// Legacy clients that cannot be asked (sessionless contexts) get an error
/// instead of an `input_required` result they could not act on; sessions
/// are asked for the input instead (`input_rounds.rs`).
fn reject_input_required(body: Bytes) -> Bytes {
    if !is_input_required(&body) {
        return body;
    }
    let id = Message::parse(&body).ok().and_then(|m| m.id);
    let err = jsonrpc::ErrorObject::new(
        jsonrpc::code::INTERNAL_ERROR,
        "the upstream asked for client input (2026-07-28 input_required), which needs a client session to relay",
    );
    Bytes::from(err.to_response(id.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_clients_get_result_type_and_cache_fields() {
        let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#);
        let out = adapt_response(Era::Modern, &Method::ToolsList, body);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"resultType":"complete","ttlMs":0,"cacheScope":"private"}}"#
        );
        let call = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"resultType":"complete"}}"#,
        );
        assert_eq!(
            adapt_response(Era::Modern, &Method::ToolsCall, call.clone()),
            call
        );
    }

    #[test]
    fn modern_clients_never_see_retired_codes() {
        let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"nope","data":{"uri":"x"}}}"#);
        let out = adapt_response(Era::Modern, &Method::ResourcesRead, body.clone());
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"nope","data":{"uri":"x"}}}"#
        );
        assert_eq!(
            adapt_response(Era::Legacy, &Method::ResourcesRead, body.clone()),
            body
        );
    }

    #[test]
    fn legacy_clients_pass_through_but_never_see_input_required() {
        let body = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"resultType":"complete"}}"#,
        );
        assert_eq!(
            adapt_response(Era::Legacy, &Method::ToolsCall, body.clone()),
            body
        );
        let ir = Bytes::from_static(br#"{"jsonrpc":"2.0","id":"x","result":{"resultType":"input_required","requestState":"s"}}"#);
        let out = adapt_response(Era::Legacy, &Method::ToolsCall, ir);
        let msg = Message::parse(&out).unwrap();
        assert!(msg.error.is_some());
        assert_eq!(msg.id_text(), Some("\"x\""));
    }
}
