//! `Mcp-Param-*` headers (2026-07-28, Streamable HTTP). A tool's input
//! schema may mark a primitive argument, at any depth, with
//! `"x-mcp-header": "<Name>"`; a `tools/call` then carries that argument's
//! value in the header `Mcp-Param-<Name>` as well as in its body, so
//! intermediaries can route on it without reading the body. A client
//! renders the headers ([`render`]); a server checks them against the body
//! ([`check`]) and rejects a disagreement with -32020 (HTTP 400).

use serde_json::Value;

use crate::protocol::{HEADER_PARAM_PREFIX, decode_header_value, encode_header_value};

/// One argument a tool mirrors in a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The argument's place in `arguments`: property names, outermost first.
    pub path: Vec<String>,
    /// The header name suffix as declared (`Region` for `Mcp-Param-Region`).
    pub header: String,
    /// The full header name, lower case (`mcp-param-region`).
    pub header_name: String,
}

/// The declarations of a tool's input schema. An error
/// names the first declaration that breaks the rules (the name is not an
/// HTTP token, repeats another case-insensitively, or marks a property that
/// is not a string, integer, boolean or number): such a tool cannot be
/// called over Streamable HTTP as declared.
pub fn declarations(input_schema: &Value) -> Result<Vec<Declaration>, String> {
    let mut found = Vec::new();
    walk(input_schema, &mut Vec::new(), &mut found)?;
    Ok(found)
}

fn walk(
    schema: &Value,
    path: &mut Vec<String>,
    found: &mut Vec<Declaration>,
) -> Result<(), String> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, property) in properties {
        path.push(name.clone());
        if let Some(header) = property.get("x-mcp-header") {
            found.push(declaration(path, header, property, found)?);
        }
        walk(property, path, found)?;
        path.pop();
    }
    Ok(())
}

fn declaration(
    path: &[String],
    header: &Value,
    property: &Value,
    found: &[Declaration],
) -> Result<Declaration, String> {
    let at = path.join(".");
    let Some(header) = header.as_str() else {
        return Err(format!("x-mcp-header of {at} is not a string"));
    };
    if header.is_empty() || !header.bytes().all(is_token_char) {
        return Err(format!(
            "x-mcp-header '{header}' of {at} is not an HTTP token"
        ));
    }
    let primitive = match property.get("type") {
        Some(Value::String(t)) => is_primitive(t),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .all(is_primitive),
        _ => false,
    };
    if !primitive {
        return Err(format!(
            "x-mcp-header '{header}' marks {at}, which is not a string, integer or boolean"
        ));
    }
    let header_name = format!("{HEADER_PARAM_PREFIX}{}", header.to_ascii_lowercase());
    if found.iter().any(|d| d.header_name == header_name) {
        return Err(format!("x-mcp-header '{header}' is declared twice"));
    }
    Ok(Declaration {
        path: path.to_vec(),
        header: header.to_owned(),
        header_name,
    })
}

/// `number` is not allowed by the revision's final text but is declared by
/// servers written against its drafts; mirroring it costs nothing.
fn is_primitive(t: &str) -> bool {
    matches!(t, "string" | "integer" | "boolean" | "number")
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The argument a declaration mirrors, if the call has it (null counts as absent).
pub fn argument<'a>(arguments: &'a Value, declaration: &Declaration) -> Option<&'a Value> {
    declaration
        .path
        .iter()
        .try_fold(arguments, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// A body value as its header value: strings as they are (the Base64
/// sentinel form when they cannot travel plain), integers in decimal,
/// booleans as `true`/`false`. `None` for what has no header form (null,
/// objects, arrays): such arguments get no header.
pub fn render(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(encode_header_value(s)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The headers a call with `arguments` carries for `declarations`: (lower
/// case name, value).
pub fn headers_for<'a>(
    declarations: &'a [Declaration],
    arguments: &Value,
) -> impl Iterator<Item = (&'a str, String)> {
    declarations.iter().filter_map(|d| {
        argument(arguments, d)
            .and_then(render)
            .map(|v| (d.header_name.as_str(), v))
    })
}

/// Whether a decoded header value mirrors a body value: strings exactly,
/// booleans as `true`/`false`, integers exactly (`42.0` is `42`), other
/// numbers within a relative 1e-9.
pub fn mirrors(header: &str, body: &Value) -> bool {
    match body {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let whole = header.strip_suffix(".0").unwrap_or(header);
            match (n.as_i64(), n.as_u64()) {
                (Some(b), _) => whole.parse::<i64>() == Ok(b),
                (None, Some(b)) => whole.parse::<u64>() == Ok(b),
                _ => false,
            }
        }
        Value::Number(n) => match (header.parse::<f64>(), n.as_f64()) {
            (Ok(h), Some(b)) => h == b || (h - b).abs() <= 1e-9 * h.abs().max(b.abs()),
            _ => false,
        },
        _ => false,
    }
}

/// Checks a call's headers against its `arguments` for `declarations`;
/// `header` looks a header up by its lower-case name (its raw value). The
/// error says what disagrees, for a -32020 answer.
pub fn check<'h>(
    declarations: &[Declaration],
    arguments: &Value,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<(), String> {
    for d in declarations {
        let Some(body) = argument(arguments, d) else {
            continue;
        };
        if render(body).is_none() {
            continue;
        }
        let Some(raw) = header(&d.header_name) else {
            return Err(format!("Mcp-Param-{} header is required", d.header));
        };
        let trimmed = raw.trim_ascii();
        if !trimmed
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) || *b == b'\t')
        {
            return Err(format!(
                "Mcp-Param-{} header has invalid characters",
                d.header
            ));
        }
        let Some(value) = decode_header_value(trimmed) else {
            return Err(format!(
                "Mcp-Param-{} header is not valid Base64-encoded UTF-8",
                d.header
            ));
        };
        if !mirrors(&value, body) {
            return Err(format!(
                "Mcp-Param-{} header value '{value}' does not match body value {body}",
                d.header
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "priority": {"type": "integer", "x-mcp-header": "Priority"},
            "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
            "target": {"type": "object", "properties": {
                "zone": {"type": ["string", "null"], "x-mcp-header": "Zone"}}},
            "query": {"type": "string"}}})
    }

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a [u8]> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        }
    }

    #[test]
    fn declarations_at_any_depth() {
        let found = declarations(&schema()).unwrap();
        let mut names: Vec<_> = found.iter().map(|d| d.header_name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "mcp-param-priority",
                "mcp-param-region",
                "mcp-param-verbose",
                "mcp-param-zone"
            ]
        );
        let zone = found.iter().find(|d| d.header == "Zone").unwrap();
        assert_eq!(zone.path, ["target", "zone"]);
    }

    #[test]
    fn declarations_that_break_the_rules_are_refused() {
        for bad in [
            json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "has space"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "Colon:"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": 7}}}),
            json!({"properties": {"a": {"type": "object", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "array", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"x-mcp-header": "A"}}}),
            json!({"properties": {
                "a": {"type": "string", "x-mcp-header": "Same"},
                "b": {"type": "string", "x-mcp-header": "SAME"}}}),
        ] {
            assert!(declarations(&bad).is_err(), "{bad}");
        }
        assert_eq!(declarations(&json!({"type": "object"})).unwrap(), []);
    }

    #[test]
    fn rendered_headers_pass_the_check() {
        let found = declarations(&schema()).unwrap();
        let args = json!({"region": "Hello, 世界", "priority": 42, "verbose": false,
            "target": {"zone": "z1"}, "query": "q"});
        let mut rendered: Vec<(String, String)> = headers_for(&found, &args)
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        rendered.sort();
        assert_eq!(
            rendered,
            [
                ("mcp-param-priority".into(), "42".into()),
                (
                    "mcp-param-region".into(),
                    "=?base64?SGVsbG8sIOS4lueVjA==?=".into()
                ),
                ("mcp-param-verbose".into(), "false".into()),
                ("mcp-param-zone".into(), "z1".into()),
            ]
        );
        let pairs: Vec<(&str, &str)> = rendered
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(check(&found, &args, lookup(&pairs)), Ok(()));
        let no_zone = json!({"region": "r", "target": {"zone": null}});
        assert_eq!(headers_for(&found, &no_zone).count(), 1, "null is absent");
    }

    #[test]
    fn the_check_finds_missing_and_disagreeing_headers() {
        let found = declarations(&schema()).unwrap();
        let args = json!({"region": "Hello", "priority": 42});
        let ok = [
            ("Mcp-Param-Region", " =?base64?SGVsbG8=?= "),
            ("mcp-param-priority", "42.0"),
        ];
        assert_eq!(check(&found, &args, lookup(&ok)), Ok(()));
        for (bad, says) in [
            (
                vec![("mcp-param-priority", "42")],
                "Region header is required",
            ),
            (
                vec![("mcp-param-region", "Hello"), ("mcp-param-priority", "41")],
                "does not match",
            ),
            (
                vec![
                    ("mcp-param-region", "=?base64?SGVs!!bG8=?="),
                    ("mcp-param-priority", "42"),
                ],
                "Base64",
            ),
            (
                vec![("mcp-param-region", "hello"), ("mcp-param-priority", "42")],
                "does not match",
            ),
        ] {
            let err = check(&found, &args, lookup(&bad)).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn numbers_compare_numerically_and_other_values_exactly() {
        assert!(
            mirrors("42", &json!(42)) && mirrors("42.0", &json!(42)) && !mirrors("x", &json!(42))
        );
        assert!(mirrors("0.30000000000000004", &json!(0.3)));
        assert!(
            !mirrors("12345678900000000", &json!(12345678901234567u64)),
            "integers exactly"
        );
        assert!(mirrors("-7", &json!(-7)) && !mirrors("7", &json!(-7)));
        assert!(mirrors("true", &json!(true)) && !mirrors("True", &json!(true)));
        assert!(!mirrors("{}", &json!({})));
    }
}
