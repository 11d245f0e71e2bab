//! Definitions from two sources, for upstreams and virtual servers alike:
//! the config file's (read-only through the admin API, changed by reload)
//! and the admin API's (kept in the store, so every node and every restart
//! has them; one named like a file one is ignored).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, UpstreamConfig, VirtualServerConfig};
use crate::store::{DefinitionKind, Store, StoreError};
use crate::sync::lock;
use crate::upstream::BuildError;

/// Where a definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The config file (read-only through the admin API; changed by reload).
    Config,
    /// The admin API (kept in the store).
    Api,
}

/// Why a change was refused.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing has that name.
    NotFound,
    /// The name is taken (or defined in the config file).
    Conflict(String),
    /// The definition (or the config file) breaks a rule.
    Invalid(ConfigError),
    /// The definition is valid but cannot be built (its URL, headers or TLS files).
    Unbuildable {
        /// The upstream.
        upstream: String,
        /// Why.
        source: BuildError,
    },
    /// The definition could not be written as JSON for the store.
    Encode(serde_json::Error),
    /// The store failed.
    Store(StoreError),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotFound => f.write_str("no such definition"),
            Refusal::Conflict(why) => f.write_str(why),
            Refusal::Invalid(e) => write!(f, "{e}"),
            Refusal::Unbuildable { upstream, source } => {
                write!(f, "upstream {upstream:?}: {source}")
            }
            Refusal::Encode(e) => write!(f, "the definition cannot be stored: {e}"),
            Refusal::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::Invalid(e) => Some(e),
            Refusal::Unbuildable { source, .. } => Some(source),
            Refusal::Encode(e) => Some(e),
            Refusal::Store(e) => Some(e),
            Refusal::NotFound | Refusal::Conflict(_) => None,
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// Something defined in the config file or through the admin API.
pub trait Definition: Clone + PartialEq + Serialize + DeserializeOwned {
    /// How the store keeps it.
    const KIND: DefinitionKind;
    /// What it is called in messages.
    const NOUN: &'static str;
    /// Its unique name.
    fn name(&self) -> &str;
}

impl Definition for UpstreamConfig {
    const KIND: DefinitionKind = DefinitionKind::Upstream;
    const NOUN: &'static str = "upstream";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Definition for VirtualServerConfig {
    const KIND: DefinitionKind = DefinitionKind::VirtualServer;
    const NOUN: &'static str = "virtual server";
    fn name(&self) -> &str {
        &self.name
    }
}

/// The definitions of one kind from both sources.
pub struct Definitions<T> {
    /// The config file's, in file order.
    file: std::sync::Mutex<Vec<T>>,
    /// The admin API's, in creation order.
    api: std::sync::Mutex<Vec<T>>,
}

impl<T> Default for Definitions<T> {
    fn default() -> Self {
        Definitions {
            file: std::sync::Mutex::new(Vec::new()),
            api: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<T: Definition> Definitions<T> {
    /// The config file's definitions now.
    pub fn file(&self) -> Vec<T> {
        lock(&self.file).clone()
    }

    /// The admin API's definitions now.
    pub fn api(&self) -> Vec<T> {
        lock(&self.api).clone()
    }

    /// Every definition, the file's first.
    pub fn all(&self) -> Vec<T> {
        let mut all = self.file();
        all.extend(self.api());
        all
    }

    /// Every definition with its source, the file's first.
    pub fn with_sources(&self) -> Vec<(T, Source)> {
        let file = self.file().into_iter().map(|d| (d, Source::Config));
        file.chain(self.api().into_iter().map(|d| (d, Source::Api)))
            .collect()
    }

    /// Takes the config file's definitions, returning the previous ones;
    /// refused when the file now defines a name the admin API defined.
    pub fn replace_file(&self, file: Vec<T>) -> Result<Vec<T>, Refusal> {
        self.clashes(&file)?;
        Ok(std::mem::replace(&mut *lock(&self.file), file))
    }

    /// Refused when `file` defines a name the admin API defined.
    pub fn clashes(&self, file: &[T]) -> Result<(), Refusal> {
        let api = lock(&self.api);
        match file
            .iter()
            .find(|d| api.iter().any(|a| a.name() == d.name()))
        {
            Some(clash) => Err(Refusal::Conflict(format!(
                "the config file now defines {} {:?}, which the admin API defined; delete that first",
                T::NOUN,
                clash.name()
            ))),
            None => Ok(()),
        }
    }

    /// Puts the config file's definitions back (a change that was not applied).
    pub fn restore_file(&self, file: Vec<T>) {
        *lock(&self.file) = file;
    }

    /// Reads the admin API's definitions from `store`; whether they changed.
    pub async fn load(&self, store: &Store) -> Result<bool, Refusal> {
        let stored = self.stored(store).await?;
        let mut api = lock(&self.api);
        let same = api.len() == stored.len() && stored.iter().all(|d| api.contains(d));
        if !same {
            *api = stored;
        }
        Ok(!same)
    }

    /// The admin API's definitions in the store (those the config file
    /// shadows, or that cannot be read, are left out with a warning).
    async fn stored(&self, store: &Store) -> Result<Vec<T>, Refusal> {
        let stored = store.definitions(T::KIND).await?;
        let file = lock(&self.file).clone();
        let mut api = Vec::new();
        for (name, json) in stored {
            match serde_json::from_str::<T>(&json) {
                Ok(def) if file.iter().any(|f| f.name() == def.name()) => {
                    tracing::warn!(%name, "stored {} shadowed by the config file's; ignored", T::NOUN);
                }
                Ok(def) => api.push(def),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "stored {} definition unreadable; ignored", T::NOUN)
                }
            }
        }
        Ok(api)
    }

    /// Whether a definition has that name.
    pub fn exists(&self, name: &str) -> bool {
        self.all().iter().any(|d| d.name() == name)
    }

    /// Refused unless `name` is the admin API's.
    pub fn editable(&self, name: &str) -> Result<(), Refusal> {
        if lock(&self.file).iter().any(|d| d.name() == name) {
            return Err(Refusal::Conflict(format!(
                "{} {name:?} is defined in the config file; change it there and reload",
                T::NOUN
            )));
        }
        if !lock(&self.api).iter().any(|d| d.name() == name) {
            return Err(Refusal::NotFound);
        }
        Ok(())
    }

    /// Stores `def` and makes it one of the admin API's (new, or replacing
    /// the one of its name).
    pub async fn put(&self, store: &Store, def: T) -> Result<(), Refusal> {
        let json = serde_json::to_string(&def).map_err(Refusal::Encode)?;
        store.put_definition(T::KIND, def.name(), &json).await?;
        let mut api = lock(&self.api);
        match api.iter_mut().find(|d| d.name() == def.name()) {
            Some(slot) => *slot = def,
            None => api.push(def),
        }
        Ok(())
    }

    /// Removes the admin API's `name` from the store and from the definitions.
    pub async fn remove(&self, store: &Store, name: &str) -> Result<(), Refusal> {
        store.delete_definition(T::KIND, name).await?;
        lock(&self.api).retain(|d| d.name() != name);
        Ok(())
    }
}
