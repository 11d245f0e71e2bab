//! Tasks an upstream runs, relayed: its `CreateTaskResult` is recorded and
//! handed to the client under a Tether task id (so tasks of different
//! upstreams never collide on `/mcp`, and the principal that made the task
//! is the only one that reaches it), and `tasks/get`, `tasks/update` and
//! `tasks/cancel` go to that upstream under its own id, their answers
//! renamed back.

use std::sync::Arc;

use bytes::Bytes;
use tether_wire::jsonrpc::{self, ErrorObject, Message, RawObject, Request, code};
use tether_wire::tasks;

use super::context::RequestContext;
use super::forward::Forwarder;
use super::outcome::{Outcome, error};
use super::waiting_calls::node_token;
use crate::clock::now_ms;
use crate::store::{Store, TaskRecord};
use crate::upstream::Upstream;

/// How long a relayed task is kept when its upstream says it never expires.
const UNLIMITED_KEEP_MS: i64 = 7 * 24 * 3_600_000;

/// Records a task `upstream` created in answer to a call and gives the
/// client its Tether id; any other answer is returned as it is.
pub async fn adopt(store: &Store, ctx: &RequestContext, upstream: &Upstream, body: Bytes) -> Bytes {
    // Almost every answer is not a task: found out without parsing it.
    if !jsonrpc::contains(&body, b"\"task\"") {
        return body;
    }
    let Ok(mut msg) = Message::parse(&body) else {
        return body;
    };
    let Some(mut result) = (msg.result.as_ref())
        .and_then(|r| serde_json::from_str::<RawObject>(r.get()).ok())
        .filter(tasks::is_create_result)
    else {
        return body;
    };
    let Some(upstream_task) = jsonrpc::str_member(&result, "taskId") else {
        return body;
    };
    let now = now_ms();
    let keep = match result.get("ttlMs").map(|t| t.get()) {
        Some(ttl) => ttl.parse::<i64>().unwrap_or(UNLIMITED_KEEP_MS),
        None => UNLIMITED_KEEP_MS,
    };
    let record = TaskRecord {
        id: node_token(None),
        principal: ctx.caller.principal.to_string(),
        scope: ctx.scope.label().into_owned(),
        upstream: upstream.name.to_string(),
        upstream_task: Some(upstream_task),
        runner: None,
        state: String::new(),
        terminal: false,
        lease_ms: 0,
        expires_ms: now.saturating_add(keep.clamp(1, UNLIMITED_KEEP_MS)),
    };
    if let Err(e) = store.insert_task(&record, now).await {
        tracing::warn!(upstream = %upstream.name, error = %e, "recording an upstream's task failed");
        let why = ErrorObject::new(
            code::INTERNAL_ERROR,
            format!(
                "upstream {} made a task, but Tether could not record it",
                upstream.name
            ),
        );
        return Bytes::from(why.to_response(msg.id.as_deref()));
    }
    result.insert("taskId".into(), jsonrpc::to_raw(&record.id));
    msg.result = Some(jsonrpc::to_raw(&result));
    Bytes::from(msg.to_bytes())
}

/// `tasks/get`, `tasks/update` or `tasks/cancel` for a relayed task: to
/// its upstream, under the upstream's id; the answer under Tether's.
pub async fn forward(
    forwarder: &Forwarder,
    ctx: &Arc<RequestContext>,
    upstream: &Arc<Upstream>,
    (record, upstream_task): (&TaskRecord, &str),
    request: Request,
) -> Outcome {
    let mut params = match request.params_object() {
        Ok(p) => p,
        Err(e) => return error(&request, code::INVALID_PARAMS, e.message()),
    };
    params.insert("taskId".into(), jsonrpc::to_raw(upstream_task));
    let id = request.id.clone();
    let outcome = forwarder
        .forward(ctx, upstream, request, Some(params))
        .await;
    let Some(answer) = outcome.into_response().await else {
        let why = ErrorObject::new(code::INTERNAL_ERROR, "the upstream did not answer");
        return Outcome::Error(why, Some(id));
    };
    Outcome::Message(renamed(answer, &record.id))
}

/// A task method's answer with the upstream's task id replaced by Tether's.
fn renamed(answer: Bytes, id: &str) -> Bytes {
    let Ok(mut msg) = Message::parse(&answer) else {
        return answer;
    };
    let Some(mut result) = (msg.result.as_ref())
        .and_then(|r| serde_json::from_str::<RawObject>(r.get()).ok())
        .filter(|r| r.contains_key("taskId"))
    else {
        return answer;
    };
    result.insert("taskId".into(), jsonrpc::to_raw(id));
    msg.result = Some(jsonrpc::to_raw(&result));
    Bytes::from(msg.to_bytes())
}
