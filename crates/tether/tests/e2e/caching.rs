//! Gateway-side caching of upstream results, as the upstream's `ttlMs` and
//! `cacheScope` allow: served again without asking the upstream, with the
//! time left; dropped when the upstream announces a change; switched off
//! by `[cache] enabled = false`.

use serde_json::{Value, json};

use crate::harness::{Legacy, Proc, config, metric, modern, spawn_demo, tether};

/// Cacheable requests the upstream answered so far.
async fn asked(up: &Proc) -> u64 {
    up.stats().await["cacheable_requests"].as_u64().unwrap()
}

async fn list_tools(url: &str) -> Value {
    let reply = modern(url, "tools/list", json!({})).await;
    reply.last()["result"].clone()
}

#[tokio::test]
async fn a_public_list_is_fetched_once_for_every_endpoint_and_era() {
    let up = spawn_demo(&["--era", "modern", "--ttl-ms", "60000"]);
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let single = gw.mcp().replace("/mcp", "/u/demo/mcp");
    let first = list_tools(&single).await;
    assert_eq!(asked(&up).await, 1);
    let again = list_tools(&single).await;
    assert_eq!(asked(&up).await, 1, "served from the cache");
    assert_eq!(again["tools"], first["tools"]);
    let left = again["ttlMs"].as_u64().unwrap();
    assert!(left > 0 && left <= 60000, "the time left: {left}");
    assert_eq!(again["cacheScope"], "public");
    // A legacy session and the federated catalogue use the same entry.
    let legacy = Legacy::connect(&single).await;
    let listed = legacy.result("tools/list", json!({})).await;
    assert_eq!(listed["tools"], first["tools"]);
    let federated = list_tools(&gw.mcp()).await;
    assert!(
        federated["tools"].as_array().unwrap().len() == first["tools"].as_array().unwrap().len()
    );
    let left = federated["ttlMs"].as_u64().unwrap();
    assert!(
        left > 0 && left <= 60000,
        "the merged list's time left: {federated}"
    );
    assert_eq!(federated["cacheScope"], "public");
    assert_eq!(asked(&up).await, 1, "no further upstream list");
    // A read is cached per URI.
    for _ in 0..2 {
        let read = modern(&single, "resources/read", json!({"uri": "demo://items/3"})).await;
        assert_eq!(read.last()["result"]["contents"][0]["text"], "item 3");
    }
    assert_eq!(asked(&up).await, 2);
    let metrics = gw.metrics().await;
    assert!(
        metric(&metrics, "tether_cache_hits_total").unwrap() >= 4.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "tether_cache_misses_total").unwrap() >= 2.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn nothing_is_cached_without_a_ttl_or_with_the_cache_off() {
    let no_ttl = spawn_demo(&["--era", "modern"]);
    let up = spawn_demo(&["--era", "modern", "--ttl-ms", "60000"]);
    let gw = tether(&config(&[("a", &no_ttl.mcp())], ""));
    let off = tether(&config(&[("b", &up.mcp())], "[cache]\nenabled = false\n"));
    for _ in 0..2 {
        list_tools(&gw.mcp().replace("/mcp", "/u/a/mcp")).await;
        list_tools(&off.mcp().replace("/mcp", "/u/b/mcp")).await;
    }
    assert_eq!(asked(&no_ttl).await, 2, "ttlMs 0: asked every time");
    assert_eq!(asked(&up).await, 2, "cache off: asked every time");
}

#[tokio::test]
async fn a_list_change_drops_the_cached_list() {
    // The upstream's change reaches Tether on a listen stream a client holds.
    let up = spawn_demo(&[
        "--era",
        "modern",
        "--profile",
        "conformance",
        "--ttl-ms",
        "60000",
    ]);
    let gw = tether(&config(&[("conf", &up.mcp())], ""));
    let single = gw.mcp().replace("/mcp", "/u/conf/mcp");
    let before = list_tools(&single).await["tools"].as_array().unwrap().len();
    list_tools(&single).await;
    assert_eq!(asked(&up).await, 1);
    let listen = crate::listen::Listening::open(&single, json!({"toolsListChanged": true}));
    let mut listening = listen.await;
    listening.next().await;
    let reply = modern(
        &single,
        "tools/call",
        json!({"name": "test_trigger_tool_change", "arguments": {}}),
    )
    .await;
    assert!(reply.last()["result"].is_object());
    let change = listening.next().await;
    assert_eq!(change["method"], "notifications/tools/list_changed");
    let after = list_tools(&single).await["tools"].as_array().unwrap().len();
    assert_eq!(
        after,
        before + 1,
        "the new tool is listed: the stale list was dropped"
    );
    assert_eq!(asked(&up).await, 2);
}

#[tokio::test]
async fn a_federated_list_may_be_reused_as_long_as_its_shortest_part() {
    let long = spawn_demo(&["--era", "modern", "--ttl-ms", "60000"]);
    let short = spawn_demo(&["--era", "modern", "--ttl-ms", "5000", "--private-cache"]);
    let none = spawn_demo(&["--era", "modern"]);
    let gw = tether(&config(&[("a", &long.mcp()), ("b", &short.mcp())], ""));
    let merged = list_tools(&gw.mcp()).await;
    let left = merged["ttlMs"].as_u64().unwrap();
    assert!(left > 0 && left <= 5000, "the shortest part: {merged}");
    assert_eq!(merged["cacheScope"], "private", "one part is private");
    let gw = tether(&config(&[("a", &long.mcp()), ("c", &none.mcp())], ""));
    let merged = list_tools(&gw.mcp()).await;
    assert_eq!(merged["ttlMs"], 0, "one part says nothing: {merged}");
}
