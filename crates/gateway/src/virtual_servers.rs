//! Virtual servers: curated parts of the federated catalogue, each with an
//! identity of its own, served at `/v/<name>/mcp` and `/v/<name>/sse`. Which
//! exist (the config file's and the admin API's, see [`Definitions`]), and
//! what each one selects and how it shows its tools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{Config, VirtualServerConfig};
use crate::definitions::{Definitions, Refusal, Source};
use crate::pattern;
use crate::shaping::Shaping;
use crate::store::Store;
use crate::sync::lock;

/// One virtual server, ready to serve.
#[derive(Debug)]
pub struct VirtualServer {
    /// Its definition.
    pub config: VirtualServerConfig,
    /// How it shows its tools, by the names `/mcp` shows.
    pub shaping: Shaping,
}

impl VirtualServer {
    /// The server `config` defines.
    pub fn new(config: VirtualServerConfig) -> VirtualServer {
        VirtualServer {
            shaping: Shaping::new(&config.shape),
            config,
        }
    }

    /// Whether it exposes the tool `/mcp` shows as `name`.
    pub fn selects_tool(&self, name: &str) -> bool {
        pattern::matches_any(&self.config.tools, name)
    }

    /// Whether it exposes the prompt `/mcp` shows as `name`.
    pub fn selects_prompt(&self, name: &str) -> bool {
        pattern::matches_any(&self.config.prompts, name)
    }

    /// Whether it exposes the resource (or template) `uri`. A wildcard
    /// never stands for a way out of the path it names: a URI with a `..`
    /// segment or an escaped `.` or `/` is selected only by a pattern naming
    /// it exactly.
    pub fn selects_resource(&self, uri: &str) -> bool {
        let lower = uri.to_ascii_lowercase();
        let escapes = lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c");
        let climbs = uri.split(['/', '\\']).any(|segment| segment == "..");
        if escapes || climbs {
            return self.config.resources.iter().any(|p| p == uri);
        }
        pattern::matches_any(&self.config.resources, uri)
    }

    /// The `/mcp` name of the tool it shows as `shown`; `None` when it shows
    /// no tool under that name.
    pub fn tool_behind<'a>(&'a self, shown: &'a str) -> Option<&'a str> {
        let name = self.shaping.name_behind(shown)?;
        self.selects_tool(name).then_some(name)
    }
}

/// Every virtual server (see the module documentation).
pub struct VirtualServers {
    defs: Definitions<VirtualServerConfig>,
    current: Mutex<Arc<HashMap<String, Arc<VirtualServer>>>>,
    store: Arc<Store>,
    /// One change at a time.
    changing: tokio::sync::Mutex<()>,
}

impl VirtualServers {
    /// None yet; the admin API's are kept in `store`.
    pub fn new(store: Arc<Store>) -> Arc<VirtualServers> {
        Arc::new(VirtualServers {
            defs: Definitions::default(),
            current: Mutex::default(),
            store,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// The virtual server `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Arc<VirtualServer>> {
        lock(&self.current).get(name).cloned()
    }

    /// Every definition with its source (the file's first).
    pub fn definitions(&self) -> Vec<(VirtualServerConfig, Source)> {
        self.defs.with_sources()
    }

    /// Starts with the config file's servers and those stored by the admin API.
    pub async fn start(&self, file: Vec<VirtualServerConfig>) -> Result<(), Refusal> {
        let _one = self.changing.lock().await;
        self.defs.restore_file(file);
        self.defs.load(&self.store).await?;
        self.apply();
        Ok(())
    }

    /// Applies what other nodes changed through their admin API; the names
    /// of the servers that changed.
    pub async fn sync(&self) -> Result<Vec<String>, Refusal> {
        let _one = self.changing.lock().await;
        if self.defs.load(&self.store).await? {
            return Ok(self.apply());
        }
        Ok(Vec::new())
    }

    /// Refused when the config file's `file` would clash with the admin API's.
    pub fn check_file(&self, file: &[VirtualServerConfig]) -> Result<(), Refusal> {
        self.defs.clashes(file)
    }

    /// Takes the config file's servers again (reload); the names changed.
    pub async fn reload(&self, file: Vec<VirtualServerConfig>) -> Result<Vec<String>, Refusal> {
        let _one = self.changing.lock().await;
        self.defs.replace_file(file)?;
        Ok(self.apply())
    }

    /// Adds a server (kept in the store).
    pub async fn create(&self, def: VirtualServerConfig) -> Result<Vec<String>, Refusal> {
        let _one = self.changing.lock().await;
        if self.defs.exists(&def.name) {
            return Err(Refusal::Conflict(format!(
                "virtual server {:?} exists",
                def.name
            )));
        }
        check(&def)?;
        self.defs.put(&self.store, def).await?;
        Ok(self.apply())
    }

    /// Replaces an admin-defined server's definition.
    pub async fn update(
        &self,
        name: &str,
        def: VirtualServerConfig,
    ) -> Result<Vec<String>, Refusal> {
        let _one = self.changing.lock().await;
        self.defs.editable(name)?;
        if def.name != name {
            return Err(Refusal::Invalid(crate::config::ConfigError::Invalid(
                "the name cannot change".into(),
            )));
        }
        check(&def)?;
        self.defs.put(&self.store, def).await?;
        Ok(self.apply())
    }

    /// Removes an admin-defined server.
    pub async fn delete(&self, name: &str) -> Result<Vec<String>, Refusal> {
        let _one = self.changing.lock().await;
        self.defs.editable(name)?;
        self.defs.remove(&self.store, name).await?;
        Ok(self.apply())
    }

    /// Makes the definitions current; the names of the servers added,
    /// changed or removed.
    fn apply(&self) -> Vec<String> {
        let mut current = lock(&self.current);
        let next: HashMap<String, Arc<VirtualServer>> = self
            .defs
            .all()
            .into_iter()
            .map(|def| match current.get(&def.name) {
                Some(kept) if kept.config == def => (def.name.clone(), kept.clone()),
                _ => (def.name.clone(), Arc::new(VirtualServer::new(def))),
            })
            .collect();
        let mut changed: Vec<String> = next
            .iter()
            .filter(|(name, server)| !current.get(*name).is_some_and(|c| Arc::ptr_eq(c, server)))
            .map(|(name, _)| name.clone())
            .chain(current.keys().filter(|n| !next.contains_key(*n)).cloned())
            .collect();
        changed.sort();
        *current = Arc::new(next);
        changed
    }
}

/// Validates a definition as the config file's would be.
fn check(def: &VirtualServerConfig) -> Result<(), Refusal> {
    let mut config = Config::default();
    config.virtual_servers.push(def.clone());
    config.validate().map_err(Refusal::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(def: serde_json::Value) -> VirtualServer {
        VirtualServer::new(serde_json::from_value(def).unwrap())
    }

    #[test]
    fn selects_by_pattern_and_shows_aliases() {
        let s = server(json!({
            "name": "support",
            "tools": ["gh__search_*", "files__read_file"],
            "prompts": ["gh__triage"],
            "resources": ["docs://*"],
            "shape": {"files__read_file": {"alias": "read"}}
        }));
        assert!(s.selects_tool("gh__search_issues"));
        assert!(!s.selects_tool("gh__delete_repo"));
        assert_eq!(s.tool_behind("read"), Some("files__read_file"));
        assert_eq!(
            s.tool_behind("files__read_file"),
            None,
            "shown as its alias"
        );
        assert_eq!(s.tool_behind("gh__search_code"), Some("gh__search_code"));
        assert_eq!(s.tool_behind("gh__delete_repo"), None, "not selected");
        assert!(s.selects_prompt("gh__triage") && !s.selects_prompt("gh__other"));
        assert!(s.selects_resource("docs://a/b") && !s.selects_resource("file:///etc"));
        assert!(!s.selects_resource("docs://a/../../etc/passwd"));
        assert!(!s.selects_resource("docs://a/%2e%2e/secret"));
    }

    #[tokio::test]
    async fn api_servers_are_stored_and_file_ones_read_only() {
        let store = Arc::new(Store::open("memory").await.unwrap());
        let servers = VirtualServers::new(store.clone());
        let def = |name: &str| -> VirtualServerConfig {
            serde_json::from_value(json!({"name": name, "tools": ["*"]})).unwrap()
        };
        servers.start(vec![def("file")]).await.unwrap();
        assert!(servers.get("file").is_some());
        assert_eq!(servers.create(def("api")).await.unwrap(), ["api"]);
        assert!(matches!(
            servers.create(def("api")).await,
            Err(Refusal::Conflict(_))
        ));
        assert!(matches!(
            servers.delete("file").await,
            Err(Refusal::Conflict(_))
        ));
        assert!(matches!(
            servers.delete("none").await,
            Err(Refusal::NotFound)
        ));
        // Another node (same store) sees it.
        let other = VirtualServers::new(store);
        other.start(Vec::new()).await.unwrap();
        assert!(other.get("api").is_some());
        servers.delete("api").await.unwrap();
        assert_eq!(other.sync().await.unwrap(), ["api"]);
        assert!(other.get("api").is_none());
    }
}
