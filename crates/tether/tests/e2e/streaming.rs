//! [invariant: stream-live]: SSE is relayed live, and server→client requests
//! reach the client and their answers reach the upstream.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Legacy, config, demo, tether, text};

#[tokio::test]
async fn progress_arrives_live_before_the_result() {
    for era in ["legacy", "modern"] {
        let up = demo(era);
        let gw = tether(&config(&[("demo", &up.mcp())], ""));
        let c = Legacy::connect(&gw.mcp()).await;
        let reply = c
            .request(
                "tools/call",
                json!({"name": "demo__progress", "arguments": {"steps": 4, "delay_ms": 300}, "_meta": {"progressToken": "tok"}}),
            )
            .await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        assert_eq!(reply.headers["x-accel-buffering"], "no");
        let methods: Vec<&str> = reply
            .messages
            .iter()
            .map(|(_, m)| m["method"].as_str().unwrap_or("result"))
            .collect();
        assert_eq!(
            methods,
            ["notifications/progress"; 4]
                .iter()
                .copied()
                .chain(["result"])
                .collect::<Vec<_>>(),
            "{era}"
        );
        for (i, (_, m)) in reply.messages[..4].iter().enumerate() {
            assert_eq!(m["params"]["progressToken"], "tok");
            assert_eq!(m["params"]["progress"], i + 1);
        }
        assert_eq!(text(&reply.last()["result"]), "completed 4 steps");
        // Not buffered: the first progress event reached the client well
        // before the upstream finished its remaining three 300 ms steps.
        let first = reply.messages[0].0;
        let done = reply.messages[4].0;
        assert!(
            done.duration_since(first) >= Duration::from_millis(600),
            "{era}: events were buffered"
        );
    }
}

/// Reads SSE events from a streaming response one at a time.
struct Events {
    resp: reqwest::Response,
    buf: String,
    /// The id of the last event read.
    last_id: Option<String>,
}

impl Events {
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) {
                    self.last_id = Some(id.to_string());
                }
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if !data.is_empty() {
                    return Some(serde_json::from_str(&data.join("\n")).unwrap());
                }
                continue;
            }
            let chunk = self.resp.chunk().await.unwrap()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn sampling_request_is_relayed_and_answered() {
    // A legacy upstream asks with a server→client request on the call's stream;
    // a modern one with an input_required result that Tether turns into one.
    for era in ["legacy", "modern"] {
        let up = demo(era);
        let gw = tether(&config(&[("demo", &up.mcp())], ""));
        let c = Legacy::connect_with(&gw.mcp(), json!({"sampling": {}})).await;
        let resp = c.open_post(&json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": "demo__sample", "arguments": {"prompt": "say hi"}}})).await;
        let mut events = Events {
            resp,
            buf: String::new(),
            last_id: None,
        };
        let ask = events.next().await.expect("sampling request");
        assert_eq!(ask["method"], "sampling/createMessage", "{era}: {ask}");
        assert_eq!(ask["params"]["messages"][0]["content"]["text"], "say hi");
        let relay_id = ask["id"].clone();
        let answer = c
            .send(&json!({"jsonrpc": "2.0", "id": relay_id, "result": {
                "role": "assistant", "content": {"type": "text", "text": "hi there"}, "model": "test-model"}}))
            .await;
        assert_eq!(answer.status, 202);
        let done = events.next().await.expect("tool result");
        assert_eq!(done["id"], 41, "{era}: {done}");
        assert_eq!(text(&done["result"]), "sampled: hi there", "{era}: {done}");
    }
}

#[tokio::test]
async fn client_without_sse_gets_the_final_json_response() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    let resp = crate::harness::http()
        .post(gw.mcp())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", c.session.clone().unwrap())
        .body(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "demo__progress", "arguments": {"steps": 2, "delay_ms": 10}, "_meta": {"progressToken": 1}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["id"], 7);
    assert_eq!(text(&body["result"]), "completed 2 steps");
}

#[tokio::test]
async fn upstream_stream_messages_reach_the_client_get_stream() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("demo__echo", json!({"text": "open the upstream session"}))
        .await;
    let resp = c.open_get(None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut events = Events {
        resp,
        buf: String::new(),
        last_id: None,
    };
    // The upstream's own stream is relayed once Tether has it open.
    let mut delivered = false;
    for _ in 0..100 {
        let r = c
            .call("demo__announce", json!({"message": "catalogue changed"}))
            .await;
        if text(&r) == "delivered to 1 listeners" {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        delivered,
        "Tether never opened the upstream session's GET stream"
    );
    let note = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note["method"], "notifications/message");
    assert_eq!(note["params"]["data"], "catalogue changed");
    // The GET stream is resumable: what arrives while the client is away is
    // replayed after the last event id it saw.
    let last_id = events.last_id.clone().expect("GET stream events carry ids");
    drop(events);
    let r = c
        .call("demo__announce", json!({"message": "while you were away"}))
        .await;
    assert_eq!(text(&r), "delivered to 1 listeners");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resumed = c.open_get(Some(&last_id)).await;
    let mut events = Events {
        resp: resumed,
        buf: String::new(),
        last_id: None,
    };
    let missed = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(missed["params"]["data"], "while you were away");
}

#[tokio::test]
async fn modern_client_answers_a_legacy_upstreams_request_as_input_required() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    for (url, tool) in [
        (gw.mcp(), "demo__sample"),
        (format!("{}/u/demo/mcp", gw.base), "sample"),
    ] {
        let call = |extra: Value, capabilities: Value| {
            let mut params = json!({"name": tool, "arguments": {"prompt": "say hi"}});
            for (k, v) in extra.as_object().unwrap() {
                params[k] = v.clone();
            }
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": capabilities,
            });
            let headers = vec![
                ("mcp-protocol-version", "2026-07-28".to_string()),
                ("mcp-method", "tools/call".to_string()),
                ("mcp-name", tool.to_string()),
            ];
            let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params});
            let url = url.clone();
            async move { crate::harness::post(&url, &headers, &body).await }
        };
        let sampling = json!({"sampling": {}});
        let first = call(json!({}), sampling.clone()).await;
        let result = first.last()["result"].clone();
        assert_eq!(result["resultType"], "input_required", "{url}: {result}");
        let (key, ask) = result["inputRequests"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        assert_eq!(ask["method"], "sampling/createMessage");
        assert_eq!(ask["params"]["messages"][0]["content"]["text"], "say hi");
        let state = result["requestState"].clone();
        // A retry without the answer is asked again, under the same state.
        let again = call(json!({"requestState": state}), sampling.clone()).await;
        assert_eq!(
            again.last()["result"]["requestState"],
            state,
            "{url}: {:?}",
            again.last()
        );
        let answer = json!({"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"});
        let done = call(
            json!({"inputResponses": {key: answer}, "requestState": state}),
            sampling.clone(),
        )
        .await;
        let last = done.last();
        assert_eq!(last["id"], 7);
        assert_eq!(text(&last["result"]), "sampled: hello", "{url}: {last}");
        // A spent state names no call any more: an error, never a second run.
        let spent = call(
            json!({"inputResponses": {key: answer}, "requestState": state}),
            sampling.clone(),
        )
        .await;
        assert_eq!(spent.last()["error"]["code"], -32602, "{url}");
        // A client that did not declare sampling is never asked for it.
        let undeclared = call(json!({}), json!({})).await;
        assert_ne!(
            undeclared.last()["result"]["resultType"],
            "input_required",
            "{url}"
        );
    }
    // Every per-call upstream session ended with its call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = up.stats().await;
    assert_eq!(stats["initializes"], stats["deletes"], "{stats}");
}

#[tokio::test]
async fn a_resumed_calls_progress_names_the_retrys_token() {
    // The legacy upstream reports progress after the client's answer, under
    // the token of the request it was sent; the modern client waits on its
    // retry, which named another token (or none).
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let url = format!("{}/u/demo/mcp", gw.base);
    let call = |extra: Value, token: Option<Value>| {
        let mut params = json!({"name": "sample", "arguments": {"prompt": "say hi"}});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
        });
        if let Some(token) = token {
            params["_meta"]["progressToken"] = token;
        }
        let headers = vec![
            ("mcp-protocol-version", "2026-07-28".to_string()),
            ("mcp-method", "tools/call".to_string()),
            ("mcp-name", "sample".to_string()),
        ];
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params});
        let url = url.clone();
        async move { crate::harness::post(&url, &headers, &body).await }
    };
    let answer =
        json!({"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"});
    for retry_token in [Some(json!("retry-token")), None] {
        let first = call(json!({}), Some(json!("first-token"))).await;
        let result = first.last()["result"].clone();
        assert_eq!(result["resultType"], "input_required", "{result}");
        let key = result["inputRequests"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        let retry =
            json!({"inputResponses": {key: answer}, "requestState": result["requestState"]});
        let done = call(retry, retry_token.clone()).await;
        assert_eq!(
            text(&done.last()["result"]),
            "sampled: hello",
            "{:?}",
            done.messages
        );
        let tokens: Vec<&Value> = done
            .messages
            .iter()
            .filter(|(_, m)| m["method"] == "notifications/progress")
            .map(|(_, m)| &m["params"]["progressToken"])
            .collect();
        match &retry_token {
            Some(token) => assert_eq!(tokens, [token], "{:?}", done.messages),
            None => assert!(
                tokens.is_empty(),
                "no progress asked for: {:?}",
                done.messages
            ),
        }
    }
}

#[tokio::test]
async fn a_dropped_stream_resumes_with_last_event_id() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    let resp = c.open_post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "demo__progress", "arguments": {"steps": 4, "delay_ms": 150}, "_meta": {"progressToken": "r"}}})).await;
    // Read the first event with its id, then drop the connection.
    let mut raw = String::new();
    let mut resp = resp;
    while !raw.contains("\n\n") {
        raw.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    let last_id = raw
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("events carry ids")
        .to_string();
    drop(resp);
    tokio::time::sleep(Duration::from_millis(900)).await; // the call finishes meanwhile
    let resumed = c.open_get(Some(&last_id)).await;
    assert_eq!(resumed.status(), 200);
    let mut events = Events {
        resp: resumed,
        buf: String::new(),
        last_id: None,
    };
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        let done = m.get("result").is_some();
        got.push(m);
        if done {
            break;
        }
    }
    let progress: Vec<i64> = got
        .iter()
        .filter_map(|m| m["params"]["progress"].as_i64())
        .collect();
    assert_eq!(progress, [2, 3, 4], "exactly the events after {last_id}");
    assert_eq!(got.last().unwrap()["id"], 9);
    assert_eq!(text(&got.last().unwrap()["result"]), "completed 4 steps");
}
