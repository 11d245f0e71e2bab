//! A raw 2024-11-05 HTTP+SSE client: `GET` for the session's stream, `POST`
//! to the endpoint it names for each message.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};
use tether_wire::sse::{Decoder, Event};

use crate::harness::{Proc, http, text};

/// One HTTP+SSE session: its open stream and the endpoint it named.
pub struct SseSession {
    /// Scheme and authority the endpoint is relative to.
    pub base: String,
    /// Bearer token sent with every request, if any.
    bearer: Option<String>,
    stream: reqwest::Response,
    decoder: Decoder,
    ready: VecDeque<Event>,
    /// The `endpoint` event's data (e.g. `/messages?session_id=…`).
    pub endpoint: String,
    next_id: u64,
}

impl SseSession {
    /// Opens `GET <server>/sse` and reads the `endpoint` event, which must come first.
    pub async fn open(server: &Proc) -> SseSession {
        Self::open_at(&server.base, "/sse").await
    }

    /// Opens `GET <base><path>` and reads the `endpoint` event, which must come first.
    pub async fn open_at(base: &str, path: &str) -> SseSession {
        Self::open_as(base, path, None).await
    }

    /// [`SseSession::open_at`], authenticating with `bearer`.
    pub async fn open_as(base: &str, path: &str, bearer: Option<&str>) -> SseSession {
        let mut get = http().get(format!("{base}{path}"));
        if let Some(t) = bearer {
            get = get.bearer_auth(t);
        }
        let stream = get
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
            base: base.to_owned(),
            bearer: bearer.map(str::to_owned),
            stream,
            decoder: Decoder::new(1 << 20),
            ready: VecDeque::new(),
            endpoint: String::new(),
            next_id: 1,
        };
        let first = s.next_event().await;
        assert_eq!(first.event, "endpoint");
        assert!(first.data.contains("?session_id="), "{first:?}");
        s.endpoint = first.data;
        s
    }

    /// The next event on the stream (keepalive comments are skipped).
    pub async fn next_event(&mut self) -> Event {
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
    pub async fn next_message(&mut self) -> Value {
        let ev = self.next_event().await;
        assert_eq!(ev.event, "message", "{ev:?}");
        serde_json::from_str(&ev.data).unwrap()
    }

    /// POSTs a raw body to the session's endpoint; the HTTP status.
    pub async fn post_raw(&self, body: String) -> u16 {
        post_as(
            &format!("{}{}", self.base, self.endpoint),
            body,
            self.bearer.as_deref(),
        )
        .await
    }

    /// POSTs a message, which must be accepted.
    pub async fn send(&self, message: &Value) {
        assert_eq!(self.post_raw(message.to_string()).await, 202);
    }

    /// Sends a request and returns its response from the stream, checking
    /// that the messages before it are the notifications `before` names.
    pub async fn request_after(&mut self, method: &str, params: Value, before: &[&str]) -> Value {
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
    pub async fn result(&mut self, method: &str, params: Value) -> Value {
        let answer = self.request_after(method, params, &[]).await;
        assert!(answer.get("error").is_none(), "{answer}");
        answer["result"].clone()
    }

    /// `initialize` (2024-11-05) then `notifications/initialized`; the result.
    pub async fn initialize(&mut self, capabilities: Value) -> Value {
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

    /// Runs the demo's `progress` tool (its notifications come first on the
    /// stream) and `sample` (a server→client request answered by POST);
    /// `prefix` is how the demo's tools are named where this session is.
    pub async fn progress_then_sampling(&mut self, prefix: &str) {
        let done = self
        .request_after(
            "tools/call",
            json!({"name": &format!("{prefix}progress"), "arguments": {"steps": 2, "delay_ms": 10},
                "_meta": {"progressToken": "p"}}),
            &["notifications/progress", "notifications/progress"],
        )
        .await;
        assert_eq!(text(&done["result"]), "completed 2 steps");
        self.send(&json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
        "params": {"name": &format!("{prefix}sample"), "arguments": {"prompt": "say hi"}}}))
            .await;
        let ask = self.next_message().await;
        assert_eq!(ask["method"], "sampling/createMessage", "{ask}");
        self.send(&json!({"jsonrpc": "2.0", "id": ask["id"], "result": {
        "role": "assistant", "model": "test", "content": {"type": "text", "text": "hi!"}}}))
            .await;
        let answer = self.next_message().await;
        assert_eq!(answer["id"], 99);
        assert_eq!(text(&answer["result"]), "sampled: hi!");
    }

    pub async fn count(&mut self, tool: &str) -> u64 {
        let r = self
            .result("tools/call", json!({"name": tool, "arguments": {}}))
            .await;
        r["structuredContent"]["count"].as_u64().unwrap()
    }
}

/// POSTs a JSON body; the HTTP status.
pub async fn post(url: &str, body: String) -> u16 {
    post_as(url, body, None).await
}

/// POSTs a JSON body with a bearer token; the HTTP status.
pub async fn post_as(url: &str, body: String, bearer: Option<&str>) -> u16 {
    let mut req = http().post(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    req.header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
