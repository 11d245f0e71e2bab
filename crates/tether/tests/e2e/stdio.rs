//! stdio upstreams: Tether runs the server program, one process per client
//! session unless the upstream is shared, and recovers from crashes.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Legacy, Proc, binary, tether, tether_env, text};
use crate::isolation::counters_stay_apart;

/// Config for the demo upstream over stdio as "demo".
fn stdio_config(extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"demo\"\ncommand = [\"{}\", \"demo-upstream\", \"--stdio\"]\n{extra}\n",
        binary()
    )
}

/// The stdio demo processes Tether runs now.
fn processes(gw: &Proc) -> Vec<u32> {
    gw.children("--stdio")
}

async fn wait_for_processes(gw: &Proc, n: usize) {
    for _ in 0..100 {
        if processes(gw).len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} upstream processes, found {:?}", processes(gw));
}

#[tokio::test]
async fn each_client_session_gets_its_own_process() {
    let gw = tether(&stdio_config(""));
    counters_stay_apart(&gw.mcp()).await;
    wait_for_processes(&gw, 2).await;
    // Ending a client session stops its process (and only its).
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("demo__echo", json!({"text": "hi"})).await;
    wait_for_processes(&gw, 3).await;
    assert_eq!(c.delete().await, 200);
    wait_for_processes(&gw, 2).await;
}

#[tokio::test]
async fn a_crashed_process_fails_its_call_and_the_next_call_works() {
    let gw = tether(&stdio_config(""));
    let c = Legacy::connect(&gw.mcp()).await;
    assert_eq!(
        text(&c.call("demo__counter_increment", json!({})).await),
        "1"
    );
    let [pid] = processes(&gw)[..] else {
        panic!("one process: {:?}", processes(&gw))
    };
    let slow = c.request(
        "tools/call",
        json!({"name": "demo__progress", "arguments": {"steps": 20, "delay_ms": 250}}),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    };
    let (reply, ()) = tokio::join!(slow, kill);
    let error = &reply.last()["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("outcome unknown"),
        "{error}"
    );
    assert_eq!(error["data"]["outcomeUnknown"], true);
    // The next call gets a fresh process (the old one's state is gone).
    let r = c.call("demo__counter_increment", json!({})).await;
    assert_eq!(text(&r), "1");
    let now = processes(&gw);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], pid);
}

#[tokio::test]
async fn a_shared_process_serves_every_session_without_mixing_replies() {
    let gw = tether(&stdio_config("shared = true"));
    let a = Legacy::connect(&gw.mcp()).await;
    let b = Legacy::connect(&gw.mcp()).await;
    // Both clients use the same request ids at once: Tether renumbers them.
    let calls = (0..8).flat_map(|i| {
        [(&a, format!("a{i}")), (&b, format!("b{i}"))].map(|(c, t)| async move {
            (t.clone(), c.call("demo__echo", json!({"text": t})).await)
        })
    });
    for (sent, result) in futures_util::future::join_all(calls).await {
        assert_eq!(text(&result), sent);
    }
    a.call("demo__counter_increment", json!({})).await;
    let r = b.call("demo__counter_increment", json!({})).await;
    assert_eq!(text(&r), "2", "one process, one counter");
    wait_for_processes(&gw, 1).await;
    // Client sessions ending leave the shared process running.
    assert_eq!(a.delete().await, 200);
    assert_eq!(b.delete().await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processes(&gw).len(), 1);
}

/// A 3-step `demo__progress` call with progress token "tok": its progress
/// notifications (3 of them, checked) and the whole reply.
async fn three_steps(c: &Legacy) -> (Vec<serde_json::Value>, crate::harness::Reply) {
    let reply = c
        .request(
            "tools/call",
            json!({"name": "demo__progress", "arguments": {"steps": 3, "delay_ms": 10},
                   "_meta": {"progressToken": "tok"}}),
        )
        .await;
    let progress: Vec<_> = reply
        .messages
        .iter()
        .map(|(_, m)| m.clone())
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{:?}", reply.messages);
    (progress, reply)
}

#[tokio::test]
async fn progress_streams_through_a_process() {
    let gw = tether(&stdio_config(""));
    let c = Legacy::connect(&gw.mcp()).await;
    let (progress, reply) = three_steps(&c).await;
    assert!(
        progress
            .iter()
            .all(|m| m["params"]["progressToken"] == "tok")
    );
    assert!(reply.last()["result"].is_object());
}

#[tokio::test]
async fn the_process_stderr_is_logged_under_the_upstream_name() {
    let config = format!(
        "[[upstreams]]\nname = \"noisy\"\ncommand = [\"sh\", \"-c\", \"echo warming-up-{{}} >&2; exec {} demo-upstream --stdio\"]\nenv = {{ GREETING = \"x\" }}\n",
        binary()
    )
    .replace("{}", "$GREETING");
    let gw = tether_env(&config, &[("TETHER_LOG", "info")]);
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("noisy__echo", json!({"text": "hi"})).await;
    for _ in 0..50 {
        let log = gw.log();
        if let Some(line) = log.lines().find(|l| l.contains("warming-up-x")) {
            assert!(line.contains("upstream=noisy"), "{line}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stderr line not logged:\n{}", gw.log());
}

#[tokio::test]
async fn a_shared_process_runs_once_for_the_whole_cluster() {
    let pg = crate::harness::Postgres::start();
    let config = format!(
        "[store]\nurl = \"{}\"\n[cluster]\nsecret = \"s3cret\"\nheartbeat_ms = 200\ndead_after_ms = 1000\n{}",
        pg.url,
        stdio_config("shared = true")
    );
    async fn count(c: &Legacy) -> String {
        text(&c.call("demo__counter_increment", json!({})).await).to_owned()
    }
    let mut nodes = [tether(&config), tether(&config)];
    let clients = [
        Legacy::connect(&nodes[0].mcp()).await,
        Legacy::connect(&nodes[1].mcp()).await,
    ];
    assert_eq!(count(&clients[0]).await, "1");
    assert_eq!(count(&clients[1]).await, "2", "one process, one counter");
    // A reply streams back from the node running the process.
    for c in &clients {
        three_steps(c).await;
    }
    let running: Vec<usize> = nodes.iter().map(|n| processes(n).len()).collect();
    assert_eq!(
        running.iter().sum::<usize>(),
        1,
        "one process in the cluster: {running:?}"
    );
    // The node running it dies: the other node's client goes on with a
    // process of its own node (the old one's state died with it).
    let owner = running.iter().position(|n| *n == 1).unwrap();
    let other = 1 - owner;
    nodes[owner].kill();
    assert_eq!(count(&clients[other]).await, "1");
    wait_for_processes(&nodes[other], 1).await;
}
