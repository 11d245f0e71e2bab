//! The demo upstream's 2024-11-05 HTTP+SSE transport, spoken raw: `GET /sse`
//! for the session's stream, `POST /messages?session_id=…` for each message.

use serde_json::json;

use crate::harness::{demo, http, text, wait_for_stat};
use crate::sse_client::{SseSession, post};

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
    s.progress_then_sampling("").await;
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
