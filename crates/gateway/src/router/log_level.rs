//! `logging/setLevel`, answered by Tether on every endpoint: modern
//! upstreams take the level in each request's `_meta`, legacy ones by this
//! request, sent to each of the client's legacy upstream sessions open now
//! (and to those opened later, see the connector).

use std::sync::Arc;

use tether_wire::jsonrpc::{self, Method, Request, code};
use tether_wire::protocol::Era;

use super::context::RequestContext;
use super::outcome::{Outcome, empty_answer, error};
use crate::store::Store;

/// Remembers the level (in the session and the store) and passes it on; answers `{}`.
pub async fn set_log_level(store: &Store, ctx: &RequestContext, request: &Request) -> Outcome {
    let params = match request.params_object() {
        Ok(p) => p,
        Err(e) => return error(request, code::INVALID_PARAMS, e.message()),
    };
    let Some(level) = jsonrpc::str_member(&params, "level") else {
        return error(request, code::INVALID_PARAMS, "params.level is required");
    };
    if let Some(session) = ctx.session() {
        if let Err(e) = store.set_log_level(&session.id, &level).await {
            tracing::warn!(error = %e, "log level not stored");
        }
        session.set_log_level(level);
    }
    let value = serde_json::to_value(&params).unwrap_or_else(|_| serde_json::json!({}));
    let sessions: Vec<Arc<_>> = ctx
        .upstreams()
        .sessions()
        .into_iter()
        .filter(|s| s.era == Era::Legacy)
        .collect();
    let calls = sessions
        .iter()
        .map(|s| s.call(Method::LoggingSetLevel, value.clone()));
    for (s, r) in sessions
        .iter()
        .zip(futures_util::future::join_all(calls).await)
    {
        if let Err(e) = r {
            tracing::debug!(upstream = %s.upstream.name, error = %e, "logging/setLevel failed");
        }
    }
    empty_answer(request)
}
