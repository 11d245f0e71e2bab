//! Virtual servers in a cluster, and shaped calls where the Python SDK
//! tests cannot reach (Mcp-Param headers, a call waiting for input, an
//! alias colliding with another tool's name).
//!
//! Virtual servers in a cluster: one defined through the admin API of one
//! node serves at once on the other (the same store, announced), its
//! sessions pass between the nodes like `/mcp`'s, and removing it ends its
//! endpoint on both. The Python SDK's tests (interop) cover what a client
//! sees of a virtual server on one node.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    ADMIN, Legacy, Postgres, Proc, demo, http, metric, modern, modern_as, modern_with, tether, text,
};

/// The status of a POST `initialize` on `url`.
async fn initialize_status(url: &str) -> u16 {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "tether-tests", "version": "1"},
    }});
    let resp = http()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Waits up to 5 s for `url`'s `initialize` to answer `want`.
async fn wait_for_initialize(url: &str, want: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = initialize_status(url).await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(listed: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names
}

fn endpoint(node: &Proc, server: &str) -> String {
    node.mcp().replace("/mcp", &format!("/v/{server}/mcp"))
}

#[tokio::test]
async fn a_virtual_server_defined_on_one_node_serves_on_every_node() {
    let pg = Postgres::start();
    let up = demo("legacy");
    let config = format!(
        "{ADMIN}[store]\nurl = \"{}\"\n[cluster]\nsecret = \"s3cret\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
        pg.url,
        up.mcp()
    );
    let (a, b) = (tether(&config), tether(&config));
    let definition = json!({
        "name": "desk",
        "title": "Desk",
        "description": "counters",
        "tools": ["demo__counter_*"],
        "shape": {"demo__counter_get": {"alias": "count"}},
    });
    let (status, created) = a.admin("POST", "/virtual-servers", Some(definition)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        wait_for_initialize(&endpoint(&b, "desk"), 200).await,
        200,
        "node B serves the virtual server node A defined"
    );
    // Its admin API and CLI list it too, as the admin API's.
    let (status, listed) = b.admin("GET", "/virtual-servers", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["virtual_servers"][0]["source"], "api", "{listed}");
    let (ok, table) = b.admin_cli(&["virtual-servers"]);
    assert!(ok, "{table}");
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "desk",
            "api",
            "/v/desk/mcp",
            "demo__counter_*",
            "-",
            "-",
            "full",
            "counters"
        ],
        "{table}"
    );

    // A session made on A is served on B too (passed on to its home).
    let on_a = Legacy::connect(&endpoint(&a, "desk")).await;
    let on_b = Legacy {
        url: endpoint(&b, "desk"),
        session: on_a.session.clone(),
        version: on_a.version.clone(),
        next: Default::default(),
        bearer: None,
    };
    assert_eq!(
        names(&on_b.result("tools/list", json!({})).await),
        ["count", "demo__counter_increment"]
    );
    assert_eq!(
        text(&on_a.call("demo__counter_increment", json!({})).await),
        "1"
    );
    assert_eq!(
        text(&on_b.call("demo__counter_increment", json!({})).await),
        "2"
    );
    assert_eq!(text(&on_b.call("count", json!({})).await), "2");
    let outside = on_b
        .request(
            "tools/call",
            json!({"name": "demo__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(
        outside.last()["error"]["code"],
        -32602,
        "{:?}",
        outside.last()
    );

    // Config-file ones cannot be changed here; the API's can, and go away everywhere.
    let (status, _) = a.admin("DELETE", "/virtual-servers/nope", None).await;
    assert_eq!(status, 404);
    let (status, removed) = a.admin("DELETE", "/virtual-servers/desk", None).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(wait_for_initialize(&endpoint(&b, "desk"), 404).await, 404);
    assert_eq!(initialize_status(&endpoint(&a, "desk")).await, 404);
    drop(pg);
}

/// A gateway over one demo upstream named `demo`, with `upstream` keys added
/// to its definition (TOML lines).
fn shaped_gateway(up: &Proc, upstream: &str) -> Proc {
    tether(&format!(
        "[store]\nurl = \"memory\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n{upstream}",
        up.mcp()
    ))
}

#[tokio::test]
async fn a_modern_clients_call_with_fixed_arguments_carries_their_headers() {
    // The fixed `region` is left out of the schema the client sees, so the
    // client renders no Mcp-Param-Region; the upstream needs it for the
    // arguments it receives: Tether renders the headers from those (a
    // modern upstream checks them), and has nothing to check for a legacy one.
    for era in ["modern", "legacy"] {
        let up = crate::harness::spawn_demo(&["--era", era, "--profile", "conformance"]);
        let gw = shaped_gateway(
            &up,
            "[upstreams.shape.test_custom_headers]\narguments = { region = \"eu-west\" }\n",
        );
        let url = format!("{}/u/demo/mcp", gw.base);
        let listed = modern(&url, "tools/list", json!({})).await;
        let tools = listed.last()["result"]["tools"].as_array().unwrap().clone();
        let schema = &tools
            .iter()
            .find(|t| t["name"] == "test_custom_headers")
            .unwrap()["inputSchema"];
        assert!(
            schema["properties"].get("region").is_none(),
            "{era}: {schema}"
        );
        let args = json!({"name": "test_custom_headers", "arguments": {"priority": 3}});
        let extra = [("mcp-param-priority", "3"), ("mcp-param-region", "us-east")];
        let done = modern_with(&url, "tools/call", args, &extra).await;
        let last = done.last();
        let said = text(&last["result"]);
        assert!(
            said.contains("eu-west") && !said.contains("us-east"),
            "{era}: {last}"
        );
    }
}

#[tokio::test]
async fn a_shaped_call_waiting_for_input_resumes_and_keeps_its_place() {
    let up = demo("legacy");
    let gw = shaped_gateway(
        &up,
        "max_concurrent_calls = 1\n[upstreams.shape.sample]\nalias = \"ask\"\narguments = { prompt = \"fixed prompt\" }\n",
    );
    let url = gw.mcp();
    let sampling = json!({"sampling": {}});
    let call = |extra: Value| {
        let mut params = json!({"name": "demo__ask", "arguments": {"prompt": "mine"}});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        let url = url.clone();
        let sampling = sampling.clone();
        async move { modern_as(&url, "tools/call", params, sampling, &[]).await }
    };
    let first = call(json!({})).await;
    let result = first.last()["result"].clone();
    assert_eq!(result["resultType"], "input_required", "{result}");
    let (key, ask) = result["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(
        ask["params"]["messages"][0]["content"]["text"], "fixed prompt",
        "the upstream got the fixed argument"
    );
    // The waiting call holds the upstream's one place: another call is refused.
    let other = modern(
        &url,
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(other.status, 429, "{:?}", other.last());
    assert_eq!(other.last()["error"]["code"], -32029);
    // The client's retry repeats its own arguments, and resumes the call.
    let answer =
        json!({"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"});
    let state = result["requestState"].clone();
    let done = call(json!({"inputResponses": {key: answer}, "requestState": state})).await;
    assert_eq!(
        text(&done.last()["result"]),
        "sampled: hello",
        "{:?}",
        done.last()
    );
    // Over: the place is free again.
    let after = modern(
        &url,
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(text(&after.last()["result"]), "x", "{:?}", after.last());
}

#[tokio::test]
async fn an_alias_taking_another_tools_name_is_a_counted_collision() {
    let up = demo("legacy");
    let gw = shaped_gateway(&up, "[upstreams.shape.counter_get]\nalias = \"echo\"\n");
    assert_eq!(
        metric(&gw.metrics().await, "tether_catalog_collisions_total"),
        Some(0.0)
    );
    let client = Legacy::connect(&gw.mcp()).await;
    let listed = client.result("tools/list", json!({})).await;
    let echoes: Vec<&Value> = (listed["tools"].as_array().unwrap().iter())
        .filter(|t| t["name"] == "demo__echo")
        .collect();
    assert_eq!(echoes.len(), 1, "one tool per name: {listed}");
    // The alias wins: its tool is shown, and called, under the name.
    assert_eq!(
        text(&client.call("demo__echo", json!({"text": "hi"})).await),
        "0"
    );
    assert_eq!(
        metric(&gw.metrics().await, "tether_catalog_collisions_total"),
        Some(1.0),
        "the real echo left out is counted"
    );
}
