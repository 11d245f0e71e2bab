//! Reading what the relay needs from a raw JSON object — which keys one of
//! its members has, one string member — in one pass that skips every other
//! value, without building the object (no map, no boxed values): the hot
//! path asks these questions of every request and response.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// Which of `keys` (at most 64) the object member `member` of the object
/// `raw` has at its top level — bit `i` for `keys[i]` — read in one pass
/// over `raw`. `None` when `raw` is not an object or `member` is missing or
/// not an object. A repeated member counts by its last occurrence.
pub fn member_keys_present(raw: &str, member: &str, keys: &[&str]) -> Option<u64> {
    debug_assert!(keys.len() <= 64);
    run(raw, MemberKeys { member, keys }).flatten()
}

/// The string member `key` of the object `raw`; `None` when `raw` is not an
/// object or the member is missing or not a string.
pub fn str_field(raw: &str, key: &str) -> Option<String> {
    run(raw, StrField(key)).flatten()
}

fn run<T>(raw: &str, seed: impl for<'de> DeserializeSeed<'de, Value = T>) -> Option<T> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let value = seed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// An object key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct KeysPresent<'k>(&'k [&'k str]);

impl<'de> DeserializeSeed<'de> for KeysPresent<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeysPresent<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut found = 0u64;
        while let Some(Key(key)) = map.next_key()? {
            if let Some(i) = self.0.iter().position(|k| *k == key) {
                found |= 1 << i;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(found)
    }
}

struct MemberKeys<'k> {
    member: &'k str,
    keys: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for MemberKeys<'_> {
    type Value = Option<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MemberKeys<'_> {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let mut found: Option<u64> = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == self.member {
                // A member that is not an object fails the whole read: `None`.
                found = Some(map.next_value_seed(KeysPresent(self.keys))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct StrField<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for StrField<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StrField<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        // The last occurrence of a repeated key counts, as when the object
        // is built (and as most JSON readers upstream read it).
        let mut value = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == self.0 {
                value = match map.next_value()? {
                    serde_json::Value::String(s) => Some(s),
                    _ => None,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_keys_only() {
        let raw = r#"{"r":{"content":[{"resultType":"x"}],"ttl\u004ds":1,"isError":false}}"#;
        let keys = ["resultType", "ttlMs", "isError"];
        assert_eq!(member_keys_present(raw, "r", &keys), Some(0b110));
        assert_eq!(member_keys_present("[1,2]", "r", &keys), None);
        assert_eq!(member_keys_present(r#"{"r":{}} x"#, "r", &keys), None);
        assert_eq!(member_keys_present(r#"{"r":{}}"#, "r", &keys), Some(0));
    }

    #[test]
    fn finds_keys_of_a_member() {
        let keys = ["resultType", "ttlMs"];
        let ok = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"resultType":"complete"}}"#;
        assert_eq!(member_keys_present(ok, "result", &keys), Some(0b01));
        let error = r#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#;
        assert_eq!(member_keys_present(error, "result", &keys), None);
        let odd = r#"{"result":[1],"id":1}"#;
        assert_eq!(member_keys_present(odd, "result", &keys), None);
    }

    #[test]
    fn reads_one_string_member() {
        let raw = r#"{"arguments":{"name":"inner"},"name":"t\u00e9l","n":1}"#;
        assert_eq!(str_field(raw, "name").as_deref(), Some("tél"));
        assert_eq!(str_field(raw, "n"), None);
        assert_eq!(str_field(raw, "missing"), None);
        assert_eq!(str_field("\"name\"", "name"), None);
        assert_eq!(
            str_field(r#"{"uri":"a","uri":"b"}"#, "uri").as_deref(),
            Some("b")
        );
        assert_eq!(str_field(r#"{"uri":"a","uri":1}"#, "uri"), None);
    }
}
