//! Transport rules on `/mcp`: session ids, version headers, modern header
//! validation, edge checks, limits, health and metrics.

use serde_json::{Value, json};

use crate::harness::{Legacy, config, demo, metric, modern, post, tether};

fn stale_body() -> Value {
    json!({"jsonrpc": "2.0", "id": null, "error": {
        "code": -32600,
        "message": "MCP session expired or was not found; reinitialize the streamable HTTP session",
        "data": {"recoverable": true, "action": "reinitialize_mcp_session", "reason": "stale_streamable_http_session"},
    }})
}

#[tokio::test]
async fn session_rules() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let missing = post(&gw.mcp(), &[], &list).await;
    assert_eq!(missing.status, 400);
    for bad in [
        "unknown-but-well-formed",
        "bad id with spaces",
        &"x".repeat(200),
    ] {
        let r = post(&gw.mcp(), &[("mcp-session-id", bad.to_string())], &list).await;
        assert_eq!(r.status, 404, "{bad}");
        assert_eq!(r.last(), &stale_body());
    }
    let c = Legacy::connect(&gw.mcp()).await;
    let id = c.session.clone().unwrap();
    assert!(
        id.len() >= 22
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id}"
    );
    // A session made on /mcp is unknown on /u/demo/mcp.
    let other = post(
        &format!("{}/u/demo/mcp", gw.base),
        &[("mcp-session-id", id.clone())],
        &list,
    )
    .await;
    assert_eq!(other.status, 404);
    assert_eq!(c.delete().await, 200);
    let after = c.request("tools/list", json!({})).await;
    assert_eq!(after.status, 404);
    assert_eq!(after.last(), &stale_body());
    assert_eq!(c.delete().await, 404);
}

#[tokio::test]
async fn protocol_version_header_rules() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    let sid = c.session.clone().unwrap();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let with = |v: Option<&str>| {
        let mut h = vec![("mcp-session-id", sid.clone())];
        if let Some(v) = v {
            h.push(("mcp-protocol-version", v.to_string()));
        }
        h
    };
    assert_eq!(
        post(&gw.mcp(), &with(None), &ping).await.status,
        200,
        "absent → 2025-03-26"
    );
    assert_eq!(
        post(&gw.mcp(), &with(Some("2025-03-26")), &ping)
            .await
            .status,
        200,
        "older than negotiated"
    );
    assert_eq!(
        post(&gw.mcp(), &with(Some("2025-11-25")), &ping)
            .await
            .status,
        200
    );
    assert_eq!(
        post(&gw.mcp(), &with(Some("1999-01-01")), &ping)
            .await
            .status,
        400
    );
    let init = |v: &str| json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": v, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = post(&gw.mcp(), &[], &init("2025-06-18")).await;
    assert_eq!(r.last()["result"]["protocolVersion"], "2025-06-18");
    let r = post(&gw.mcp(), &[], &init("2030-01-01")).await;
    assert_eq!(r.last()["result"]["protocolVersion"], "2025-11-25");
}

#[tokio::test]
async fn modern_header_validation() {
    let up = demo("dual");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "demo__echo", "arguments": {"text": "x"}, "_meta": meta}});
    let v = || ("mcp-protocol-version", "2026-07-28".to_string());
    let m = |s: &str| ("mcp-method", s.to_string());
    let n = |s: &str| ("mcp-name", s.to_string());
    // Each case drops or falsifies one header: all are 400 + -32020.
    let cases = vec![
        vec![m("tools/call"), n("demo__echo")],
        vec![v(), n("demo__echo")],
        vec![v(), m("tools/list"), n("demo__echo")],
        vec![v(), m("tools/call")],
        vec![v(), m("tools/call"), n("demo__other")],
        vec![
            ("mcp-protocol-version", "2025-11-25".into()),
            m("tools/call"),
            n("demo__echo"),
        ],
    ];
    for headers in cases {
        let r = post(&gw.mcp(), &headers, &call).await;
        assert_eq!(r.status, 400, "{headers:?}");
        assert_eq!(r.last()["error"]["code"], -32020, "{headers:?}");
        assert_eq!(r.last()["id"], 3);
    }
    // The Base64 sentinel form of Mcp-Name is decoded before comparing.
    let sentinel = format!("=?base64?{}?=", "ZGVtb19fZWNobw==");
    let ok = post(&gw.mcp(), &[v(), m("tools/call"), n(&sentinel)], &call).await;
    assert_eq!(ok.status, 200, "{:?}", ok.messages);
    assert_eq!(ok.last()["result"]["content"][0]["text"], "x");
    // Unsupported version: -32022 listing what is supported.
    let mut old = call.clone();
    old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = post(
        &gw.mcp(),
        &[
            ("mcp-protocol-version", "2099-01-01".into()),
            m("tools/call"),
            n("demo__echo"),
        ],
        &old,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.last()["error"]["code"], -32022);
    assert_eq!(r.last()["error"]["data"]["requested"], "2099-01-01");
    assert!(
        r.last()["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    // Modern requests never mint sessions and ignore a session header.
    let r = post(
        &gw.mcp(),
        &[
            v(),
            m("tools/call"),
            n("demo__echo"),
            ("mcp-session-id", "whatever".into()),
        ],
        &call,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("mcp-session-id").is_none());
    // Unknown methods are 404 + -32601 for modern clients.
    let r = modern(&gw.mcp(), "nope/nothing", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.last()["error"]["code"], -32601);
}

#[tokio::test]
async fn edge_checks_and_limits() {
    let up = demo("legacy");
    let gw = tether(&config(
        &[("demo", &up.mcp())],
        "[server]\nmax_body_bytes = 2048",
    ));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let client = crate::harness::http();
    let send = |host: Option<&'static str>, origin: Option<&'static str>, body: String| {
        let mut req = client
            .post(gw.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    assert_eq!(
        send(Some("evil.example"), None, init.to_string())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send(None, Some("http://evil.example"), init.to_string())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send(None, Some("http://localhost:3000"), init.to_string())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Some("localhost:1234"), None, init.to_string())
            .await
            .unwrap()
            .status(),
        200
    );
    let huge =
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(4096)}});
    assert_eq!(
        send(None, None, huge.to_string()).await.unwrap().status(),
        413
    );
    let bad = send(None, None, "{not json".into()).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        serde_json::from_str::<Value>(&bad.text().await.unwrap()).unwrap()["error"]["code"],
        -32700
    );
    let batch = send(None, None, "[]".into()).await.unwrap();
    assert_eq!(batch.status(), 400);
    // Tether still serves after all of that.
    Legacy::connect(&gw.mcp()).await;
}

#[tokio::test]
async fn health_and_metrics() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    assert_eq!(
        crate::harness::http()
            .get(format!("{}/healthz", gw.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        crate::harness::http()
            .get(format!("{}/readyz", gw.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let a = Legacy::connect(&gw.mcp()).await;
    let _b = Legacy::connect(&gw.mcp()).await;
    a.call("demo__echo", json!({"text": "x"})).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_requests_total{method=\"initialize\",status=\"200\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tether_requests_total{method=\"tools/call\",status=\"200\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "tether_request_duration_seconds_count{method=\"tools/call\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "tether_downstream_sessions"), Some(2.0));
    assert_eq!(
        metric(&m, "tether_upstream_sessions{upstream=\"demo\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn overload_answers_503_with_retry_after() {
    let up = demo("legacy");
    let gw = tether(&config(
        &[("demo", &up.mcp())],
        "[server]\nmax_inflight_requests = 1\n[session]\nmax_sessions = 2",
    ));
    let a = Legacy::connect(&gw.mcp()).await;
    let _b = Legacy::connect(&gw.mcp()).await;
    // Session cap.
    let third = post(&gw.mcp(), &[], &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})).await;
    assert_eq!(third.status, 503);
    assert!(third.headers.get("retry-after").is_some());
    // In-flight cap: a streaming call holds the only slot until it ends.
    let slow = a.request(
        "tools/call",
        json!({"name": "demo__progress", "arguments": {"steps": 3, "delay_ms": 300}, "_meta": {"progressToken": 1}}),
    );
    let probe = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        a.request(
            "tools/call",
            json!({"name": "demo__echo", "arguments": {"text": "x"}}),
        )
        .await
    };
    let (slow, busy) = tokio::join!(slow, probe);
    assert_eq!(slow.status, 200);
    assert_eq!(busy.status, 503);
    assert!(busy.headers.get("retry-after").is_some());
    // Capacity comes back once the stream ended.
    assert_eq!(
        a.call("demo__echo", json!({"text": "again"})).await["content"][0]["text"],
        "again"
    );
}

#[tokio::test]
async fn modern_clients_get_modern_answers() {
    let up = demo("dual");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    for method in ["ping", "logging/setLevel", "resources/subscribe"] {
        let r = modern(
            &gw.mcp(),
            method,
            json!({"level": "info", "uri": "demo://readme"}),
        )
        .await;
        assert_eq!(r.status, 404, "{method} does not exist in 2026-07-28");
        assert_eq!(r.last()["error"]["code"], -32601);
    }
    let init = modern(&gw.mcp(), "initialize", json!({"protocolVersion": "2026-07-28", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})).await;
    assert_eq!(init.status, 404);
    assert!(init.headers.get("mcp-session-id").is_none());
    let get = crate::harness::http()
        .get(gw.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    // A resource the upstream does not have: -32602 (2026-07-28 retired -32002).
    let r = modern(
        &gw.mcp(),
        "resources/read",
        json!({"uri": "demo://nothing"}),
    )
    .await;
    assert_eq!(r.last()["error"]["code"], -32602, "{:?}", r.messages);
}

#[tokio::test]
async fn legacy_request_mentioning_modern_meta_key_stays_legacy() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    let text = "io.modelcontextprotocol/protocolVersion";
    let r = c.call("demo__echo", json!({ "text": text })).await;
    assert_eq!(r["content"][0]["text"], text);
}
