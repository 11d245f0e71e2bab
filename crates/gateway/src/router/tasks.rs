//! The tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28)
//! through Tether, whatever the upstream speaks. Only a modern client that
//! declares the extension on its request ever gets a task. A `tools/call`
//! goes to its upstream as usual: an upstream that runs tasks may answer
//! with its own, which is relayed ([`super::task_relay`]); a call still
//! unanswered after `promote_after_ms` becomes a task Tether runs
//! ([`super::task_runs`]). `tasks/get`, `tasks/update` and `tasks/cancel`
//! find the task in the store, bound to the principal and endpoint that
//! made it, and go to the upstream (relayed) or to the run (Tether's).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Future;
use serde_json::Value;
use tether_wire::jsonrpc::{self, Kind, Message, Method, RawObject, Request, code};
use tether_wire::protocol::Era;
use tether_wire::tasks::{self, Payload, Status, TaskState};
use tokio::sync::mpsc;

use super::context::RequestContext;
use super::forward::Forwarder;
use super::outcome::{Outcome, error, forbidden};
use super::task_relay;
use super::task_runs::{Control, LEASE, Pending, Run, TaskRuns};
use super::waiting_calls::{node_token, state_node};
use crate::clock::now_ms;
use crate::config::TasksConfig;
use crate::session::new_session_id;
use crate::store::{Store, TaskRecord};
use crate::telemetry;
use crate::upstream::{Upstream, UpstreamSet};

/// Messages buffered between a call's stream and the client.
const STREAM_QUEUE: usize = 32;

/// The cluster node whose run a `tasks/update` or `tasks/cancel` must
/// reach, if its task id names one.
pub fn run_node(request: &Request) -> Option<String> {
    if !matches!(request.method, Method::TasksUpdate | Method::TasksCancel) {
        return None;
    }
    let id = request.str_param("taskId")?;
    state_node(&id).map(str::to_owned)
}

/// Whether the request declares the tasks extension (only modern requests
/// can: they carry their capabilities in `_meta`).
pub fn declared(ctx: &RequestContext) -> bool {
    let capabilities = ctx.identity().capabilities.get();
    ctx.era == Era::Modern
        && capabilities.contains(tasks::EXTENSION)
        && serde_json::from_str::<Value>(capabilities).is_ok_and(|c| tasks::declared_in(&c))
}

/// Tasks through Tether (see the module documentation).
pub struct Tasks {
    store: Arc<Store>,
    config: TasksConfig,
    runs: Arc<TaskRuns>,
    forwarder: Arc<Forwarder>,
    node: Option<Arc<str>>,
}

impl Tasks {
    /// Tasks kept in `store`, sent upstream through `forwarder`; `node`:
    /// this node's id in a cluster (named in the ids of the tasks it runs).
    pub fn new(
        store: Arc<Store>,
        config: TasksConfig,
        forwarder: Arc<Forwarder>,
        node: Option<Arc<str>>,
    ) -> Self {
        let runner: Arc<str> = match &node {
            Some(node) => format!("{node}.{}", &new_session_id()[..12]).into(),
            None => new_session_id()[..12].into(),
        };
        Tasks {
            runs: TaskRuns::new(store.clone(), runner, config.max_running),
            store,
            config,
            forwarder,
            node,
        }
    }

    /// The tasks this node runs.
    pub fn runs(&self) -> &Arc<TaskRuns> {
        &self.runs
    }

    /// A `tools/call` from a client that declared the extension: forwarded,
    /// an upstream's task relayed, and the call turned into a task of
    /// Tether's own when it runs longer than `promote_after_ms`. `params`:
    /// the params as rewritten for the upstream, if they were.
    pub async fn call(
        self: &Arc<Self>,
        ctx: &Arc<RequestContext>,
        upstream: &Arc<Upstream>,
        request: Request,
        params: Option<RawObject>,
    ) -> Outcome {
        let id = request.id.clone();
        let sent = (params.clone())
            .or_else(|| request.params_object().ok())
            .unwrap_or_default();
        let (forwarder, c, u) = (self.forwarder.clone(), ctx.clone(), upstream.clone());
        let call = Box::pin(async move { forwarder.forward(&c, &u, request, params).await });
        self.promoting(ctx, upstream, (id, sent), call).await
    }

    /// A declaring client's retry carrying the input a call waiting inside
    /// Tether (under `state`) asked for: the rest of the call, which may
    /// become a task like any other.
    pub async fn resume(
        self: &Arc<Self>,
        ctx: &Arc<RequestContext>,
        state: &str,
        retry: Request,
    ) -> Outcome {
        let waiting = self.forwarder.waiting_call(state);
        let (Some((upstream, mut sent)), Method::ToolsCall) = (waiting, &retry.method) else {
            return self.forwarder.resume_waiting(ctx, state, retry).await;
        };
        // The task's later rounds go with the call as it was sent upstream
        // (checked, shaped), not as the client's retry names it.
        sent.shift_remove("inputResponses");
        sent.shift_remove("requestState");
        let id = retry.id.clone();
        let (forwarder, c, s) = (self.forwarder.clone(), ctx.clone(), state.to_owned());
        let call = Box::pin(async move { forwarder.resume_waiting(&c, &s, retry).await });
        self.promoting(ctx, &upstream, (id, sent), call).await
    }

    /// Waits for `call` (the client's request `id` with params `sent`),
    /// relaying an upstream's task, and turns it into a task of Tether's
    /// when it runs longer than `promote_after_ms`.
    async fn promoting(
        self: &Arc<Self>,
        ctx: &Arc<RequestContext>,
        upstream: &Arc<Upstream>,
        (id, sent): (Box<serde_json::value::RawValue>, RawObject),
        mut call: Pin<Box<dyn Future<Output = Outcome> + Send>>,
    ) -> Outcome {
        let promote = self.config.enabled && self.runs.has_room();
        let deadline = tokio::time::sleep(Duration::from_millis(self.config.promote_after_ms));
        tokio::pin!(deadline);
        let outcome = tokio::select! {
            outcome = &mut call => outcome,
            () = &mut deadline, if promote => {
                return match self.begin(ctx, upstream).await {
                    Some(started) => {
                        let pending = Box::pin(async move { call.await.into_response().await });
                        Outcome::Message(self.launch(started, (ctx, upstream), sent, pending, &id))
                    }
                    None => call.await,
                };
            }
        };
        match outcome {
            Outcome::Message(body) => {
                Outcome::Message(task_relay::adopt(&self.store, ctx, upstream, body).await)
            }
            Outcome::Stream(rx) => {
                let remaining = deadline.deadline();
                let watch = Watch {
                    tasks: self.clone(),
                    ctx: ctx.clone(),
                    upstream: upstream.clone(),
                    sent,
                    id,
                    promote_at: promote.then_some(remaining),
                };
                let (tx, out) = mpsc::channel(STREAM_QUEUE);
                telemetry::spawn(watch.run(rx, tx));
                Outcome::Stream(out)
            }
            other => other,
        }
    }

    /// Records a new task Tether runs (before anyone hears of it:
    /// [invariant: task-durable]); `None` when it cannot be recorded or the
    /// node runs its maximum.
    async fn begin(
        &self,
        ctx: &RequestContext,
        upstream: &Upstream,
    ) -> Option<(TaskState, mpsc::Receiver<Control>)> {
        let now = now_ms();
        let ttl = self.config.ttl_ms as i64;
        let poll = self.config.poll_interval_ms as i64;
        let state =
            TaskState::working(node_token(self.node.as_deref()), now, Some(ttl), Some(poll));
        let control = self.runs.register(&state.id)?;
        let record = TaskRecord {
            id: state.id.clone(),
            principal: ctx.caller.principal.to_string(),
            scope: ctx.scope.label().into_owned(),
            upstream: upstream.name.to_string(),
            upstream_task: None,
            runner: Some(self.runs.runner().to_string()),
            state: state.detailed().to_string(),
            terminal: false,
            lease_ms: now + LEASE.as_millis() as i64,
            expires_ms: now + ttl,
        };
        match self.store.insert_task(&record, now).await {
            Ok(()) => Some((state, control)),
            Err(e) => {
                tracing::warn!(error = %e, "recording a task failed; the call stays synchronous");
                self.runs.stop(&state.id);
                None
            }
        }
    }

    /// Runs the recorded task in the background; the response carrying its
    /// `CreateTaskResult` to the client's request `id`.
    fn launch(
        &self,
        (state, control): (TaskState, mpsc::Receiver<Control>),
        (ctx, upstream): (&Arc<RequestContext>, &Arc<Upstream>),
        sent: RawObject,
        pending: Pending,
        id: &serde_json::value::RawValue,
    ) -> Bytes {
        tracing::debug!(task = %state.id, upstream = %upstream.name, "a call became a task");
        let created = state.create_result();
        let run = Run {
            state,
            store: self.store.clone(),
            ctx: ctx.clone(),
            upstream: upstream.clone(),
            params: sent,
            forwarder: self.forwarder.clone(),
            control,
            runs: self.runs.clone(),
        };
        telemetry::spawn(run.drive(pending));
        Bytes::from(jsonrpc::response(id, &jsonrpc::to_raw(&created)))
    }

    /// `tasks/get`, `tasks/update` or `tasks/cancel`.
    pub async fn method(
        &self,
        ctx: &Arc<RequestContext>,
        upstreams: &UpstreamSet,
        request: Request,
    ) -> Outcome {
        if !declared(ctx) {
            let why = tasks::missing_extension(request.method.as_str());
            return Outcome::Error(why, Some(request.id));
        }
        let Some(id) = request.str_param("taskId") else {
            return error(
                &request,
                code::INVALID_PARAMS,
                "params.taskId must be a string",
            );
        };
        let now = now_ms();
        let record = match self.store.load_task(&id, now).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(error = %e, "reading a task failed");
                return store_unavailable(&request);
            }
        };
        // Another principal's task, or one made on another endpoint, is as
        // unknown as a task that never was.
        let Some(record) = record
            .filter(|r| *r.principal == *ctx.caller.principal && r.scope == ctx.scope.label())
        else {
            return not_found(&request);
        };
        if let Some(upstream_task) = record.upstream_task.clone() {
            let Some(upstream) = upstreams.get(&record.upstream) else {
                let why = format!(
                    "upstream {} of this task is no longer configured",
                    record.upstream
                );
                return error(&request, code::INTERNAL_ERROR, why);
            };
            if !ctx.access().reaches_upstream(&upstream.name) {
                return forbidden(&request, &format!("upstream {}", upstream.name));
            }
            let task = (&record, upstream_task.as_str());
            return task_relay::forward(&self.forwarder, ctx, &upstream, task, request).await;
        }
        match request.method {
            Method::TasksGet => self.get(&request, record, now).await,
            Method::TasksUpdate => self.update(&request, &record).await,
            _ => self.cancel(&request, record).await,
        }
    }

    /// A task Tether runs, as last recorded: one whose runner stopped
    /// (its lease ran out) failed, since nobody finishes it.
    async fn get(&self, request: &Request, record: TaskRecord, now: i64) -> Outcome {
        let Some(mut state) = stored_state(&record) else {
            return unreadable(request);
        };
        let abandoned =
            !record.terminal && record.lease_ms < now && !self.runs.runs_here(&record.id);
        if abandoned {
            let error = serde_json::json!({"code": code::INTERNAL_ERROR,
                "message": "the Tether node running this task stopped before it finished; the call's outcome is unknown"});
            state.end(Status::Failed, Payload::Error(error), now);
            state.status_message = Some("the Tether node running this task stopped".into());
            let detailed = state.detailed().to_string();
            let write = self.store.update_task(&record.id, &detailed, true, None);
            if let Ok(false) = write.await {
                // Finished meanwhile: what was recorded stands.
                return match self.store.load_task(&record.id, now).await {
                    Ok(Some(record)) => match stored_state(&record) {
                        Some(state) => answer(request, &state.get_result()),
                        None => unreadable(request),
                    },
                    Ok(None) => not_found(request),
                    Err(_) => store_unavailable(request),
                };
            }
        }
        answer(request, &state.get_result())
    }

    /// Answers for a task's input requests, handed to its run.
    async fn update(&self, request: &Request, record: &TaskRecord) -> Outcome {
        let answers = request
            .params_object()
            .ok()
            .and_then(|p| serde_json::from_str::<RawObject>(p.get("inputResponses")?.get()).ok());
        let Some(answers) = answers else {
            return error(
                request,
                code::INVALID_PARAMS,
                "params.inputResponses must be an object",
            );
        };
        // A finished task, or one whose run is gone, has nothing
        // outstanding: the answers are ignored, as the extension says.
        if !record.terminal {
            self.runs.answer(&record.id, answers).await;
        }
        ack(request)
    }

    /// Cancels a task: recorded at once (a later result does not overwrite
    /// it), and its run stops the call.
    async fn cancel(&self, request: &Request, record: TaskRecord) -> Outcome {
        if record.terminal {
            return ack(request);
        }
        if let Some(mut state) = stored_state(&record) {
            state.end(Status::Cancelled, Payload::None, now_ms());
            state.status_message = Some("cancelled by the client".into());
            let detailed = state.detailed().to_string();
            let write = self.store.update_task(&record.id, &detailed, true, None);
            if let Err(e) = write.await {
                tracing::warn!(task = %record.id, error = %e, "recording a cancellation failed");
                return store_unavailable(request);
            }
        }
        self.runs.control(&record.id, Control::Cancel).await;
        ack(request)
    }
}

/// The state of a task Tether runs, as stored.
fn stored_state(record: &TaskRecord) -> Option<TaskState> {
    let detailed: Value = serde_json::from_str(&record.state).ok()?;
    TaskState::from_detailed(&detailed)
}

/// The answer for a task that does not exist (or is not the caller's).
fn not_found(request: &Request) -> Outcome {
    error(
        request,
        code::INVALID_PARAMS,
        "Failed to retrieve task: Task not found",
    )
}

fn unreadable(request: &Request) -> Outcome {
    error(
        request,
        code::INTERNAL_ERROR,
        "the stored task is unreadable",
    )
}

fn store_unavailable(request: &Request) -> Outcome {
    error(
        request,
        code::INTERNAL_ERROR,
        "the task store did not answer; retry",
    )
}

/// The empty acknowledgement of `tasks/update` and `tasks/cancel`.
fn ack(request: &Request) -> Outcome {
    answer(request, &serde_json::json!({"resultType": "complete"}))
}

fn answer(request: &Request, result: &Value) -> Outcome {
    Outcome::Message(request.answer(&jsonrpc::to_raw(result)))
}

/// A call's live stream, watched: relayed to the client as it comes, its
/// final answer checked for an upstream task, and turned into a task of
/// Tether's when still unanswered at `promote_at`.
struct Watch {
    tasks: Arc<Tasks>,
    ctx: Arc<RequestContext>,
    upstream: Arc<Upstream>,
    sent: RawObject,
    id: Box<serde_json::value::RawValue>,
    promote_at: Option<tokio::time::Instant>,
}

impl Watch {
    async fn run(mut self, mut rx: mpsc::Receiver<Bytes>, tx: mpsc::Sender<Bytes>) {
        loop {
            let promote_at = self.promote_at;
            let due = async move {
                match promote_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                item = rx.recv() => Some(item),
                () = due => None,
            };
            let Some(item) = item else {
                // Still running at the deadline: a task from now on.
                let Some(started) = self.tasks.begin(&self.ctx, &self.upstream).await else {
                    self.promote_at = None;
                    continue;
                };
                let pending = Box::pin(Outcome::Stream(rx).into_response());
                let parts = (&self.ctx, &self.upstream);
                let created = self
                    .tasks
                    .launch(started, parts, self.sent, pending, &self.id);
                let _ = tx.send(created).await;
                return;
            };
            let Some(message) = item else { return };
            let is_answer =
                Message::parse(&message).is_ok_and(|m| matches!(m.kind(), Ok(Kind::Response)));
            let out = if is_answer {
                task_relay::adopt(&self.tasks.store, &self.ctx, &self.upstream, message).await
            } else {
                message
            };
            if tx.send(out).await.is_err() || is_answer {
                // The client left (dropping the stream cancels the call), or it is done.
                return;
            }
        }
    }
}
