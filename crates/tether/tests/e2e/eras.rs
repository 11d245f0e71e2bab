//! Both eras on both sides: legacy client × modern upstream and modern
//! client × legacy upstream, for the plain request/response operations.

use serde_json::{Value, json};

use crate::harness::{Legacy, Reply, config, demo, modern, modern_with, spawn_demo, tether, text};

async fn exercise_legacy_client(url: &str) {
    let c = Legacy::connect(url).await;
    let tools = c.result("tools/list", json!({})).await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"demo__echo"), "{names:?}");
    assert_eq!(
        text(&c.call("demo__echo", json!({"text": "héllo"})).await),
        "héllo"
    );
    let prompt = c
        .result(
            "prompts/get",
            json!({"name": "demo__greeting", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(prompt["messages"][0]["content"]["text"], "Hello, Ada!");
    let res = c
        .result("resources/read", json!({"uri": "demo://readme"}))
        .await;
    assert_eq!(res["contents"][0]["text"], "Tether demo upstream");
}

async fn modern_result(url: &str, method: &str, params: Value) -> Value {
    let reply = modern(url, method, params).await;
    assert_eq!(reply.status, 200, "{method}: {:?}", reply.messages);
    let last = reply.last().clone();
    assert!(last.get("error").is_none(), "{method}: {last}");
    assert_eq!(last["result"]["resultType"], "complete", "{method}: {last}");
    last["result"].clone()
}

async fn exercise_modern_client(url: &str) {
    let tools = modern_result(url, "tools/list", json!({})).await;
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "demo__echo")
    );
    assert!(
        tools["ttlMs"].is_u64() && tools["cacheScope"].is_string(),
        "{tools}"
    );
    let r = modern_result(
        url,
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"text": "hi"}}),
    )
    .await;
    assert_eq!(text(&r), "hi");
    let p = modern_result(
        url,
        "prompts/get",
        json!({"name": "demo__greeting", "arguments": {"name": "Bo"}}),
    )
    .await;
    assert_eq!(p["messages"][0]["content"]["text"], "Hello, Bo!");
    let res = modern_result(url, "resources/read", json!({"uri": "demo://items/9"})).await;
    assert_eq!(res["contents"][0]["text"], "item 9");
    assert!(res["ttlMs"].is_u64());
}

#[tokio::test]
async fn legacy_client_through_modern_upstream() {
    let up = demo("modern");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    exercise_legacy_client(&gw.mcp()).await;
    assert_eq!(
        up.stats().await["initializes"],
        0,
        "modern upstream never sees initialize"
    );
    assert!(up.stats().await["modern_requests"].as_u64().unwrap() >= 4);
}

#[tokio::test]
async fn modern_client_through_legacy_upstream() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    exercise_modern_client(&gw.mcp()).await;
    let stats = up.stats().await;
    assert_eq!(stats["modern_requests"], 0, "{stats}");
    // Sessionless requests use a per-call upstream session, closed after the call.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stats = up.stats().await;
    assert_eq!(stats["live_sessions"], 0, "{stats}");
    assert_eq!(stats["initializes"], stats["deletes"], "{stats}");
}

#[tokio::test]
async fn same_eras_on_both_sides() {
    let legacy = demo("legacy");
    let modern_up = demo("modern");
    let gw1 = tether(&config(&[("demo", &legacy.mcp())], ""));
    exercise_legacy_client(&gw1.mcp()).await;
    let gw2 = tether(&config(&[("demo", &modern_up.mcp())], ""));
    exercise_modern_client(&gw2.mcp()).await;
}

#[tokio::test]
async fn modern_client_discovers_tether() {
    let up = demo("dual");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let d = modern_result(&gw.mcp(), "server/discover", json!({})).await;
    let versions: Vec<&str> = d["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"2026-07-28") && versions.contains(&"2025-11-25"),
        "{versions:?}"
    );
    assert!(d["capabilities"]["tools"].is_object());
    assert_eq!(
        d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "tether"
    );
    // The single-upstream endpoint describes the upstream itself.
    let d = modern_result(
        &format!("{}/u/demo/mcp", gw.base),
        "server/discover",
        json!({}),
    )
    .await;
    assert_eq!(
        d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "tether-demo-upstream"
    );
}

#[tokio::test]
async fn stateless_legacy_mode_serves_any_session_id() {
    let up = demo("legacy");
    let gw = tether(&config(
        &[("demo", &up.mcp())],
        "[server]\nstateless = true",
    ));
    let c = Legacy::connect(&gw.mcp()).await;
    assert!(c.session.is_none(), "no session id is minted");
    let made_up = Legacy {
        session: Some("made-up-session-id".into()),
        ..c
    };
    assert_eq!(
        text(&made_up.call("demo__echo", json!({"text": "ok"})).await),
        "ok"
    );
    let calls =
        (0..8).map(|i| {
            let m = &made_up;
            async move {
                text(&m.call("demo__echo", json!({"text": format!("c{i}")})).await).to_string()
            }
        });
    let out = futures_util::future::join_all(calls).await;
    assert_eq!(out, (0..8).map(|i| format!("c{i}")).collect::<Vec<_>>());
    // Every request used a fresh upstream session: counters never accumulate.
    for _ in 0..3 {
        assert_eq!(
            text(&made_up.call("demo__counter_increment", json!({})).await),
            "1"
        );
    }
}

#[tokio::test]
async fn shared_upstream_pools_sessions_for_sessionless_requests() {
    let up = demo("legacy");
    let toml = format!(
        "[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\nshared = true\n",
        up.mcp()
    );
    let gw = tether(&toml);
    for i in 0..5 {
        let r = modern_result(
            &gw.mcp(),
            "tools/call",
            json!({"name": "demo__echo", "arguments": {"text": format!("{i}")}}),
        )
        .await;
        assert_eq!(text(&r), format!("{i}"));
    }
    let stats = up.stats().await;
    assert_eq!(
        stats["initializes"], 1,
        "sequential sessionless calls reuse one pooled session: {stats}"
    );
    assert_eq!(stats["deletes"], 0, "{stats}");
}

#[tokio::test]
async fn environment_overrides_config_and_ignores_unrelated_variables() {
    let up = demo("legacy");
    let env = [
        ("TETHER_SERVER__STATELESS", "true"),
        ("TETHER_SOMETHING_ELSE", "1"),
    ];
    let gw = crate::harness::tether_env(&config(&[("demo", &up.mcp())], ""), &env);
    let c = Legacy::connect(&gw.mcp()).await;
    assert!(
        c.session.is_none(),
        "TETHER_SERVER__STATELESS=true made the gateway stateless"
    );
}

/// The conformance fixture's tool whose `region`, `priority` and `verbose`
/// arguments travel in `Mcp-Param-*` headers too (`x-mcp-header`).
const HEADER_TOOL: &str = "test_custom_headers";

#[tokio::test]
async fn legacy_client_calls_a_modern_tool_that_wants_its_arguments_in_headers() {
    // The modern upstream refuses a call without the headers its tool
    // declares; a legacy client renders none, so Tether does.
    let up = spawn_demo(&["--era", "modern", "--profile", "conformance"]);
    let gw = tether(&config(&[("conf", &up.mcp())], ""));
    let args = json!({"region": "Zürich, eu-central", "priority": 7, "verbose": true});
    for (url, tool) in [
        (
            gw.mcp().replace("/mcp", "/u/conf/mcp"),
            HEADER_TOOL.to_string(),
        ),
        (gw.mcp(), format!("conf__{HEADER_TOOL}")),
    ] {
        let client = Legacy::connect(&url).await;
        let result = client.call(&tool, args.clone()).await;
        assert!(
            text(&result).starts_with("Custom headers tool called with"),
            "{url}: {result}"
        );
        // Arguments without a header form, or absent, get no header.
        let result = client.call(&tool, json!({"region": "r"})).await;
        assert!(
            text(&result).contains("\"region\":\"r\""),
            "{url}: {result}"
        );
    }
}

#[tokio::test]
async fn a_modern_clients_param_headers_are_checked_when_the_upstream_cannot() {
    // A legacy upstream does not check Mcp-Param-* headers: Tether does,
    // against the tool's schema as the upstream lists it.
    let up = spawn_demo(&["--era", "legacy", "--profile", "conformance"]);
    let gw = tether(&config(&[("conf", &up.mcp())], ""));
    let url = gw.mcp().replace("/mcp", "/u/conf/mcp");
    let params = json!({"name": HEADER_TOOL, "arguments": {"region": "us-west1", "priority": 3}});
    let refused = |reply: &Reply, why: &str| {
        assert_eq!(reply.status, 400, "{why}: {:?}", reply.messages);
        let error = &reply.last()["error"];
        assert_eq!(error["code"], -32020, "{why}: {error}");
        error["message"].as_str().unwrap_or_default().to_owned()
    };
    let missing = modern_with(
        &url,
        "tools/call",
        params.clone(),
        &[("mcp-param-region", "us-west1")],
    )
    .await;
    let message = refused(&missing, "Priority header missing");
    assert!(message.contains("Mcp-Param-Priority"), "{message}");
    let wrong = [
        ("mcp-param-region", "us-east1"),
        ("mcp-param-priority", "3"),
    ];
    let message = refused(
        &modern_with(&url, "tools/call", params.clone(), &wrong).await,
        "region differs",
    );
    assert!(message.contains("us-east1"), "{message}");
    let right = [
        ("mcp-param-region", "us-west1"),
        ("mcp-param-priority", "3.0"),
    ];
    let reply = modern_with(&url, "tools/call", params, &right).await;
    assert_eq!(reply.status, 200, "{:?}", reply.messages);
    assert!(
        text(&reply.last()["result"]).starts_with("Custom headers tool called with"),
        "{:?}",
        reply.messages
    );
}
