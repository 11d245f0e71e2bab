//! Progressive discovery: instead of the whole catalogue an endpoint lists
//! two meta-tools, one that searches the catalogue and one that calls a tool
//! by name. The search ranks tools locally with BM25 over their names,
//! titles, descriptions and parameter names (no model, no network).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tether_wire::jsonrpc::{self, RawObject};

/// The meta-tool that searches the catalogue.
pub const SEARCH_TOOL: &str = "search_tools";
/// The meta-tool that calls a tool by name.
pub const CALL_TOOL: &str = "call_tool";
/// Tools a search returns when it does not say.
const DEFAULT_LIMIT: usize = 8;
/// Tools a search returns at most.
const MAX_LIMIT: usize = 50;
/// Words of a query looked up at most (a search costs tools × words).
const MAX_QUERY_WORDS: usize = 32;

/// BM25's term-frequency saturation and length normalisation.
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// How much a word counts in each part of a tool.
const NAME_WEIGHT: f64 = 3.0;
const TITLE_WEIGHT: f64 = 2.0;
const PARAMETER_WEIGHT: f64 = 2.0;
const DESCRIPTION_WEIGHT: f64 = 1.0;

/// Words too common to tell tools apart.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "any", "are", "as", "at", "be", "by", "can", "for", "from", "i", "in",
    "into", "is", "it", "its", "me", "my", "of", "on", "or", "that", "the", "this", "to", "use",
    "with", "you", "your",
];

/// The two meta-tools, as `tools/list` shows them.
pub fn meta_tools() -> Vec<RawObject> {
    let tools = json!([
        {
            "name": SEARCH_TOOL,
            "title": "Search tools",
            "description": "Searches the tools this server offers and returns the best matches for a \
                query, each with its name, description and input schema. Call a tool found this way \
                with call_tool.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What the tool should do, in a few words"},
                    "limit": {
                        "type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "description": format!("How many tools to return at most (default {DEFAULT_LIMIT})")
                    }
                },
                "required": ["query"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": CALL_TOOL,
            "title": "Call a tool",
            "description": "Calls a tool found with search_tools by its name, with arguments matching \
                its input schema, and returns the tool's result.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The tool's name, as search_tools returned it"},
                    "arguments": {"type": "object", "description": "The tool's arguments"}
                },
                "required": ["name"]
            }
        }
    ]);
    serde_json::from_value(tools).unwrap_or_default()
}

/// What a `search_tools` call asks: the query and how many tools at most.
pub fn search_request(params: &RawObject) -> Result<(String, usize), String> {
    let arguments: Map<String, Value> = params
        .get("arguments")
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or_default();
    let query = match arguments.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        _ => return Err("search_tools needs a non-empty string argument \"query\"".into()),
    };
    let limit = match arguments.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            _ => return Err(format!("limit must be an integer in 1..={MAX_LIMIT}")),
        },
    };
    Ok((query, limit))
}

/// The params of the call a `call_tool` call stands for: its `name` and
/// `arguments` in place of the meta-tool's, everything else (`_meta`, a
/// task request) kept.
pub fn unwrap_call(mut params: RawObject) -> Result<RawObject, String> {
    let mut arguments: RawObject = params
        .get("arguments")
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or_default();
    let name = match jsonrpc::str_member(&arguments, "name") {
        Some(n) if !n.is_empty() => n,
        _ => return Err("call_tool needs a string argument \"name\"".into()),
    };
    if name == SEARCH_TOOL || name == CALL_TOOL {
        return Err(format!("call_tool cannot call {name}"));
    }
    params.insert("name".into(), jsonrpc::to_raw(&name));
    // The inner arguments go on in the bytes they came in.
    match arguments.shift_remove("arguments") {
        None => {
            params.shift_remove("arguments");
        }
        Some(inner) if inner.get() == "null" => {
            params.shift_remove("arguments");
        }
        Some(inner) if inner.get().starts_with('{') => {
            params.insert("arguments".into(), inner);
        }
        Some(_) => return Err("call_tool's \"arguments\" must be an object".into()),
    }
    Ok(params)
}

/// The result of a search: the tools found, as structured content and as
/// the same JSON in a text block.
pub fn search_result(found: Vec<RawObject>) -> Value {
    let tools = json!({ "tools": found });
    json!({
        "content": [{"type": "text", "text": tools.to_string()}],
        "structuredContent": tools,
        "isError": false,
    })
}

/// The tools of `catalogue` that match `query`, best first, at most `limit`.
pub fn search(catalogue: Vec<RawObject>, query: &str, limit: usize) -> Vec<RawObject> {
    let order = rank(&catalogue, query, limit);
    let mut slots: Vec<Option<RawObject>> = catalogue.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Indices of the `tools` matching `query`, best first, at most `limit`.
fn rank(tools: &[RawObject], query: &str, limit: usize) -> Vec<usize> {
    let documents: Vec<HashMap<String, f64>> = tools.iter().map(document).collect();
    let lengths: Vec<f64> = documents.iter().map(|d| d.values().sum()).collect();
    let count = documents.len() as f64;
    let average = (lengths.iter().sum::<f64>() / count.max(1.0)).max(1.0);
    let mut terms: Vec<String> = words(query);
    terms.sort();
    terms.dedup();
    terms.truncate(MAX_QUERY_WORDS);
    // Each term's weight: rarer words tell tools apart better.
    let weights: Vec<(String, f64)> = terms
        .into_iter()
        .map(|term| {
            let df = documents.iter().filter(|d| d.contains_key(&term)).count() as f64;
            let weight = (1.0 + (count - df + 0.5) / (df + 0.5)).ln();
            (term, weight)
        })
        .collect();
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let score = weights
                .iter()
                .filter_map(|(term, weight)| Some((weight, doc.get(term)?)))
                .map(|(weight, tf)| {
                    weight * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * lengths[i] / average))
                })
                .sum::<f64>();
            (i, score)
        })
        .filter(|(_, score)| *score > 0.0)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(limit).map(|(i, _)| i).collect()
}

/// A tool's words, each with its weighted count.
fn document(tool: &RawObject) -> HashMap<String, f64> {
    let mut counts = HashMap::new();
    let mut add = |text: &str, weight: f64| {
        for word in words(text) {
            *counts.entry(word).or_insert(0.0) += weight;
        }
    };
    for (key, weight) in [
        ("name", NAME_WEIGHT),
        ("title", TITLE_WEIGHT),
        ("description", DESCRIPTION_WEIGHT),
    ] {
        if let Some(text) = jsonrpc::str_member(tool, key) {
            add(&text, weight);
        }
    }
    let schema: Map<String, Value> = tool
        .get("inputSchema")
        .and_then(|s| serde_json::from_str(s.get()).ok())
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, property) in properties {
            add(name, PARAMETER_WEIGHT);
            if let Some(text) = property.get("description").and_then(Value::as_str) {
                add(text, DESCRIPTION_WEIGHT);
            }
        }
    }
    counts
}

/// The words of `text` as the index keeps them: split at anything not a
/// letter or digit and between camelCase humps, lowercased, stop words
/// left out, a plural reduced to its singular.
fn words(text: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(text.len() + 8);
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_uppercase() && previous_lower {
            spaced.push(' ');
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        spaced.push(if c.is_alphanumeric() { c } else { ' ' });
    }
    spaced
        .split_whitespace()
        .map(|w| singular(&w.to_lowercase()))
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// A plural's singular, roughly: `queries` → `query`, `issues` → `issue`.
fn singular(word: &str) -> String {
    if word.len() > 4
        && let Some(stem) = word.strip_suffix("ies")
    {
        return format!("{stem}y");
    }
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") {
        return word[..word.len() - 1].to_owned();
    }
    word.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, description: &str, params: &[&str]) -> RawObject {
        let properties: Map<String, Value> = params
            .iter()
            .map(|p| ((*p).to_owned(), json!({"type": "string"})))
            .collect();
        serde_json::from_value(json!({
            "name": name,
            "description": description,
            "inputSchema": {"type": "object", "properties": properties}
        }))
        .unwrap()
    }

    fn names(found: &[RawObject]) -> Vec<String> {
        found
            .iter()
            .map(|t| jsonrpc::str_member(t, "name").unwrap())
            .collect()
    }

    fn catalogue() -> Vec<RawObject> {
        vec![
            tool(
                "github__create_issue",
                "Create an issue in a repository.",
                &["repo", "title", "body"],
            ),
            tool(
                "github__list_issues",
                "List the issues of a repository.",
                &["repo", "state"],
            ),
            tool(
                "mail__sendEmail",
                "Send an email message to recipients.",
                &["to", "subject", "body"],
            ),
            tool(
                "fx__convert_currency",
                "Convert an amount between currencies.",
                &["amount", "from", "to"],
            ),
            tool(
                "weather__forecast",
                "Weather forecast for a city.",
                &["city", "days"],
            ),
        ]
    }

    #[test]
    fn finds_the_right_tool_first() {
        for (query, want) in [
            ("create a new issue", "github__create_issue"),
            ("send an email", "mail__sendEmail"),
            (
                "convert dollars to another currency",
                "fx__convert_currency",
            ),
            ("will it rain in Paris: weather", "weather__forecast"),
            ("list issues of a repo", "github__list_issues"),
        ] {
            let found = search(catalogue(), query, 3);
            assert_eq!(
                names(&found).first().map(String::as_str),
                Some(want),
                "{query}"
            );
        }
    }

    #[test]
    fn nothing_matching_finds_nothing_and_limit_holds() {
        assert!(search(catalogue(), "zebra", 5).is_empty());
        assert_eq!(search(catalogue(), "issue", 1).len(), 1);
    }

    #[test]
    fn words_split_camel_case_and_drop_plurals() {
        let got = words("sendEmail to the Queries, issues");
        assert_eq!(got, ["send", "email", "query", "issue"]);
    }

    #[test]
    fn call_tool_unwraps_into_the_real_call() {
        let params: RawObject = serde_json::from_value(json!({
            "name": CALL_TOOL,
            "arguments": {"name": "a__b", "arguments": {"x": 1}},
            "_meta": {"progressToken": 7}
        }))
        .unwrap();
        let inner = unwrap_call(params).unwrap();
        assert_eq!(jsonrpc::str_member(&inner, "name").as_deref(), Some("a__b"));
        assert_eq!(inner["arguments"].get(), r#"{"x":1}"#);
        assert!(inner.contains_key("_meta"));
        let spaced: RawObject = serde_json::from_str(
            r#"{"name": "call_tool", "arguments": {"name": "a__b", "arguments": {"b": 1.50, "a": 2}}}"#,
        )
        .unwrap();
        let inner = unwrap_call(spaced).unwrap();
        assert_eq!(
            inner["arguments"].get(),
            r#"{"b": 1.50, "a": 2}"#,
            "as sent"
        );
        let nameless: RawObject =
            serde_json::from_value(json!({"name": CALL_TOOL, "arguments": {}})).unwrap();
        assert!(unwrap_call(nameless).is_err());
        let looped: RawObject =
            serde_json::from_value(json!({"name": CALL_TOOL, "arguments": {"name": CALL_TOOL}}))
                .unwrap();
        assert!(unwrap_call(looped).is_err());
    }

    #[test]
    fn search_arguments_are_checked() {
        let ask = |arguments: Value| {
            let params: RawObject =
                serde_json::from_value(json!({"name": SEARCH_TOOL, "arguments": arguments}))
                    .unwrap();
            search_request(&params)
        };
        assert_eq!(ask(json!({"query": "x"})), Ok(("x".into(), DEFAULT_LIMIT)));
        assert_eq!(ask(json!({"query": "x", "limit": 3})), Ok(("x".into(), 3)));
        assert!(ask(json!({"query": " "})).is_err());
        assert!(ask(json!({"query": "x", "limit": 0})).is_err());
        assert!(ask(json!({})).is_err());
    }
}
