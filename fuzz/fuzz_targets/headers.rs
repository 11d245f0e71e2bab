//! Header value decoding (including the `=?base64?…?=` sentinel): never
//! panics, and whatever Tether encodes decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_wire::protocol::{decode_header_value, encode_header_value};

fuzz_target!(|data: &[u8]| {
    let _ = decode_header_value(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let encoded = encode_header_value(text);
        assert_eq!(
            decode_header_value(encoded.as_bytes()).as_deref(),
            Some(text)
        );
    }
});
