//! Which arguments of an upstream's tools travel in `Mcp-Param-*` headers
//! (their input schemas' `x-mcp-header` declarations), as the upstream last
//! listed its tools.

use std::collections::HashMap;
use std::sync::Arc;

use tether_wire::jsonrpc::{RawObject, str_member};
use tether_wire::param_headers::{self, Declaration};

/// Tool name → its declarations (tools without any are not kept).
#[derive(Debug)]
pub struct ToolHeaders {
    tools: HashMap<String, Arc<[Declaration]>>,
    listed: std::time::Instant,
}

impl ToolHeaders {
    /// The table for a `tools/list` answer's items (every page). A tool whose
    /// declarations break the rules gets no headers (logged): the upstream
    /// will refuse its calls, and says why.
    pub fn from_tools(items: &[RawObject]) -> Self {
        let mut tools = HashMap::new();
        for item in items {
            let (Some(name), Some(schema)) = (str_member(item, "name"), item.get("inputSchema"))
            else {
                continue;
            };
            if !schema.get().contains("x-mcp-header") {
                continue;
            }
            let Ok(schema) = serde_json::from_str::<serde_json::Value>(schema.get()) else {
                continue;
            };
            match param_headers::declarations(&schema) {
                Ok(found) if found.is_empty() => {}
                Ok(found) => {
                    tools.insert(name, found.into());
                }
                Err(why) => {
                    tracing::warn!(tool = %name, %why, "tool's x-mcp-header declarations ignored")
                }
            }
        }
        ToolHeaders {
            tools,
            listed: std::time::Instant::now(),
        }
    }

    /// Whether the listing behind the table is younger than `age`.
    pub fn listed_within(&self, age: std::time::Duration) -> bool {
        self.listed.elapsed() < age
    }

    /// The declarations of `tool` (none when it declares none or is unknown).
    pub fn of(&self, tool: &str) -> Option<Arc<[Declaration]>> {
        self.tools.get(tool).cloned()
    }
}
