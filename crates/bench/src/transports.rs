//! `--transports`: per-call cost of the HTTP+SSE and stdio transports, on
//! either side of Tether, each against the same transport spoken directly.
//!
//! One gateway fronts the demo upstream three ways (`http` over Streamable
//! HTTP, `sse` over HTTP+SSE, `stdio` as a child process per session);
//! clients call `echo` directly over each transport, through Tether with the
//! upstream on each transport, and over HTTP+SSE into Tether's `/sse`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{Proc, Session, median, open, pct, post, serve_with, spawn};

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A client session over one transport.
pub enum Client {
    /// Streamable HTTP: one POST per call.
    Http(reqwest::Client, Session),
    /// HTTP+SSE: POST to the endpoint, the answer on the stream.
    Sse {
        http: reqwest::Client,
        endpoint: String,
        waiters: Waiters,
        next: AtomicU64,
        _reader: tokio::task::JoinHandle<()>,
    },
    /// stdio: a child process of our own, one line per message.
    Stdio {
        stdin: tokio::sync::Mutex<tokio::process::ChildStdin>,
        waiters: Waiters,
        next: AtomicU64,
        _child: Box<tokio::process::Child>,
    },
}

fn route(waiters: &Waiters, message: Value) {
    if let Some(id) = message.get("id").and_then(Value::as_u64)
        && let Some(tx) = waiters.lock().expect("waiters").remove(&id)
    {
        let _ = tx.send(message);
    }
}

impl Client {
    /// Opens and initializes a session.
    pub async fn connect(kind: &Target, http: &reqwest::Client) -> Client {
        let client = match kind {
            Target::Http(url) => return Client::Http(http.clone(), open(http, url).await),
            Target::Sse(url) => Self::sse(http, url).await,
            Target::Stdio(bin) => Self::stdio(bin),
        };
        let init = client
            .call(
                "initialize",
                json!({"protocolVersion": "2024-11-05", "capabilities": {},
                "clientInfo": {"name": "tether-bench", "version": "1"}}),
            )
            .await;
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        client
            .notify(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        client
    }

    async fn sse(http: &reqwest::Client, url: &str) -> Client {
        let resp = http
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("SSE stream opens");
        let mut body = resp.bytes_stream();
        let mut decoder = tether_wire::sse::Decoder::new(1 << 24);
        let mut endpoint = None;
        let mut early = Vec::new();
        while endpoint.is_none() {
            let chunk = body.next().await.expect("endpoint event").expect("chunk");
            for ev in decoder.feed(&chunk).expect("valid SSE") {
                match ev.event.as_str() {
                    "endpoint" => endpoint = Some(ev.data),
                    _ => early.push(ev),
                }
            }
        }
        let base = reqwest::Url::parse(url).expect("url");
        let endpoint = base
            .join(&endpoint.expect("endpoint"))
            .expect("endpoint url")
            .to_string();
        let waiters: Waiters = Arc::default();
        let inbox = waiters.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(chunk)) = body.next().await {
                for ev in decoder.feed(&chunk).unwrap_or_default() {
                    if let Ok(m) = serde_json::from_str(&ev.data) {
                        route(&inbox, m);
                    }
                }
            }
        });
        Client::Sse {
            http: http.clone(),
            endpoint,
            waiters,
            next: AtomicU64::new(1),
            _reader: reader,
        }
    }

    fn stdio(bin: &std::path::Path) -> Client {
        let mut child = tokio::process::Command::new(bin)
            .args(["demo-upstream", "--stdio", "--era", "legacy"])
            .env("TETHER_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("stdio demo starts");
        let stdout = child.stdout.take().expect("stdout");
        let waiters: Waiters = Arc::default();
        let inbox = waiters.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(m) = serde_json::from_str(&line) {
                    route(&inbox, m);
                }
            }
        });
        Client::Stdio {
            stdin: tokio::sync::Mutex::new(child.stdin.take().expect("stdin")),
            waiters,
            next: AtomicU64::new(1),
            _child: Box::new(child),
        }
    }

    async fn notify(&self, message: Value) {
        match self {
            Client::Http(http, s) => {
                post(http, s, &message).await;
            }
            Client::Sse { http, endpoint, .. } => {
                send_sse(http, endpoint, &message).await;
            }
            Client::Stdio { stdin, .. } => send_line(stdin, &message).await,
        }
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        match self {
            Client::Http(http, s) => {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
                post(http, s, &body).await.1
            }
            Client::Sse {
                http,
                endpoint,
                waiters,
                next,
                ..
            } => {
                let (id, rx) = expect(waiters, next);
                let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
                send_sse(http, endpoint, &body).await;
                rx.await.expect("answer on the stream")
            }
            Client::Stdio {
                stdin,
                waiters,
                next,
                ..
            } => {
                let (id, rx) = expect(waiters, next);
                let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
                send_line(stdin, &body).await;
                rx.await.expect("answer on stdout")
            }
        }
    }
}

fn expect(waiters: &Waiters, next: &AtomicU64) -> (u64, oneshot::Receiver<Value>) {
    let id = next.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    waiters.lock().expect("waiters").insert(id, tx);
    (id, rx)
}

async fn send_sse(http: &reqwest::Client, endpoint: &str, body: &Value) {
    let status = http
        .post(endpoint)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST")
        .status();
    assert!(status.is_success(), "POST to the SSE endpoint: {status}");
}

async fn send_line(stdin: &tokio::sync::Mutex<tokio::process::ChildStdin>, body: &Value) {
    let mut line = body.to_string().into_bytes();
    line.push(b'\n');
    let mut stdin = stdin.lock().await;
    stdin.write_all(&line).await.expect("write");
    stdin.flush().await.expect("flush");
}

/// Where a client connects.
pub enum Target {
    /// A Streamable HTTP endpoint.
    Http(String),
    /// An HTTP+SSE stream URL.
    Sse(String),
    /// `tether demo-upstream --stdio`, started per session.
    Stdio(std::path::PathBuf),
}

/// Latencies (µs) of `tool` calls by `concurrency` sessions in the window.
async fn load(target: &Target, tool: &str, concurrency: usize, measure: Duration) -> Vec<u32> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency * 2)
        .build()
        .expect("client");
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        clients.push(Arc::new(Client::connect(target, &http).await));
    }
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + measure;
    let workers = clients.into_iter().map(|c| {
        let tool = tool.to_owned();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let t0 = Instant::now();
                let r = c
                    .call(
                        "tools/call",
                        json!({"name": tool, "arguments": {"text": "hello"}}),
                    )
                    .await;
                let t1 = Instant::now();
                assert!(r.get("result").is_some(), "call failed: {r}");
                if t1 >= end {
                    return lat;
                }
                if t0 >= start {
                    lat.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                }
            }
        })
    });
    let mut all: Vec<u32> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(|w| w.expect("worker"))
        .collect();
    all.sort_unstable();
    all
}

/// Runs the transport comparison and prints a table of medians.
pub async fn report(bin: &std::path::Path, dir: &std::path::Path, args: &super::Args) {
    let upstream = spawn(
        bin,
        &[
            "demo-upstream",
            "--listen",
            "127.0.0.1:0",
            "--era",
            "legacy",
        ],
    );
    let base = upstream.1.trim_end_matches("/mcp").to_owned();
    let gateway: Proc = serve_with(
        bin,
        dir,
        "transports.toml",
        &format!(
            "[session]\nmax_sessions = 100000\nmax_sessions_per_principal = 100000\n[store]\nurl = \"memory\"\n\
             [[upstreams]]\nname = \"http\"\nurl = \"{}\"\ntransport = \"streamable-http\"\n\
             [[upstreams]]\nname = \"sse\"\nurl = \"{base}/sse\"\ntransport = \"sse\"\n\
             [[upstreams]]\nname = \"stdio\"\ncommand = [\"{}\", \"demo-upstream\", \"--stdio\", \"--era\", \"legacy\"]\n",
            upstream.1,
            bin.display()
        ),
    );
    let gw_base = gateway.1.trim_end_matches("/mcp").to_owned();
    let cases: [(&str, Target, &str, Target, &str); 4] = [
        (
            "client HTTP, upstream Streamable HTTP",
            Target::Http(upstream.1.clone()),
            "echo",
            Target::Http(gateway.1.clone()),
            "http__echo",
        ),
        (
            "client HTTP, upstream HTTP+SSE",
            Target::Sse(format!("{base}/sse")),
            "echo",
            Target::Http(gateway.1.clone()),
            "sse__echo",
        ),
        (
            "client HTTP, upstream stdio",
            Target::Stdio(bin.to_owned()),
            "echo",
            Target::Http(gateway.1.clone()),
            "stdio__echo",
        ),
        (
            "client HTTP+SSE, upstream Streamable HTTP",
            Target::Sse(format!("{base}/sse")),
            "echo",
            Target::Sse(format!("{gw_base}/sse")),
            "http__echo",
        ),
    ];
    let measure = Duration::from_secs(args.seconds.max(1));
    println!(
        "tools/call echo, {}s per case after 1s warm-up, median of {} rounds; direct = the same transport without Tether; latency in µs",
        measure.as_secs(),
        args.rounds.max(1)
    );
    println!(
        "{:<42} {:>5} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6}",
        "case", "conc", "dir p50", "dir p99", "thr p50", "thr p99", "+p50", "+p99", "thru×"
    );
    for (label, direct, direct_tool, through, through_tool) in &cases {
        for &c in &args.concurrency {
            let mut rows: Vec<[f64; 6]> = Vec::new();
            for _ in 0..args.rounds.max(1) {
                let d = load(direct, direct_tool, c, measure).await;
                let t = load(through, through_tool, c, measure).await;
                let secs = measure.as_secs_f64();
                rows.push([
                    pct(&d, 0.5),
                    pct(&d, 0.99),
                    pct(&t, 0.5),
                    pct(&t, 0.99),
                    d.len() as f64 / secs,
                    t.len() as f64 / secs,
                ]);
            }
            let col = |i: usize| median(&mut rows.iter().map(|r| r[i]).collect::<Vec<_>>());
            let (dp50, dp99, tp50, tp99) = (col(0), col(1), col(2), col(3));
            let ratio = median(&mut rows.iter().map(|r| r[5] / r[4]).collect::<Vec<_>>());
            println!(
                "{label:<42} {c:>5} {dp50:>8.0} {dp99:>8.0} {tp50:>8.0} {tp99:>8.0} {:>7.0} {:>7.0} {ratio:>6.2}",
                tp50 - dp50,
                tp99 - dp99
            );
        }
    }
}
