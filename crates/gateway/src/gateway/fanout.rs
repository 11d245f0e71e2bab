//! Requests answered from every upstream at once: federated lists (all
//! pages, merged and renamed) and broadcast settings like `logging/setLevel`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::json;

use super::bridge::add_cache_fields;
use super::catalog::{self, ListKind};
use super::{Gateway, Outcome, answer, empty_answer, error};
use crate::session::ClientSession;
use crate::upstream::{Upstream, UpstreamError};
use tether_wire::jsonrpc::{self, Message, RawObject, code};
use tether_wire::protocol::Era;

/// Pages fetched per upstream list before giving up on a runaway cursor.
const MAX_PAGES: usize = 64;

impl Gateway {
    /// Answers a list request on `/mcp` with every upstream's items merged.
    pub(super) async fn fanout_list(
        &self,
        ctx: &Arc<ClientSession>,
        kind: ListKind,
        msg: &Message,
    ) -> Outcome {
        let items = match self.collect(ctx, kind).await {
            Ok(items) => items,
            Err(why) => return error(msg, code::INTERNAL_ERROR, why),
        };
        // What the caller may not reach is not listed.
        let access = ctx.access();
        let items: Vec<RawObject> = items
            .into_iter()
            .filter(|(upstream, item)| match kind {
                ListKind::Tools => access.reaches_tool(
                    upstream,
                    &jsonrpc::str_member(item, "name").unwrap_or_default(),
                ),
                _ => access.reaches_upstream(upstream),
            })
            .map(|(_, item)| item)
            .collect();
        Self::list_answer(ctx, kind, msg, items)
    }

    /// `tools/list` on `/u/<upstream>/mcp` for a caller who may use only some
    /// of its tools: every page, filtered, as one answer.
    pub(super) async fn single_tools_list(
        &self,
        ctx: &Arc<ClientSession>,
        upstream: &Arc<Upstream>,
        msg: &Message,
    ) -> Outcome {
        let items = match self.list_all(ctx, upstream, ListKind::Tools).await {
            Ok(items) => items,
            Err(e) => {
                return error(
                    msg,
                    code::INTERNAL_ERROR,
                    format!("upstream {}: {e}", upstream.name),
                );
            }
        };
        let access = ctx.access();
        let items: Vec<RawObject> = items
            .into_iter()
            .filter(|item| {
                access.reaches_tool(
                    &upstream.name,
                    &jsonrpc::str_member(item, "name").unwrap_or_default(),
                )
            })
            .collect();
        Self::list_answer(ctx, ListKind::Tools, msg, items)
    }

    fn list_answer(
        ctx: &ClientSession,
        kind: ListKind,
        msg: &Message,
        items: Vec<RawObject>,
    ) -> Outcome {
        let mut result = RawObject::new();
        result.insert(kind.items_key().into(), jsonrpc::to_raw(&items));
        if ctx.era == Era::Modern {
            result.insert("resultType".into(), jsonrpc::to_raw("complete"));
            add_cache_fields(&mut result);
        }
        answer(msg, &jsonrpc::to_raw(&result))
    }

    /// Lists without answering anyone: refreshes the routing tables.
    pub(super) async fn refresh(&self, ctx: &Arc<ClientSession>, kind: ListKind) {
        if let Err(why) = self.collect(ctx, kind).await {
            tracing::debug!(%why, "catalogue refresh failed");
        }
    }

    /// Lists `kind` on every upstream, merges the lists under the naming
    /// policy and updates the routing tables. Upstreams that fail are left out
    /// (and logged); it is an error only when every upstream failed.
    async fn collect(
        &self,
        ctx: &Arc<ClientSession>,
        kind: ListKind,
    ) -> Result<Vec<(Arc<str>, RawObject)>, String> {
        let upstreams = self.upstreams.snapshot();
        // An unhealthy upstream is left out at once, not waited for; one the
        // caller may not reach is not even contacted on its behalf.
        let access = ctx.access();
        let live: Vec<_> = upstreams
            .iter()
            .filter(|u| u.is_healthy() && access.reaches_upstream(&u.name))
            .collect();
        let lists =
            futures_util::future::join_all(live.iter().map(|u| self.list_all(ctx, u, kind))).await;
        let mut ok = Vec::new();
        let mut failures = Vec::new();
        for (upstream, result) in live.iter().zip(lists) {
            match result {
                Ok(items) => ok.push((upstream.name.clone(), items)),
                Err(e) => {
                    tracing::warn!(upstream = %upstream.name, method = kind.method(), error = %e, "upstream left out of the federated list");
                    failures.push(format!("{}: {e}", upstream.name));
                }
            }
        }
        if ok.is_empty() && !failures.is_empty() {
            return Err(format!(
                "no upstream could answer {}: {}",
                kind.method(),
                failures.join("; ")
            ));
        }
        let merged = {
            let mut routes = crate::sync::write(&self.routes);
            catalog::merge(
                kind,
                self.federation.naming,
                &self.federation.separator,
                ok,
                &mut routes,
            )
        };
        if !merged.collisions.is_empty() {
            self.metrics
                .catalog_collisions
                .fetch_add(merged.collisions.len() as u64, Ordering::Relaxed);
            tracing::warn!(names = ?merged.collisions, naming = ?self.federation.naming, "several upstreams expose the same {} names", kind.items_key());
        }
        Ok(merged.items)
    }

    /// Every page of one upstream's list. A JSON-RPC error (e.g. the upstream
    /// has no prompts) counts as an empty list; transport failures are errors.
    async fn list_all(
        &self,
        ctx: &Arc<ClientSession>,
        upstream: &Arc<Upstream>,
        kind: ListKind,
    ) -> Result<Vec<RawObject>, UpstreamError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let answer = self
                .call_with_retry(ctx, upstream, kind.method(), params)
                .await?;
            let Ok(msg) = Message::parse(&answer) else {
                return Err(UpstreamError::Protocol(
                    "list answer is not JSON-RPC".into(),
                ));
            };
            let Some(result) = msg.result else {
                return Ok(items);
            };
            let obj: RawObject = serde_json::from_str(result.get())
                .map_err(|_| UpstreamError::Protocol("list result is not an object".into()))?;
            if let Some(page) = obj.get(kind.items_key()) {
                let page: Vec<RawObject> = serde_json::from_str(page.get()).map_err(|_| {
                    UpstreamError::Protocol(format!(
                        "{} is not a list of objects",
                        kind.items_key()
                    ))
                })?;
                items.extend(page);
            }
            cursor = jsonrpc::str_member(&obj, "nextCursor");
            if cursor.is_none() {
                break;
            }
        }
        Ok(items)
    }

    /// A Tether-initiated request on the context's upstream session, retried
    /// once on a fresh session when the old one was lost.
    async fn call_with_retry(
        &self,
        ctx: &Arc<ClientSession>,
        upstream: &Arc<Upstream>,
        method: &str,
        params: serde_json::Value,
    ) -> Result<Bytes, UpstreamError> {
        let mut attempt = 0;
        loop {
            let session = self.upstream_session(ctx, upstream).await?;
            match session.call(method, params.clone()).await {
                Ok(b) => return Ok(b),
                Err(e) => {
                    if e.poisons_session() {
                        ctx.upstreams.evict(&session);
                    }
                    attempt += 1;
                    if attempt > 1 || !e.retryable(method) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// `logging/setLevel` on `/mcp`: remembered for upstream sessions opened
    /// later, sent to every legacy upstream session open now; answers `{}`.
    pub(super) async fn set_log_level(
        &self,
        ctx: &Arc<ClientSession>,
        msg: &Message,
        params: RawObject,
    ) -> Outcome {
        let Some(level) = jsonrpc::str_member(&params, "level") else {
            return error(msg, code::INVALID_PARAMS, "params.level is required");
        };
        if !ctx.is_ephemeral()
            && let Err(e) = self.store.set_log_level(&ctx.id, &level).await
        {
            tracing::warn!(error = %e, "log level not stored");
        }
        ctx.set_log_level(level);
        let method = "logging/setLevel";
        let value: serde_json::Value = serde_json::to_value(&params).unwrap_or_else(|_| json!({}));
        let sessions: Vec<_> = ctx
            .upstreams
            .sessions()
            .into_iter()
            .filter(|s| s.era == Era::Legacy)
            .collect();
        let calls = sessions.iter().map(|s| s.call(method, value.clone()));
        for (s, r) in sessions
            .iter()
            .zip(futures_util::future::join_all(calls).await)
        {
            if let Err(e) = r {
                tracing::debug!(upstream = %s.upstream.name, %method, error = %e, "broadcast request failed");
            }
        }
        empty_answer(msg)
    }
}
