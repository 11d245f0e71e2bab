//! Authorization: which upstreams and tools a principal reaches, from the
//! `[[auth.policies]]` that match its token's scopes and claims.

use serde_json::Value;

use crate::config::Policy;
use crate::pattern;

/// What one principal may reach: the grants of the policies matching its
/// token, each an (upstreams, tool patterns) pair that is never mixed with
/// another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Every upstream and tool (no policies configured).
    everything: bool,
    grants: Vec<Grant>,
}

/// One matching policy's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    /// Upstreams reachable (`*` for all).
    upstreams: Vec<String>,
    /// Tool name patterns reachable on them (empty: every tool).
    tools: Vec<String>,
}

impl Grant {
    fn covers(&self, upstream: &str) -> bool {
        self.upstreams.iter().any(|u| u == "*" || u == upstream)
    }
}

impl Access {
    /// Reaches everything (authentication off, or no policies).
    pub fn everything() -> Self {
        Access {
            everything: true,
            grants: Vec::new(),
        }
    }

    /// The grants of the `policies` matching a token's `claims`.
    pub fn from_policies(policies: &[Policy], claims: &Value) -> Self {
        if policies.is_empty() {
            return Self::everything();
        }
        Access {
            everything: false,
            grants: policies
                .iter()
                .filter(|p| matches(p, claims))
                .map(|p| Grant {
                    upstreams: p.upstreams.clone(),
                    tools: p.tools.clone(),
                })
                .collect(),
        }
    }

    /// Whether the upstream named `upstream` is reachable at all.
    pub fn reaches_upstream(&self, upstream: &str) -> bool {
        self.everything || self.grants.iter().any(|g| g.covers(upstream))
    }

    /// Whether the real tool `tool` of `upstream` (the upstream's own name
    /// for it, whatever alias or endpoint shows it) may be listed and called:
    /// one grant must cover the upstream, and one of its patterns match the
    /// tool as `<upstream><separator><tool>`, or, a pattern without the
    /// separator, as `tool` (so `github__*` never covers another upstream's
    /// tool that calls itself `github__x`).
    pub fn reaches_tool(&self, upstream: &str, tool: &str, separator: &str) -> bool {
        if self.everything {
            return true;
        }
        let canonical = format!("{upstream}{separator}{tool}");
        let matches = |p: &String| {
            pattern::matches(p, &canonical) || (!p.contains(separator) && pattern::matches(p, tool))
        };
        self.grants
            .iter()
            .any(|g| g.covers(upstream) && (g.tools.is_empty() || g.tools.iter().any(matches)))
    }

    /// Whether anything is out of reach (lists then need filtering).
    pub fn restricts(&self) -> bool {
        !self.everything
    }
}

fn matches(policy: &Policy, claims: &Value) -> bool {
    if policy.everyone {
        return true;
    }
    let scope_ok = policy.scope.is_empty() || scopes(claims).any(|s| s == policy.scope);
    let claim_ok = policy.claim.is_empty()
        || match claims.get(&policy.claim) {
            Some(Value::String(s)) => *s == policy.value,
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(&policy.value)),
            Some(Value::Bool(b)) => b.to_string() == policy.value,
            _ => false,
        };
    let names_something = !policy.scope.is_empty() || !policy.claim.is_empty();
    names_something && scope_ok && claim_ok
}

/// The token's scopes: `scope` (space-separated) and `scp` (string or array).
fn scopes(claims: &Value) -> impl Iterator<Item = &str> {
    let spaced = ["scope", "scp"]
        .into_iter()
        .filter_map(|k| claims.get(k)?.as_str())
        .flat_map(str::split_whitespace);
    let listed = claims
        .get("scp")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    spaced.chain(listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(scope: &str, claim: &str, value: &str, upstreams: &[&str], tools: &[&str]) -> Policy {
        Policy {
            scope: scope.into(),
            claim: claim.into(),
            value: value.into(),
            everyone: false,
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            tools: tools.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn policies_grant_by_scope_and_claim() {
        let policies = [
            policy("mcp:read", "", "", &["files"], &["files__read_*"]),
            policy("", "groups", "admins", &["*"], &[]),
        ];
        let reader = Access::from_policies(&policies, &json!({"scope": "openid mcp:read"}));
        assert!(reader.reaches_tool("files", "read_file", "__"));
        assert!(!reader.reaches_tool("files", "write_file", "__"));
        assert!(!reader.reaches_upstream("github"));
        let admin = Access::from_policies(&policies, &json!({"groups": ["staff", "admins"]}));
        assert!(admin.reaches_tool("github", "anything", "__"));
        // Grants do not mix: one policy's "every tool" does not open another's upstream.
        let both = Access::from_policies(
            &[
                policy("files", "", "", &["files"], &[]),
                policy("gh", "", "", &["github"], &["github__get_*"]),
            ],
            &json!({"scope": "files gh"}),
        );
        assert!(both.reaches_tool("files", "write", "__"));
        assert!(both.reaches_tool("github", "get_issue", "__"));
        assert!(!both.reaches_tool("github", "delete_repo", "__"));
        let nobody = Access::from_policies(&policies, &json!({"scope": "other"}));
        assert!(!nobody.reaches_upstream("files"));
        assert!(Access::from_policies(&[], &json!({})).reaches_tool("x", "y", "__"));
        // A bare pattern matches the upstream's own name; a prefixed one only
        // the prefixed name, never a tool that calls itself that.
        let all = |tools: &[&str]| {
            Access::from_policies(
                &[policy("s", "", "", &["*"], tools)],
                &json!({"scope": "s"}),
            )
        };
        assert!(all(&["read_*"]).reaches_tool("files", "read_file", "__"));
        assert!(all(&["github__*"]).reaches_tool("github", "x", "__"));
        assert!(!all(&["github__*"]).reaches_tool("evil", "github__x", "__"));
        let scp_array = Access::from_policies(&policies, &json!({"scp": ["mcp:read"]}));
        assert!(scp_array.reaches_upstream("files"));
    }
}
