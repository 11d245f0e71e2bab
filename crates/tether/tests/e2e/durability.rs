//! Durable sessions: a session outlives the gateway process that created it,
//! with its upstream sessions re-attached (not re-initialized).

use serde_json::json;

use crate::harness::{ADMIN, Legacy, Postgres, Proc, TempDir, demo, tether, tether_at, text};

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

/// A client counts 3 on `endpoint` (`tool` is its name for the demo's
/// counter); the gateway is killed and started again on the same store; the
/// same client session counts on from there.
async fn killed_and_restarted(endpoint: &str, tool: &str) {
    let up = demo("legacy");
    let dir = TempDir::new();
    let config = sqlite_config(&dir, &up.mcp());
    let addr = free_addr();
    let url = format!("http://{addr}{endpoint}");
    let mut gw = tether_at(&config, &dir.0, &addr);
    let c = Legacy::connect(&url).await;
    for _ in 0..3 {
        c.call(tool, json!({})).await;
    }
    gw.kill(); // SIGKILL: nothing is flushed on the way out
    // Let the client's pooled connection to the dead process notice its end.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let gw = tether_at(&config, &dir.0, &addr);
    let r = c.call(tool, json!({})).await;
    assert_eq!(
        text(&r),
        "4",
        "{endpoint}: the upstream session was re-attached, not re-initialized"
    );
    let stats = up.stats().await;
    assert_eq!(stats["initializes"], 1, "{endpoint}: {stats}");
    // DELETE still ends it for good, upstream included.
    assert_eq!(c.delete().await, 200);
    assert_eq!(up.stats().await["deletes"], 1);
    assert_eq!(c.request("tools/list", json!({})).await.status, 404);
    drop(gw);
}

#[tokio::test]
async fn a_killed_gateway_restarted_on_the_same_store_keeps_the_session_and_upstream_state() {
    killed_and_restarted("/mcp", "demo__counter_increment").await;
}

#[tokio::test]
async fn a_passthrough_session_keeps_its_upstream_state_across_a_restart() {
    // The upstream session opened during the client's initialize on
    // /u/<upstream>/mcp is stored like any other.
    killed_and_restarted("/u/demo/mcp", "counter_increment").await;
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

/// Two nodes on one Postgres (`cluster`: their `[cluster]` section) with
/// the demo upstream, and a client session made on the first, as each node
/// sees it.
struct TwoNodes {
    _pg: Postgres,
    up: Proc,
    nodes: [Proc; 2],
    on_a: Legacy,
    on_b: Legacy,
}

async fn two_nodes(cluster: &str) -> TwoNodes {
    let pg = Postgres::start();
    let up = demo("legacy");
    let config = format!(
        "{ADMIN}[store]\nurl = \"{}\"\n{cluster}[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
        pg.url,
        up.mcp()
    );
    let (a, b) = (tether(&config), tether(&config));
    let on_a = Legacy::connect(&a.mcp()).await;
    let on_b = Legacy {
        url: b.mcp(),
        session: on_a.session.clone(),
        version: on_a.version.clone(),
        next: Default::default(),
        bearer: None,
    };
    TwoNodes {
        _pg: pg,
        up,
        nodes: [a, b],
        on_a,
        on_b,
    }
}

#[tokio::test]
async fn two_nodes_sharing_postgres_serve_one_session_in_turn() {
    let two = two_nodes("[cluster]\nsecret = \"s3cret\"\n").await;
    let TwoNodes { up, on_a, on_b, .. } = &two;
    let (status, view) = two.nodes[0].admin("GET", "/cluster", None).await;
    assert_eq!(status, 200, "{view}");
    let alive: Vec<bool> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["alive"].as_bool().unwrap())
        .collect();
    assert_eq!(alive, [true, true], "{view}");
    for i in 1..=6 {
        let node = if i % 2 == 1 { on_a } else { on_b };
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
    // DELETE on B ends it everywhere at once: the session's home closes the
    // upstream session, and neither node serves it any more.
    assert_eq!(on_b.delete().await, 200);
    assert_eq!(on_a.request("tools/list", json!({})).await.status, 404);
    assert_eq!(on_b.request("tools/list", json!({})).await.status, 404);
    assert_eq!(up.stats().await["deletes"], 1);
}

#[tokio::test]
async fn nodes_without_the_cluster_secret_refuse_to_split_a_session() {
    let two = two_nodes("").await;
    let TwoNodes { up, on_a, on_b, .. } = &two;
    assert_eq!(
        text(&on_a.call("demo__counter_increment", json!({})).await),
        "1"
    );
    let r = on_b
        .request("tools/call", json!({"name": "demo__counter_increment"}))
        .await;
    assert_eq!(
        r.status, 503,
        "B cannot reach A, and does not serve A's session itself"
    );
    assert!(
        r.last()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cluster.secret"),
        "{:?}",
        r.last()
    );
    assert_eq!(
        up.stats().await["initializes"],
        1,
        "no second upstream session"
    );
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
