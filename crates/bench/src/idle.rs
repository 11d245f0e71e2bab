//! `--idle-sse N`: Tether's memory with N open, initialized, idle HTTP+SSE
//! client streams (each a session).

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;

use super::{rss_kib, serve_with, session_capacity};

/// Opens `n` initialized SSE sessions on a fresh gateway and prints its RSS.
pub async fn report(bin: &std::path::Path, dir: &std::path::Path, upstream: &str, n: usize) {
    let gateway = serve_with(
        bin,
        dir,
        "idle-sse.toml",
        &format!(
            "{}[store]\nurl = \"memory\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{upstream}\"\n",
            session_capacity(n)
        ),
    );
    let base = gateway.1.trim_end_matches("/mcp").to_owned();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    // Warm the gateway (first session, upstream era detection) before the baseline.
    drop(open_one(&http, &base).await);
    let before = rss_kib(gateway.0.id());
    let start = Instant::now();
    let streams: Vec<_> = futures_util::stream::iter(0..n)
        .map(|_| open_one(&http, &base))
        .buffer_unordered(32)
        .collect()
        .await;
    let opened = start.elapsed();
    // Let allocations settle; the streams stay open and idle.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = rss_kib(gateway.0.id());
    println!(
        "{} idle HTTP+SSE sessions (opened and initialized in {:.1}s): RSS {} MiB -> {} MiB, {:.1} KiB per stream",
        streams.len(),
        opened.as_secs_f64(),
        before / 1024,
        after / 1024,
        after.saturating_sub(before) as f64 / streams.len().max(1) as f64
    );
}

type Body = futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>;

/// Opens `/sse`, initializes the session and returns the (still open) stream.
async fn open_one(http: &reqwest::Client, base: &str) -> Body {
    let resp = http
        .get(format!("{base}/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE stream opens");
    let mut body = resp.bytes_stream().boxed();
    let mut decoder = tether_wire::sse::Decoder::new(1 << 20);
    let mut endpoint = None;
    let mut answered = false;
    while !answered {
        let chunk = body.next().await.expect("event").expect("chunk");
        for ev in decoder.feed(&chunk).expect("valid SSE") {
            match ev.event.as_str() {
                "endpoint" => {
                    let url = format!("{base}{}", ev.data);
                    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                        "protocolVersion": "2024-11-05", "capabilities": {},
                        "clientInfo": {"name": "tether-bench", "version": "1"}}});
                    let status = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(init.to_string())
                        .send()
                        .await
                        .expect("POST")
                        .status();
                    assert_eq!(status, 202, "initialize accepted");
                    endpoint = Some(url);
                }
                _ if endpoint.is_some() && ev.data.contains("\"result\"") => answered = true,
                _ => {}
            }
        }
    }
    body
}
