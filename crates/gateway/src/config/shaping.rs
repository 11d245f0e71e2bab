//! How tools are shown and limited: a tool's shape (an alias, its title,
//! description and annotations, hidden, fixed arguments), per upstream
//! (`[upstreams.shape.<tool>]`) or per virtual server, and the rate limits
//! per principal that an upstream and its tools may carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ConfigError;

/// Tool calls per principal: a token bucket refilled at `per_minute` a
/// minute, holding at most `burst` (0: `per_minute`). Off when `per_minute`
/// is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Calls a minute, per principal.
    pub per_minute: u32,
    /// Calls at once after a quiet spell (0: `per_minute`).
    pub burst: u32,
}

impl RateLimit {
    /// Whether the limit is set.
    pub fn is_set(&self) -> bool {
        self.per_minute > 0
    }

    /// Whether it is the default (unset), for leaving it out of definitions.
    pub fn is_unset(&self) -> bool {
        *self == RateLimit::default()
    }
}

/// How one tool is shown to clients and called.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolShape {
    /// The name shown instead of the tool's own (unset: its own; set, never empty).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "non_empty"
    )]
    pub alias: String,
    /// Replaces the tool's `title` (empty: kept).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Replaces the tool's `description` (empty: kept).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Members that replace (or add to) the tool's `annotations`.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
    /// Neither listed nor callable.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hide: bool,
    /// Arguments set on every call (whatever the client sent for them) and
    /// left out of the advertised input schema.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub arguments: Map<String, Value>,
    /// Calls per principal of this tool (upstream shapes only).
    #[serde(skip_serializing_if = "RateLimit::is_unset")]
    pub rate_limit: RateLimit,
}

/// A string that is set only when it says something: an empty one is
/// refused (leaving it out means the default).
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Err(serde::de::Error::custom(
            "must not be empty (leave it out to keep the tool's own name)",
        ));
    }
    Ok(text)
}

/// Tool names clients may be shown: what the MCP specification recommends
/// (1-128 of `[A-Za-z0-9_.-]`).
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Checks a table of shapes: `owner` names where it is configured (for the
/// message); `limits` whether rate limits are allowed in it.
pub fn validate_shapes(
    owner: &str,
    shapes: &BTreeMap<String, ToolShape>,
    limits: bool,
) -> Result<(), ConfigError> {
    let fail = |tool: &str, why: &str| {
        Err(ConfigError::Invalid(format!(
            "{owner}: shape of tool {tool:?}: {why}"
        )))
    };
    let mut shown = std::collections::HashSet::new();
    for (tool, shape) in shapes {
        if !shape.alias.is_empty() && !is_valid_tool_name(&shape.alias) {
            return fail(tool, "alias must be 1-128 characters of [A-Za-z0-9_.-]");
        }
        let name = if shape.alias.is_empty() {
            tool
        } else {
            &shape.alias
        };
        if !shape.hide && !shown.insert(name.as_str()) {
            return fail(tool, &format!("{name:?} is shown for two tools"));
        }
        if !limits && !shape.rate_limit.is_unset() {
            return fail(
                tool,
                "rate limits belong to the upstream's shape of the tool",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(alias: &str) -> ToolShape {
        ToolShape {
            alias: alias.into(),
            ..ToolShape::default()
        }
    }

    #[test]
    fn aliases_are_checked() {
        let ok = BTreeMap::from([("a".to_owned(), shape("b")), ("c".to_owned(), shape(""))]);
        assert!(validate_shapes("u", &ok, true).is_ok());
        let clash = BTreeMap::from([("a".to_owned(), shape("c")), ("c".to_owned(), shape(""))]);
        assert!(validate_shapes("u", &clash, true).is_err());
        let bad = BTreeMap::from([("a".to_owned(), shape("has space"))]);
        assert!(validate_shapes("u", &bad, true).is_err());
        let limited = BTreeMap::from([(
            "a".to_owned(),
            ToolShape {
                rate_limit: RateLimit {
                    per_minute: 1,
                    burst: 0,
                },
                ..ToolShape::default()
            },
        )]);
        assert!(validate_shapes("u", &limited, true).is_ok());
        assert!(validate_shapes("v", &limited, false).is_err());
    }

    #[test]
    fn an_empty_alias_is_refused() {
        let unset: ToolShape = serde_json::from_str(r#"{"title": "T"}"#).unwrap();
        assert_eq!(unset.alias, "");
        let empty = serde_json::from_str::<ToolShape>(r#"{"alias": ""}"#).unwrap_err();
        assert!(empty.to_string().contains("must not be empty"), "{empty}");
        let named: ToolShape = serde_json::from_str(r#"{"alias": "find"}"#).unwrap();
        assert_eq!(named.alias, "find");
    }
}
