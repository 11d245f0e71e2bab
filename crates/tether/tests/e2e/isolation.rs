//! [invariant: isolation]: one upstream session per (client session, upstream).

use serde_json::json;

use crate::harness::{Legacy, config, demo, metric, tether, text};

/// The isolation reproducer: client A increments 5×, B 3× → A reads 5, B 3.
pub async fn counters_stay_apart(gateway: &str) {
    let a = Legacy::connect(gateway).await;
    let b = Legacy::connect(gateway).await;
    for _ in 0..5 {
        a.call("demo__counter_increment", json!({})).await;
    }
    for _ in 0..3 {
        b.call("demo__counter_increment", json!({})).await;
    }
    let ra = a.call("demo__counter_get", json!({})).await;
    let rb = b.call("demo__counter_get", json!({})).await;
    assert_eq!(text(&ra), "5");
    assert_eq!(ra["structuredContent"]["count"], 5);
    assert_eq!(text(&rb), "3");
}

#[tokio::test]
async fn two_client_sessions_never_share_upstream_state() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    counters_stay_apart(&gw.mcp()).await;
    assert_eq!(
        up.stats().await["initializes"],
        2,
        "exactly two upstream sessions"
    );
}

#[tokio::test]
async fn one_client_session_reuses_one_upstream_session() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    for i in 0..10 {
        let r = c.call("demo__echo", json!({"text": format!("n{i}")})).await;
        assert_eq!(text(&r), format!("n{i}"));
    }
    assert_eq!(up.stats().await["initializes"], 1);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_upstream_sessions_created_total{upstream=\"demo\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn one_client_session_two_upstreams_two_upstream_sessions() {
    let up1 = demo("legacy");
    let up2 = demo("legacy");
    let gw = tether(&config(&[("one", &up1.mcp()), ("two", &up2.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("one__counter_increment", json!({})).await;
    c.call("one__counter_increment", json!({})).await;
    let r = c.call("two__counter_increment", json!({})).await;
    assert_eq!(text(&r), "1", "upstream two has its own counter");
    assert_eq!(up1.stats().await["initializes"], 1);
    assert_eq!(up2.stats().await["initializes"], 1);
}

#[tokio::test]
async fn concurrent_first_calls_share_one_initialize() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    let calls = (0..16).map(|_| c.call("demo__counter_increment", json!({})));
    let results = futures_util::future::join_all(calls).await;
    let mut counts: Vec<i64> = results
        .iter()
        .map(|r| r["structuredContent"]["count"].as_i64().unwrap())
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        (1..=16).collect::<Vec<_>>(),
        "all calls hit one upstream session"
    );
    assert_eq!(up.stats().await["initializes"], 1);
}

#[tokio::test]
async fn ending_a_client_session_deletes_its_upstream_sessions() {
    let up1 = demo("legacy");
    let up2 = demo("legacy");
    let gw = tether(&config(&[("one", &up1.mcp()), ("two", &up2.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("one__echo", json!({"text": "x"})).await;
    c.call("two__echo", json!({"text": "x"})).await;
    assert_eq!(c.delete().await, 200);
    for up in [&up1, &up2] {
        let s = up.stats().await;
        assert_eq!(s["deletes"], 1, "{s}");
        assert_eq!(s["live_sessions"], 0, "{s}");
    }
    let again = c.request("tools/list", json!({})).await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn idle_sessions_expire_and_close_upstream_sessions() {
    let up = demo("legacy");
    let gw = tether(&config(
        &[("demo", &up.mcp())],
        "[session]\nidle_ttl_secs = 1",
    ));
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("demo__echo", json!({"text": "x"})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while up.stats().await["deletes"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle session was not reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(c.request("tools/list", json!({})).await.status, 404);
}

#[tokio::test]
async fn a_restarted_upstream_gets_a_fresh_session_transparently() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut up = crate::harness::demo_at(&addr, "legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("demo__counter_increment", json!({})).await;
    up.kill();
    let up = crate::harness::demo_at(&addr, "legacy");
    // The old upstream session is gone (404 upstream): Tether opens a new one.
    let tools = c.result("tools/list", json!({})).await;
    assert!(!tools["tools"].as_array().unwrap().is_empty());
    assert_eq!(text(&c.call("demo__counter_get", json!({})).await), "0");
    assert_eq!(up.stats().await["initializes"], 1);
}

#[tokio::test]
async fn sigterm_closes_every_upstream_session_and_exits_promptly() {
    let up = demo("legacy");
    let mut gw = tether(&config(
        &[("demo", &up.mcp())],
        "[server]\nshutdown_timeout_secs = 2\n[store]\nurl = \"memory\"", // in memory, sessions end with the process
    ));
    let a = Legacy::connect(&gw.mcp()).await;
    let b = Legacy::connect(&gw.mcp()).await;
    a.call("demo__echo", json!({"text": "x"})).await;
    b.call("demo__echo", json!({"text": "x"})).await;
    // An open GET stream must not hold the shutdown up.
    let _stream = crate::harness::http()
        .get(gw.mcp())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", a.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let status = gw.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let s = up.stats().await;
    assert_eq!(s["deletes"], 2, "{s}");
    assert_eq!(s["live_sessions"], 0, "{s}");
}

#[tokio::test]
async fn dual_era_upstreams_keep_per_session_state_for_client_sessions() {
    let up = demo("dual");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    counters_stay_apart(&gw.mcp()).await;
    let stats = up.stats().await;
    assert_eq!(
        stats["initializes"], 2,
        "client sessions use the legacy era: {stats}"
    );
    // Sessionless (modern) clients use the modern era: no handshake per call.
    let r = crate::harness::modern(
        &gw.mcp(),
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"text": "m"}}),
    )
    .await;
    assert_eq!(text(&r.last()["result"]), "m");
    assert_eq!(up.stats().await["initializes"], 2);
}
