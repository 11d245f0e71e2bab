//! `--footprint`: what Tether costs before any load: the time from starting
//! `tether serve` to its first answered request, its resident memory idle,
//! per idle client session (each initialized and used once, so it holds an
//! upstream session), and after those sessions are deleted.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{median, open, post, rss_kib, serve_with, session_capacity};

/// Starts of the gateway timed.
const STARTS: usize = 5;

/// Prints start-up time and memory figures for `sessions` idle sessions.
pub async fn report(bin: &std::path::Path, dir: &std::path::Path, upstream: &str, sessions: usize) {
    let config = format!(
        "{}[store]\nurl = \"memory\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{upstream}\"\n",
        session_capacity(sessions)
    );
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let mut starts = Vec::new();
    let mut gateway = None;
    for _ in 0..STARTS {
        drop(gateway.take());
        let t0 = Instant::now();
        let g = serve_with(bin, dir, "footprint.toml", &config);
        let health = g.1.replace("/mcp", "/healthz");
        while http.get(&health).send().await.is_err() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        starts.push(t0.elapsed().as_secs_f64() * 1e3);
        gateway = Some(g);
    }
    let gateway = gateway.expect("started");
    let pid = gateway.0.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);
    let mut opened = Vec::with_capacity(sessions);
    for n in 0..sessions {
        let s = open(&http, &gateway.1).await;
        let call = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "demo__echo", "arguments": {"text": "x"}}});
        post(&http, &s, &call).await;
        opened.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let full = rss_kib(pid);
    for s in &opened {
        s.close(&http).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "start-up to first answer: median {:.1} ms over {STARTS} starts ({})",
        median(&mut starts.clone()),
        starts
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "RSS idle {idle} KiB; with {sessions} idle sessions {full} KiB ({:.1} KiB each); 2 s after deleting them {after} KiB",
        full.saturating_sub(idle) as f64 / sessions.max(1) as f64
    );
}
