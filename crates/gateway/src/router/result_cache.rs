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
//! in entries and bytes [invariant: bounded].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, Message, Method, RawObject};

use super::catalog::Reuse;
use crate::auth::ANONYMOUS;
use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::sync::lock;

/// What a result is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    upstream: String,
    method: Method,
    /// The list cursor, or the URI read.
    argument: String,
    /// The principal a `private` result belongs to; `None`: public.
    principal: Option<String>,
}

struct Entry {
    result: Arc<RawValue>,
    expires: Instant,
}

/// The entries and the bytes their results take, under one lock.
#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    bytes: u64,
}

impl Entries {
    fn remove(&mut self, key: &Key) {
        if let Some(gone) = self.map.remove(key) {
            self.bytes -= gone.result.get().len() as u64;
        }
    }
}

/// The cache (see the module documentation).
pub struct ResultCache {
    config: CacheConfig,
    entries: Mutex<Entries>,
    /// Counts invalidations: an answer fetched across one is not kept.
    generation: AtomicU64,
    /// Hits and misses are counted here.
    metrics: Arc<Metrics>,
}

/// One cacheable request on its way to an upstream: answered from the
/// cache, or its answer kept when it comes.
pub struct Ask<'a> {
    cache: &'a ResultCache,
    upstream: &'a str,
    method: &'a Method,
    argument: String,
    principal: &'a str,
    /// The invalidation count when the request left.
    since: u64,
}

impl ResultCache {
    /// An empty cache with `config`'s switch and bounds, counting hits and
    /// misses in `metrics`.
    pub fn new(config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        ResultCache {
            config,
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    /// Whether `method`'s results are cached (the cache is on, and it is a
    /// list or `resources/read`).
    pub fn caches(&self, method: &Method) -> bool {
        self.config.enabled && cached(method)
    }

    /// `method` with `params` to `upstream` for `principal`, if its result
    /// may be cached (`None`: not a cached method, the cache is off, or a
    /// read names no URI).
    pub fn ask<'a>(
        &'a self,
        upstream: &'a str,
        method: &'a Method,
        params: Option<&RawValue>,
        principal: &'a str,
    ) -> Option<Ask<'a>> {
        if !self.caches(method) {
            return None;
        }
        Some(Ask {
            cache: self,
            upstream,
            method,
            argument: argument(method, params)?,
            principal,
            since: self.generation.load(Ordering::Acquire),
        })
    }

    /// Drops what an upstream's notification (`method`, naming `uri` for
    /// `resources/updated`) makes stale.
    pub fn invalidate(&self, upstream: &str, method: &Method, uri: Option<&str>) {
        let stale: &[Method] = match method {
            Method::ToolsListChanged => &[Method::ToolsList],
            Method::PromptsListChanged => &[Method::PromptsList],
            Method::ResourcesListChanged => {
                &[Method::ResourcesList, Method::ResourcesTemplatesList]
            }
            Method::ResourceUpdated => &[Method::ResourcesRead],
            _ => return,
        };
        let mut entries = lock(&self.entries);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let gone: Vec<Key> = entries
            .map
            .keys()
            .filter(|k| {
                k.upstream == upstream
                    && stale.contains(&k.method)
                    && (*method != Method::ResourceUpdated || Some(k.argument.as_str()) == uri)
            })
            .cloned()
            .collect();
        for key in &gone {
            entries.remove(key);
        }
    }

    /// Drops what an upstream notification in `message` makes stale.
    pub fn invalidate_by(&self, upstream: &str, message: &Message) {
        let Some(method) = &message.method else {
            return;
        };
        let uri = match method {
            Method::ResourceUpdated => message
                .params
                .as_deref()
                .and_then(|p| tether_wire::fields::str_field(p.get(), "uri")),
            _ => None,
        };
        self.invalidate(upstream, method, uri.as_deref());
    }
}

impl Ask<'_> {
    fn key(&self, principal: Option<&str>) -> Key {
        Key {
            upstream: self.upstream.to_owned(),
            method: self.method.clone(),
            argument: self.argument.clone(),
            principal: principal.map(str::to_owned),
        }
    }

    /// The cached result, with `ttlMs` set to the time it has left.
    pub fn cached(&self) -> Option<Box<RawValue>> {
        let now = Instant::now();
        let found = {
            let entries = lock(&self.cache.entries);
            let fresh = |k: Key| entries.map.get(&k).filter(|e| e.expires > now);
            fresh(self.key(Some(self.principal)))
                .or_else(|| fresh(self.key(None)))
                .map(|e| (e.result.clone(), e.expires - now))
        };
        let metrics = &self.cache.metrics;
        let Some((result, left)) = found else {
            metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
        with_ttl(&result, left).or_else(|| RawValue::from_string(result.get().to_owned()).ok())
    }

    /// Keeps the result of the upstream's JSON-RPC `answer`, if it says it
    /// may be reused and no invalidation came since the request left.
    pub fn keep(&self, answer: &[u8]) {
        let cache = self.cache;
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
        let reuse = Reuse::of(&fields);
        let size = result.get().len() as u64;
        if reuse.ttl_ms == 0 || size > cache.config.max_bytes / 4 {
            return;
        }
        if reuse.private && self.principal == ANONYMOUS {
            return;
        }
        let key = self.key(reuse.private.then_some(self.principal));
        let now = Instant::now();
        let mut entries = lock(&cache.entries);
        if cache.generation.load(Ordering::Acquire) != self.since {
            return;
        }
        entries.remove(&key);
        while entries.map.len() >= cache.config.max_entries
            || entries.bytes + size > cache.config.max_bytes
        {
            // Expired entries first, else the one expiring soonest.
            let victim = entries
                .map
                .iter()
                .min_by_key(|(_, e)| (e.expires > now).then_some(e.expires))
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                return;
            };
            entries.remove(&victim);
        }
        entries.bytes += size;
        let expires = now + Duration::from_millis(reuse.ttl_ms);
        let result = Arc::from(result);
        entries.map.insert(key, Entry { result, expires });
    }
}

/// Whether `method`'s results are cached: the lists and `resources/read`.
fn cached(method: &Method) -> bool {
    method.is_cacheable() && *method != Method::ServerDiscover
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

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    /// A request of `method` (params `params`, if any) to `up` by `who`.
    fn ask<'a>(
        c: &'a ResultCache,
        up: &'a str,
        method: &'a Method,
        params: &str,
        who: &'a str,
    ) -> Ask<'a> {
        let params = (!params.is_empty()).then(|| raw(params));
        c.ask(up, method, params.as_deref(), who)
            .expect("a cached method")
    }

    /// Asks, then keeps the answer `result`.
    fn put(c: &ResultCache, up: &str, method: &Method, params: &str, who: &str, result: &str) {
        let answer = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#);
        ask(c, up, method, params, who).keep(answer.as_bytes());
    }

    fn get(
        c: &ResultCache,
        up: &str,
        method: &Method,
        params: &str,
        who: &str,
    ) -> Option<Box<RawValue>> {
        ask(c, up, method, params, who).cached()
    }

    const PUBLIC: &str = r#"{"x":[],"ttlMs":60000,"cacheScope":"public"}"#;
    const PRIVATE: &str = r#"{"x":[],"ttlMs":60000,"cacheScope":"private"}"#;

    #[test]
    fn public_results_serve_everyone_private_ones_their_principal() {
        let c = cache();
        let (list, read) = (Method::ToolsList, Method::ResourcesRead);
        put(&c, "up", &list, "", "ann", PUBLIC);
        let hit = get(&c, "up", &list, "", "bob").expect("public: served to bob");
        let hit: serde_json::Value = serde_json::from_str(hit.get()).unwrap();
        let ttl = hit["ttlMs"].as_u64().unwrap();
        assert!(ttl > 0 && ttl <= 60000, "{ttl}");
        let a1 = r#"{"uri":"a://1"}"#;
        put(&c, "up", &read, a1, "ann", PRIVATE);
        assert!(get(&c, "up", &read, a1, "ann").is_some());
        assert!(
            get(&c, "up", &read, a1, "bob").is_none(),
            "private: never another principal"
        );
        assert!(
            get(&c, "other", &read, a1, "ann").is_none(),
            "another upstream"
        );
        assert!(get(&c, "up", &read, r#"{"uri":"a://2"}"#, "ann").is_none());
        let counted = (&c.metrics.cache_hits, &c.metrics.cache_misses);
        let counts = (
            counted.0.load(Ordering::Relaxed),
            counted.1.load(Ordering::Relaxed),
        );
        assert_eq!(counts, (2, 3));
    }

    #[test]
    fn nothing_without_a_ttl_and_nothing_once_it_passed() {
        let c = cache();
        let list = Method::PromptsList;
        put(
            &c,
            "up",
            &list,
            "",
            "p",
            r#"{"prompts":[],"ttlMs":0,"cacheScope":"public"}"#,
        );
        put(&c, "up", &list, "", "p", r#"{"prompts":[]}"#);
        assert!(get(&c, "up", &list, "", "p").is_none());
        put(
            &c,
            "up",
            &list,
            "",
            "p",
            r#"{"prompts":[],"ttlMs":1,"cacheScope":"public"}"#,
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(get(&c, "up", &list, "", "p").is_none(), "expired");
        assert!(c.ask("up", &Method::ToolsCall, None, "p").is_none());
        let off = with(CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        });
        assert!(off.ask("up", &list, None, "p").is_none(), "switched off");
    }

    #[test]
    fn notifications_drop_what_they_make_stale() {
        let c = cache();
        let (a, b) = (r#"{"uri":"a://1"}"#, r#"{"uri":"a://2"}"#);
        put(&c, "up", &Method::ToolsList, "", "p", PUBLIC);
        put(&c, "up", &Method::PromptsList, "", "p", PUBLIC);
        put(&c, "up", &Method::ResourcesRead, a, "p", PUBLIC);
        put(&c, "up", &Method::ResourcesRead, b, "p", PUBLIC);
        put(&c, "other", &Method::ToolsList, "", "p", PUBLIC);
        c.invalidate("up", &Method::ToolsListChanged, None);
        assert!(get(&c, "up", &Method::ToolsList, "", "p").is_none());
        assert!(get(&c, "up", &Method::PromptsList, "", "p").is_some());
        assert!(get(&c, "other", &Method::ToolsList, "", "p").is_some());
        c.invalidate("up", &Method::ResourceUpdated, Some("a://1"));
        assert!(get(&c, "up", &Method::ResourcesRead, a, "p").is_none());
        assert!(get(&c, "up", &Method::ResourcesRead, b, "p").is_some());
    }

    #[test]
    fn no_private_entry_without_a_principal_and_none_across_an_invalidation() {
        let c = cache();
        let list = Method::ToolsList;
        put(&c, "up", &list, "", ANONYMOUS, PRIVATE);
        assert!(
            get(&c, "up", &list, "", ANONYMOUS).is_none(),
            "everyone is anonymous"
        );
        let before = ask(&c, "up", &list, "", "ann");
        c.invalidate("up", &Method::ToolsListChanged, None);
        before.keep(format!(r#"{{"jsonrpc":"2.0","id":1,"result":{PRIVATE}}}"#).as_bytes());
        assert!(
            get(&c, "up", &list, "", "ann").is_none(),
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
            put(
                &c,
                "up",
                &Method::ToolsList,
                &format!(r#"{{"cursor":"{cursor}"}}"#),
                "p",
                PUBLIC,
            );
        }
        assert_eq!(lock(&c.entries).map.len(), 2);
    }
}
