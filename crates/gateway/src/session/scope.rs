//! Which upstreams a request or session sees: all of them, federated (`/mcp`),
//! or one, unchanged (`/u/<upstream>/mcp`).

use std::sync::Arc;

/// Which upstreams a session or request sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `/mcp`: every upstream, federated.
    Federated,
    /// `/u/<upstream>/mcp`: one upstream, names unchanged.
    Single(Arc<str>),
}

impl Scope {
    /// How the scope is stored: empty for `/mcp`, else the upstream's name.
    pub fn label(&self) -> &str {
        match self {
            Scope::Federated => "",
            Scope::Single(name) => name,
        }
    }
}
