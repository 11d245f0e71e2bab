//! The tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28): a
//! `tools/call` answered with a task handle (`resultType: "task"`) whose
//! state the client polls with `tasks/get`, feeds with `tasks/update` and
//! ends with `tasks/cancel`. What both sides need to agree on lives here:
//! the extension's name and how a request declares it, the statuses, the
//! task's wire shape and timestamps, and the errors the extension defines.

use serde_json::{Map, Value, json};

use crate::jsonrpc::{ErrorObject, RawObject};
use crate::protocol::{ERROR_MISSING_CAPABILITY, META_CLIENT_CAPABILITIES};

/// The extension's identifier, under `capabilities.extensions`.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// The `resultType` of a `CreateTaskResult`.
pub const RESULT_TYPE_TASK: &str = "task";

/// Whether client capabilities (an object, as declared) include the extension.
pub fn declared_in(capabilities: &Value) -> bool {
    capabilities
        .get("extensions")
        .and_then(|e| e.get(EXTENSION))
        .is_some()
}

/// Whether a request's params declare the extension in their `_meta`
/// client capabilities (2026-07-28 declares capabilities per request).
pub fn declared_by_params(params: &Value) -> bool {
    params
        .get("_meta")
        .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
        .is_some_and(declared_in)
}

/// The -32021 error for a client that did not declare the extension where
/// it must (task methods, a tool that only runs as a task, task
/// notifications on a listen stream).
pub fn missing_extension(what: &str) -> ErrorObject {
    ErrorObject::new(
        ERROR_MISSING_CAPABILITY,
        format!("Missing required client capability: {what} needs the {EXTENSION} extension"),
    )
    .with_data(json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}}))
}

/// A task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Being processed.
    Working,
    /// Waiting for the client's answers to its `inputRequests`.
    InputRequired,
    /// Finished with a result (a tool error included).
    Completed,
    /// Ended by a JSON-RPC error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl Status {
    /// The status on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Working => "working",
            Status::InputRequired => "input_required",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Status> {
        Some(match name {
            "working" => Status::Working,
            "input_required" => Status::InputRequired,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Whether the task can change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// A task's state: what `tasks/get` returns (a `DetailedTask`) and a
/// `CreateTaskResult` starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    /// The task's id.
    pub id: String,
    /// Its status.
    pub status: Status,
    /// Why it is in that status, if said.
    pub status_message: Option<String>,
    /// Creation, ms since the Unix epoch.
    pub created_ms: i64,
    /// Last change, ms since the Unix epoch.
    pub updated_ms: i64,
    /// How long after creation it is kept (ms); `None`: unlimited.
    pub ttl_ms: Option<i64>,
    /// The suggested polling interval (ms).
    pub poll_interval_ms: Option<i64>,
    /// Outstanding requests to the client (`input_required`), by key.
    pub input_requests: Map<String, Value>,
    /// The result (`completed`).
    pub result: Option<Value>,
    /// The JSON-RPC error (`failed`).
    pub error: Option<Value>,
}

impl TaskState {
    /// A new task, working, created at `now_ms`.
    pub fn working(id: String, now_ms: i64, ttl_ms: Option<i64>, poll_ms: Option<i64>) -> Self {
        TaskState {
            id,
            status: Status::Working,
            status_message: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            ttl_ms,
            poll_interval_ms: poll_ms,
            input_requests: Map::new(),
            result: None,
            error: None,
        }
    }

    /// Moves the task to `status` with its payload (`result` for
    /// `completed`, `error` for `failed`) at `now_ms`, nothing left
    /// outstanding.
    pub fn end(&mut self, status: Status, payload: Payload, now_ms: i64) {
        self.status = status;
        self.input_requests.clear();
        (self.result, self.error) = match payload {
            Payload::None => (None, None),
            Payload::Result(result) => (Some(result), None),
            Payload::Error(error) => (None, Some(error)),
        };
        self.updated_ms = now_ms;
    }

    /// The `Task` members every shape carries.
    fn base(&self) -> Map<String, Value> {
        let mut task = Map::new();
        task.insert("taskId".into(), json!(self.id));
        task.insert("status".into(), json!(self.status.as_str()));
        if let Some(message) = &self.status_message {
            task.insert("statusMessage".into(), json!(message));
        }
        task.insert("createdAt".into(), json!(iso8601(self.created_ms)));
        task.insert("lastUpdatedAt".into(), json!(iso8601(self.updated_ms)));
        task.insert("ttlMs".into(), json!(self.ttl_ms));
        if let Some(poll) = self.poll_interval_ms {
            task.insert("pollIntervalMs".into(), json!(poll));
        }
        task
    }

    /// The `CreateTaskResult`: the task, flat, with `resultType: "task"`
    /// (never its result, error or input requests).
    pub fn create_result(&self) -> Value {
        let mut task = self.base();
        task.insert("resultType".into(), json!(RESULT_TYPE_TASK));
        Value::Object(task)
    }

    /// The `DetailedTask` (what `tasks/get` answers and `notifications/tasks`
    /// carries): the task with its status's payload inlined.
    pub fn detailed(&self) -> Value {
        let mut task = self.base();
        match self.status {
            Status::InputRequired => {
                task.insert(
                    "inputRequests".into(),
                    Value::Object(self.input_requests.clone()),
                );
            }
            Status::Completed => {
                task.insert("result".into(), self.result.clone().unwrap_or(json!({})));
            }
            Status::Failed => {
                let error = self.error.clone().unwrap_or(
                    json!({"code": crate::jsonrpc::code::INTERNAL_ERROR, "message": "the task failed"}),
                );
                task.insert("error".into(), error);
            }
            Status::Working | Status::Cancelled => {}
        }
        Value::Object(task)
    }

    /// The `tasks/get` result: the detailed task with `resultType: "complete"`.
    pub fn get_result(&self) -> Value {
        let mut detailed = self.detailed();
        if let Some(obj) = detailed.as_object_mut() {
            obj.insert("resultType".into(), json!("complete"));
        }
        detailed
    }

    /// Reads a task back from its detailed form (as stored).
    pub fn from_detailed(value: &Value) -> Option<TaskState> {
        let obj = value.as_object()?;
        let text = |key: &str| obj.get(key).and_then(Value::as_str);
        Some(TaskState {
            id: text("taskId")?.to_owned(),
            status: Status::parse(text("status")?)?,
            status_message: text("statusMessage").map(str::to_owned),
            created_ms: parse_iso8601(text("createdAt")?)?,
            updated_ms: parse_iso8601(text("lastUpdatedAt")?)?,
            ttl_ms: obj.get("ttlMs").and_then(Value::as_i64),
            poll_interval_ms: obj.get("pollIntervalMs").and_then(Value::as_i64),
            input_requests: obj
                .get("inputRequests")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            result: obj.get("result").cloned(),
            error: obj.get("error").cloned(),
        })
    }
}

/// What a task ends with (see [`TaskState::end`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Nothing (`cancelled`, or `working` again).
    None,
    /// The request's result (`completed`).
    Result(Value),
    /// The JSON-RPC error (`failed`).
    Error(Value),
}

/// Whether a result (as raw members) is a `CreateTaskResult`.
pub fn is_create_result(result: &RawObject) -> bool {
    result.get("resultType").map(|t| t.get()) == Some("\"task\"")
}

/// `ms` since the Unix epoch as an ISO 8601 UTC timestamp with milliseconds.
pub fn iso8601(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// The inverse of [`iso8601`] (UTC, `Z`, optional fraction).
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (hms.next()??, hms.next()??, hms.next()??);
    let milli = format!("{fraction:0<3}").get(..3)?.parse::<i64>().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400_000 + ((h * 60 + min) * 60 + s) * 1000 + milli)
}

/// Days since 1970-01-01 to a (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A (year, month, day) to days since 1970-01-01, proleptic Gregorian.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_764_763_200_123), "2025-12-03T12:00:00.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for ms in [0, 1, 951_782_400_000, 1_764_763_200_123, 4_102_444_799_999] {
            assert_eq!(parse_iso8601(&iso8601(ms)), Some(ms));
        }
        assert_eq!(
            parse_iso8601("2025-11-25T10:30:00Z"),
            Some(1_764_066_600_000)
        );
        assert_eq!(parse_iso8601("2025-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso8601("yesterday"), None);
    }

    #[test]
    fn shapes_follow_the_status() {
        let mut task = TaskState::working("t1".into(), 0, Some(60_000), Some(500));
        let created = task.create_result();
        assert_eq!(created["resultType"], "task");
        assert_eq!(created["taskId"], "t1");
        assert_eq!(created["ttlMs"], 60_000);
        assert!(created.get("result").is_none() && created.get("inputRequests").is_none());
        task.status = Status::InputRequired;
        task.input_requests
            .insert("k".into(), json!({"method": "elicitation/create"}));
        assert_eq!(
            task.get_result()["inputRequests"]["k"]["method"],
            "elicitation/create"
        );
        assert_eq!(task.get_result()["resultType"], "complete");
        task.end(
            Status::Completed,
            Payload::Result(json!({"content": []})),
            5,
        );
        assert_eq!(task.updated_ms, 5);
        let detailed = task.detailed();
        assert!(detailed.get("inputRequests").is_none());
        assert_eq!(TaskState::from_detailed(&detailed), Some(task.clone()));
        task.ttl_ms = None;
        assert!(task.detailed()["ttlMs"].is_null(), "unlimited is null");
    }

    #[test]
    fn declaration_is_read_from_meta() {
        let params = json!({"_meta": {META_CLIENT_CAPABILITIES: {"extensions": {EXTENSION: {}}}}});
        assert!(declared_by_params(&params));
        assert!(!declared_by_params(&json!({"_meta": {}})));
        assert!(!declared_by_params(&json!({})));
        let e = missing_extension("tasks/get");
        assert_eq!(e.code, ERROR_MISSING_CAPABILITY);
    }
}
