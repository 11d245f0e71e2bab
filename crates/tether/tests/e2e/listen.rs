//! `subscriptions/listen` (2026-07-28) served by Tether: one stream over a
//! legacy and a modern upstream on the federated endpoint, and bridged to a
//! legacy upstream on its own endpoint.

use std::time::Duration;

use serde_json::{Value, json};
use tether_wire::sse::Decoder;

use crate::harness::{Proc, config, http, modern, spawn_demo, tether};

/// A client's open listen stream.
pub struct Listening {
    stream: reqwest::Response,
    decoder: Decoder,
    ready: std::collections::VecDeque<Value>,
}

impl Listening {
    /// Sends `subscriptions/listen` (request id 41) for `notifications`.
    pub async fn open(url: &str, notifications: Value) -> Listening {
        let body = json!({"jsonrpc": "2.0", "id": 41, "method": "subscriptions/listen", "params": {
        "notifications": notifications,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }}});
        let stream = http()
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "subscriptions/listen")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200, "{url}");
        Listening {
            stream,
            decoder: Decoder::new(1 << 20),
            ready: Default::default(),
        }
    }

    /// The next message, or `None` when none comes within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(m);
            }
            let chunk = tokio::time::timeout(wait, self.stream.chunk()).await.ok()?;
            let chunk = chunk.unwrap().expect("the stream stays open");
            for ev in self.decoder.feed(&chunk).unwrap() {
                if ev.event == "message" {
                    self.ready
                        .push_back(serde_json::from_str(&ev.data).unwrap());
                }
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }
}

/// Calls `tool` (a list-changing trigger) with a 2026-07-28 request.
async fn trigger(gw: &Proc, tool: &str) {
    let reply = modern(
        &gw.mcp(),
        "tools/call",
        json!({"name": tool, "arguments": {}}),
    )
    .await;
    assert!(
        reply.last()["result"].is_object(),
        "{tool}: {:?}",
        reply.messages
    );
}

const SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

#[tokio::test]
async fn one_federated_listen_stream_carries_both_eras_changes_as_filtered() {
    let old = spawn_demo(&["--era", "legacy", "--profile", "conformance"]);
    let new = spawn_demo(&["--era", "modern", "--profile", "conformance"]);
    let gw = tether(&config(&[("old", &old.mcp()), ("new", &new.mcp())], ""));
    let mut listening = Listening::open(&gw.mcp(), json!({"toolsListChanged": true})).await;
    let ack = listening.next().await;
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    assert_eq!(ack["params"]["_meta"][SUBSCRIPTION], 41);
    for upstream in ["old", "new"] {
        // A prompt change was not asked for; the tool change after it was.
        trigger(&gw, &format!("{upstream}__test_trigger_prompt_change")).await;
        trigger(&gw, &format!("{upstream}__test_trigger_tool_change")).await;
        let change = listening.next().await;
        assert_eq!(
            change["method"], "notifications/tools/list_changed",
            "{upstream}: {change}"
        );
        assert_eq!(
            change["params"]["_meta"][SUBSCRIPTION], 41,
            "{upstream}: {change}"
        );
    }
    assert_eq!(
        listening.next_within(Duration::from_millis(300)).await,
        None
    );
}

#[tokio::test]
async fn a_legacy_upstream_is_listened_to_on_its_own_endpoint() {
    let old = spawn_demo(&["--era", "legacy", "--profile", "conformance"]);
    let gw = tether(&config(&[("old", &old.mcp())], ""));
    let url = gw.mcp().replace("/mcp", "/u/old/mcp");
    let mut listening = Listening::open(
        &url,
        json!({"promptsListChanged": true, "toolsListChanged": false}),
    )
    .await;
    let ack = listening.next().await;
    assert_eq!(
        ack["params"]["notifications"],
        json!({"promptsListChanged": true}),
        "{ack}"
    );
    trigger(&gw, "old__test_trigger_tool_change").await;
    trigger(&gw, "old__test_trigger_prompt_change").await;
    let change = listening.next().await;
    assert_eq!(
        change["method"], "notifications/prompts/list_changed",
        "{change}"
    );
    assert_eq!(change["params"]["_meta"][SUBSCRIPTION], 41);
    // The stream holds one upstream session, ended with the stream.
    drop(listening);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = old.stats().await;
    assert_eq!(stats["live_sessions"], 0, "{stats}");
}

#[tokio::test]
async fn an_open_listen_stream_does_not_hold_the_shutdown() {
    let new = spawn_demo(&["--era", "modern", "--profile", "conformance"]);
    let old = spawn_demo(&["--era", "legacy", "--profile", "conformance"]);
    let mut gw = tether(&config(&[("new", &new.mcp()), ("old", &old.mcp())], ""));
    let mut listening = Listening::open(&gw.mcp(), json!({"toolsListChanged": true})).await;
    let ack = listening.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    let started = std::time::Instant::now();
    assert!(gw.terminate().success());
    // The shutdown timeout is 10 s: a stream holding the drain would take it all.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?} with a listen stream open",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_catalogue_change_reaches_the_listeners_it_concerns() {
    let a = spawn_demo(&["--era", "modern"]);
    let b = spawn_demo(&["--era", "legacy"]);
    let gw = tether(&config(&[("a", &a.mcp())], crate::harness::ADMIN));
    let mut federated = Listening::open(
        &gw.mcp(),
        json!({"toolsListChanged": true, "promptsListChanged": true}),
    )
    .await;
    let mut only_a = Listening::open(
        &gw.mcp().replace("/mcp", "/u/a/mcp"),
        json!({"toolsListChanged": true}),
    )
    .await;
    federated.next().await;
    only_a.next().await;
    let (status, answer) = gw
        .admin(
            "POST",
            "/upstreams",
            Some(json!({"name": "b", "url": b.mcp()})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let tools = federated.next().await;
    assert_eq!(
        tools["method"], "notifications/tools/list_changed",
        "{tools}"
    );
    assert_eq!(tools["params"]["_meta"][SUBSCRIPTION], 41);
    let prompts = federated.next().await;
    assert_eq!(
        prompts["method"], "notifications/prompts/list_changed",
        "{prompts}"
    );
    assert_eq!(
        only_a.next_within(Duration::from_millis(300)).await,
        None,
        "upstream a did not change"
    );
}
