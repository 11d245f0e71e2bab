//! Tool shaping: how a table of [`ToolShape`]s changes a tool list as
//! clients see it (aliases, titles, descriptions, annotations, hidden tools,
//! fixed arguments left out of input schemas) and leads a shown name back to
//! the tool behind it. Pure: the upstream's shapes work on its own names, a
//! virtual server's on the names `/mcp` shows.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use tether_wire::jsonrpc::{self, RawObject};

use crate::config::{RateLimit, ToolShape};

/// A table of tool shapes, ready to apply.
#[derive(Debug, Default)]
pub struct Shaping {
    /// By the name the tool has before shaping.
    shapes: HashMap<String, ToolShape>,
    /// Alias → the name behind it.
    aliases: HashMap<String, String>,
}

impl Shaping {
    /// The shapes of `table` (keyed by the names they apply to).
    pub fn new(table: &BTreeMap<String, ToolShape>) -> Shaping {
        Shaping {
            aliases: table
                .iter()
                .filter(|(_, s)| !s.alias.is_empty() && !s.hide)
                .map(|(name, s)| (s.alias.clone(), name.clone()))
                .collect(),
            shapes: table.clone().into_iter().collect(),
        }
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    /// The tools of a list as shown: hidden ones left out, the others
    /// shaped; and the names of tools left out because an alias took their
    /// name (the alias wins: its tool is shown, and called, under it).
    pub fn show_all(&self, items: Vec<RawObject>) -> Shown {
        let mut shown = Shown {
            items: Vec::with_capacity(items.len()),
            shadowed: Vec::new(),
        };
        if self.is_empty() {
            shown.items = items;
            return shown;
        }
        for item in items {
            match self.show(item) {
                Ok(item) => shown.items.push(item),
                Err(Left::Shadowed(name)) => shown.shadowed.push(name),
                Err(Left::Hidden) => {}
            }
        }
        shown
    }

    /// One listed tool as shown, or why it is left out.
    fn show(&self, mut item: RawObject) -> Result<RawObject, Left> {
        let name = jsonrpc::str_member(&item, "name").ok_or(Left::Hidden)?;
        let Some(shape) = self.shapes.get(&name) else {
            // A tool whose name another one's alias took is not shown.
            if self.aliases.contains_key(&name) {
                return Err(Left::Shadowed(name));
            }
            return Ok(item);
        };
        if shape.hide {
            return Err(Left::Hidden);
        }
        for (key, value) in [
            ("name", &shape.alias),
            ("title", &shape.title),
            ("description", &shape.description),
        ] {
            if !value.is_empty() {
                item.insert(key.into(), jsonrpc::to_raw(value));
            }
        }
        if !shape.annotations.is_empty() {
            let mut annotations: Map<String, Value> = item
                .get("annotations")
                .and_then(|a| serde_json::from_str(a.get()).ok())
                .unwrap_or_default();
            annotations.extend(shape.annotations.clone());
            item.insert("annotations".into(), jsonrpc::to_raw(&annotations));
        }
        if !shape.arguments.is_empty()
            && let Some(schema) = item.get("inputSchema")
            && let Ok(mut schema) = serde_json::from_str::<Map<String, Value>>(schema.get())
        {
            without_fixed(&mut schema, &shape.arguments);
            item.insert("inputSchema".into(), jsonrpc::to_raw(&schema));
        }
        Ok(item)
    }

    /// The name of the tool shown as `shown`; `None` when no tool is shown
    /// under that name (a hidden tool, or one shown under its alias).
    pub fn name_behind<'a>(&'a self, shown: &'a str) -> Option<&'a str> {
        if let Some(name) = self.aliases.get(shown) {
            return Some(name);
        }
        match self.shapes.get(shown) {
            Some(shape) if shape.hide || !shape.alias.is_empty() => None,
            _ => Some(shown),
        }
    }

    /// The arguments fixed for the tool `name`, if any.
    pub fn fixed_arguments(&self, name: &str) -> Option<&Map<String, Value>> {
        self.shapes
            .get(name)
            .map(|s| &s.arguments)
            .filter(|a| !a.is_empty())
    }

    /// The rate limit of the tool `name` (unset when none).
    pub fn rate_limit(&self, name: &str) -> RateLimit {
        self.shapes
            .get(name)
            .map(|s| s.rate_limit)
            .unwrap_or_default()
    }
}

/// A tool list as shaped.
#[derive(Debug)]
pub struct Shown {
    /// The tools shown.
    pub items: Vec<RawObject>,
    /// Tools left out because another tool's alias took their name.
    pub shadowed: Vec<String>,
}

/// Why a listed tool is not shown.
enum Left {
    /// Hidden by its shape (or nameless).
    Hidden,
    /// Its name is another tool's alias.
    Shadowed(String),
}

/// `schema` without the properties `fixed` sets (nor their `required` entries).
fn without_fixed(schema: &mut Map<String, Value>, fixed: &Map<String, Value>) {
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.retain(|k, _| !fixed.contains_key(k));
    }
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|r| r.as_str().is_none_or(|r| !fixed.contains_key(r)));
    }
}

/// A call's `arguments` that are not an object (fixed arguments cannot be set).
#[derive(Debug)]
pub struct NotAnObject;

/// Sets `fixed` in a `tools/call`'s `params.arguments`, over whatever the
/// client sent for them; the other arguments keep their order and bytes.
pub fn fix_arguments(
    params: &mut RawObject,
    fixed: &Map<String, Value>,
) -> Result<(), NotAnObject> {
    let mut arguments: RawObject = match params.get("arguments") {
        None => RawObject::new(),
        Some(raw) if raw.get() == "null" => RawObject::new(),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| NotAnObject)?,
    };
    for (key, value) in fixed {
        arguments.insert(key.clone(), jsonrpc::to_raw(value));
    }
    params.insert("arguments".into(), jsonrpc::to_raw(&arguments));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str) -> RawObject {
        let text = json!({
            "name": name,
            "description": "theirs",
            "annotations": {"readOnlyHint": false, "title": "T"},
            "inputSchema": {
                "type": "object",
                "properties": {"owner": {"type": "string"}, "q": {"type": "string"}},
                "required": ["owner", "q"]
            },
            "x-extra": 1
        })
        .to_string();
        // A number serde_json would print differently, to see it relayed as it was.
        serde_json::from_str(&text.replace(r#""x-extra":1"#, r#""x-extra":1.50"#)).unwrap()
    }

    fn shaping(table: Value) -> Shaping {
        Shaping::new(&serde_json::from_value(table).unwrap())
    }

    fn value(item: &RawObject, key: &str) -> Value {
        serde_json::from_str(item[key].get()).unwrap()
    }

    #[test]
    fn shows_aliases_overrides_and_fixed_arguments() {
        let s = shaping(json!({
            "search": {
                "alias": "find",
                "description": "ours",
                "annotations": {"readOnlyHint": true},
                "arguments": {"owner": "acme"}
            },
            "secret": {"hide": true}
        }));
        let shown = s.show_all(vec![tool("search"), tool("secret"), tool("other")]);
        assert!(shown.shadowed.is_empty());
        let shown = shown.items;
        assert_eq!(shown.len(), 2);
        let find = &shown[0];
        assert_eq!(value(find, "name"), "find");
        assert_eq!(value(find, "description"), "ours");
        assert_eq!(
            value(find, "annotations"),
            json!({"readOnlyHint": true, "title": "T"})
        );
        assert_eq!(
            value(find, "inputSchema"),
            json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
        );
        assert_eq!(
            find["x-extra"].get(),
            "1.50",
            "other members keep their bytes"
        );
        assert_eq!(value(&shown[1], "name"), "other");

        assert_eq!(s.name_behind("find"), Some("search"));
        assert_eq!(s.name_behind("search"), None, "replaced by its alias");
        assert_eq!(s.name_behind("secret"), None, "hidden");
        assert_eq!(s.name_behind("other"), Some("other"));
        assert!(s.fixed_arguments("search").is_some());
        assert!(s.fixed_arguments("other").is_none());
    }

    #[test]
    fn an_alias_taking_another_tools_name_hides_that_tool() {
        let s = shaping(json!({"a": {"alias": "b"}}));
        let shown = s.show_all(vec![tool("a"), tool("b")]);
        assert_eq!(shown.items.len(), 1);
        assert_eq!(value(&shown.items[0], "name"), "b");
        assert_eq!(shown.shadowed, ["b"], "reported");
        assert_eq!(s.name_behind("b"), Some("a"));
    }

    #[test]
    fn fixed_arguments_win() {
        let fixed: Map<String, Value> = serde_json::from_value(json!({"owner": "acme"})).unwrap();
        let mut params: RawObject =
            serde_json::from_str(r#"{"name": "x", "arguments": {"z": 1.50, "owner": "evil"}}"#)
                .unwrap();
        fix_arguments(&mut params, &fixed).unwrap();
        assert_eq!(
            params["arguments"].get(),
            r#"{"z":1.50,"owner":"acme"}"#,
            "the client's other arguments keep their order and bytes"
        );
        let mut bare: RawObject = serde_json::from_value(json!({"name": "x"})).unwrap();
        fix_arguments(&mut bare, &fixed).unwrap();
        assert_eq!(value(&bare, "arguments"), json!({"owner": "acme"}));
        let mut bad: RawObject =
            serde_json::from_value(json!({"name": "x", "arguments": [1]})).unwrap();
        assert!(fix_arguments(&mut bad, &fixed).is_err());
    }
}
