//! The JSON-RPC envelope parser: any bytes are either a message or a clean
//! error; a parsed message serializes back to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_wire::jsonrpc::{MAX_DEPTH, Message, nests_deeper_than};

fuzz_target!(|data: &[u8]| {
    let _ = nests_deeper_than(data, MAX_DEPTH);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let kind = msg.kind().expect("parse validated the kind");
    let again = Message::parse(&msg.to_bytes()).expect("a parsed message serializes to a message");
    assert_eq!(again.kind().ok(), Some(kind));
    assert_eq!(again.id_text(), msg.id_text());
    assert_eq!(again.method, msg.method);
    let _ = msg.params_object();
});
