//! The tasks extension through Tether: tasks Tether runs for an upstream
//! that has none (a legacy demo upstream), kept in the store across a
//! restart and read from another node; input and cancellation inside a
//! task; and an upstream's own tasks relayed under Tether's ids.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const TASKS: &str = "io.modelcontextprotocol/tasks";

/// A modern request declaring the tasks extension (and elicitation).
async fn declaring(url: &str, method: &str, params: Value) -> Reply {
    let caps = json!({"elicitation": {}, "extensions": {TASKS: {}}});
    modern_as(url, method, params, caps, &[]).await
}

/// The result of a declaring request (panics on an error).
async fn result(url: &str, method: &str, params: Value) -> Value {
    let reply = declaring(url, method, params).await;
    let last = reply.last().clone();
    assert!(last.get("result").is_some(), "{method}: {last}");
    last["result"].clone()
}

/// Polls `tasks/get` until the task's status is one of `want`.
async fn until(url: &str, task: &str, want: &[&str]) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = result(url, "tasks/get", json!({"taskId": task})).await;
        if want.iter().any(|w| last["status"] == *w) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {task} never reached {want:?}: {last}");
}

fn legacy_conformance_upstream() -> Proc {
    spawn_demo(&["--profile", "conformance", "--era", "legacy"])
}

/// Config for one upstream `conf` and a SQLite store in `dir`.
fn task_config(up: &Proc, dir: &TempDir, tasks: &str) -> String {
    format!(
        "[tasks]\n{tasks}\n[store]\nurl = \"sqlite://{}/tasks.db\"\n{}",
        dir.0.display(),
        config(&[("conf", &up.mcp())], "")
    )
}

#[tokio::test]
async fn a_slow_call_to_a_legacy_upstream_becomes_a_task_that_outlives_a_restart() {
    let up = legacy_conformance_upstream();
    let dir = TempDir::new();
    let config = task_config(&up, &dir, "promote_after_ms = 300");
    let mut gw = tether(&config);
    let url = format!("{}/u/conf/mcp", gw.base);

    // Without the extension the same call stays synchronous.
    let plain = modern(
        &url,
        "tools/call",
        json!({"name": "slow_compute", "arguments": {"seconds": 0.5, "label": "sync"}}),
    )
    .await;
    let plain = &plain.last()["result"];
    assert_eq!(plain["resultType"], "complete", "{plain}");
    assert!(plain.get("taskId").is_none(), "{plain}");

    let call = json!({"name": "slow_compute", "arguments": {"seconds": 2, "label": "restart"}});
    let created = result(&url, "tools/call", call).await;
    assert_eq!(created["resultType"], "task", "{created}");
    assert_eq!(created["status"], "working", "{created}");
    assert!(created.get("result").is_none(), "{created}");
    let task = created["taskId"].as_str().unwrap().to_owned();
    let working = result(&url, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(working["status"], "working", "{working}");
    assert_eq!(working["resultType"], "complete", "{working}");
    let done = until(&url, &task, &["completed"]).await;
    assert_eq!(
        text(&done["result"]),
        "Computed restart after 2 s",
        "{done}"
    );

    // Bound to its endpoint: /mcp has never heard of it.
    let elsewhere = declaring(
        &format!("{}/mcp", gw.base),
        "tasks/get",
        json!({"taskId": task}),
    )
    .await;
    assert_eq!(
        elsewhere.last()["error"]["code"],
        -32602,
        "{:?}",
        elsewhere.last()
    );
    // Not declaring the extension: -32021 (HTTP 400) with what is missing.
    let undeclared = modern(&url, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(undeclared.status, 400);
    let error = &undeclared.last()["error"];
    assert_eq!(error["code"], -32021, "{error}");
    assert!(error["data"]["requiredCapabilities"]["extensions"][TASKS].is_object());

    // A task running at shutdown fails (its outcome is unknown); finished
    // ones are read back from the store by the next process.
    let running = result(
        &url,
        "tools/call",
        json!({"name": "slow_compute", "arguments": {"seconds": 60, "label": "cut"}}),
    )
    .await;
    let running = running["taskId"].as_str().unwrap().to_owned();
    assert!(gw.terminate().success());
    let gw = tether(&config);
    let url = format!("{}/u/conf/mcp", gw.base);
    let again = result(&url, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["result"], done["result"]);
    let cut = result(&url, "tasks/get", json!({"taskId": running})).await;
    assert_eq!(cut["status"], "failed", "{cut}");
    assert_eq!(cut["error"]["code"], -32603, "{cut}");
}

#[tokio::test]
async fn a_task_asks_for_input_through_tasks_update_and_can_be_cancelled() {
    let up = legacy_conformance_upstream();
    let dir = TempDir::new();
    // Every call of a declaring client becomes a task at once.
    let gw = tether(&task_config(&up, &dir, "promote_after_ms = 0"));
    let url = format!("{}/mcp", gw.base);

    let call = json!({"name": "conf__confirm_delete", "arguments": {"filename": "notes.txt"}});
    let created = result(&url, "tools/call", call).await;
    let task = created["taskId"].as_str().unwrap().to_owned();
    let asking = until(&url, &task, &["input_required"]).await;
    let requests = asking["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{asking}");
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(request["method"], "elicitation/create", "{asking}");
    assert_eq!(request["params"]["message"], "Delete notes.txt?");

    // An unknown key is ignored; the real answer resumes the call.
    let answers = json!({"nobody-asked": {"action": "decline"},
        key.as_str(): {"action": "accept", "content": {"confirm": true}}});
    let ack = result(
        &url,
        "tasks/update",
        json!({"taskId": task, "inputResponses": answers}),
    )
    .await;
    assert_eq!(ack, json!({"resultType": "complete"}));
    let done = until(&url, &task, &["completed"]).await;
    assert_eq!(text(&done["result"]), "Deleted notes.txt", "{done}");

    let slow = json!({"name": "conf__slow_compute", "arguments": {"seconds": 60, "label": "x"}});
    let created = result(&url, "tools/call", slow).await;
    let task = created["taskId"].as_str().unwrap().to_owned();
    let ack = result(&url, "tasks/cancel", json!({"taskId": task})).await;
    assert_eq!(ack, json!({"resultType": "complete"}));
    let cancelled = result(&url, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // Idempotent, and an unknown task is -32602.
    let again = result(&url, "tasks/cancel", json!({"taskId": task})).await;
    assert_eq!(again, json!({"resultType": "complete"}));
    let unknown = declaring(&url, "tasks/get", json!({"taskId": "tether.nope"})).await;
    assert_eq!(unknown.last()["error"]["code"], -32602);
    let removed = declaring(&url, "tasks/result", json!({"taskId": task})).await;
    assert_eq!(removed.last()["error"]["code"], -32601);
}

#[tokio::test]
async fn an_upstreams_own_tasks_are_relayed_under_tether_ids() {
    let one = spawn_demo(&["--profile", "conformance", "--era", "modern"]);
    let two = spawn_demo(&["--profile", "conformance", "--era", "modern"]);
    let gw = tether(&config(&[("one", &one.mcp()), ("two", &two.mcp())], ""));
    let url = format!("{}/mcp", gw.base);
    let call =
        json!({"name": "two__slow_compute", "arguments": {"seconds": 1, "label": "relayed"}});
    let created = result(&url, "tools/call", call).await;
    assert_eq!(created["resultType"], "task", "{created}");
    let task = created["taskId"].as_str().unwrap().to_owned();
    assert!(task.starts_with("tether."), "a Tether id: {task}");
    let done = until(&url, &task, &["completed"]).await;
    assert_eq!(done["taskId"], task.as_str(), "{done}");
    assert_eq!(text(&done["result"]), "Computed relayed after 1 s");
    // The upstream's own id never reaches the client.
    let direct = declaring(&two.mcp(), "tasks/get", json!({"taskId": task})).await;
    assert_eq!(
        direct.last()["error"]["code"],
        -32602,
        "{:?}",
        direct.last()
    );
}

#[tokio::test]
async fn a_task_is_read_and_cancelled_through_another_node() {
    let pg = Postgres::start();
    let up = legacy_conformance_upstream();
    let config = format!(
        "[cluster]\nsecret = \"s3cret\"\n[tasks]\npromote_after_ms = 200\n[store]\nurl = \"{}\"\n{}",
        pg.url,
        config(&[("conf", &up.mcp())], "")
    );
    let (a, b) = (tether(&config), tether(&config));
    let (on_a, on_b) = (format!("{}/mcp", a.base), format!("{}/mcp", b.base));
    let call =
        json!({"name": "conf__slow_compute", "arguments": {"seconds": 1.5, "label": "nodes"}});
    let created = result(&on_a, "tools/call", call).await;
    let task = created["taskId"].as_str().unwrap().to_owned();
    let seen = result(&on_b, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(seen["status"], "working", "{seen}");
    let done = until(&on_b, &task, &["completed"]).await;
    assert_eq!(text(&done["result"]), "Computed nodes after 1.5 s");

    // Cancelled through node b: the run on node a stops.
    let call = json!({"name": "conf__slow_compute", "arguments": {"seconds": 60, "label": "stop"}});
    let created = result(&on_a, "tools/call", call).await;
    let task = created["taskId"].as_str().unwrap().to_owned();
    let ack = result(&on_b, "tasks/cancel", json!({"taskId": task})).await;
    assert_eq!(ack["resultType"], "complete");
    let on_a_view = result(&on_a, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(on_a_view["status"], "cancelled", "{on_a_view}");
    let passed_on = metric(&b.metrics().await, "tether_passed_on_total");
    assert!(
        passed_on.is_some_and(|n| n >= 1.0),
        "node b passed the cancel on: {passed_on:?}"
    );
}
