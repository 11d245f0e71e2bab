//! Gateway-side caching of upstream results, as far as the upstream allows
//! (2026-07-28): a list (`tools`, `prompts`, `resources`, templates) or
//! `resources/read` result that carries `ttlMs` > 0 is kept that long.
//! `cacheScope: "public"` results are served to every caller; `private`
//! ones only to the principal they were fetched for (policies filter what
//! each caller sees after the cache, so one entry serves every view). A
//! list-changed notification from the upstream drops its lists of that
//! kind, a `resources/updated` the reads of that URI (and an answer
//! fetched while such a notification arrived is not kept). A hit reports
//! the time left in `ttlMs`. Without authentication every caller is the
//! same principal, so `private` results are then not kept at all. Bounded
//! in entries and bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, Message, Method, RawObject};

use crate::auth::ANONYMOUS;
use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::sync::lock;

/// What a result is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    upstream: String,
    method: &'static str,
    /// The list cursor, or the URI read.
    argument: String,
    /// The principal a `private` result belongs to; `None`: public.
    principal: Option<String>,
}

struct Entry {
    result: Arc<RawValue>,
    expires: Instant,
}

/// The cache (see the module documentation).
pub struct ResultCache {
    config: CacheConfig,
    entries: Mutex<HashMap<Key, Entry>>,
    bytes: AtomicU64,
    /// Counts invalidations: an answer fetched across one is not kept.
    generation: AtomicU64,
    /// Hits and misses are counted here.
    metrics: Arc<Metrics>,
}

impl ResultCache {
    /// An empty cache with `config`'s switch and bounds, counting hits and
    /// misses in `metrics`.
    pub fn new(config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        ResultCache {
            config,
            entries: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    /// The invalidation count, read before asking the upstream and handed
    /// to [`ResultCache::put`] with its answer.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `method`'s results are cached at all.
    pub fn covers(&self, method: &Method) -> bool {
        self.config.enabled && kind(method).is_some()
    }

    /// A cached result for `method` with `params` on `upstream`, for
    /// `principal`, with `ttlMs` set to the time it has left.
    pub fn get(
        &self,
        upstream: &str,
        method: &Method,
        params: Option<&RawValue>,
        principal: &str,
    ) -> Option<Box<RawValue>> {
        let method_key = kind(method).filter(|_| self.config.enabled)?;
        let argument = argument(method, params)?;
        let mut key = Key {
            upstream: upstream.to_owned(),
            method: method_key,
            argument,
            principal: Some(principal.to_owned()),
        };
        let now = Instant::now();
        let found = {
            let entries = lock(&self.entries);
            let fresh = |k: &Key| entries.get(k).filter(|e| e.expires > now);
            let hit = fresh(&key).or_else(|| {
                key.principal = None;
                fresh(&key)
            });
            hit.map(|e| (e.result.clone(), e.expires - now))
        };
        let Some((result, left)) = found else {
            self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
        with_ttl(&result, left).or_else(|| RawValue::from_string(result.get().to_owned()).ok())
    }

    /// Keeps the result of an upstream's JSON-RPC `answer` to `method` with
    /// `params`, fetched for `principal` since [`ResultCache::generation`]
    /// was `since`, if it says it may be reused.
    pub fn put(
        &self,
        upstream: &str,
        method: &Method,
        params: Option<&RawValue>,
        (principal, since): (&str, u64),
        answer: &[u8],
    ) {
        let Some(method_key) = kind(method).filter(|_| self.config.enabled) else {
            return;
        };
        let Some(argument) = argument(method, params) else {
            return;
        };
        let Some(result) = Message::parse(answer).ok().and_then(|m| m.result) else {
            return;
        };
        let Ok(fields) = serde_json::from_str::<RawObject>(result.get()) else {
            return;
        };
        // Only a complete answer is reused (not one asking for input).
        if jsonrpc::str_member(&fields, "resultType").is_some_and(|t| t != "complete") {
            return;
        }
        let ttl = fields
            .get("ttlMs")
            .and_then(|t| t.get().parse::<u64>().ok())
            .unwrap_or(0);
        let size = result.get().len() as u64;
        if ttl == 0 || size > self.config.max_bytes / 4 {
            return;
        }
        let private = jsonrpc::str_member(&fields, "cacheScope").as_deref() != Some("public");
        if private && principal == ANONYMOUS {
            return;
        }
        let key = Key {
            upstream: upstream.to_owned(),
            method: method_key,
            argument,
            principal: private.then(|| principal.to_owned()),
        };
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if self.generation.load(Ordering::Acquire) != since {
            return;
        }
        if let Some(old) = entries.remove(&key) {
            self.bytes
                .fetch_sub(old.result.get().len() as u64, Ordering::Relaxed);
        }
        while entries.len() >= self.config.max_entries
            || self.bytes.load(Ordering::Relaxed) + size > self.config.max_bytes
        {
            // Expired entries first, else the one expiring soonest.
            let victim = entries
                .iter()
                .min_by_key(|(_, e)| {
                    if e.expires <= now {
                        None
                    } else {
                        Some(e.expires)
                    }
                })
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                return;
            };
            if let Some(gone) = entries.remove(&victim) {
                self.bytes
                    .fetch_sub(gone.result.get().len() as u64, Ordering::Relaxed);
            }
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        entries.insert(
            key,
            Entry {
                result: Arc::from(result),
                expires: now + Duration::from_millis(ttl),
            },
        );
    }

    /// Drops what an upstream's notification (`method`, naming `uri` for
    /// `resources/updated`) makes stale.
    pub fn invalidate(&self, upstream: &str, method: &Method, uri: Option<&str>) {
        let stale: &[&str] = match method {
            Method::ToolsListChanged => &["tools/list"],
            Method::PromptsListChanged => &["prompts/list"],
            Method::ResourcesListChanged => &["resources/list", "resources/templates/list"],
            Method::ResourceUpdated => &["resources/read"],
            _ => return,
        };
        let mut entries = lock(&self.entries);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|k, e| {
            let keep = k.upstream != upstream
                || !stale.contains(&k.method)
                || (*method == Method::ResourceUpdated && Some(k.argument.as_str()) != uri);
            if !keep {
                self.bytes
                    .fetch_sub(e.result.get().len() as u64, Ordering::Relaxed);
            }
            keep
        });
    }

    /// Drops what an upstream notification in `message` makes stale.
    pub fn invalidate_by(&self, upstream: &str, message: &Message) {
        let Some(method) = &message.method else {
            return;
        };
        if !matches!(
            method,
            Method::ToolsListChanged
                | Method::PromptsListChanged
                | Method::ResourcesListChanged
                | Method::ResourceUpdated
        ) {
            return;
        }
        let uri = (*method == Method::ResourceUpdated)
            .then(|| {
                message
                    .params
                    .as_deref()
                    .and_then(|p| tether_wire::fields::str_field(p.get(), "uri"))
            })
            .flatten();
        self.invalidate(upstream, method, uri.as_deref());
    }
}

/// The methods whose results are cached, by name.
fn kind(method: &Method) -> Option<&'static str> {
    Some(match method {
        Method::ToolsList => "tools/list",
        Method::PromptsList => "prompts/list",
        Method::ResourcesList => "resources/list",
        Method::ResourcesTemplatesList => "resources/templates/list",
        Method::ResourcesRead => "resources/read",
        _ => return None,
    })
}

/// What distinguishes one cacheable request from another of its method:
/// the cursor of a list page, the URI read. `None` when a read names no URI.
fn argument(method: &Method, params: Option<&RawValue>) -> Option<String> {
    let text = params.map(RawValue::get);
    let member = |key| text.and_then(|t| tether_wire::fields::str_field(t, key));
    match method {
        Method::ResourcesRead => member("uri"),
        _ => Some(member("cursor").unwrap_or_default()),
    }
}

/// `result` with `ttlMs` set to what is `left`.
fn with_ttl(result: &RawValue, left: Duration) -> Option<Box<RawValue>> {
    let mut fields: RawObject = serde_json::from_str(result.get()).ok()?;
    let ms = left.as_millis().max(1) as u64;
    fields.insert("ttlMs".into(), jsonrpc::to_raw(&ms));
    Some(jsonrpc::to_raw(&fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ResultCache {
        with(CacheConfig::default())
    }

    fn with(config: CacheConfig) -> ResultCache {
        ResultCache::new(config, Arc::default())
    }

    fn answer(result: &str) -> Vec<u8> {
        format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#).into_bytes()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn public_results_serve_everyone_private_ones_their_principal() {
        let c = cache();
        let list = Method::ToolsList;
        c.put(
            "up",
            &list,
            None,
            ("ann", c.generation()),
            &answer(r#"{"tools":[],"ttlMs":60000,"cacheScope":"public"}"#),
        );
        let hit = c
            .get("up", &list, None, "bob")
            .expect("public: served to bob");
        let ttl: u64 = serde_json::from_str::<serde_json::Value>(hit.get()).unwrap()["ttlMs"]
            .as_u64()
            .unwrap();
        assert!(ttl > 0 && ttl <= 60000, "{ttl}");
        let read = Method::ResourcesRead;
        let p = raw(r#"{"uri":"a://1"}"#);
        c.put(
            "up",
            &read,
            Some(&p),
            ("ann", c.generation()),
            &answer(r#"{"contents":[],"ttlMs":60000,"cacheScope":"private"}"#),
        );
        assert!(c.get("up", &read, Some(&p), "ann").is_some());
        assert!(
            c.get("up", &read, Some(&p), "bob").is_none(),
            "private: never another principal"
        );
        assert!(
            c.get("other", &read, Some(&p), "ann").is_none(),
            "another upstream"
        );
        assert!(
            c.get("up", &read, Some(&raw(r#"{"uri":"a://2"}"#)), "ann")
                .is_none()
        );
        let counted = (&c.metrics.cache_hits, &c.metrics.cache_misses);
        assert_eq!(
            (
                counted.0.load(Ordering::Relaxed),
                counted.1.load(Ordering::Relaxed)
            ),
            (2, 3)
        );
    }

    #[test]
    fn nothing_without_a_ttl_and_nothing_once_it_passed() {
        let c = cache();
        let list = Method::PromptsList;
        c.put(
            "up",
            &list,
            None,
            ("p", c.generation()),
            &answer(r#"{"prompts":[],"ttlMs":0,"cacheScope":"public"}"#),
        );
        c.put(
            "up",
            &list,
            None,
            ("p", c.generation()),
            &answer(r#"{"prompts":[]}"#),
        );
        assert!(c.get("up", &list, None, "p").is_none());
        c.put(
            "up",
            &list,
            None,
            ("p", c.generation()),
            &answer(r#"{"prompts":[],"ttlMs":1,"cacheScope":"public"}"#),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get("up", &list, None, "p").is_none(), "expired");
        assert!(!c.covers(&Method::ToolsCall));
        let off = with(CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        });
        off.put(
            "up",
            &list,
            None,
            ("p", off.generation()),
            &answer(r#"{"prompts":[],"ttlMs":60000,"cacheScope":"public"}"#),
        );
        assert!(off.get("up", &list, None, "p").is_none(), "switched off");
    }

    #[test]
    fn notifications_drop_what_they_make_stale() {
        let c = cache();
        let long = r#"{"x":[],"ttlMs":60000,"cacheScope":"public"}"#;
        let (a, b) = (raw(r#"{"uri":"a://1"}"#), raw(r#"{"uri":"a://2"}"#));
        c.put(
            "up",
            &Method::ToolsList,
            None,
            ("p", c.generation()),
            &answer(long),
        );
        c.put(
            "up",
            &Method::PromptsList,
            None,
            ("p", c.generation()),
            &answer(long),
        );
        c.put(
            "up",
            &Method::ResourcesRead,
            Some(&a),
            ("p", c.generation()),
            &answer(long),
        );
        c.put(
            "up",
            &Method::ResourcesRead,
            Some(&b),
            ("p", c.generation()),
            &answer(long),
        );
        c.put(
            "other",
            &Method::ToolsList,
            None,
            ("p", c.generation()),
            &answer(long),
        );
        c.invalidate("up", &Method::ToolsListChanged, None);
        assert!(c.get("up", &Method::ToolsList, None, "p").is_none());
        assert!(c.get("up", &Method::PromptsList, None, "p").is_some());
        assert!(c.get("other", &Method::ToolsList, None, "p").is_some());
        c.invalidate("up", &Method::ResourceUpdated, Some("a://1"));
        assert!(c.get("up", &Method::ResourcesRead, Some(&a), "p").is_none());
        assert!(c.get("up", &Method::ResourcesRead, Some(&b), "p").is_some());
    }

    #[test]
    fn no_private_entry_without_a_principal_and_none_across_an_invalidation() {
        let c = cache();
        let list = Method::ToolsList;
        let body = answer(r#"{"tools":[],"ttlMs":60000,"cacheScope":"private"}"#);
        c.put("up", &list, None, (ANONYMOUS, c.generation()), &body);
        assert!(
            c.get("up", &list, None, ANONYMOUS).is_none(),
            "everyone is anonymous"
        );
        let before = c.generation();
        c.invalidate("up", &Method::ToolsListChanged, None);
        c.put("up", &list, None, ("ann", before), &body);
        assert!(
            c.get("up", &list, None, "ann").is_none(),
            "fetched across a change"
        );
    }

    #[test]
    fn bounded_in_entries() {
        let c = with(CacheConfig {
            max_entries: 2,
            ..CacheConfig::default()
        });
        for cursor in ["a", "b", "c"] {
            let p = raw(&format!(r#"{{"cursor":"{cursor}"}}"#));
            c.put(
                "up",
                &Method::ToolsList,
                Some(&p),
                ("p", c.generation()),
                &answer(r#"{"tools":[],"ttlMs":60000,"cacheScope":"public"}"#),
            );
        }
        assert_eq!(lock(&c.entries).len(), 2);
    }
}
