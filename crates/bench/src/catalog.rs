//! `--catalog N`: the federated `tools/list` over N modern upstreams whose
//! lists may be reused for a minute (`ttlMs`), through a gateway with the
//! result cache on and one with it off: the latency of the list and how
//! many upstream lists each made.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ClientEra, open_as, pct, post, serve_with, spawn};

/// Federated lists timed per gateway.
const LISTS: usize = 400;

/// Prints latency and upstream lists for the cached and uncached gateway.
pub async fn report(bin: &std::path::Path, dir: &std::path::Path, upstreams: usize) {
    let ups: Vec<_> = (0..upstreams)
        .map(|_| {
            spawn(
                bin,
                &[
                    "demo-upstream",
                    "--listen",
                    "127.0.0.1:0",
                    "--era",
                    "modern",
                    "--ttl-ms",
                    "60000",
                ],
            )
        })
        .collect();
    let defs: String = ups
        .iter()
        .enumerate()
        .map(|(i, up)| format!("[[upstreams]]\nname = \"u{i}\"\nurl = \"{}\"\n", up.1))
        .collect();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    println!(
        "federated tools/list over {upstreams} modern upstreams (ttlMs 60000), {LISTS} lists each; latency in µs"
    );
    println!(
        "{:>8} {:>8} {:>8} {:>16}",
        "cache", "p50", "p99", "upstream lists"
    );
    for (label, cache) in [("off", "false"), ("on", "true")] {
        let config = format!("[store]\nurl = \"memory\"\n[cache]\nenabled = {cache}\n{defs}");
        let gateway = serve_with(bin, dir, &format!("catalog-{label}.toml"), &config);
        let session = open_as(&http, &gateway.1, None, ClientEra::Modern).await;
        let list = session.request(1, "tools/list", json!({}));
        let (_, first) = post(&http, &session, &list).await;
        let tools = first["result"]["tools"].as_array().map_or(0, Vec::len);
        assert!(tools >= upstreams, "the federated list answers: {first}");
        let before = upstream_lists(&http, &ups).await;
        let mut micros = Vec::with_capacity(LISTS);
        for _ in 0..LISTS {
            let t = Instant::now();
            let (_, answer) = post(&http, &session, &list).await;
            micros.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            assert!(answer.get("result").is_some(), "{answer}");
        }
        let asked = upstream_lists(&http, &ups).await - before;
        micros.sort_unstable();
        println!(
            "{label:>8} {:>8.0} {:>8.0} {asked:>16}",
            pct(&micros, 0.5),
            pct(&micros, 0.99)
        );
        drop(gateway);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lists the upstreams answered so far, all together.
async fn upstream_lists(http: &reqwest::Client, ups: &[super::Proc]) -> u64 {
    let mut total = 0;
    for up in ups {
        let stats = up.1.replace("/mcp", "/stats");
        let bytes = http
            .get(stats)
            .send()
            .await
            .expect("stats")
            .bytes()
            .await
            .expect("stats body");
        let body: Value = serde_json::from_slice(&bytes).expect("stats JSON");
        total += body["cacheable_requests"].as_u64().unwrap_or(0);
    }
    total
}
