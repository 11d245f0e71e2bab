//! `--evict N`: how long a connect-affecting change takes when it must close
//! N upstream sessions (they close in parallel, bounded by the shutdown timeout).

use std::time::Instant;

use serde_json::json;

use super::{open, post, serve_with, session_capacity};

const TOKEN: &str = "bench-admin-token";

/// Opens `n` sessions through an admin-defined upstream, changes the
/// upstream's headers, and prints how long the change took.
pub async fn report(bin: &std::path::Path, dir: &std::path::Path, upstream: &str, n: usize) {
    let gateway = serve_with(
        bin,
        dir,
        "evict.toml",
        &format!(
            "[admin]\ntoken = \"{TOKEN}\"\n{}[store]\nurl = \"memory\"\n",
            session_capacity(n)
        ),
    );
    let base = gateway.1.trim_end_matches("/mcp").to_owned();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let admin = |method: reqwest::Method, headers: serde_json::Value| {
        let url = match method {
            reqwest::Method::POST => format!("{base}/admin/upstreams"),
            _ => format!("{base}/admin/upstreams/bench"),
        };
        let body = json!({"name": "bench", "url": upstream, "headers": headers});
        http.request(method, url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let created = admin(reqwest::Method::POST, json!({}))
        .await
        .expect("create");
    assert_eq!(created.status(), 201, "upstream created");
    let echo = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "bench__echo", "arguments": {"text": "x"}}});
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let s = open(&http, &gateway.1).await;
        post(&http, &s, &echo).await;
        sessions.push(s);
    }
    let start = Instant::now();
    let changed = admin(reqwest::Method::PUT, json!({"X-Rotated": "1"}))
        .await
        .expect("update");
    let took = start.elapsed();
    let body: serde_json::Value =
        serde_json::from_slice(&changed.bytes().await.expect("body")).expect("JSON answer");
    println!(
        "connect-affecting change closing {} upstream sessions: {:.1} ms",
        body["change"]["closed_sessions"],
        took.as_secs_f64() * 1000.0
    );
}
