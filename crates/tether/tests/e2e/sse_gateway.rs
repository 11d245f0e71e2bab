//! The 2024-11-05 HTTP+SSE transport on both sides of Tether: clients on
//! `/sse` + `/message`, and upstreams reached over their own SSE streams.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Legacy, Proc, config, demo, tether, text, wait_for_stat};
use crate::isolation::counters_stay_apart;
use crate::sse_client::{SseSession, post};

async fn open(gw: &Proc) -> SseSession {
    let mut s = SseSession::open(gw).await;
    s.initialize(json!({})).await;
    s
}

#[tokio::test]
async fn sse_clients_get_isolated_upstream_sessions() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let mut a = open(&gw).await;
    let mut b = open(&gw).await;
    for want in 1..=5 {
        assert_eq!(a.count("demo__counter_increment").await, want);
    }
    for want in 1..=3 {
        assert_eq!(b.count("demo__counter_increment").await, want);
    }
    assert_eq!(a.count("demo__counter_get").await, 5);
    assert_eq!(b.count("demo__counter_get").await, 3);
    assert_eq!(up.stats().await["initializes"], 2);
    // One upstream, names unchanged.
    let mut single = SseSession::open_at(&gw.base, "/u/demo/sse").await;
    assert!(single.endpoint.starts_with("/u/demo/message?session_id="));
    let init = single.initialize(json!({})).await;
    assert_eq!(init["serverInfo"]["name"], "tether-demo-upstream");
    assert_eq!(single.count("counter_increment").await, 1);
}

#[tokio::test]
async fn progress_and_sampling_cross_the_sse_stream() {
    let up = demo("dual");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let mut s = SseSession::open(&gw).await;
    s.initialize(json!({"sampling": {}})).await;
    s.progress_then_sampling("demo__").await;
}

#[tokio::test]
async fn closing_the_stream_ends_the_session_and_its_upstream_sessions() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let mut s = open(&gw).await;
    assert_eq!(s.count("demo__counter_increment").await, 1);
    let endpoint = format!("{}{}", s.base, s.endpoint);
    drop(s);
    wait_for_stat(&up, "deletes", 1).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    assert_eq!(post(&endpoint, ping).await, 404);
}

#[tokio::test]
async fn session_ids_and_bodies_are_checked_before_anything_else() {
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let s = open(&gw).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let message = format!("{}/message", gw.base);
    assert_eq!(post(&message, ping.clone()).await, 400, "no session_id");
    for bad in ["a%20b", "..%2Fx", &"a".repeat(129)] {
        let url = format!("{message}?session_id={bad}");
        assert_eq!(post(&url, ping.clone()).await, 400, "{bad}");
    }
    let unknown = format!("{message}?session_id=AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(post(&unknown, ping.clone()).await, 404);
    // The session exists only on the endpoint it was opened on.
    let elsewhere = format!("{}/u/demo{}", gw.base, s.endpoint);
    assert_eq!(post(&elsewhere, ping.clone()).await, 404);
    assert_eq!(s.post_raw("{not json".into()).await, 400);
    // The stream itself passes the same edge checks as every endpoint.
    let forged = crate::harness::http()
        .get(format!("{}/sse", gw.base))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let unknown_upstream = crate::harness::http()
        .get(format!("{}/u/nope/sse", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_upstream.status(), 404);
    assert_eq!(s.post_raw(ping).await, 202);
}

/// Opens `/sse` on a raw socket, reads up to the endpoint event, and never
/// reads again.
fn stalled_stream(gw: &Proc) -> (std::net::TcpStream, String) {
    let addr = gw.base.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    let endpoint = ask_for_stream(&mut tcp, addr);
    (tcp, endpoint)
}

/// Sends `GET /sse` on a raw connection and reads up to its endpoint event;
/// the endpoint.
fn ask_for_stream(tcp: &mut std::net::TcpStream, addr: &str) -> String {
    write!(
        tcp,
        "GET /sse HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let seen = read_until(tcp, "data: /message");
    seen.lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap()
        .to_owned()
}

/// Reads from a raw stream until what arrived contains `needle`; the line
/// holding it and everything after.
fn read_until(tcp: &mut std::net::TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed before {needle:?}");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(at) = text.find(needle) {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            return text[line_start..].to_owned();
        }
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_memory_stays_bounded() {
    let up = demo("legacy");
    let gw = tether(&config(
        &[("demo", &up.mcp())],
        "[server]\nsend_timeout_secs = 2",
    ));
    let (_tcp, endpoint) = stalled_stream(&gw);
    let url = format!("{}{endpoint}", gw.base);
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "stalled", "version": "1"}}});
    assert_eq!(post(&url, init.to_string()).await, 202);
    let big = "x".repeat(256 * 1024);
    let start = Instant::now();
    let baseline = gw.rss_kib();
    let mut peak = baseline;
    let mut cut = false;
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(60) {
        let call = json!({"jsonrpc": "2.0", "id": sent + 1, "method": "tools/call",
            "params": {"name": "demo__echo", "arguments": {"text": big}}});
        match post(&url, call.to_string()).await {
            202 => sent += 1,
            // The session's requests in flight are capped: wait for room.
            429 => tokio::time::sleep(Duration::from_millis(20)).await,
            404 => {
                cut = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
        peak = peak.max(gw.rss_kib());
    }
    assert!(
        cut,
        "the stalled stream was never cut off ({sent} messages sent)"
    );
    eprintln!(
        "cut off after {sent} unread messages of 256 KiB in {:?}; RSS {baseline} -> peak {peak} KiB",
        start.elapsed()
    );
    assert!(
        peak < 200 * 1024,
        "RSS peaked at {peak} KiB (baseline {baseline} KiB)"
    );
    // Its upstream session was closed, and others are served.
    wait_for_stat(&up, "deletes", 1).await;
    let mut other = open(&gw).await;
    assert_eq!(other.count("demo__counter_increment").await, 1);
}

#[tokio::test]
async fn sse_upstreams_are_isolated_per_client_session() {
    let up = demo("legacy");
    for transport in ["sse", "auto"] {
        let gw = tether(&format!(
            "[[upstreams]]\nname = \"demo\"\nurl = \"{}/sse\"\ntransport = \"{transport}\"\n",
            up.base
        ));
        counters_stay_apart(&gw.mcp()).await;
        assert_eq!(up.stats().await["sse_sessions"], 2, "{transport}");
        drop(gw);
        wait_for_stat(&up, "sse_sessions", 0).await;
    }
    // Streamable HTTP clients of the demo were never involved.
    assert_eq!(up.stats().await["live_sessions"], 0);
}

#[tokio::test]
async fn a_dead_sse_upstream_session_is_replaced() {
    let up = demo("legacy");
    let gw = tether(&format!(
        "[[upstreams]]\nname = \"demo\"\nurl = \"{}/sse\"\ntransport = \"sse\"\n",
        up.base
    ));
    let c = Legacy::connect(&gw.mcp()).await;
    assert_eq!(
        text(&c.call("demo__counter_increment", json!({})).await),
        "1"
    );
    let addr = up.base.trim_start_matches("http://").to_owned();
    drop(up);
    let down = c
        .request(
            "tools/call",
            json!({"name": "demo__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert!(down.last().get("error").is_some(), "{:?}", down.messages);
    let up = crate::harness::demo_at(&addr, "legacy");
    // New sessions are held back briefly after the failure (backoff); then it recovers.
    let mut recovered = None;
    for _ in 0..60 {
        let r = c
            .request(
                "tools/call",
                json!({"name": "demo__counter_increment", "arguments": {}}),
            )
            .await;
        if r.last().get("error").is_none() {
            recovered = Some(r.last()["result"].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let result = recovered.expect("the upstream session was replaced");
    assert_eq!(text(&result), "1", "a fresh upstream session");
    assert_eq!(up.stats().await["sse_sessions"], 1);
}

#[tokio::test]
async fn a_stream_asked_for_later_on_a_kept_alive_connection_works_too() {
    // The first request decides the lean path; a connection that starts with
    // another request gets its stream from the router.
    let up = demo("legacy");
    let gw = tether(&config(&[("demo", &up.mcp())], ""));
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    read_until(&mut tcp, "ok\n");
    let endpoint = ask_for_stream(&mut tcp, &addr);
    let init = json!({"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "kept-alive", "version": "1"}}});
    assert_eq!(
        post(&format!("{}{endpoint}", gw.base), init.to_string()).await,
        202
    );
    read_until(&mut tcp, "\"protocolVersion\"");
}

#[tokio::test]
async fn streams_count_against_the_per_principal_cap() {
    let up = demo("legacy");
    let gw = tether(&config(
        &[("demo", &up.mcp())],
        "[session]\nmax_sessions_per_principal = 2",
    ));
    let first = SseSession::open(&gw).await;
    let _second = SseSession::open(&gw).await;
    let third = crate::harness::http()
        .get(format!("{}/sse", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    drop(first);
    let mut reopened = None;
    for _ in 0..40 {
        let r = crate::harness::http()
            .get(format!("{}/sse", gw.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a closed stream frees its place");
}
