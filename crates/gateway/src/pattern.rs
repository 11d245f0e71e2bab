//! Name patterns as operators write them in policies and virtual servers:
//! `*` matches any run of characters, everything else matches itself.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == name;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `name` matches any of `patterns`.
pub fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", "anything"));
        assert!(matches("github__*", "github__issues"));
        assert!(!matches("github__*", "files__read"));
        assert!(matches("*__read_*", "files__read_file"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(!matches("a*a", "a"));
        assert!(matches("a*a", "aa"));
        assert!(matches_any(&["x".into(), "demo://*".into()], "demo://a"));
        assert!(!matches_any(&[], "x"));
    }
}
