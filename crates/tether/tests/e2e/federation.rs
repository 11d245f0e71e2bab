//! Federation on `/mcp`: naming policies, routing, the single-upstream
//! endpoint, and one upstream down while the others serve.

use serde_json::{Value, json};

use crate::harness::{Legacy, config, demo, metric, tether, text};

fn names(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn prefixed_catalogue_routes_calls_and_keeps_schemas() {
    let up1 = demo("legacy");
    let up2 = demo("modern");
    let gw = tether(&config(&[("alpha", &up1.mcp()), ("beta", &up2.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    let tools = c.result("tools/list", json!({})).await;
    let names = names(&tools, "tools");
    for n in [
        "alpha__echo",
        "beta__echo",
        "alpha__counter_increment",
        "beta__progress",
    ] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    // Schemas and descriptions pass through unchanged.
    let direct = Legacy::connect(&up1.mcp()).await;
    let direct_tools = direct.result("tools/list", json!({})).await;
    let echo = |list: &Value, name: &str| {
        list["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    let mut through = echo(&tools, "alpha__echo");
    through["name"] = json!("echo");
    assert_eq!(through, echo(&direct_tools, "echo"));
    assert_eq!(text(&c.call("beta__echo", json!({"text": "b"})).await), "b");
    let prompts = c.result("prompts/list", json!({})).await;
    assert!(names_of(&prompts, "prompts").contains(&"beta__greeting".to_string()));
    let p = c
        .result(
            "prompts/get",
            json!({"name": "alpha__greeting", "arguments": {"name": "A"}}),
        )
        .await;
    assert_eq!(p["messages"][0]["content"]["text"], "Hello, A!");
    // Both upstreams serve the same template: the first keeps it (the second
    // copy could never be reached) and the collision is reported.
    let templates = c.result("resources/templates/list", json!({})).await;
    assert_eq!(templates["resourceTemplates"].as_array().unwrap().len(), 1);
    let m = gw.metrics().await;
    assert!(crate::harness::metric(&m, "tether_catalog_collisions_total").unwrap() >= 1.0);
    let unknown = c
        .request(
            "tools/call",
            json!({"name": "gamma__echo", "arguments": {}}),
        )
        .await;
    assert_eq!(unknown.last()["error"]["code"], -32602);
}

fn names_of(list: &Value, key: &str) -> Vec<String> {
    names(list, key)
}

#[tokio::test]
async fn naming_none_reports_collisions_and_routes_to_first() {
    let up1 = demo("legacy");
    let up2 = demo("legacy");
    let gw = tether(&config(
        &[("one", &up1.mcp()), ("two", &up2.mcp())],
        "[federation]\nnaming = \"none\"",
    ));
    let c = Legacy::connect(&gw.mcp()).await;
    let tools = c.result("tools/list", json!({})).await;
    let names = names(&tools, "tools");
    assert!(names.contains(&"echo".to_string()));
    assert_eq!(names.iter().filter(|n| *n == "echo").count(), 1);
    c.call("counter_increment", json!({})).await;
    assert_eq!(up1.stats().await["tool_calls"], 1);
    assert_eq!(up2.stats().await["tool_calls"], 0);
    let m = gw.metrics().await;
    assert!(
        metric(&m, "tether_catalog_collisions_total").unwrap() > 0.0,
        "collisions are reported"
    );
}

#[tokio::test]
async fn naming_on_collision_prefixes_only_shared_names() {
    let up1 = demo("legacy");
    let up2 = demo("legacy");
    let gw = tether(&config(
        &[("one", &up1.mcp()), ("two", &up2.mcp())],
        "[federation]\nnaming = \"on-collision\"\nseparator = \".\"",
    ));
    let c = Legacy::connect(&gw.mcp()).await;
    let tools = c.result("tools/list", json!({})).await;
    let names = names(&tools, "tools");
    assert!(
        names.contains(&"one.echo".to_string()) && names.contains(&"two.echo".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"echo".to_string()));
    assert_eq!(text(&c.call("two.echo", json!({"text": "t"})).await), "t");
    assert_eq!(up2.stats().await["tool_calls"], 1);
}

#[tokio::test]
async fn single_upstream_endpoint_is_transparent() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let url = format!("{}/u/demo/mcp", gw.base);
    let c = Legacy::connect(&url).await;
    let tools = c.result("tools/list", json!({})).await;
    assert!(names(&tools, "tools").contains(&"echo".to_string()));
    assert_eq!(
        text(&c.call("echo", json!({"text": "plain"})).await),
        "plain"
    );
    let init = crate::harness::post(&url, &[], &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})).await;
    assert_eq!(
        init.last()["result"]["serverInfo"]["name"],
        "tether-demo-upstream"
    );
    let missing = crate::harness::post(
        &format!("{}/u/nope/mcp", gw.base),
        &[],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_down_upstream_does_not_take_the_others_down() {
    let up = demo("legacy");
    let mut dead = demo("legacy");
    let dead_url = dead.mcp();
    dead.kill();
    let gw = tether(&config(&[("live", &up.mcp()), ("dead", &dead_url)], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    let tools = c.result("tools/list", json!({})).await;
    let names = names(&tools, "tools");
    assert!(names.iter().all(|n| n.starts_with("live__")), "{names:?}");
    assert!(!names.is_empty());
    let r = c
        .request(
            "tools/call",
            json!({"name": "dead__echo", "arguments": {"text": "x"}}),
        )
        .await;
    let err = &r.last()["error"];
    assert!(err["message"].as_str().unwrap().contains("dead"), "{err}");
    assert_eq!(err["data"]["upstream"], "dead");
    assert_eq!(
        err["data"]["outcomeUnknown"], false,
        "connection refused: the call provably never ran"
    );
    assert_eq!(
        text(&c.call("live__echo", json!({"text": "still"})).await),
        "still"
    );
}

#[tokio::test]
async fn log_level_reaches_open_and_later_upstream_sessions() {
    let up1 = demo("legacy");
    let up2 = demo("legacy");
    let gw = tether(&config(&[("one", &up1.mcp()), ("two", &up2.mcp())], ""));
    let c = Legacy::connect(&gw.mcp()).await;
    c.call("one__echo", json!({"text": "x"})).await;
    c.result("logging/setLevel", json!({"level": "debug"}))
        .await;
    assert_eq!(
        up1.stats().await["log_level_sets"],
        1,
        "sent to the open session"
    );
    assert_eq!(
        up2.stats().await["log_level_sets"],
        0,
        "two is not in use yet"
    );
    c.call("two__echo", json!({"text": "x"})).await;
    assert_eq!(
        up2.stats().await["log_level_sets"],
        1,
        "sent when two's session opened"
    );
}

#[tokio::test]
async fn static_upstream_headers_carry_credentials() {
    for era in ["legacy", "modern"] {
        let up = crate::harness::spawn_demo(&["--era", era, "--bearer", "s3cret"]);
        let with = format!(
            "[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer s3cret\" }}\n",
            up.mcp()
        );
        let gw = tether(&with);
        let c = Legacy::connect(&gw.mcp()).await;
        assert_eq!(
            text(&c.call("demo__echo", json!({"text": "in"})).await),
            "in",
            "{era}"
        );
        let without = tether(&config(&[("demo", &up.mcp())], ""));
        let c = Legacy::connect(&without.mcp()).await;
        let r = c
            .request(
                "tools/call",
                json!({"name": "demo__echo", "arguments": {"text": "x"}}),
            )
            .await;
        let err = r.last()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(err.contains("401"), "{era}: {err}");
    }
}
