//! `tether connect`: a stdio client, through the bridge, to a demo upstream
//! or a Tether gateway over Streamable HTTP.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::harness::{binary, config, demo, demo_at, tether, text};

/// A `tether connect` child process, spoken to over its stdin and stdout.
struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Bridge {
    fn spawn(url: &str) -> Bridge {
        let mut child = Command::new(binary())
            .args(["connect", url])
            .env(
                "TETHER_LOG",
                std::env::var("TETHER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("tether connect starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Bridge {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn send(&mut self, message: &Value) {
        self.send_line(&message.to_string()).await;
    }

    /// The next line on stdout, which must be one JSON message.
    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .expect("stdout stays open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Sends a request (without waiting); its id.
    async fn start(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// Sends a request and returns its response, which must be the next line.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.start(method, params).await;
        let answer = self.recv().await;
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    /// Sends a request and returns its `result`.
    async fn result(&mut self, method: &str, params: Value) -> Value {
        let answer = self.request(method, params).await;
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// `initialize` then `notifications/initialized`; the result.
    async fn initialize(&mut self, capabilities: Value) -> Value {
        let result = self
            .result(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": capabilities,
                    "clientInfo": {"name": "tether-tests", "version": "1"}}),
            )
            .await;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        result
    }

    async fn count(&mut self, tool: &str) -> u64 {
        let r = self
            .result("tools/call", json!({"name": tool, "arguments": {}}))
            .await;
        r["structuredContent"]["count"].as_u64().unwrap()
    }

    /// Closes stdin and waits for the bridge to exit.
    async fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the bridge exits after stdin closes")
            .unwrap()
    }
}

/// `host:port` of a base URL.
fn addr(base: &str) -> &str {
    base.trim_start_matches("http://")
}

#[tokio::test]
async fn relays_a_session_and_reinitializes_after_a_restart() {
    let mut up = demo("dual");
    let address = addr(&up.base).to_owned();
    let mut bridge = Bridge::spawn(&up.mcp());
    let init = bridge.initialize(json!({})).await;
    assert_eq!(init["protocolVersion"], "2025-11-25");
    let tools = bridge.result("tools/list", json!({})).await;
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "counter_increment")
    );
    assert_eq!(bridge.count("counter_increment").await, 1);
    assert_eq!(bridge.count("counter_increment").await, 2);

    // The remote restarts and forgets the session: the next call succeeds on
    // a fresh one (state is gone, so the count starts again).
    // Concurrent requests that find the session gone share one re-initialize.
    up.kill();
    let up = demo_at(&address, "dual");
    let increment = bridge
        .start(
            "tools/call",
            json!({"name": "counter_increment", "arguments": {}}),
        )
        .await;
    for _ in 0..3 {
        bridge.start("tools/list", json!({})).await;
    }
    for _ in 0..4 {
        let answer = bridge.recv().await;
        assert!(answer.get("result").is_some(), "{answer}");
        if answer["id"] == increment {
            assert_eq!(answer["result"]["structuredContent"]["count"], 1);
        }
    }
    assert_eq!(bridge.count("counter_get").await, 1);
    let stats = up.stats().await;
    assert_eq!(stats["initializes"], 1, "{stats}");

    // Down while the call is sent: retried until the remote is back.
    let mut up = up;
    up.kill();
    let id = bridge
        .start(
            "tools/call",
            json!({"name": "counter_increment", "arguments": {}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let up = demo_at(&address, "dual");
    let answer = bridge.recv().await;
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["count"], 1,
        "{answer}"
    );

    // Closing stdin ends the bridge cleanly, and its session with a DELETE.
    assert!(bridge.finish().await.success());
    assert_eq!(up.stats().await["deletes"], 1);
}

#[tokio::test]
async fn a_tool_call_cut_off_midway_is_not_replayed() {
    let mut up = demo("dual");
    let mut bridge = Bridge::spawn(&up.mcp());
    bridge.initialize(json!({})).await;
    let id = bridge
        .start(
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": 20, "delay_ms": 100},
                "_meta": {"progressToken": "p"}}),
        )
        .await;
    assert_eq!(bridge.recv().await["method"], "notifications/progress");
    up.kill();
    let answer = bridge.recv().await;
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(answer["error"]["data"]["outcomeUnknown"], true, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outcome is unknown")
    );
}

#[tokio::test]
async fn malformed_lines_get_errors_and_the_bridge_keeps_working() {
    let up = demo("legacy");
    let mut bridge = Bridge::spawn(&up.mcp());
    bridge.initialize(json!({})).await;
    for (line, code) in [
        ("this is not json".to_owned(), -32700),
        (
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#.to_owned(),
            -32600,
        ),
        ("[]".to_owned(), -32600),
        (format!("\"{}\"", "x".repeat(17 * 1024 * 1024)), -32600),
    ] {
        bridge.send_line(&line).await;
        let e = bridge.recv().await;
        assert_eq!(e["id"], Value::Null, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
    }
    let echoed = bridge
        .result(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "still here"}}),
        )
        .await;
    assert_eq!(text(&echoed), "still here");
}

#[tokio::test]
async fn progress_streams_live_and_server_requests_reach_the_client() {
    let up = demo("dual");
    let mut bridge = Bridge::spawn(&up.mcp());
    bridge.initialize(json!({"sampling": {}})).await;
    let id = bridge
        .start(
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": 3, "delay_ms": 300},
                "_meta": {"progressToken": "p"}}),
        )
        .await;
    let mut arrivals = Vec::new();
    for step in 1..=3 {
        let note = bridge.recv().await;
        assert_eq!(note["method"], "notifications/progress", "{note}");
        assert_eq!(note["params"]["progress"], step);
        arrivals.push(Instant::now());
    }
    let done = bridge.recv().await;
    assert_eq!(done["id"], id);
    assert_eq!(text(&done["result"]), "completed 3 steps");
    assert!(
        arrivals[2].duration_since(arrivals[0]) >= Duration::from_millis(400),
        "progress was buffered"
    );

    // A sampling request from the remote reaches the client, and its answer the remote.
    let id = bridge
        .start(
            "tools/call",
            json!({"name": "sample", "arguments": {"prompt": "say hi"}}),
        )
        .await;
    let ask = bridge.recv().await;
    assert_eq!(ask["method"], "sampling/createMessage", "{ask}");
    bridge
        .send(&json!({"jsonrpc": "2.0", "id": ask["id"], "result": {
            "role": "assistant", "model": "test", "content": {"type": "text", "text": "hi!"}}}))
        .await;
    let answer = bridge.recv().await;
    assert_eq!(answer["id"], id);
    assert_eq!(text(&answer["result"]), "sampled: hi!");
}

#[tokio::test]
async fn modern_requests_are_relayed_without_a_session() {
    let up = demo("modern");
    let mut bridge = Bridge::spawn(&up.mcp());
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "tether-tests", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let result = bridge
        .result(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "stateless"}, "_meta": meta}),
        )
        .await;
    assert_eq!(text(&result), "stateless");
    assert_eq!(result["resultType"], "complete");
    assert_eq!(up.stats().await["modern_requests"], 1);
}

#[tokio::test]
async fn works_through_a_tether_gateway() {
    let up = demo("dual");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let mut bridge = Bridge::spawn(&gw.mcp());
    bridge.initialize(json!({})).await;
    let tools = bridge.result("tools/list", json!({})).await;
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "demo__counter_increment"),
        "{tools}"
    );
    assert_eq!(bridge.count("demo__counter_increment").await, 1);
    assert_eq!(bridge.count("demo__counter_increment").await, 2);
    assert!(bridge.finish().await.success());
}
