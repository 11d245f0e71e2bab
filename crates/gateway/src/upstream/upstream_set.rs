//! The set of upstreams, replaced as a whole when it changes (admin API,
//! reload): readers take a snapshot and never see a half-applied change.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Upstream;
use crate::sync::{read, write};

/// One version of the upstream set, in definition order.
#[derive(Default)]
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    by_name: HashMap<Arc<str>, Arc<Upstream>>,
}

impl Upstreams {
    /// A set of `list`, in that order.
    pub fn new(list: Vec<Arc<Upstream>>) -> Self {
        let by_name = list.iter().map(|u| (u.name.clone(), u.clone())).collect();
        Upstreams { list, by_name }
    }

    /// The upstream named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    /// Whether an upstream is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// All upstreams, in definition order.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Upstream>> {
        self.list.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The current upstream set, shared by the router and the session registry.
pub struct UpstreamSet {
    current: RwLock<Arc<Upstreams>>,
    /// Names of upstreams whose lists changed for clients (added, replaced,
    /// removed, or their health changed), for the listen streams Tether
    /// serves (bounded; a slow listener misses some and hears the next).
    changes: tokio::sync::broadcast::Sender<Arc<[Arc<str>]>>,
}

impl Default for UpstreamSet {
    fn default() -> Self {
        UpstreamSet {
            current: RwLock::default(),
            changes: tokio::sync::broadcast::Sender::new(16),
        }
    }
}

impl UpstreamSet {
    /// The current version.
    pub fn snapshot(&self) -> Arc<Upstreams> {
        read(&self.current).clone()
    }

    /// The upstream named `name` now.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        read(&self.current).get(name).cloned()
    }

    /// Makes `list` the current set.
    pub fn replace(&self, list: Vec<Arc<Upstream>>) {
        *write(&self.current) = Arc::new(Upstreams::new(list));
    }

    /// Tells listeners that the lists of the upstreams named `touched` changed.
    pub fn announce(&self, touched: Vec<Arc<str>>) {
        let _ = self.changes.send(touched.into());
    }

    /// Hears announced changes from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Arc<[Arc<str>]>> {
        self.changes.subscribe()
    }
}
