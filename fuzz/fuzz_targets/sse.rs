//! The incremental SSE decoder: any bytes, split anywhere, decode to the same
//! events as in one piece, and no event exceeds the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_wire::sse::Decoder;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Decoder::new(LIMIT);
    let at_once = whole.feed(stream);
    let mut pieces = Decoder::new(LIMIT);
    let cut = (split as usize).min(stream.len());
    let mut in_pieces = pieces.feed(&stream[..cut]);
    if let Ok(first) = &mut in_pieces {
        match pieces.feed(&stream[cut..]) {
            Ok(rest) => first.extend(rest),
            Err(e) => in_pieces = Err(e),
        }
    }
    if let (Ok(a), Ok(b)) = (&at_once, &in_pieces) {
        assert_eq!(a, b, "splitting the input changed the events");
        assert!(a.iter().all(|e| e.data.len() <= LIMIT));
    }
});
