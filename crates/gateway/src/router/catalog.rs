//! Federated catalogue: merging upstream lists under one namespace and
//! routing names and URIs back to their upstream.

use std::collections::HashMap;
use std::sync::Arc;

use tether_wire::jsonrpc::{self, Method, RawObject};

use crate::config::Naming;

/// The four list methods a federated endpoint merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`
    Tools,
    /// `prompts/list`
    Prompts,
    /// `resources/list`
    Resources,
    /// `resources/templates/list`
    Templates,
}

impl ListKind {
    /// The list method.
    pub fn method(self) -> Method {
        match self {
            ListKind::Tools => Method::ToolsList,
            ListKind::Prompts => Method::PromptsList,
            ListKind::Resources => Method::ResourcesList,
            ListKind::Templates => Method::ResourcesTemplatesList,
        }
    }

    /// The result member holding the items.
    pub fn items_key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The member that identifies an item: what collides between upstreams.
    fn identity_key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => "name",
            ListKind::Resources => "uri",
            ListKind::Templates => "uriTemplate",
        }
    }

    /// Whether items are addressed by a `name` that federation may prefix.
    fn is_named(self) -> bool {
        matches!(self, ListKind::Tools | ListKind::Prompts)
    }
}

/// What a list's answers say about reusing them: the shortest `ttlMs` of
/// its pages (0 when one says nothing), and whether any is `private`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// How long the whole list may be reused.
    pub ttl_ms: u64,
    /// Whether it may only be reused for the one who asked.
    pub private: bool,
}

impl Reuse {
    /// For a list nothing has been said about yet (combine pages into it).
    pub const UNSAID: Reuse = Reuse {
        ttl_ms: u64::MAX,
        private: false,
    };

    /// For a list that may not be reused (Tether's own, which a change of
    /// its configuration can change at any time).
    pub const NONE: Reuse = Reuse {
        ttl_ms: 0,
        private: false,
    };

    /// What one page's result says.
    pub fn of(result: &RawObject) -> Reuse {
        Reuse {
            ttl_ms: result
                .get("ttlMs")
                .and_then(|t| t.get().parse().ok())
                .unwrap_or(0),
            private: jsonrpc::str_member(result, "cacheScope").as_deref() != Some("public"),
        }
    }

    /// Both lists together.
    pub fn and(self, other: Reuse) -> Reuse {
        Reuse {
            ttl_ms: self.ttl_ms.min(other.ttl_ms),
            private: self.private || other.private,
        }
    }

    /// The same list, private (filtered for its caller).
    pub fn for_caller(self) -> Reuse {
        Reuse {
            private: true,
            ..self
        }
    }
}

/// One upstream's list: its items, every page, and what the pages say
/// about reusing them.
pub struct Listing {
    /// The items.
    pub items: Vec<RawObject>,
    /// How the list may be reused.
    pub reuse: Reuse,
}

/// Where a federated name or URI leads.
#[derive(Debug, Default, Clone)]
pub struct Routes {
    /// Exposed tool name → (upstream, original name).
    pub tools: HashMap<String, (Arc<str>, String)>,
    /// Exposed prompt name → (upstream, original name).
    pub prompts: HashMap<String, (Arc<str>, String)>,
    /// Resource URI → upstream.
    pub resources: HashMap<String, Arc<str>>,
    /// URI-template literal prefix → upstream.
    pub templates: Vec<(String, Arc<str>)>,
}

impl Routes {
    /// Looks up a tool or prompt by its exposed name.
    pub fn named(&self, kind: ListKind, name: &str) -> Option<(Arc<str>, String)> {
        let table = if kind == ListKind::Tools {
            &self.tools
        } else {
            &self.prompts
        };
        table.get(name).cloned()
    }

    /// The upstream serving a resource URI: exact match first, then the
    /// longest matching template prefix.
    pub fn resource(&self, uri: &str) -> Option<Arc<str>> {
        if let Some(up) = self.resources.get(uri) {
            return Some(up.clone());
        }
        self.templates
            .iter()
            .filter(|(prefix, _)| !prefix.is_empty() && uri.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, up)| up.clone())
    }
}

/// One item of a merged list.
pub struct Entry {
    /// The upstream it came from.
    pub upstream: Arc<str>,
    /// What identifies it on that upstream (a tool's or prompt's name as
    /// the upstream shows it, a URI, a URI template).
    pub id: String,
    /// The item as the merged list shows it.
    pub item: RawObject,
}

/// The outcome of merging one list kind.
pub struct Merged {
    /// Items in upstream config order, names mapped.
    pub items: Vec<Entry>,
    /// Names exposed by more than one upstream (reported, never silently dropped).
    pub collisions: Vec<String>,
}

/// Merges per-upstream lists (in config order) and records routes for `kind`.
pub fn merge(
    kind: ListKind,
    naming: Naming,
    separator: &str,
    lists: Vec<(Arc<str>, Vec<RawObject>)>,
    routes: &mut Routes,
) -> Merged {
    let key = kind.identity_key();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, items) in &lists {
        for id in items
            .iter()
            .filter_map(|item| jsonrpc::str_member(item, key))
        {
            *counts.entry(id).or_default() += 1;
        }
    }
    // Prefixed names never collide; URIs are never rewritten, so theirs always can.
    let prefixes_all = kind.is_named() && naming == Naming::Prefix;
    let mut collisions: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 1 && !prefixes_all)
        .map(|(k, _)| k.clone())
        .collect();
    collisions.sort();
    match kind {
        ListKind::Tools => routes.tools.clear(),
        ListKind::Prompts => routes.prompts.clear(),
        ListKind::Resources => routes.resources.clear(),
        ListKind::Templates => routes.templates.clear(),
    }
    let mut out = Vec::new();
    for (upstream, items) in lists {
        for mut item in items {
            let Some(id) = jsonrpc::str_member(&item, key) else {
                continue;
            };
            // On a collision that naming does not resolve, the first upstream
            // (config order) keeps the item; the others' copies are left out.
            let original = id.clone();
            let kept = match kind {
                ListKind::Tools | ListKind::Prompts => {
                    let prefixed = match naming {
                        Naming::Prefix => true,
                        Naming::None => false,
                        Naming::OnCollision => counts.get(&id).is_some_and(|n| *n > 1),
                    };
                    let exposed = if prefixed {
                        format!("{upstream}{separator}{id}")
                    } else {
                        id.clone()
                    };
                    let table = if kind == ListKind::Tools {
                        &mut routes.tools
                    } else {
                        &mut routes.prompts
                    };
                    let fresh = !table.contains_key(&exposed);
                    if fresh {
                        table.insert(exposed.clone(), (upstream.clone(), id));
                        item.insert("name".into(), jsonrpc::to_raw(&exposed));
                    }
                    fresh
                }
                ListKind::Resources => {
                    let fresh = !routes.resources.contains_key(&id);
                    if fresh {
                        routes.resources.insert(id, upstream.clone());
                    }
                    fresh
                }
                ListKind::Templates => {
                    let prefix = id.split('{').next().unwrap_or_default().to_owned();
                    let fresh = !routes.templates.iter().any(|(p, _)| *p == prefix);
                    if fresh {
                        routes.templates.push((prefix, upstream.clone()));
                    }
                    fresh
                }
            };
            if kept {
                out.push(Entry {
                    upstream: upstream.clone(),
                    id: original,
                    item,
                });
            }
        }
    }
    Merged {
        items: out,
        collisions,
    }
}

/// Splits `<upstream><sep><name>` when `<upstream>` is one of `known`.
pub fn split_prefixed<'a>(
    exposed: &'a str,
    separator: &str,
    known: impl Fn(&str) -> bool,
) -> Option<(&'a str, &'a str)> {
    let (up, rest) = exposed.split_once(separator)?;
    (known(up) && !rest.is_empty()).then_some((up, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(names: &[&str]) -> Vec<RawObject> {
        names
            .iter()
            .map(|n| {
                serde_json::from_str(&format!(
                    r#"{{"name":"{n}","inputSchema":{{"type":"object"}},"x-extra":1.50}}"#
                ))
                .unwrap()
            })
            .collect()
    }

    fn names(m: &Merged) -> Vec<String> {
        m.items
            .iter()
            .map(|e| jsonrpc::str_member(&e.item, "name").unwrap())
            .collect()
    }

    #[test]
    fn prefixes_every_name_and_keeps_unknown_fields() {
        let mut routes = Routes::default();
        let lists = vec![
            ("a".into(), items(&["echo"])),
            ("b".into(), items(&["echo", "x"])),
        ];
        let m = merge(ListKind::Tools, Naming::Prefix, "__", lists, &mut routes);
        assert_eq!(names(&m), ["a__echo", "b__echo", "b__x"]);
        assert!(m.collisions.is_empty());
        assert_eq!(
            routes.named(ListKind::Tools, "b__echo"),
            Some(("b".into(), "echo".into()))
        );
        assert_eq!(m.items[0].item.get("x-extra").unwrap().get(), "1.50");
        assert_eq!(m.items[1].id, "echo", "the name on its upstream");
    }

    #[test]
    fn none_keeps_first_and_reports_collision() {
        let mut routes = Routes::default();
        let lists = vec![
            ("a".into(), items(&["echo"])),
            ("b".into(), items(&["echo", "x"])),
        ];
        let m = merge(ListKind::Tools, Naming::None, "__", lists, &mut routes);
        assert_eq!(names(&m), ["echo", "x"]);
        assert_eq!(m.collisions, ["echo"]);
        assert_eq!(
            routes.named(ListKind::Tools, "echo"),
            Some(("a".into(), "echo".into()))
        );
    }

    #[test]
    fn on_collision_prefixes_only_shared_names() {
        let mut routes = Routes::default();
        let lists = vec![
            ("a".into(), items(&["echo"])),
            ("b".into(), items(&["echo", "x"])),
        ];
        let m = merge(
            ListKind::Tools,
            Naming::OnCollision,
            "__",
            lists,
            &mut routes,
        );
        assert_eq!(names(&m), ["a__echo", "b__echo", "x"]);
        assert_eq!(m.collisions, ["echo"]);
        assert_eq!(
            routes.named(ListKind::Tools, "x"),
            Some(("b".into(), "x".into()))
        );
    }

    #[test]
    fn routes_resources_by_uri_and_template() {
        let mut routes = Routes::default();
        let res: Vec<RawObject> =
            vec![serde_json::from_str(r#"{"uri":"demo://readme","name":"r"}"#).unwrap()];
        merge(
            ListKind::Resources,
            Naming::Prefix,
            "__",
            vec![("a".into(), res)],
            &mut routes,
        );
        let tpl: Vec<RawObject> = vec![
            serde_json::from_str(r#"{"uriTemplate":"demo://items/{id}","name":"t"}"#).unwrap(),
        ];
        merge(
            ListKind::Templates,
            Naming::Prefix,
            "__",
            vec![("b".into(), tpl)],
            &mut routes,
        );
        assert_eq!(routes.resource("demo://readme").as_deref(), Some("a"));
        assert_eq!(routes.resource("demo://items/4").as_deref(), Some("b"));
        assert_eq!(routes.resource("other://x"), None);
    }

    #[test]
    fn shared_resource_uris_are_reported_and_routed_to_the_first() {
        let mut routes = Routes::default();
        let res = |n: &str| -> Vec<RawObject> {
            vec![
                serde_json::from_str(&format!(r#"{{"uri":"demo://readme","name":"{n}"}}"#))
                    .unwrap(),
            ]
        };
        let m = merge(
            ListKind::Resources,
            Naming::Prefix,
            "__",
            vec![("a".into(), res("x")), ("b".into(), res("y"))],
            &mut routes,
        );
        assert_eq!(m.items.len(), 1);
        assert_eq!(m.collisions, ["demo://readme"]);
        assert_eq!(routes.resource("demo://readme").as_deref(), Some("a"));
    }

    #[test]
    fn splits_known_prefixes_only() {
        let known = |u: &str| u == "a";
        assert_eq!(split_prefixed("a__echo", "__", known), Some(("a", "echo")));
        assert_eq!(split_prefixed("z__echo", "__", known), None);
        assert_eq!(split_prefixed("a__", "__", known), None);
        assert_eq!(split_prefixed("echo", "__", known), None);
    }
}
