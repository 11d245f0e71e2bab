//! `tether-bench`: measures `tools/call echo` latency and throughput directly
//! against the demo upstream and through Tether, in the same run, and prints
//! the ratios. A benchmark, not a test: it never fails on numbers.
//!
//! ```text
//! cargo build --release --workspace && target/release/tether-bench [--seconds 5] [--concurrency 1,64]
//! ```

mod catalog;
mod evict;
mod footprint;
mod idle;
mod transports;
mod wrk;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Benchmark tools/call latency and throughput: direct vs through Tether")]
struct Args {
    /// The tether binary (default: next to this one).
    #[arg(long)]
    tether: Option<std::path::PathBuf>,
    /// Measured seconds per case (after a short warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Comma-separated numbers of concurrent client sessions.
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Client eras (comma-separated): `legacy` (initialize + session) and
    /// `modern` (2026-07-28 stateless requests with `_meta`).
    #[arg(
        long,
        value_enum,
        default_value = "legacy,modern",
        value_delimiter = ','
    )]
    era: Vec<ClientEra>,
    /// Tether endpoints (comma-separated): `single` (`/u/demo/mcp`) and
    /// `federated` (`/mcp`, tool names prefixed).
    #[arg(
        long,
        value_enum,
        default_value = "single,federated",
        value_delimiter = ','
    )]
    endpoint: Vec<Endpoint>,
    /// Drive the same cases with wrk (an independent HTTP load generator,
    /// Debian package `wrk`) instead of this tool's client.
    #[arg(long)]
    wrk: bool,
    /// Alternating direct/through rounds per concurrency level; the summary
    /// line gives the medians (a shared VM is noisy from one minute to the next).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Which client drives the load: this tool's own HTTP client, or the
    /// official Python MCP SDK (a realistic client; also times first calls).
    #[arg(long, value_enum, default_value = "rust")]
    client: LoadClient,
    /// The gateway's session store (`memory`, `sqlite://…`, `postgres://…`).
    #[arg(long, default_value = "memory")]
    store: String,
    /// Python interpreter with the `mcp` package (the interop suite's venv).
    #[arg(long, default_value = "interop/.cache/venv/bin/python")]
    python: std::path::PathBuf,
    /// Instead of load: the cost of sessions — the first request for a session
    /// on a node that did not hold it (restored from the store, upstream
    /// session re-attached) and memory per idle session — for each store in
    /// `--session-stores`.
    #[arg(long)]
    sessions: bool,
    /// Stores for `--sessions` (comma-separated; `sqlite` means a temporary file).
    #[arg(long, default_value = "memory,sqlite", value_delimiter = ',')]
    session_stores: Vec<String>,
    /// The Python load driver.
    #[arg(long, default_value = "interop/bench/python_client.py")]
    python_driver: std::path::PathBuf,
    /// Instead of load: per-call cost of the HTTP+SSE and stdio transports on
    /// each side of Tether, against the same transport spoken directly.
    #[arg(long)]
    transports: bool,
    /// Instead of load: Tether's memory with this many open, idle HTTP+SSE
    /// client sessions.
    #[arg(long, value_name = "N")]
    idle_sse: Option<usize>,
    /// Instead of load: start-up time to the first answered request, and
    /// resident memory idle, with this many idle client sessions, and after
    /// they are deleted.
    #[arg(long, value_name = "SESSIONS")]
    footprint: Option<usize>,
    /// Instead of load: the time a connect-affecting upstream change takes
    /// when it closes this many upstream sessions.
    #[arg(long, value_name = "N")]
    evict: Option<usize>,
    /// Instead of load: the federated `tools/list` over this many upstreams,
    /// with the result cache on and off (latency, upstream lists made).
    #[arg(long, value_name = "UPSTREAMS")]
    catalog: Option<usize>,
    /// The gateway verifies a JWT (HS256) on every request; the client sends one.
    #[arg(long)]
    auth: bool,
    /// The gateway traces every request (sample ratio 1.0) and exports its
    /// spans to this OTLP/HTTP collector (base URL, e.g. http://127.0.0.1:4318).
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// Instead of starting a gateway: load this running endpoint (a cluster
    /// behind its load balancer, say) at each `--concurrency` level for
    /// `--seconds`, printing one JSON line per level (calls/s, p50, p99 µs).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// With `--url`: open the sessions at `--url` but send the calls here
    /// (another node of the cluster: each call is passed on).
    #[arg(long, value_name = "URL")]
    call_url: Option<String>,
    /// With `--url`: the tool to call.
    #[arg(long, default_value = "demo__echo")]
    tool: String,
}

/// How the load's client speaks MCP.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum ClientEra {
    /// `initialize`, then calls in the session (`Mcp-Session-Id`).
    Legacy,
    /// 2026-07-28: every call stands alone, identity in `_meta`.
    Modern,
}

/// Which Tether endpoint the through-Tether case uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Endpoint {
    /// `/u/demo/mcp`: one upstream, names as the upstream has them.
    Single,
    /// `/mcp`: every upstream, names prefixed (`demo__echo`).
    Federated,
}

/// The client that drives the load.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LoadClient {
    /// A minimal HTTP client (measures Tether, not the client).
    Rust,
    /// The official Python MCP SDK.
    Python,
}

/// A child process killed on drop.
struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &std::path::Path, args: &[&str]) -> Proc {
    use std::io::BufRead;
    let mut child = Command::new(bin)
        .args(args)
        .env("TETHER_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("tether starts");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("listen line");
    std::thread::spawn(move || for _ in out.lines() {});
    let url = line.split_whitespace().last().expect("url").to_string();
    Proc(child, url)
}

/// The gateway's JWT settings with `--auth`.
const AUTH_CONFIG: &str =
    "[auth]\nmode = \"jwt\"\n[auth.jwt]\nhs256_secret = \"bench-secret\"\nissuer = \"bench\"\n";

/// An HS256 token the `--auth` gateway accepts, valid for a day.
fn bench_token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 86_400;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": "bench", "sub": "load", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"bench-secret"),
    )
    .expect("token")
}

/// Config lines letting one principal hold `n` sessions (and a few more).
fn session_capacity(n: usize) -> String {
    let cap = n + 100;
    format!("[session]\nmax_sessions = {cap}\nmax_sessions_per_principal = {cap}\n")
}

/// Starts `tether serve` on a free port with `config` (written to `dir/file`).
fn serve_with(bin: &std::path::Path, dir: &std::path::Path, file: &str, config: &str) -> Proc {
    let path = dir.join(file);
    std::fs::write(&path, config).expect("config");
    spawn(
        bin,
        &[
            "serve",
            "--config",
            path.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ],
    )
}

struct Session {
    url: String,
    id: Option<String>,
    version: String,
    /// A bearer token sent with every request (`--auth`).
    bearer: Option<String>,
    era: ClientEra,
}

/// The 2026-07-28 protocol version.
const MODERN: &str = "2026-07-28";

impl Session {
    /// The headers every request of this session carries.
    fn headers(&self, body: &Value) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("content-type", "application/json".to_owned()),
            ("accept", "application/json, text/event-stream".to_owned()),
            ("mcp-protocol-version", self.version.clone()),
        ];
        if let Some(id) = &self.id {
            h.push(("mcp-session-id", id.clone()));
        }
        if let Some(token) = &self.bearer {
            h.push(("authorization", format!("Bearer {token}")));
        }
        if self.era == ClientEra::Modern {
            h.push((
                "mcp-method",
                body["method"].as_str().unwrap_or("").to_owned(),
            ));
            if let Some(name) = body["params"]["name"].as_str() {
                h.push(("mcp-name", name.to_owned()));
            }
        }
        h
    }

    /// Ends a legacy session (`DELETE`); a modern one has nothing to end.
    async fn close(&self, http: &reqwest::Client) {
        if let Some(id) = &self.id {
            let _ = http
                .delete(&self.url)
                .header("mcp-session-id", id)
                .send()
                .await;
        }
    }

    /// A `tools/call` of `tool` with id `n`, in this session's era.
    fn call(&self, n: u64, tool: &str) -> Value {
        let params = json!({"name": tool, "arguments": {"text": "hello"}});
        self.request(n, "tools/call", params)
    }

    /// A request of `method` with id `n` and `params`, in this session's era.
    fn request(&self, n: u64, method: &str, params: Value) -> Value {
        let mut body = json!({"jsonrpc": "2.0", "id": n, "method": method, "params": params});
        if self.era == ClientEra::Modern {
            body["params"]["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "tether-bench", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            });
        }
        body
    }
}

async fn post(http: &reqwest::Client, s: &Session, body: &Value) -> (Option<String>, Value) {
    let mut req = http.post(&s.url).body(body.to_string());
    for (name, value) in s.headers(body) {
        req = req.header(name, value);
    }
    let resp = req.send().await.expect("request");
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let text = resp.text().await.expect("body");
    let json = text
        .strip_prefix("event: message\ndata: ")
        .map(|t| t.trim_end().to_string())
        .unwrap_or(text);
    (sid, serde_json::from_str(&json).unwrap_or(Value::Null))
}

async fn open(http: &reqwest::Client, url: &str) -> Session {
    open_as(http, url, None, ClientEra::Legacy).await
}

/// A session at `url`: a legacy one initialized, a modern one (nothing to open).
async fn open_as(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    era: ClientEra,
) -> Session {
    let mut s = Session {
        url: url.into(),
        id: None,
        version: "2025-11-25".into(),
        bearer: bearer.map(str::to_owned),
        era,
    };
    if era == ClientEra::Modern {
        s.version = MODERN.into();
        return s;
    }
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "tether-bench", "version": "1"}}});
    let (sid, reply) = post(http, &s, &init).await;
    assert!(reply.get("result").is_some(), "initialize failed: {reply}");
    s.id = sid;
    post(
        http,
        &s,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    s
}

/// Warm-up before each measured window.
const WARMUP: Duration = Duration::from_secs(1);

/// Latencies (µs) of the case's echo calls made in its measured window
/// (after [`WARMUP`]), and the number of calls made in total (warm-up
/// included). The sessions are opened at the case's URL and the calls sent
/// to `call_url` (another node of a cluster, say).
async fn load(case: &Case, call_url: &str) -> (Vec<u32>, u64) {
    let concurrency = case.concurrency;
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let mut sessions = Vec::new();
    for _ in 0..concurrency {
        let mut session = open_as(&http, &case.url, case.bearer.as_deref(), case.era).await;
        session.url = call_url.into();
        sessions.push(session);
    }
    let start = Instant::now() + WARMUP;
    let end = start + case.measure;
    let tool = Arc::<str>::from(case.tool.as_str());
    let workers = sessions.into_iter().map(|s| {
        let http = http.clone();
        let tool = tool.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            loop {
                n += 1;
                let body = s.call(n, &tool);
                let t0 = Instant::now();
                let (_, reply) = post(&http, &s, &body).await;
                let t1 = Instant::now();
                assert!(reply.get("result").is_some(), "call failed: {reply}");
                if t1 >= end {
                    break;
                }
                if t0 >= start {
                    lat.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            s.close(&http).await;
            (lat, n)
        })
    });
    let mut all = Vec::new();
    let mut calls = 0;
    for w in futures_util::future::join_all(workers).await {
        let (lat, n) = w.expect("worker");
        all.extend(lat);
        calls += n;
    }
    all.sort_unstable();
    (all, calls)
}

/// CPU time (user + system) a process has used, in microseconds (Linux).
fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000) // USER_HZ is 100 on Linux
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Stats {
    p50: f64,
    p99: f64,
    rps: f64,
}

fn stats(lat: &[u32], secs: f64) -> Stats {
    Stats {
        p50: pct(lat, 0.50),
        p99: pct(lat, 0.99),
        rps: lat.len() as f64 / secs,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(url) = &args.url {
        load_endpoint(&args, url).await;
        return;
    }
    let bin = args.tether.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("exe")
            .with_file_name("tether")
    });
    let upstream = spawn(
        &bin,
        &["demo-upstream", "--listen", "127.0.0.1:0", "--era", "dual"],
    );
    let dir = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let gateway = serve_with(
        &bin,
        &dir,
        "tether.toml",
        &format!(
            "{}{}[session]\nmax_sessions = 100000\n[store]\nurl = \"{}\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
            if args.auth { AUTH_CONFIG } else { "" },
            args.otlp.as_ref().map_or(String::new(), |url| format!(
                "[telemetry]\notlp_endpoint = \"{url}\"\nsample_ratio = 1.0\n"
            )),
            args.store,
            upstream.1
        ),
    );
    let bearer = args.auth.then(bench_token);
    if args.sessions {
        drop(gateway);
        for store in &args.session_stores {
            sessions_report(&bin, &upstream.1, store, &dir).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if args.transports
        || args.idle_sse.is_some()
        || args.evict.is_some()
        || args.footprint.is_some()
        || args.catalog.is_some()
    {
        drop(gateway);
        if let Some(n) = args.catalog {
            catalog::report(&bin, &dir, n).await;
        } else if let Some(n) = args.footprint {
            footprint::report(&bin, &dir, &upstream.1, n).await;
        } else if let Some(n) = args.idle_sse {
            idle::report(&bin, &dir, &upstream.1, n).await;
        } else if let Some(n) = args.evict {
            evict::report(&bin, &dir, &upstream.1, n).await;
        } else {
            transports::report(&bin, &dir, &args).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if args.client == LoadClient::Python {
        python_report(&args, &upstream.1, &gateway.1);
        drop(gateway);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let measure = Duration::from_secs(args.seconds.max(1));
    println!(
        "tools/call echo, {}s per case after 1s warm-up, load by {}; latency in µs; CPU per call of each process",
        measure.as_secs(),
        if args.wrk {
            "wrk"
        } else {
            "this tool's client"
        }
    );
    let gateway_base = gateway.1.trim_end_matches("/mcp").to_owned();
    for &endpoint in &args.endpoint {
        let (through_url, through_tool) = match endpoint {
            Endpoint::Single => (format!("{gateway_base}/u/demo/mcp"), "echo"),
            Endpoint::Federated => (gateway.1.clone(), "demo__echo"),
        };
        for &era in &args.era {
            println!("\n{endpoint:?} endpoint, {era:?} client");
            println!(
                "{:>5} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10} {:>10} | {:>6} {:>6} {:>6} {:>7}",
                "conc",
                "path",
                "p50",
                "p99",
                "req/s",
                "client",
                "upstream",
                "tether",
                "+p50",
                "+p99",
                "thru×",
                "cpu t/u"
            );
            for &c in &args.concurrency {
                let mut added_p50 = Vec::new();
                let mut added_p99 = Vec::new();
                let mut ratio = Vec::new();
                let mut cpu_ratio = Vec::new();
                for _ in 0..args.rounds.max(1) {
                    let run = |url: String, tool: &'static str, bearer: Option<String>| {
                        let processes = (&upstream, &gateway);
                        let dir = &dir;
                        async move {
                            let case = Case {
                                url,
                                tool: tool.to_owned(),
                                concurrency: c,
                                era,
                                measure,
                                bearer,
                            };
                            measure_case(&case, args.wrk, processes, dir).await
                        }
                    };
                    let d = run(upstream.1.clone(), "echo", None).await;
                    let t = run(through_url.clone(), through_tool, bearer.clone()).await;
                    d.print(c, "direct", None);
                    t.print(c, "tether", Some(&d));
                    added_p50.push(t.p50 - d.p50);
                    added_p99.push(t.p99 - d.p99);
                    ratio.push(t.rps / d.rps);
                    cpu_ratio.push(t.tether_cpu / d.upstream_cpu);
                }
                println!(
                    "{c:>5} {:>7} {:>67} | {:>6.0} {:>6.0} {:>6.2} {:>7.2}",
                    "median",
                    "",
                    median(&mut added_p50),
                    median(&mut added_p99),
                    median(&mut ratio),
                    median(&mut cpu_ratio)
                );
            }
        }
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One measured load: where, which tool, how many sessions, which era.
struct Case {
    url: String,
    tool: String,
    concurrency: usize,
    era: ClientEra,
    measure: Duration,
    bearer: Option<String>,
}

/// What one case measured: latency, throughput, CPU per call (µs) of the
/// client, the upstream and the gateway.
struct Measured {
    p50: f64,
    p99: f64,
    rps: f64,
    client_cpu: f64,
    upstream_cpu: f64,
    tether_cpu: f64,
}

impl Measured {
    fn print(&self, c: usize, path: &str, direct: Option<&Measured>) {
        let cpu = |v: f64| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.1}")
            }
        };
        print!(
            "{c:>5} {path:>7} {:>7.0} {:>7.0} {:>9.0} {:>10} {:>10} {:>10} |",
            self.p50,
            self.p99,
            self.rps,
            cpu(self.client_cpu),
            cpu(self.upstream_cpu),
            cpu(self.tether_cpu),
        );
        match direct {
            Some(d) => println!(
                " {:>6.0} {:>6.0} {:>6.2} {:>7.2}",
                self.p50 - d.p50,
                self.p99 - d.p99,
                self.rps / d.rps,
                self.tether_cpu / d.upstream_cpu
            ),
            None => println!(),
        }
    }
}

/// Runs `case` with this tool's client or wrk, reading the CPU time the
/// upstream and the gateway spent on it.
async fn measure_case(
    case: &Case,
    wrk: bool,
    (upstream, gateway): (&Proc, &Proc),
    dir: &std::path::Path,
) -> Measured {
    let cpu = |p: &Proc| cpu_micros(p.0.id()).unwrap_or(0);
    let me = std::process::id();
    let (u0, g0, c0) = (cpu(upstream), cpu(gateway), cpu_micros(me).unwrap_or(0));
    let (stats, calls, client_cpu) = if wrk {
        let (stats, calls) = wrk::load(case, dir).await;
        (stats, calls, f64::NAN)
    } else {
        let (lat, calls) = load(case, &case.url).await;
        let client = cpu_micros(me).unwrap_or(0) - c0;
        (
            stats(&lat, case.measure.as_secs_f64()),
            calls,
            client as f64 / calls.max(1) as f64,
        )
    };
    let per = |us: u64| us as f64 / calls.max(1) as f64;
    Measured {
        p50: stats.p50,
        p99: stats.p99,
        rps: stats.rps,
        client_cpu,
        upstream_cpu: per(cpu(upstream) - u0),
        tether_cpu: per(cpu(gateway) - g0),
    }
}

/// `--url`: loads a running endpoint and prints a JSON line per level.
async fn load_endpoint(args: &Args, url: &str) {
    let measure = Duration::from_secs(args.seconds.max(1));
    let call_url = args.call_url.as_deref().unwrap_or(url);
    for &concurrency in &args.concurrency {
        let case = Case {
            url: url.to_owned(),
            tool: args.tool.clone(),
            concurrency,
            era: ClientEra::Legacy,
            measure,
            bearer: None,
        };
        let (lat, _) = load(&case, call_url).await;
        let s = stats(&lat, measure.as_secs_f64());
        println!(
            "{}",
            json!({"concurrency": concurrency, "rps": s.rps.round(), "p50_us": s.p50, "p99_us": s.p99})
        );
    }
}

/// Runs the Python SDK driver against both paths and prints first-call,
/// later-call and load figures side by side.
fn python_report(args: &Args, direct_url: &str, gateway_url: &str) {
    let concurrency = args.concurrency.iter().copied().max().unwrap_or(8).min(32);
    let run = |url: &str, tool: &str| -> Value {
        let out = Command::new(&args.python)
            .arg(&args.python_driver)
            .args([
                "--url",
                url,
                "--tool",
                tool,
                "--seconds",
                &args.seconds.to_string(),
            ])
            .args(["--concurrency", &concurrency.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("the Python driver starts (run interop/run.sh once to create the venv)");
        assert!(out.status.success(), "the Python driver failed");
        serde_json::from_slice(&out.stdout).expect("the driver prints JSON")
    };
    let direct = run(direct_url, "echo");
    let through = run(gateway_url, "demo__echo");
    println!("Python SDK client (mcp ClientSession, legacy Streamable HTTP); latency in µs");
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "direct", "", "tether", "", "added", ""
    );
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p99", "p50", "p99", "p50", "p99"
    );
    for (label, key) in [
        ("initialize", "initialize"),
        ("first tools/call", "first_call"),
        ("later tools/call", "later_call"),
        ("under load (per call)", "load"),
    ] {
        let f = |v: &Value, p: &str| v[key][p].as_f64().unwrap_or(f64::NAN);
        println!(
            "{label:<26} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            f(&direct, "p50"),
            f(&direct, "p99"),
            f(&through, "p50"),
            f(&through, "p99"),
            f(&through, "p50") - f(&direct, "p50"),
            f(&through, "p99") - f(&direct, "p99"),
        );
    }
    let rps = |v: &Value| v["load"]["calls_per_second"].as_f64().unwrap_or(f64::NAN);
    println!(
        "throughput with {concurrency} sessions: direct {:.0}/s, tether {:.0}/s, ratio {:.2}",
        rps(&direct),
        rps(&through),
        rps(&through) / rps(&direct)
    );
}

/// Resident memory of a process in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Prints the restore cost and memory per idle session with one store.
async fn sessions_report(
    bin: &std::path::Path,
    upstream: &str,
    store: &str,
    dir: &std::path::Path,
) {
    let url = if store == "sqlite" {
        format!("sqlite://{}/bench-{}.db", dir.display(), std::process::id())
    } else {
        store.to_owned()
    };
    let config = format!(
        "[session]\nmax_sessions = 100000\nmax_sessions_per_principal = 100000\n[store]\nurl = \"{url}\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{upstream}\"\n"
    );
    let file = format!("sessions-{}.toml", std::process::id());
    let node = |_: u8| serve_with(bin, dir, &file, &config);
    let (a, b) = (node(0), node(1));
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let echo = |n: u64| json!({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "demo__echo", "arguments": {"text": "x"}}});
    // Sessions made (and their upstream sessions opened) on node A ...
    let (mut first, mut later) = (Vec::new(), Vec::new());
    if store != "memory" {
        let mut sessions = Vec::new();
        for _ in 0..200 {
            let s = open(&http, &a.1).await;
            post(&http, &s, &echo(1)).await;
            sessions.push(s);
        }
        // ... then used on node B: the first request restores, the next is steady.
        for s in &sessions {
            let on_b = Session {
                url: b.1.clone(),
                id: s.id.clone(),
                version: s.version.clone(),
                bearer: None,
                era: ClientEra::Legacy,
            };
            let t0 = Instant::now();
            let (_, r) = post(&http, &on_b, &echo(2)).await;
            let t1 = Instant::now();
            post(&http, &on_b, &echo(3)).await;
            let t2 = Instant::now();
            assert!(r.get("result").is_some(), "restored call failed: {r}");
            first.push((t1 - t0).as_micros() as u32);
            later.push((t2 - t1).as_micros() as u32);
        }
        first.sort_unstable();
        later.sort_unstable();
    }
    // Memory: a fresh node holding many idle, used sessions.
    let c = node(2);
    let before = rss_kib(c.0.id());
    let idle = 2000;
    for _ in 0..idle {
        let s = open(&http, &c.1).await;
        post(&http, &s, &echo(1)).await;
    }
    let after = rss_kib(c.0.id());
    println!(
        "store {store:<8} first request on another node p50 {:>6} µs p99 {:>6} µs | next request p50 {:>6} µs | added p50 {:>6} µs | RSS per idle session {:.1} KiB",
        pct(&first, 0.5),
        pct(&first, 0.99),
        pct(&later, 0.5),
        pct(&first, 0.5) - pct(&later, 0.5),
        after.saturating_sub(before) as f64 / idle as f64
    );
}
