//! The conformance profile's tasks: the 2026-07-28 tasks extension
//! (`io.modelcontextprotocol/tasks`) as the conformance suite's `tasks-*`
//! scenarios expect of a server. A modern client that declares the
//! extension on its request gets a task handle for the task tools; the
//! task runs in the background and is polled (`tasks/get`), given input
//! (`tasks/update`) and cancelled (`tasks/cancel`). Without the
//! declaration, optional task tools run synchronously and required ones
//! answer -32021. In the legacy era every task tool runs synchronously
//! (client input as server→client requests), which is what a gateway has to
//! turn into tasks itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tether_wire::jsonrpc::{ErrorObject, code};
use tether_wire::protocol::Era;
use tether_wire::tasks::{self, Payload, Status, TaskState};
use tokio::sync::watch;

use super::{Call, Mrtr, err, invalid, text_result, tool_error};

/// How long a task is kept after it is created.
const TTL_MS: i64 = 300_000;
/// The polling interval suggested to clients.
const POLL_MS: i64 = 200;
/// Most tasks kept at once (expired ones are dropped first).
const MAX_TASKS: usize = 1000;
/// Longest `slow_compute`.
const MAX_SECONDS: u64 = 600;

/// The task tools: name, description, input schema, and whether a modern
/// client must declare the extension to call it (`required`).
pub(super) fn tools() -> Vec<Value> {
    let no_args = json!({"type": "object", "properties": {}});
    let tool = |name: &str, description: &str, schema: &Value| json!({"name": name, "description": description, "inputSchema": schema});
    vec![
        tool(
            "greet",
            "Greets someone (never a task)",
            &json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        ),
        tool(
            "slow_compute",
            "Sleeps `seconds`, then answers (a task when the client declares the tasks extension)",
            &json!({"type": "object", "properties": {
                "seconds": {"type": "number", "minimum": 0},
                "label": {"type": "string"}}, "required": ["seconds"]}),
        ),
        tool(
            "failing_job",
            "Reports a tool error after about a second (task required)",
            &no_args,
        ),
        tool(
            "protocol_error_job",
            "Fails with a JSON-RPC error (a task when the client declares the tasks extension)",
            &no_args,
        ),
        tool(
            "confirm_delete",
            "Asks the user to confirm deleting `filename`",
            &json!({"type": "object", "properties": {"filename": {"type": "string"}}, "required": ["filename"]}),
        ),
        tool(
            "multi_input",
            "Asks two questions at once (task required)",
            &no_args,
        ),
        tool(
            "test_tool_with_task",
            "Asks for user_name, then finishes as a task (task required)",
            &no_args,
        ),
    ]
}

/// Whether `name` is one of the task tools.
pub(super) fn is_tool(name: &str) -> bool {
    matches!(
        name,
        "greet"
            | "slow_compute"
            | "failing_job"
            | "protocol_error_job"
            | "confirm_delete"
            | "multi_input"
            | "test_tool_with_task"
    )
}

/// What a task tool does once it runs as a task.
enum Job {
    Compute { seconds: f64, label: String },
    ToolError,
    ProtocolError,
    Confirm { filename: String },
    TwoQuestions,
    Greet { name: String },
}

/// The tasks this server holds.
#[derive(Default)]
pub(super) struct Tasks {
    entries: Mutex<HashMap<String, Arc<Task>>>,
}

/// One task: its state, and a signal for the job when it changes.
struct Task {
    inner: Mutex<Inner>,
    /// Bumped on every change the job may wait for (answers, cancellation).
    changed: watch::Sender<u64>,
}

/// What a task holds, under one lock.
struct Inner {
    state: TaskState,
    /// Answers delivered by `tasks/update`, by input key.
    answers: Map<String, Value>,
    /// The last input key's number (keys are never reused within a task).
    last_key: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Task {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Ends the task unless it already ended.
    fn settle(&self, status: Status, payload: Payload) {
        let mut inner = self.inner();
        if inner.state.status.is_terminal() {
            return;
        }
        inner.state.end(status, payload, now_ms());
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    fn cancelled(&self) -> bool {
        self.inner().state.status == Status::Cancelled
    }

    /// Sleeps `d`; false when the task was cancelled meanwhile.
    async fn sleep(&self, d: Duration) -> bool {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::sleep(d);
        tokio::pin!(deadline);
        loop {
            if self.cancelled() {
                return false;
            }
            tokio::select! {
                () = &mut deadline => return !self.cancelled(),
                r = changes.changed() => if r.is_err() { return false },
            }
        }
    }

    /// Asks the client `requests` at once (status `input_required`) and
    /// waits for every answer; `None` when cancelled.
    async fn ask(&self, requests: Vec<Value>) -> Option<Vec<Value>> {
        let keys: Vec<String> = {
            let mut inner = self.inner();
            if inner.state.status.is_terminal() {
                return None;
            }
            let first = inner.last_key + 1;
            inner.last_key += requests.len() as u64;
            let keys: Vec<String> = (first..=inner.last_key)
                .map(|n| format!("input-{n}"))
                .collect();
            inner.state.status = Status::InputRequired;
            inner.state.input_requests = keys.iter().cloned().zip(requests).collect();
            inner.state.updated_ms = now_ms();
            keys
        };
        let mut changes = self.changed.subscribe();
        loop {
            {
                let inner = self.inner();
                if inner.state.status == Status::Cancelled {
                    return None;
                }
                if keys.iter().all(|k| inner.answers.contains_key(k)) {
                    return Some(keys.iter().map(|k| inner.answers[k].clone()).collect());
                }
            }
            if changes.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Takes the answers to outstanding requests (others are ignored); the
    /// task works again once none is outstanding.
    fn answer(&self, responses: &Map<String, Value>) {
        let mut inner = self.inner();
        for (key, response) in responses {
            if inner.state.input_requests.remove(key).is_some() {
                inner.answers.insert(key.clone(), response.clone());
            }
        }
        if inner.state.status == Status::InputRequired && inner.state.input_requests.is_empty() {
            inner.state.status = Status::Working;
            inner.state.updated_ms = now_ms();
        }
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    async fn run(self: Arc<Self>, job: Job) {
        match job {
            Job::Compute { seconds, label } => {
                if self.sleep(Duration::from_secs_f64(seconds)).await {
                    let text = format!("Computed {label} after {seconds} s");
                    self.settle(Status::Completed, Payload::Result(text_result(&text)));
                } else {
                    self.settle(Status::Cancelled, Payload::None);
                }
            }
            Job::ToolError => {
                if self.sleep(Duration::from_secs(1)).await {
                    let result = tool_error("failing_job failed, as it always does");
                    self.settle(Status::Completed, Payload::Result(result));
                }
            }
            Job::ProtocolError => {
                if self.sleep(Duration::from_millis(100)).await {
                    let error = json!({"code": code::INTERNAL_ERROR,
                        "message": "protocol_error_job failed with an internal error"});
                    self.settle(Status::Failed, Payload::Error(error));
                }
            }
            Job::Confirm { filename } => {
                let ask = confirm_request(&filename);
                if let Some(answers) = self.ask(vec![ask]).await {
                    let text = confirmation_text(&filename, &answers[0]);
                    self.settle(Status::Completed, Payload::Result(text_result(&text)));
                }
            }
            Job::TwoQuestions => {
                let asks = vec![name_request(), confirm_request("multi_input")];
                if let Some(answers) = self.ask(asks).await {
                    let text = format!("Got both answers: {} and {}", answers[0], answers[1]);
                    self.settle(Status::Completed, Payload::Result(text_result(&text)));
                }
            }
            Job::Greet { name } => {
                if self.sleep(Duration::from_millis(300)).await {
                    let text = format!("Hello, {name}! (finished as a task)");
                    self.settle(Status::Completed, Payload::Result(text_result(&text)));
                }
            }
        }
    }
}

impl Tasks {
    /// Starts `job` as a task: its `CreateTaskResult`, once `tasks/get` finds it.
    fn start(&self, job: Job) -> Result<Value, ErrorObject> {
        let now = now_ms();
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_TASKS {
            entries.retain(|_, t| t.inner().state.created_ms + TTL_MS > now);
            if entries.len() >= MAX_TASKS {
                return Err(err(code::INTERNAL_ERROR, "too many tasks; retry later"));
            }
        }
        let id = format!("task-{}", super::mint_session_id().unwrap_or_default());
        let state = TaskState::working(id.clone(), now, Some(TTL_MS), Some(POLL_MS));
        let created = state.create_result();
        let task = Arc::new(Task {
            inner: Mutex::new(Inner {
                state,
                answers: Map::new(),
                last_key: 0,
            }),
            changed: watch::Sender::new(0),
        });
        entries.insert(id, task.clone());
        drop(entries);
        tokio::spawn(task.run(job));
        Ok(created)
    }

    fn find(&self, params: &Value) -> Result<Arc<Task>, ErrorObject> {
        let Some(id) = params.get("taskId").and_then(Value::as_str) else {
            return Err(invalid("'taskId' must be a string"));
        };
        match lock(&self.entries).get(id) {
            Some(task) if task.inner().state.created_ms + TTL_MS > now_ms() => Ok(task.clone()),
            _ => Err(invalid("Failed to retrieve task: Task not found")),
        }
    }
}

impl Call {
    /// A task tool's `tools/call`.
    pub(super) async fn task_tool(&self, name: &str, args: &Value) -> Result<Value, ErrorObject> {
        let declared = self.era == Era::Modern && tasks::declared_by_params(&self.params);
        let required = matches!(name, "failing_job" | "multi_input" | "test_tool_with_task");
        if self.era == Era::Modern && required && !declared {
            return Err(tasks::missing_extension(&format!("the tool {name}")));
        }
        let job = match name {
            "greet" => {
                let who = args.get("name").and_then(Value::as_str).unwrap_or("World");
                return Ok(text_result(&format!("Hello, {who}!")));
            }
            "slow_compute" => Job::Compute {
                seconds: seconds_arg(args)?,
                label: args
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            },
            "failing_job" => Job::ToolError,
            "protocol_error_job" => Job::ProtocolError,
            "confirm_delete" => Job::Confirm {
                filename: args
                    .get("filename")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            },
            "multi_input" => Job::TwoQuestions,
            _ => {
                // test_tool_with_task: the name is asked for synchronously
                // (MRTR, or a server→client request), then the work is a task.
                let asked = self.ask_name().await?;
                let answer = match asked {
                    Ok(answer) => answer,
                    Err(result) => return Ok(result),
                };
                let name = answer
                    .pointer("/content/name")
                    .or_else(|| answer.pointer("/content/user_name"))
                    .and_then(Value::as_str)
                    .unwrap_or("stranger")
                    .to_owned();
                Job::Greet { name }
            }
        };
        if declared {
            return self.shared.tasks.start(job);
        }
        self.run_inline(job).await
    }

    /// Asks for the user's name: MRTR in the modern era (under `user_name`),
    /// a server→client request in the legacy one.
    async fn ask_name(&self) -> Result<Result<Value, Value>, ErrorObject> {
        let ask = name_request();
        if self.era == Era::Modern {
            let params = ask["params"].clone();
            return Ok(
                match self.mrtr("elicitation", "user_name", "elicitation/create", params)? {
                    Mrtr::Answer(answer) => Ok(answer.clone()),
                    Mrtr::Ask(result) => Err(result),
                },
            );
        }
        self.ask(
            "elicitation",
            "user_name",
            "elicitation/create",
            ask["params"].clone(),
        )
        .await
    }

    /// A task tool run synchronously (no task): what its task would end with.
    async fn run_inline(&self, job: Job) -> Result<Value, ErrorObject> {
        match job {
            Job::Compute { seconds, label } => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
                    () = self.gone() => return Err(super::cancelled()),
                }
                Ok(text_result(&format!("Computed {label} after {seconds} s")))
            }
            Job::ToolError => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(tool_error("failing_job failed, as it always does"))
            }
            Job::ProtocolError => Err(err(
                code::INTERNAL_ERROR,
                "protocol_error_job failed with an internal error",
            )),
            Job::Confirm { filename } => {
                let params = confirm_request(&filename)["params"].clone();
                Ok(
                    match self
                        .ask("elicitation", "confirm", "elicitation/create", params)
                        .await?
                    {
                        Ok(answer) => text_result(&confirmation_text(&filename, &answer)),
                        Err(result) => result,
                    },
                )
            }
            Job::TwoQuestions => {
                let mut answers = Vec::new();
                for (key, ask) in [
                    ("name", name_request()),
                    ("confirm", confirm_request("multi_input")),
                ] {
                    match self
                        .ask(
                            "elicitation",
                            key,
                            "elicitation/create",
                            ask["params"].clone(),
                        )
                        .await?
                    {
                        Ok(answer) => answers.push(answer),
                        Err(result) => return Ok(result),
                    }
                }
                Ok(text_result(&format!(
                    "Got both answers: {} and {}",
                    answers[0], answers[1]
                )))
            }
            Job::Greet { name } => Ok(text_result(&format!("Hello, {name}!"))),
        }
    }

    /// `tasks/get`, `tasks/update` and `tasks/cancel` (modern era).
    pub(super) fn task_method(&self, method: &str) -> Result<Value, ErrorObject> {
        if !tasks::declared_by_params(&self.params) {
            return Err(tasks::missing_extension(method));
        }
        let task = self.shared.tasks.find(&self.params)?;
        match method {
            "tasks/get" => Ok(task.inner().state.get_result()),
            "tasks/update" => {
                let Some(responses) = self.params.get("inputResponses").and_then(Value::as_object)
                else {
                    return Err(invalid("'inputResponses' must be an object"));
                };
                task.answer(responses);
                Ok(json!({}))
            }
            _ => {
                task.settle(Status::Cancelled, Payload::None);
                Ok(json!({}))
            }
        }
    }
}

fn seconds_arg(args: &Value) -> Result<f64, ErrorObject> {
    match args.get("seconds").map(Value::as_f64) {
        None => Ok(0.0),
        Some(Some(s)) if (0.0..=MAX_SECONDS as f64).contains(&s) => Ok(s),
        Some(_) => Err(invalid(format_args!(
            "'seconds' must be a number from 0 to {MAX_SECONDS}"
        ))),
    }
}

fn confirm_request(filename: &str) -> Value {
    json!({"method": "elicitation/create", "params": {
        "mode": "form",
        "message": format!("Delete {filename}?"),
        "requestedSchema": {"type": "object",
            "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]},
    }})
}

fn name_request() -> Value {
    json!({"method": "elicitation/create", "params": {
        "mode": "form",
        "message": "What is your name?",
        "requestedSchema": {"type": "object",
            "properties": {"name": {"type": "string"}}, "required": ["name"]},
    }})
}

fn confirmation_text(filename: &str, answer: &Value) -> String {
    let confirmed = answer.get("action").and_then(Value::as_str) == Some("accept")
        && answer.pointer("/content/confirm") == Some(&Value::Bool(true));
    if confirmed {
        format!("Deleted {filename}")
    } else {
        format!("Kept {filename}")
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
