//! Tasks Tether runs itself: a modern client's `tools/call` to an upstream
//! that does not run tasks, still unanswered after `promote_after_ms`,
//! goes on in the background as a task. Its state is written to the store
//! at every change (so `tasks/get` answers from any node and after a
//! restart); client input the call needs (a legacy upstream's server→client
//! request parked in `waiting_calls`, or a modern upstream's own
//! `input_required`) becomes the task's `inputRequests`, answered through
//! `tasks/update`; `tasks/cancel` stops the call. Runs are node-local and
//! bounded in number; their runner renews a lease in the store so another
//! node can tell a task left behind by a stopped node (it reads as failed).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Future;
use serde_json::{Map, Value, json};
use tether_wire::jsonrpc::{self, Message, Method, RawObject, Request, code};
use tether_wire::tasks::{Payload, Status, TaskState};
use tokio::sync::{mpsc, oneshot};

use super::context::RequestContext;
use super::forward::Forwarder;
use super::waiting_calls;
use crate::clock::now_ms;
use crate::store::Store;
use crate::sync::lock;
use crate::upstream::Upstream;

/// How long a runner's lease on its tasks lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(15);
/// How long `tasks/update` waits for the run to take the answers.
const HANDOVER: Duration = Duration::from_secs(5);

/// What a client asks of a running task.
pub enum Control {
    /// Answers to input requests (by the keys the client was given); the
    /// sender hears once they are recorded.
    Answers(RawObject, oneshot::Sender<()>),
    /// Stop the work: the client cancelled the task.
    Cancel,
    /// Stop the work: this node shuts down (the task fails).
    Stop,
}

/// The response a run waits for: an upstream call in flight.
pub type Pending = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// The tasks this node runs (see the module documentation).
pub struct TaskRuns {
    runs: Mutex<HashMap<String, mpsc::Sender<Control>>>,
    max: usize,
    /// This process's runner id (named in the tasks it runs).
    runner: Arc<str>,
    store: Arc<Store>,
    renewing: std::sync::Once,
}

impl TaskRuns {
    /// At most `max` runs at once, recorded under `runner`.
    pub fn new(store: Arc<Store>, runner: Arc<str>, max: usize) -> Arc<Self> {
        Arc::new(TaskRuns {
            runs: Mutex::new(HashMap::new()),
            max,
            runner,
            store,
            renewing: std::sync::Once::new(),
        })
    }

    /// This process's runner id.
    pub fn runner(&self) -> &Arc<str> {
        &self.runner
    }

    /// Whether another run fits.
    pub fn has_room(&self) -> bool {
        lock(&self.runs).len() < self.max
    }

    /// Reserves a run for `id`; `None` when the node runs its maximum.
    pub fn register(self: &Arc<Self>, id: &str) -> Option<mpsc::Receiver<Control>> {
        let mut runs = lock(&self.runs);
        if runs.len() >= self.max {
            return None;
        }
        let (tx, rx) = mpsc::channel(8);
        runs.insert(id.to_owned(), tx);
        drop(runs);
        self.renewing.call_once(|| {
            tokio::spawn(renew_leases(Arc::downgrade(self)));
        });
        Some(rx)
    }

    /// Whether `id` runs here.
    pub fn runs_here(&self, id: &str) -> bool {
        lock(&self.runs).contains_key(id)
    }

    /// Hands `control` to the run of `id`; false when it does not run here.
    pub async fn control(&self, id: &str, control: Control) -> bool {
        let tx = lock(&self.runs).get(id).cloned();
        match tx {
            Some(tx) => tx.send(control).await.is_ok(),
            None => false,
        }
    }

    /// Hands answers to the run of `id` and waits (bounded) until they are
    /// recorded; false when it does not run here.
    pub async fn answer(&self, id: &str, answers: RawObject) -> bool {
        let (done, recorded) = oneshot::channel();
        if !self.control(id, Control::Answers(answers, done)).await {
            return false;
        }
        let _ = tokio::time::timeout(HANDOVER, recorded).await;
        true
    }

    /// Stops every run (shutdown): their tasks fail, recorded as such.
    pub async fn stop_all(&self) {
        let runs: Vec<_> = lock(&self.runs).values().cloned().collect();
        futures_util::future::join_all(runs.into_iter().map(|tx| async move {
            let _ = tx.send(Control::Stop).await;
            // Each run records its end before it lets go of its channel.
            tx.closed().await;
        }))
        .await;
    }

    /// Forgets the run of `id` (it ended, or never started).
    pub fn stop(&self, id: &str) {
        lock(&self.runs).remove(id);
    }
}

/// Renews the leases of this runner's tasks while it runs any.
async fn renew_leases(runs: Weak<TaskRuns>) {
    loop {
        tokio::time::sleep(LEASE / 3).await;
        let Some(runs) = runs.upgrade() else { return };
        if lock(&runs.runs).is_empty() {
            continue;
        }
        let until = now_ms() + LEASE.as_millis() as i64;
        if let Err(e) = runs.store.renew_task_leases(&runs.runner, until).await {
            tracing::warn!(error = %e, "renewing task leases failed");
        }
    }
}

/// How a call's response moves its task on.
enum Answer {
    /// A result: the task completed with it.
    Result(Value),
    /// A JSON-RPC error: the task failed with it.
    Error(Value),
    /// Input needed first: requests by key, and the state to retry with.
    Input(Map<String, Value>, Option<String>),
    /// The upstream made a task of its own: relay it from now on.
    UpstreamTask(String),
}

fn classify(response: &[u8]) -> Answer {
    let Ok(msg) = Message::parse(response) else {
        return Answer::Error(
            json!({"code": code::INTERNAL_ERROR, "message": "the upstream's answer was not JSON-RPC"}),
        );
    };
    if let Some(error) = msg.error {
        return Answer::Error(serde_json::from_str(error.get()).unwrap_or(Value::Null));
    }
    let result: Value = msg
        .result
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(json!({}));
    match result.get("resultType").and_then(Value::as_str) {
        Some("task") => match result.get("taskId").and_then(Value::as_str) {
            Some(id) => Answer::UpstreamTask(id.to_owned()),
            None => Answer::Error(
                json!({"code": code::INTERNAL_ERROR, "message": "the upstream answered with a task without an id"}),
            ),
        },
        Some("input_required") => Answer::Input(
            result
                .get("inputRequests")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            result
                .get("requestState")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        _ => Answer::Result(result),
    }
}

/// One task Tether runs.
pub struct Run {
    /// The task as it stands.
    pub state: TaskState,
    /// Where its state is kept.
    pub store: Arc<Store>,
    /// The request that made the call (it holds the upstream sessions).
    pub ctx: Arc<RequestContext>,
    /// The upstream called.
    pub upstream: Arc<Upstream>,
    /// The `tools/call` params as sent upstream.
    pub params: RawObject,
    /// Sends the call again with the client's input.
    pub forwarder: Arc<Forwarder>,
    /// What the client asks of the task.
    pub control: mpsc::Receiver<Control>,
    /// The runs of this node.
    pub runs: Arc<TaskRuns>,
}

impl Run {
    /// Drives the task from the call in flight to its end.
    pub async fn drive(mut self, mut pending: Pending) {
        let id = self.state.id.clone();
        for round in 1u64.. {
            let response = tokio::select! {
                response = &mut pending => response,
                halt = self.halted() => {
                    self.halt(halt).await;
                    break;
                }
            };
            let Some(response) = response else {
                let error = json!({"code": code::INTERNAL_ERROR, "message": "the upstream call ended without an answer (outcome unknown)"});
                self.settle(Status::Failed, Payload::Error(error)).await;
                break;
            };
            match classify(&response) {
                Answer::Result(result) => {
                    self.settle(Status::Completed, Payload::Result(result))
                        .await;
                    break;
                }
                Answer::Error(error) => {
                    self.settle(Status::Failed, Payload::Error(error)).await;
                    break;
                }
                Answer::UpstreamTask(upstream_task) => {
                    self.state.updated_ms = now_ms();
                    let detailed = self.state.detailed().to_string();
                    let write = self
                        .store
                        .update_task(&id, &detailed, false, Some(&upstream_task));
                    if let Err(e) = write.await {
                        tracing::warn!(task = %id, error = %e, "recording the upstream's task failed");
                    }
                    break;
                }
                Answer::Input(requests, request_state) => {
                    match self.gather(round, requests, request_state.as_deref()).await {
                        Some(retry) => pending = retry,
                        None => break,
                    }
                }
            }
        }
        self.runs.stop(&id);
    }

    /// Waits for a control message that stops the work (answers that
    /// arrive while the task works are not for any outstanding request:
    /// ignored).
    async fn halted(&mut self) -> Control {
        loop {
            match self.control.recv().await {
                Some(Control::Answers(_, done)) => {
                    let _ = done.send(());
                }
                Some(halt) => return halt,
                None => return Control::Stop,
            }
        }
    }

    /// Ends the task as `halt` says: cancelled, or failed by a shutdown.
    async fn halt(&mut self, halt: Control) {
        match halt {
            Control::Cancel => self.settle(Status::Cancelled, Payload::None).await,
            _ => {
                let error = json!({"code": code::INTERNAL_ERROR,
                    "message": "Tether shut down before the task finished; the call's outcome is unknown"});
                self.settle(Status::Failed, Payload::Error(error)).await;
            }
        }
    }

    /// Puts the task in `input_required` with `requests` (keys made unique
    /// to this round), collects the client's answers, and sends the call
    /// again with them; `None` when the task was cancelled instead.
    async fn gather(
        &mut self,
        round: u64,
        requests: Map<String, Value>,
        request_state: Option<&str>,
    ) -> Option<Pending> {
        let prefix = format!("{round}.");
        self.state.status = Status::InputRequired;
        self.state.input_requests = (requests.into_iter())
            .map(|(key, request)| (format!("{prefix}{key}"), request))
            .collect();
        self.record().await;
        let mut answers = RawObject::new();
        while !self.state.input_requests.is_empty() {
            match self.control.recv().await {
                Some(Control::Answers(given, done)) => {
                    for (key, answer) in given {
                        if self.state.input_requests.remove(&key).is_some()
                            && let Some(original) = key.strip_prefix(&prefix)
                        {
                            answers.insert(original.to_owned(), answer);
                        }
                    }
                    if self.state.input_requests.is_empty() {
                        self.state.status = Status::Working;
                    }
                    self.record().await;
                    let _ = done.send(());
                }
                halt => {
                    if let Some(state) = request_state.filter(|s| waiting_calls::is_tether_state(s))
                    {
                        self.forwarder.abandon_waiting(state).await;
                    }
                    self.halt(halt.unwrap_or(Control::Stop)).await;
                    return None;
                }
            }
        }
        let mut params = self.params.clone();
        params.insert("inputResponses".into(), jsonrpc::to_raw(&answers));
        if let Some(state) = request_state {
            params.insert("requestState".into(), jsonrpc::to_raw(state));
        }
        let retry = Request::new(
            jsonrpc::to_raw(&format!("tether-task-{round}")),
            Method::ToolsCall,
            Some(jsonrpc::to_raw(&params)),
        );
        let (forwarder, ctx, upstream) = (
            self.forwarder.clone(),
            self.ctx.clone(),
            self.upstream.clone(),
        );
        let state = request_state.map(str::to_owned);
        Some(Box::pin(async move {
            let outcome = match state.filter(|s| waiting_calls::is_tether_state(s)) {
                Some(state) => forwarder.resume_waiting(&ctx, &state, retry).await,
                None => forwarder.forward(&ctx, &upstream, retry, None).await,
            };
            outcome.into_response().await
        }))
    }

    /// Ends the task (unless it already ended, e.g. cancelled by `tasks/cancel`).
    async fn settle(&mut self, status: Status, payload: Payload) {
        self.state.end(status, payload, now_ms());
        self.record().await;
    }

    /// Writes the task's state to the store.
    async fn record(&mut self) {
        self.state.updated_ms = now_ms();
        let detailed = self.state.detailed();
        let terminal = self.state.status.is_terminal();
        let text = detailed.to_string();
        let write = self
            .store
            .update_task(&self.state.id, &text, terminal, None);
        if let Err(e) = write.await {
            tracing::warn!(task = %self.state.id, error = %e, "recording a task's state failed");
        }
    }
}
