//! Which upstreams a request or session sees: all of them, federated (`/mcp`),
//! one, unchanged (`/u/<upstream>/mcp`), or a virtual server's selection of
//! the federated catalogue (`/v/<name>/mcp`).

use std::sync::Arc;

/// Which upstreams a session or request sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `/mcp`: every upstream, federated.
    Federated,
    /// `/u/<upstream>/mcp`: one upstream, names unchanged.
    Single(Arc<str>),
    /// `/v/<name>/mcp`: a virtual server.
    Virtual(Arc<str>),
}

/// How a virtual server's scope is stored: this before its name (upstream
/// names have no `/`).
const VIRTUAL_LABEL: &str = "v/";

impl Scope {
    /// How the scope is stored: empty for `/mcp`, the upstream's name, or
    /// `v/` and the virtual server's name.
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Scope::Federated => "".into(),
            Scope::Single(name) => (**name).into(),
            Scope::Virtual(name) => format!("{VIRTUAL_LABEL}{name}").into(),
        }
    }

    /// The scope a stored label names (an upstream's is checked by `upstream`).
    pub fn from_label(label: &str, upstream: impl Fn(&str) -> Option<Arc<str>>) -> Option<Scope> {
        if label.is_empty() {
            return Some(Scope::Federated);
        }
        if let Some(name) = label.strip_prefix(VIRTUAL_LABEL) {
            return Some(Scope::Virtual(name.into()));
        }
        upstream(label).map(Scope::Single)
    }

    /// The one upstream the endpoint reaches (`/u/<upstream>/…`), if any.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Scope::Single(name) => Some(name),
            Scope::Federated | Scope::Virtual(_) => None,
        }
    }

    /// The path of the endpoint: `` (federated), `/u/<upstream>` or `/v/<name>`.
    pub fn path_prefix(&self) -> String {
        match self {
            Scope::Federated => String::new(),
            Scope::Single(name) => format!("/u/{name}"),
            Scope::Virtual(name) => format!("/v/{name}"),
        }
    }
}
