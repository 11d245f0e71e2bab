//! The federated catalogue behind `/mcp`: every upstream's lists fetched at
//! once (all pages), its tools shaped as the upstream's shapes say, merged
//! under the naming policy, filtered by the caller's policy (on the real
//! tools) and, for a virtual server, by its selection and shapes; exposed
//! names and URIs routed back to the upstream that serves them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use tether_wire::jsonrpc::{self, Method, RawObject, Request, code};
use tether_wire::protocol::Era;

use super::catalog::{self, Entry, ListKind, Reuse, Routes};
use super::connector::Connector;
use super::context::RequestContext;
use super::outcome::{Outcome, answer, error};
use crate::config::{FederationConfig, Naming};
use crate::metrics::Metrics;
use crate::shaping::Shaping;
use crate::upstream::{Upstream, UpstreamError, UpstreamSet};
use crate::virtual_servers::VirtualServer;

/// No upstream answered a list request (each one's failure).
#[derive(Debug)]
pub struct NoListAnswered {
    method: Method,
    failures: Vec<(Arc<str>, UpstreamError)>,
}

impl std::fmt::Display for NoListAnswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no upstream could answer {}: ", self.method)?;
        for (i, (upstream, e)) in self.failures.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{upstream}: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NoListAnswered {}

/// The federated catalogue (see the module documentation).
pub struct Federation {
    upstreams: Arc<UpstreamSet>,
    connector: Arc<Connector>,
    config: FederationConfig,
    routes: RwLock<Routes>,
    metrics: Arc<Metrics>,
}

impl Federation {
    /// The catalogue over `upstreams` with `config`'s naming; lists are
    /// fetched on the sessions `connector` hands out; collisions are counted
    /// in `metrics`.
    pub fn new(
        upstreams: Arc<UpstreamSet>,
        connector: Arc<Connector>,
        config: FederationConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Federation {
            upstreams,
            connector,
            config,
            routes: RwLock::default(),
            metrics,
        }
    }

    /// Answers a list request on `/mcp` with every upstream's items merged,
    /// or on a virtual server's endpoint with its selection of them.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        kind: ListKind,
        request: &Request,
        server: Option<&VirtualServer>,
    ) -> Outcome {
        match self.catalogue(ctx, kind, server).await {
            Ok((items, reuse)) => list_answer(ctx, kind, request, items, reuse),
            Err(why) => error(request, code::INTERNAL_ERROR, why.to_string()),
        }
    }

    /// The items of `kind` the caller reaches, as the endpoint (`/mcp`, or
    /// the virtual server `server`) shows them, and how long the list may be
    /// reused.
    pub async fn catalogue(
        &self,
        ctx: &RequestContext,
        kind: ListKind,
        server: Option<&VirtualServer>,
    ) -> Result<(Vec<RawObject>, Reuse), NoListAnswered> {
        let (entries, mut reuse) = self.collect(ctx, kind).await?;
        // What the caller may not reach is not listed (then the list is
        // the caller's own): a tool by the real tool behind it.
        let access = ctx.access();
        if access.restricts() {
            reuse = reuse.for_caller();
        }
        let upstreams = self.upstreams.snapshot();
        let sep = &self.config.separator;
        let reachable = |entry: &Entry| match kind {
            ListKind::Tools => upstreams.get(&entry.upstream).is_some_and(|up| {
                let serving = up.serving();
                let real = serving.shaping.name_behind(&entry.id).unwrap_or(&entry.id);
                access.reaches_tool(&entry.upstream, real, sep)
            }),
            _ => access.reaches_upstream(&entry.upstream),
        };
        let shown = entries.into_iter().filter(reachable).map(|e| e.item);
        let items = match server {
            None => shown.collect(),
            Some(server) => {
                let selected = select(server, kind, shown);
                match kind {
                    ListKind::Tools => self.shaped(&server.shaping, &server.config.name, selected),
                    _ => selected,
                }
            }
        };
        Ok((items, reuse))
    }

    /// `tools/list` on `/u/<upstream>/mcp` for a caller who may use only some
    /// of its tools, or when the upstream shapes them: every page, filtered
    /// and shaped, as one answer.
    pub async fn shown_tools(
        &self,
        ctx: &RequestContext,
        upstream: &Arc<Upstream>,
        request: &Request,
    ) -> Outcome {
        match self.shown_catalogue(ctx, upstream).await {
            Ok((items, reuse)) => list_answer(ctx, ListKind::Tools, request, items, reuse),
            Err(why) => error(request, code::INTERNAL_ERROR, why),
        }
    }

    /// The tools of `upstream` the caller reaches, as `/u/<upstream>/mcp`
    /// shows them (shaped), and how long the list may be reused.
    pub async fn shown_catalogue(
        &self,
        ctx: &RequestContext,
        upstream: &Arc<Upstream>,
    ) -> Result<(Vec<RawObject>, Reuse), String> {
        let listing = (self.connector)
            .list_all(ctx, upstream, ListKind::Tools)
            .await
            .map_err(|e| format!("upstream {}: {e}", upstream.name))?;
        let access = ctx.access();
        let sep = &self.config.separator;
        let reached: Vec<RawObject> = listing
            .items
            .into_iter()
            .filter(|item| {
                let name = jsonrpc::str_member(item, "name").unwrap_or_default();
                access.reaches_tool(&upstream.name, &name, sep)
            })
            .collect();
        let items = self.shaped(&upstream.serving().shaping, &upstream.name, reached);
        let reuse = if access.restricts() {
            listing.reuse.for_caller()
        } else {
            listing.reuse
        };
        Ok((items, reuse))
    }

    /// `tools` as `shaping` (the upstream's or virtual server's `whose`)
    /// shows them. A tool left out because an alias took its name is a
    /// collision: counted and logged.
    fn shaped(&self, shaping: &Shaping, whose: &str, tools: Vec<RawObject>) -> Vec<RawObject> {
        let shown = shaping.show_all(tools);
        if !shown.shadowed.is_empty() {
            self.metrics
                .catalog_collisions
                .fetch_add(shown.shadowed.len() as u64, Ordering::Relaxed);
            tracing::warn!(names = ?shown.shadowed, shapes = whose, "an alias takes the name of another tool, which is not shown");
        }
        shown.items
    }

    /// The separator between an upstream's name and an item's.
    pub fn separator(&self) -> &str {
        &self.config.separator
    }

    /// Lists without answering anyone: refreshes the routing tables.
    async fn refresh(&self, ctx: &RequestContext, kind: ListKind) {
        if let Err(why) = self.collect(ctx, kind).await {
            tracing::debug!(%why, "catalogue refresh failed");
        }
    }

    /// Lists `kind` on every upstream, merges the lists under the naming
    /// policy and updates the routing tables; how long the merged list may
    /// be reused (the shortest of its parts; not at all when an upstream was
    /// left out). Upstreams that fail are left out (and logged); it is an
    /// error only when every upstream failed.
    async fn collect(
        &self,
        ctx: &RequestContext,
        kind: ListKind,
    ) -> Result<(Vec<Entry>, Reuse), NoListAnswered> {
        let upstreams = self.upstreams.snapshot();
        // An unhealthy upstream is left out at once, not waited for; one the
        // caller may not reach is not even contacted on its behalf.
        let access = ctx.access();
        let live: Vec<_> = upstreams
            .iter()
            .filter(|u| u.is_healthy() && access.reaches_upstream(&u.name))
            .collect();
        let lists = futures_util::future::join_all(
            live.iter().map(|u| self.connector.list_all(ctx, u, kind)),
        )
        .await;
        let mut ok = Vec::new();
        let mut failures = Vec::new();
        let mut reuse = Reuse::UNSAID;
        for (upstream, result) in live.iter().zip(lists) {
            match result {
                Ok(listing) => {
                    reuse = reuse.and(listing.reuse);
                    let items = match kind {
                        // As the upstream's shapes show them.
                        ListKind::Tools => {
                            let shaping = &upstream.serving().shaping;
                            self.shaped(shaping, &upstream.name, listing.items)
                        }
                        _ => listing.items,
                    };
                    ok.push((upstream.name.clone(), items));
                }
                Err(e) => {
                    tracing::warn!(upstream = %upstream.name, method = %kind.method(), error = %e, "upstream left out of the federated list");
                    failures.push((upstream.name.clone(), e));
                }
            }
        }
        if ok.is_empty() && !failures.is_empty() {
            return Err(NoListAnswered {
                method: kind.method(),
                failures,
            });
        }
        let reachable = upstreams
            .iter()
            .filter(|u| access.reaches_upstream(&u.name))
            .count();
        if !failures.is_empty() || live.len() < reachable || ok.is_empty() {
            // Incomplete (or empty): asked again next time.
            reuse.ttl_ms = 0;
        }
        let merged = {
            let mut routes = crate::sync::write(&self.routes);
            catalog::merge(
                kind,
                self.config.naming,
                &self.config.separator,
                ok,
                &mut routes,
            )
        };
        if !merged.collisions.is_empty() {
            self.metrics
                .catalog_collisions
                .fetch_add(merged.collisions.len() as u64, Ordering::Relaxed);
            tracing::warn!(names = ?merged.collisions, naming = ?self.config.naming, "several upstreams expose the same {} names", kind.items_key());
        }
        Ok((merged.items, reuse))
    }

    /// Finds the upstream and original name behind an exposed tool/prompt name,
    /// listing the catalogue once when the name is not known yet.
    pub async fn resolve_named(
        &self,
        ctx: &RequestContext,
        kind: ListKind,
        exposed: &str,
    ) -> Option<(Arc<Upstream>, String)> {
        let sep = &self.config.separator;
        let upstreams = self.upstreams.snapshot();
        if self.config.naming == Naming::Prefix {
            let (up, name) = catalog::split_prefixed(exposed, sep, |u| upstreams.contains(u))?;
            return Some((upstreams.get(up)?.clone(), name.to_owned()));
        }
        let cached = crate::sync::read(&self.routes).named(kind, exposed);
        let found = match cached {
            Some(hit) => Some(hit),
            None => {
                self.refresh(ctx, kind).await;
                crate::sync::read(&self.routes).named(kind, exposed)
            }
        };
        let (up, name) = found.or_else(|| {
            let (up, name) = catalog::split_prefixed(exposed, sep, |u| upstreams.contains(u))?;
            Some((up.into(), name.to_owned()))
        })?;
        Some((upstreams.get(&up)?.clone(), name))
    }

    /// Finds the upstream serving `uri`, listing resources and templates once if needed.
    pub async fn resolve_resource(&self, ctx: &RequestContext, uri: &str) -> Option<Arc<Upstream>> {
        let uris = [uri.to_owned()];
        self.resolve_resources(ctx, &uris).await.pop().flatten()
    }

    /// The upstream serving each of `uris`, listing resources and templates
    /// at most once for all of them.
    pub async fn resolve_resources(
        &self,
        ctx: &RequestContext,
        uris: &[String],
    ) -> Vec<Option<Arc<Upstream>>> {
        let upstreams = self.upstreams.snapshot();
        if upstreams.len() == 1 {
            return vec![upstreams.iter().next().cloned(); uris.len()];
        }
        let lookup = || {
            let routes = crate::sync::read(&self.routes);
            uris.iter().map(|u| routes.resource(u)).collect::<Vec<_>>()
        };
        let mut found = lookup();
        if found.iter().any(Option::is_none) {
            self.refresh(ctx, ListKind::Resources).await;
            self.refresh(ctx, ListKind::Templates).await;
            found = lookup();
        }
        found
            .into_iter()
            .map(|up| upstreams.get(&up?).cloned())
            .collect()
    }
}

/// The items of a list `server` exposes (its tools before its shapes).
fn select(
    server: &VirtualServer,
    kind: ListKind,
    items: impl Iterator<Item = RawObject>,
) -> Vec<RawObject> {
    let id = |item: &RawObject, key: &str| jsonrpc::str_member(item, key).unwrap_or_default();
    match kind {
        ListKind::Tools => items
            .filter(|i| server.selects_tool(&id(i, "name")))
            .collect(),
        ListKind::Prompts => items
            .filter(|i| server.selects_prompt(&id(i, "name")))
            .collect(),
        ListKind::Resources => items
            .filter(|i| server.selects_resource(&id(i, "uri")))
            .collect(),
        ListKind::Templates => (items)
            .filter(|i| server.selects_resource(&id(i, "uriTemplate")))
            .collect(),
    }
}

/// The answer to a list request: `items`, with the modern era's result fields.
pub(super) fn list_answer(
    ctx: &RequestContext,
    kind: ListKind,
    request: &Request,
    items: Vec<RawObject>,
    reuse: Reuse,
) -> Outcome {
    let mut result = RawObject::new();
    result.insert(kind.items_key().into(), jsonrpc::to_raw(&items));
    if ctx.era == Era::Modern {
        let scope = if reuse.private { "private" } else { "public" };
        result.insert("resultType".into(), jsonrpc::to_raw("complete"));
        result.insert("ttlMs".into(), jsonrpc::to_raw(&reuse.ttl_ms));
        result.insert("cacheScope".into(), jsonrpc::to_raw(scope));
    }
    answer(request, &jsonrpc::to_raw(&result))
}
