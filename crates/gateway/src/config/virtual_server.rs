//! A virtual server (`[[virtual_servers]]`): a curated part of the federated
//! catalogue with an identity of its own, served at `/v/<name>/mcp` and
//! `/v/<name>/sse`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::shaping::{ToolShape, validate_shapes};

/// One virtual server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServerConfig {
    /// Unique name: the `<name>` of `/v/<name>/mcp`, and the server's name
    /// in its `initialize`/`server/discover` answers.
    pub name: String,
    /// A title for people (`serverInfo.title`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// What it is for (`serverInfo.description`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Instructions for the model (`instructions`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instructions: String,
    /// Tools it exposes: patterns (`*` wildcards) over the names `/mcp` shows.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Prompts it exposes: patterns over the names `/mcp` shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// Resources and templates it exposes: patterns over URIs (templates by
    /// their `uriTemplate`); a read is allowed when its URI matches one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// List the search and call meta-tools instead of the tools.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progressive_discovery: bool,
    /// How its tools are shown, by the name `/mcp` shows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shape: BTreeMap<String, ToolShape>,
}

impl VirtualServerConfig {
    /// Checks the definition on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !super::is_valid_name(&self.name) {
            return Err(ConfigError::Invalid(format!(
                "virtual server name {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                self.name
            )));
        }
        validate_shapes(
            &format!("virtual server {:?}", self.name),
            &self.shape,
            false,
        )
    }
}
