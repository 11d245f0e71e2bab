//! Durable sessions: a session outlives the gateway process that created it,
//! with its upstream sessions re-attached (not re-initialized).

use serde_json::json;

use crate::harness::{Legacy, TempDir, demo, tether_at, text};

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
    let config = format!(
        "[store]\nurl = \"sqlite://{}/sessions.db\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
        dir.0.display(),
        up.mcp()
    );
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
    let config = format!(
        "[store]\nurl = \"sqlite://{}/sessions.db\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
        dir.0.display(),
        up.mcp()
    );
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
