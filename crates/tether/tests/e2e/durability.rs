//! Durable sessions: a session outlives the gateway process that created it,
//! with its upstream sessions re-attached (not re-initialized).

use serde_json::json;

use crate::harness::{Legacy, TempDir, demo, tether_at, text};

/// A gateway config on a SQLite file in `dir` with one upstream.
fn sqlite_config(dir: &TempDir, upstream: &str) -> String {
    format!(
        "[store]\nurl = \"sqlite://{}/sessions.db\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{upstream}\"\n",
        dir.0.display()
    )
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

#[tokio::test]
async fn a_killed_gateway_restarted_on_the_same_store_keeps_the_session_and_upstream_state() {
    let up = demo("legacy");
    let dir = TempDir::new();
    let config = sqlite_config(&dir, &up.mcp());
    let addr = free_addr();
    let mut gw = tether_at(&config, &dir.0, &addr);
    let c = Legacy::connect(&gw.mcp()).await;
    for _ in 0..3 {
        c.call("demo__counter_increment", json!({})).await;
    }
    gw.kill(); // SIGKILL: nothing is flushed on the way out
    // Let the client's pooled connection to the dead process notice its end.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let gw = tether_at(&config, &dir.0, &addr);
    let r = c.call("demo__counter_increment", json!({})).await;
    assert_eq!(
        text(&r),
        "4",
        "the upstream session was re-attached, not re-initialized"
    );
    let stats = up.stats().await;
    assert_eq!(stats["initializes"], 1, "{stats}");
    // DELETE still ends it for good, upstream included.
    assert_eq!(c.delete().await, 200);
    assert_eq!(up.stats().await["deletes"], 1);
    assert_eq!(c.request("tools/list", json!({})).await.status, 404);
    drop(gw);
}

#[tokio::test]
async fn a_gracefully_stopped_gateway_keeps_sessions_for_the_next_one() {
    let up = demo("legacy");
    let dir = TempDir::new();
    let config = sqlite_config(&dir, &up.mcp());
    let addr = free_addr();
    let mut gw = tether_at(&config, &dir.0, &addr);
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("demo__counter_increment", json!({})).await;
    assert!(gw.terminate().success());
    assert_eq!(
        up.stats().await["deletes"],
        0,
        "a restart is not the end of the session"
    );
    let _gw = tether_at(&config, &dir.0, &addr);
    assert_eq!(text(&c.call("demo__counter_get", json!({})).await), "1");
}

#[tokio::test]
async fn two_nodes_sharing_postgres_serve_one_session_in_turn() {
    let pg = crate::harness::Postgres::start();
    let up = demo("legacy");
    let config = format!(
        "[store]\nurl = \"{}\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
        pg.url,
        up.mcp()
    );
    let a = crate::harness::tether(&config);
    let b = crate::harness::tether(&config);
    let on_a = Legacy::connect(&a.mcp()).await;
    let on_b = Legacy {
        url: b.mcp(),
        session: on_a.session.clone(),
        version: on_a.version.clone(),
        next: Default::default(),
        bearer: None,
    };
    for i in 1..=6 {
        let node = if i % 2 == 1 { &on_a } else { &on_b };
        let r = node.call("demo__counter_increment", json!({})).await;
        assert_eq!(
            text(&r),
            i.to_string(),
            "call {i} on node {}",
            if i % 2 == 1 { "A" } else { "B" }
        );
    }
    assert_eq!(
        up.stats().await["initializes"],
        1,
        "both nodes used the same upstream session"
    );
    // DELETE on B ends it everywhere: B closes the upstream session, A drops
    // its copy at its next store write and then answers 404 like B.
    assert_eq!(on_b.delete().await, 200);
    assert_eq!(on_b.request("tools/list", json!({})).await.status, 404);
    assert_eq!(up.stats().await["deletes"], 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = on_a.request("ping", json!({})).await.status;
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node A kept serving a deleted session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn lifecycle_caps_and_absolute_lifetime() {
    let up = demo("legacy");
    let toml = format!(
        "[session]\nmax_sessions_per_principal = 2\nabsolute_ttl_secs = 2\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
        up.mcp()
    );
    let gw = crate::harness::tether(&toml);
    let a = Legacy::connect(&gw.mcp()).await;
    let _b = Legacy::connect(&gw.mcp()).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let third = crate::harness::post(&gw.mcp(), &[], &init).await;
    assert_eq!(third.status, 429, "per-principal cap");
    assert!(third.headers.get("retry-after").is_some());
    a.call("demo__echo", json!({"text": "x"})).await;
    // However busy, a session ends at its absolute lifetime (upstream session included).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = a
            .request(
                "tools/call",
                json!({"name": "demo__echo", "arguments": {"text": "x"}}),
            )
            .await;
        if r.status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived absolute_ttl_secs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(up.stats().await["deletes"], 1);
    // Its place is free again.
    Legacy::connect(&gw.mcp()).await;
}
