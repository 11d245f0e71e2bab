//! The demo upstream's 2024-11-05 HTTP+SSE transport, spoken raw: `GET /sse`
//! for the session's stream, `POST /messages?session_id=…` for each message.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};
use tether::sse::{Decoder, Event};

use crate::harness::{Proc, demo, http, text};

/// One HTTP+SSE session: its open stream and the endpoint it named.
struct SseSession {
    base: String,
    stream: reqwest::Response,
    decoder: Decoder,
    ready: VecDeque<Event>,
    /// The `endpoint` event's data (`/messages?session_id=…`).
    endpoint: String,
    next_id: u64,
}

impl SseSession {
    /// Opens `GET /sse` and reads the `endpoint` event, which must come first.
    async fn open(server: &Proc) -> SseSession {
        let stream = http()
            .get(format!("{}/sse", server.base))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        assert!(
            stream.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut s = SseSession {
            base: server.base.clone(),
            stream,
            decoder: Decoder::new(1 << 20),
            ready: VecDeque::new(),
            endpoint: String::new(),
            next_id: 1,
        };
        let first = s.next_event().await;
        assert_eq!(first.event, "endpoint");
        assert!(first.data.starts_with("/messages?session_id="), "{first:?}");
        s.endpoint = first.data;
        s
    }

    /// The next event on the stream (keepalive comments are skipped).
    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return ev;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.stream.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.ready.extend(self.decoder.feed(&chunk).unwrap());
        }
    }

    /// The next `message` event's JSON-RPC message.
    async fn next_message(&mut self) -> Value {
        let ev = self.next_event().await;
        assert_eq!(ev.event, "message", "{ev:?}");
        serde_json::from_str(&ev.data).unwrap()
    }

    /// POSTs a raw body to the session's endpoint; the HTTP status.
    async fn post_raw(&self, body: String) -> u16 {
        post(&format!("{}{}", self.base, self.endpoint), body).await
    }

    /// POSTs a message, which must be accepted.
    async fn send(&self, message: &Value) {
        assert_eq!(self.post_raw(message.to_string()).await, 202);
    }

    /// Sends a request and returns its response from the stream, checking
    /// that the messages before it are the notifications `before` names.
    async fn request_after(&mut self, method: &str, params: Value, before: &[&str]) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        for expected in before {
            let m = self.next_message().await;
            assert_eq!(m["method"], *expected, "{m}");
        }
        let answer = self.next_message().await;
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    /// Sends a request and returns its `result`.
    async fn result(&mut self, method: &str, params: Value) -> Value {
        let answer = self.request_after(method, params, &[]).await;
        assert!(answer.get("error").is_none(), "{answer}");
        answer["result"].clone()
    }

    /// `initialize` (2024-11-05) then `notifications/initialized`; the result.
    async fn initialize(&mut self, capabilities: Value) -> Value {
        let result = self
            .result(
                "initialize",
                json!({"protocolVersion": "2024-11-05", "capabilities": capabilities,
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
}

async fn post(url: &str, body: String) -> u16 {
    http()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until the demo's `/stats` field `key` equals `want`.
async fn wait_for_stat(server: &Proc, key: &str, want: u64) {
    for _ in 0..100 {
        if server.stats().await[key] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} never became {want}: {}", server.stats().await);
}

#[tokio::test]
async fn endpoint_first_then_initialize_answers_on_the_stream() {
    let up = demo("dual");
    let mut s = SseSession::open(&up).await;
    let result = s.initialize(json!({})).await;
    assert_eq!(result["protocolVersion"], "2024-11-05");
    assert_eq!(result["serverInfo"]["name"], "tether-demo-upstream");
    let tools = s.result("tools/list", json!({})).await;
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo")
    );
    let echoed = s
        .result(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        )
        .await;
    assert_eq!(text(&echoed), "hi");
    let stats = up.stats().await;
    assert_eq!(
        (stats["initializes"].clone(), stats["sse_sessions"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        stats["live_sessions"], 0,
        "HTTP+SSE sessions are not /mcp sessions"
    );
    // The session ends with its stream.
    let endpoint = s.endpoint.clone();
    drop(s);
    wait_for_stat(&up, "sse_sessions", 0).await;
    let gone = post(
        &format!("{}{endpoint}", up.base),
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string(),
    )
    .await;
    assert_eq!(gone, 404);
}

#[tokio::test]
async fn counters_are_isolated_between_sse_sessions() {
    let up = demo("legacy");
    let mut a = SseSession::open(&up).await;
    let mut b = SseSession::open(&up).await;
    a.initialize(json!({})).await;
    b.initialize(json!({})).await;
    for want in 1..=3 {
        assert_eq!(a.count("counter_increment").await, want);
    }
    assert_eq!(b.count("counter_increment").await, 1);
    assert_eq!(a.count("counter_get").await, 3);
    assert_eq!(b.count("counter_get").await, 1);
}

#[tokio::test]
async fn progress_and_sampling_travel_on_the_stream() {
    let up = demo("dual");
    let mut s = SseSession::open(&up).await;
    s.initialize(json!({"sampling": {}})).await;
    let done = s
        .request_after(
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": 2, "delay_ms": 10},
                "_meta": {"progressToken": "p"}}),
            &["notifications/progress", "notifications/progress"],
        )
        .await;
    assert_eq!(text(&done["result"]), "completed 2 steps");
    // A server→client request arrives on the stream; its answer is POSTed back.
    s.send(&json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
        "params": {"name": "sample", "arguments": {"prompt": "say hi"}}}))
        .await;
    let ask = s.next_message().await;
    assert_eq!(ask["method"], "sampling/createMessage", "{ask}");
    s.send(&json!({"jsonrpc": "2.0", "id": ask["id"], "result": {
        "role": "assistant", "model": "test", "content": {"type": "text", "text": "hi!"}}}))
        .await;
    let answer = s.next_message().await;
    assert_eq!(answer["id"], 99);
    assert_eq!(text(&answer["result"]), "sampled: hi!");
}

#[tokio::test]
async fn session_ids_and_bodies_are_checked() {
    let up = demo("legacy");
    let s = SseSession::open(&up).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let messages = format!("{}/messages", up.base);
    assert_eq!(post(&messages, ping.clone()).await, 400, "no session_id");
    assert_eq!(
        post(
            &format!("{messages}?session_id=not%20an%20id"),
            ping.clone()
        )
        .await,
        400,
        "invalid session_id"
    );
    assert_eq!(
        post(
            &format!("{messages}?session_id=AAAAAAAAAAAAAAAAAAAAAA"),
            ping.clone()
        )
        .await,
        404,
        "unknown session_id"
    );
    assert_eq!(s.post_raw("{not json".into()).await, 400);
    assert_eq!(s.post_raw(ping).await, 202);
}

#[tokio::test]
async fn modern_only_server_has_no_sse_transport() {
    let up = demo("modern");
    let resp = http().get(format!("{}/sse", up.base)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}
