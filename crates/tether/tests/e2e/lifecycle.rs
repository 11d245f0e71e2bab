//! Upstream lifecycle: the admin API, eviction on connect-affecting changes,
//! reload, health and recovery, idle validation, bounded shutdown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    ADMIN, ADMIN_TOKEN, Legacy, Proc, config, demo, demo_at, http, http_unpooled, metric, tether,
    tether_env, text, wait_for_stat,
};

fn definition(name: &str, url: &str, description: &str) -> Value {
    json!({"name": name, "url": url, "description": description})
}

/// An admin request that must succeed with `status`; its answer.
async fn admin_ok(gw: &Proc, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
    let (got, answer) = gw.admin(method, path, body).await;
    assert_eq!(got, status, "{method} {path}: {answer}");
    answer
}

fn names(change: &Value, key: &str) -> Vec<String> {
    change["change"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn url_changes_move_sessions_and_description_changes_keep_them() {
    let fixed = demo("legacy");
    let (b, c) = (demo("legacy"), demo("legacy"));
    let gw = tether(&config(&[("fixed", &fixed.mcp())], ADMIN));
    let created = admin_ok(
        &gw,
        "POST",
        "/upstreams",
        Some(definition("moving", &b.mcp(), "first")),
        201,
    )
    .await;
    assert_eq!(names(&created, "added"), ["moving"]);
    let client = Legacy::connect(&gw.mcp()).await;
    let count = |r: Value| r["structuredContent"]["count"].as_u64().unwrap();
    assert_eq!(
        count(client.call("moving__counter_increment", json!({})).await),
        1
    );
    assert_eq!(
        count(client.call("moving__counter_increment", json!({})).await),
        2
    );

    // Cosmetic: the same upstream session carries on.
    let change = admin_ok(
        &gw,
        "PUT",
        "/upstreams/moving",
        Some(definition("moving", &b.mcp(), "renamed")),
        200,
    )
    .await;
    assert_eq!(names(&change, "described"), ["moving"]);
    assert_eq!(change["change"]["closed_sessions"], 0);
    assert_eq!(
        count(client.call("moving__counter_increment", json!({})).await),
        3
    );
    assert_eq!(b.stats().await["initializes"], 1);

    // Connect-affecting: the old upstream session is closed, the next call goes to the new URL.
    let change = admin_ok(
        &gw,
        "PUT",
        "/upstreams/moving",
        Some(definition("moving", &c.mcp(), "renamed")),
        200,
    )
    .await;
    assert_eq!(names(&change, "replaced"), ["moving"]);
    assert_eq!(change["change"]["closed_sessions"], 1);
    wait_for_stat(&b, "deletes", 1).await;
    assert_eq!(
        count(client.call("moving__counter_increment", json!({})).await),
        1
    );
    assert_eq!(c.stats().await["initializes"], 1);
    // The untouched upstream kept its session throughout.
    client.call("fixed__echo", json!({"text": "x"})).await;
    client.call("fixed__echo", json!({"text": "y"})).await;
    assert_eq!(fixed.stats().await["initializes"], 1);

    // The config file's upstreams are read-only here; deleting closes sessions.
    let _ = admin_ok(
        &gw,
        "PUT",
        "/upstreams/fixed",
        Some(definition("fixed", &c.mcp(), "")),
        409,
    )
    .await;
    let change = admin_ok(&gw, "DELETE", "/upstreams/moving", None, 200).await;
    assert_eq!(names(&change, "removed"), ["moving"]);
    wait_for_stat(&c, "deletes", 1).await;
    let gone = client
        .request(
            "tools/call",
            json!({"name": "moving__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert!(gone.last().get("error").is_some(), "{:?}", gone.messages);
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_hides_secrets() {
    let up = demo("legacy");
    let gw = tether(&format!(
        "{ADMIN}[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer upstream-secret\" }}\n",
        up.mcp()
    ));
    let plain = http()
        .get(format!("{}/admin/upstreams", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
    assert!(plain.headers().contains_key("www-authenticate"));
    let wrong = http()
        .get(format!("{}/admin/upstreams", gw.base))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let listed = admin_ok(&gw, "GET", "/upstreams", None, 200).await;
    let text = listed.to_string();
    assert!(!text.contains("upstream-secret"), "{text}");
    assert_eq!(listed["upstreams"][0]["source"], "config");
    // Without a token configured, the API is off.
    let off = tether(&config(&[("demo", &up.mcp())], ""));
    let _ = admin_ok(&off, "GET", "/upstreams", None, 403).await;
}

#[tokio::test]
async fn sessions_are_listed_and_evicted_through_the_api_and_the_cli() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ADMIN));
    let a = Legacy::connect(&gw.mcp()).await;
    let b = Legacy::connect(&gw.mcp()).await;
    a.call("demo__counter_increment", json!({})).await;
    let (_, listed) = gw.admin("GET", "/sessions", None).await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let first = sessions
        .iter()
        .find(|s| s["id"] == a.session.clone().unwrap().as_str())
        .unwrap();
    assert_eq!(first["upstreams"][0]["upstream"], "demo");
    assert!(first["uses"].as_u64().unwrap() >= 2);
    // A page of the most recently used: b is used last.
    b.call("demo__counter_increment", json!({})).await;
    let page = admin_ok(&gw, "GET", "/sessions?limit=1", None, 200).await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        page["sessions"][0]["id"],
        b.session.clone().unwrap().as_str()
    );
    let _ = admin_ok(&gw, "GET", "/sessions?limit=many", None, 400).await;
    let (ok, table) = gw.admin_cli(&["sessions"]);
    assert!(ok, "{table}");
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(a.session.as_deref().unwrap()), "{table}");
    assert!(table.contains(b.session.as_deref().unwrap()), "{table}");
    let (ok, printed) = gw.admin_cli(&["evict", a.session.as_deref().unwrap()]);
    assert!(ok, "{printed}");
    wait_for_stat(&up, "deletes", 1).await;
    let stale = a.request("tools/list", json!({})).await;
    assert_eq!(stale.status, 404);
    assert_eq!(b.request("tools/list", json!({})).await.status, 200);
    let (ok, table) = gw.admin_cli(&["upstreams"]);
    assert!(ok, "{table}");
    assert!(
        table.lines().nth(1).unwrap().starts_with("demo "),
        "{table}"
    );
}

#[tokio::test]
async fn reload_applies_the_config_file() {
    let (a, b) = (demo("legacy"), demo("legacy"));
    let gw = tether(&config(&[("one", &a.mcp())], ADMIN));
    let client = Legacy::connect(&gw.mcp()).await;
    client.call("one__counter_increment", json!({})).await;
    // SIGHUP: the url changed, a second upstream appeared.
    let path = gw.config_file();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&a.mcp(), &b.mcp());
    std::fs::write(
        &path,
        format!(
            "{text}\n[[upstreams]]\nname = \"two\"\nurl = \"{}\"\n",
            a.mcp()
        ),
    )
    .unwrap();
    gw.signal("HUP");
    wait_for_stat(&a, "deletes", 1).await;
    let r = client.call("one__counter_increment", json!({})).await;
    assert_eq!(text_count(&r), 1, "a fresh session on the new URL");
    assert_eq!(b.stats().await["initializes"], 1);
    client.call("two__echo", json!({"text": "hi"})).await;
    // POST /admin/reload: "two" removed again.
    std::fs::write(&path, text).unwrap();
    let change = admin_ok(&gw, "POST", "/reload", None, 200).await;
    assert_eq!(names(&change, "removed"), ["two"]);
    assert_eq!(change["change"]["closed_sessions"], 1);
}

fn text_count(result: &Value) -> u64 {
    text(result).parse().unwrap()
}

#[tokio::test]
async fn shutdown_is_bounded_when_an_upstream_never_answers() {
    // Accepts connections and reads nothing, answers nothing.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hole.incoming().flatten() {
            held.push(conn);
        }
    });
    let up = demo("legacy");
    let mut gw = tether(&format!(
        "[server]\nshutdown_timeout_secs = 2\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n[[upstreams]]\nname = \"hole\"\nurl = \"http://{hole_addr}/mcp\"\nera = \"legacy\"\n",
        up.mcp()
    ));
    let client = Legacy::connect(&gw.mcp()).await;
    client.call("demo__echo", json!({"text": "x"})).await;
    let stuck = tokio::spawn({
        let url = gw.mcp();
        let session = client.session.clone();
        async move {
            let c = Legacy {
                url,
                session,
                version: "2025-11-25".into(),
                next: 100.into(),
                bearer: None,
            };
            c.request(
                "tools/call",
                json!({"name": "hole__anything", "arguments": {}}),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let status = gw.terminate();
    let took = start.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?}, more than 2 × the 2 s shutdown timeout"
    );
    stuck.abort();
}

#[tokio::test]
async fn a_restarted_upstream_recovers_and_the_log_does_not_flood() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap().to_string();
    drop(probe);
    let mut up = demo_at(&addr, "legacy");
    let gw = tether_env(
        &format!(
            "[[upstreams]]\nname = \"demo\"\nurl = \"http://{addr}/mcp\"\nhealth_interval_secs = 1\n"
        ),
        &[("TETHER_LOG", "info")],
    );
    let client = Legacy::connect(&gw.mcp()).await;
    let mut stream = client.open_get(None).await;
    let tools = client.result("tools/list", json!({})).await;
    assert!(!tools["tools"].as_array().unwrap().is_empty());
    up.kill();
    // A client keeps asking while the upstream is down.
    let down_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < down_until {
        let r = client.request("tools/list", json!({})).await;
        assert!(r.status == 200, "{:?}", r.messages);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The health check noticed, and the client heard the lists changed.
    let changed = read_until(&mut stream, "notifications/tools/list_changed").await;
    assert!(changed, "no list_changed notification on the GET stream");
    let _up = demo_at(&addr, "legacy");
    let mut recovered = false;
    for _ in 0..120 {
        let r = client.request("tools/list", json!({})).await;
        if r.last()["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "lists never worked again");
    let log = gw.log();
    let unreachable = log.matches("upstream unreachable").count();
    assert!(
        (1..=4).contains(&unreachable),
        "{unreachable} 'unreachable' lines for ~40 failed attempts:\n{log}"
    );
    assert!(log.contains("upstream unhealthy"), "{log}");
    assert!(log.contains("upstream healthy again"), "{log}");
}

/// Reads a response body until `needle` shows up (10 s at most).
async fn read_until(resp: &mut reqwest::Response, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains(needle) {
                    return true;
                }
            }
            Ok(_) => return false,
            Err(_) => {}
        }
    }
    false
}

#[tokio::test]
async fn idle_validation_replaces_a_dead_upstream_session_without_a_client_error() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap().to_string();
    drop(probe);
    let mut up = demo_at(&addr, "legacy");
    let gw = tether(&format!(
        "[[upstreams]]\nname = \"demo\"\nurl = \"http://{addr}/mcp\"\nidle_validation_secs = 1\n"
    ));
    let client = Legacy::connect(&gw.mcp()).await;
    assert_eq!(
        text_count(&client.call("demo__counter_increment", json!({})).await),
        1
    );
    up.kill();
    let _up = demo_at(&addr, "legacy");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = client.call("demo__counter_increment", json!({})).await;
    assert_eq!(text_count(&r), 1, "a fresh upstream session");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_upstream_sessions_validated_total{upstream=\"demo\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "tether_upstream_sessions_replaced_total{upstream=\"demo\"}"
        ),
        Some(1.0)
    );
    // A session used within the window is not probed.
    client.call("demo__counter_increment", json!({})).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_upstream_sessions_validated_total{upstream=\"demo\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn upstreams_defined_on_one_node_reach_the_others() {
    let dir = crate::harness::TempDir::new();
    let shared = format!(
        "{ADMIN}[store]\nurl = \"sqlite://{}/sessions.db\"\n",
        dir.0.display()
    );
    let up = demo("legacy");
    let (a, b) = (tether(&shared), tether(&shared));
    let _ = admin_ok(
        &a,
        "POST",
        "/upstreams",
        Some(definition("added", &up.mcp(), "")),
        201,
    )
    .await;
    let mut seen = false;
    for _ in 0..40 {
        let (_, listed) = b.admin("GET", "/upstreams", None).await;
        if listed.to_string().contains("\"added\"") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(seen, "node B never learned of the upstream node A defined");
    let client = Legacy::connect(&b.mcp()).await;
    let r = client.call("added__echo", json!({"text": "via B"})).await;
    assert_eq!(text(&r), "via B");
}

#[tokio::test]
async fn reload_rebuilds_an_upstream_whose_tls_files_changed() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures");
    let dir = crate::harness::TempDir::new();
    let ca = dir.0.join("ca.pem");
    std::fs::copy(fixtures.join("ca-a.pem"), &ca).unwrap();
    let up = demo("legacy");
    let gw = tether(&format!(
        "{ADMIN}[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\ntls_ca_file = \"{}\"\n",
        up.mcp(),
        ca.display()
    ));
    let client = Legacy::connect(&gw.mcp()).await;
    client.call("demo__echo", json!({"text": "x"})).await;
    // Same file, same contents: nothing to do.
    let (_, unchanged) = gw.admin("POST", "/reload", None).await;
    assert_eq!(unchanged["change"]["closed_sessions"], 0, "{unchanged}");
    // Rotated contents under the same path: the upstream is rebuilt.
    std::fs::copy(fixtures.join("ca-b.pem"), &ca).unwrap();
    let change = admin_ok(&gw, "POST", "/reload", None, 200).await;
    assert_eq!(names(&change, "replaced"), ["demo"]);
    assert_eq!(change["change"]["closed_sessions"], 1);
    wait_for_stat(&up, "deletes", 1).await;
    client.call("demo__echo", json!({"text": "y"})).await;
    // An unreadable file is refused, and the running upstream stays.
    std::fs::write(&ca, "not a certificate").unwrap();
    admin_ok(&gw, "POST", "/reload", None, 400).await;
    client.call("demo__echo", json!({"text": "z"})).await;
}

#[tokio::test]
async fn definitions_are_bodies_under_the_server_limit() {
    let up = demo("legacy");
    let limit = "[server]\nmax_body_bytes = 65536\n";
    let gw = tether(&format!("{limit}{}", config(&[("demo", &up.mcp())], ADMIN)));
    let definition =
        |size: usize| json!({"name": "big", "url": up.mcp(), "description": "x".repeat(size)});
    // Each on a connection of its own: the gateway closes one whose body it
    // did not read.
    let post = |path: &'static str, body: Value| {
        let url = format!("{}/admin{path}", gw.base);
        async move {
            let resp = (http_unpooled().post(url))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    for path in ["/upstreams", "/virtual-servers"] {
        assert_eq!(
            post(path, definition(70_000)).await,
            413,
            "POST {path} over the limit"
        );
    }
    let (ok, table) = gw.admin_cli(&["upstreams"]);
    assert!(ok && !table.contains("big"), "nothing was created: {table}");
    assert_eq!(
        post("/upstreams", definition(60_000)).await,
        201,
        "under the limit"
    );
}
