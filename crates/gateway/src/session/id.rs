//! Session ids: 256 bits from the operating system's CSPRNG, and the shape
//! every id must have before it is looked up ([invariant: session-ids]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A new session id: 256 bits from the OS CSPRNG, URL-safe Base64 (43 chars).
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `id` has the shape of a session id: `[A-Za-z0-9_-]{1,128}`.
pub fn is_valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_long_random_and_valid() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(is_valid_session_id(&a));
        assert!(!is_valid_session_id(""));
        assert!(!is_valid_session_id("a b"));
        assert!(!is_valid_session_id(&"a".repeat(129)));
        assert!(!is_valid_session_id("../etc"));
    }
}
