//! `Mcp-Param-*` headers for calls whose client does not render them: a
//! legacy client's `tools/call` to a modern upstream, which refuses a call
//! without the headers its tool declares (`x-mcp-header`). They are
//! rendered from the tool's input schema as the upstream last listed it:
//! listed once when not known yet, and again when the upstream refuses the
//! headers (the tool changed since). The other way round, a modern
//! client's headers are checked here when its upstream is a legacy one,
//! which does not check them itself.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use tether_wire::jsonrpc::{self, RawObject, Request};
use tether_wire::param_headers::{self, Declaration};
use tether_wire::protocol::ERROR_HEADER_MISMATCH;

use super::catalog::ListKind;
use super::connector::Connector;
use super::context::RequestContext;
use crate::upstream::{ToolHeaders, Upstream};

/// A table this recent is not listed again on a refusal (a client sending
/// wrong headers cannot make Tether list an upstream's tools per call).
const RELIST_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The headers `tool`'s call carries to `upstream`; its arguments are read
/// from `params` (rewritten by the router) or else the request's own.
/// `relist`: list the upstream's tools again first. Empty when the tool
/// declares none or the tools cannot be listed (the upstream then says
/// what it misses).
pub async fn headers(
    connector: &Connector,
    ctx: &RequestContext,
    upstream: &Arc<Upstream>,
    call: (&str, &Request, Option<&RawObject>),
    relist: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let (tool, request, params) = call;
    let Some(declared) = declared(connector, ctx, upstream, tool, relist).await else {
        return Vec::new();
    };
    let Some(arguments) = arguments(request, params) else {
        return Vec::new();
    };
    param_headers::headers_for(&declared, &arguments)
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(&value).ok()?,
            ))
        })
        .collect()
}

/// Checks a modern client's `Mcp-Param-*` headers for a call to an upstream
/// that cannot (a legacy one): the error says what disagrees (-32020). A
/// disagreement with the tool as last listed is checked again against a
/// fresh listing (the client may know a newer schema).
pub async fn check(
    connector: &Connector,
    ctx: &RequestContext,
    upstream: &Arc<Upstream>,
    call: (&str, &Request, Option<&RawObject>),
) -> Result<(), String> {
    let (tool, request, params) = call;
    let Some(as_listed) = declared(connector, ctx, upstream, tool, false).await else {
        return Ok(());
    };
    let arguments = arguments(request, params).unwrap_or_default();
    let sent = &ctx.options.param_headers;
    let agrees = |declared: &[Declaration]| {
        param_headers::check(declared, &arguments, |name| {
            sent.iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.as_bytes())
        })
    };
    if agrees(&as_listed).is_ok() {
        return Ok(());
    }
    match declared(connector, ctx, upstream, tool, true).await {
        None => Ok(()),
        Some(fresh) => agrees(&fresh).map_err(|why| format!("Header mismatch: {why}")),
    }
}

/// `tool`'s declarations on `upstream`, listing its tools when they are not
/// known yet or `relist`.
async fn declared(
    connector: &Connector,
    ctx: &RequestContext,
    upstream: &Arc<Upstream>,
    tool: &str,
    relist: bool,
) -> Option<Arc<[Declaration]>> {
    let table = match upstream.tool_headers() {
        Some(table) if !relist || table.listed_within(RELIST_AFTER) => table,
        _ => {
            // A fresh listing, not the cached one the table came from.
            let tools_changed = &tether_wire::jsonrpc::Method::ToolsListChanged;
            connector
                .cache()
                .invalidate(&upstream.name, tools_changed, None);
            match connector.list_all(ctx, upstream, ListKind::Tools).await {
                Ok(listing) => {
                    let table = Arc::new(ToolHeaders::from_tools(&listing.items));
                    upstream.set_tool_headers(table.clone());
                    table
                }
                Err(e) => {
                    tracing::debug!(upstream = %upstream.name, error = %e, "tools not listed for Mcp-Param headers");
                    return None;
                }
            }
        }
    };
    table.of(tool)
}

/// The call's `arguments`, from the rewritten `params` or the request's own.
fn arguments(request: &Request, params: Option<&RawObject>) -> Option<serde_json::Value> {
    let own;
    let params = match params {
        Some(p) => p,
        None => {
            own = request.params_object().ok()?;
            &own
        }
    };
    serde_json::from_str(params.get("arguments")?.get()).ok()
}

/// Whether an upstream's answer refuses a request for its headers (-32020).
pub fn refused(answer: &[u8]) -> bool {
    jsonrpc::error_code(answer) == Some(ERROR_HEADER_MISMATCH)
}
