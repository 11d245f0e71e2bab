//! Test harness: real `tether` processes (gateway and demo upstream) on
//! loopback, and a small MCP client speaking both eras over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A child process killed on drop.
pub struct Proc {
    child: Child,
    /// Lines the process wrote on stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Base URL, e.g. `http://127.0.0.1:1234`.
    pub base: String,
    _dir: Option<TempDir>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// The MCP endpoint.
    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    /// Sends a signal (e.g. `HUP`) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// The config file a gateway was started with (in its own directory).
    pub fn config_file(&self) -> std::path::PathBuf {
        self._dir
            .as_ref()
            .expect("started with a config")
            .0
            .join("tether.toml")
    }

    /// Calls the admin API with the token `admin`; the status and JSON body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = crate::harness::http()
            .request(method, format!("{}/admin{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Runs `tether <args> --url <this gateway>` with the admin token: whether
    /// it succeeded, and what it printed.
    pub fn admin_cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(binary())
            .args(args)
            .args(["--url", &self.base])
            .env("TETHER_ADMIN__TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), printed)
    }

    /// Sends SIGKILL and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process has written on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Process ids of this process's children whose command line contains `needle`.
    pub fn children(&self, needle: &str) -> Vec<u32> {
        let parent = self.child.id().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised command name: state, ppid, ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if ppid == Some(parent.as_str()) && cmdline.contains(needle) && !stat.contains(") Z ") {
                found.push(pid);
            }
        }
        found
    }

    /// The demo upstream's `/stats` counters.
    pub async fn stats(&self) -> Value {
        get_json(&format!("{}/stats", self.base)).await
    }

    /// Tether's `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::harness::http()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// GETs a JSON document.
pub async fn get_json(url: &str) -> Value {
    let text = http().get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The admin token of gateways configured with [`ADMIN`].
pub const ADMIN_TOKEN: &str = "admin-secret-for-tests";
/// Config text enabling the admin API with [`ADMIN_TOKEN`].
pub const ADMIN: &str = "[admin]\ntoken = \"admin-secret-for-tests\"\n";

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `tether` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

/// Spawns `tether args…`, waits for the `listening on http://…/mcp` line.
fn spawn(args: &[&str], dir: Option<TempDir>) -> Proc {
    spawn_env(args, dir, &[])
}

fn spawn_env(args: &[&str], dir: Option<TempDir>, env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(binary())
        .args(args)
        .env(
            "TETHER_LOG",
            std::env::var("TETHER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether binary starts");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            sink.lock().unwrap().push(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("process prints its listen address");
    let url = line.split_whitespace().last().unwrap().to_string();
    let base = url.trim_end_matches("/mcp").to_string();
    Proc {
        child,
        log,
        base,
        _dir: dir,
    }
}

/// A demo upstream on a free port with extra arguments.
pub fn spawn_demo(extra: &[&str]) -> Proc {
    let mut args = vec!["demo-upstream", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    spawn(&args, None)
}

/// A demo upstream of the given era on a given address.
pub fn demo_at(addr: &str, era: &str) -> Proc {
    spawn(&["demo-upstream", "--listen", addr, "--era", era], None)
}

/// A demo upstream of the given era (`legacy`, `modern`, `dual`).
pub fn demo(era: &str) -> Proc {
    spawn(
        &["demo-upstream", "--listen", "127.0.0.1:0", "--era", era],
        None,
    )
}

/// A gateway with the given TOML config (listen address is forced to port 0).
pub fn tether(config: &str) -> Proc {
    tether_env(config, &[])
}

/// A gateway with the given TOML config and extra environment variables.
/// Without a `[store]` section it gets its own SQLite file (the default store).
pub fn tether_env(config: &str, env: &[(&str, &str)]) -> Proc {
    let dir = TempDir::new();
    let mut config = config.to_string();
    if !config.contains("[store]") {
        config.push_str(&format!(
            "\n[store]\nurl = \"sqlite://{}/sessions.db\"\n",
            dir.0.display()
        ));
    }
    let path = dir.0.join("tether.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap().to_string();
    let args = ["serve", "--config", &path, "--listen", "127.0.0.1:0"];
    spawn_env(&args, Some(dir), env)
}

/// A gateway on a given address with the given (complete) config file text.
pub fn tether_at(config: &str, dir: &std::path::Path, addr: &str) -> Proc {
    let path = dir.join("tether.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap().to_string();
    spawn(&["serve", "--config", &path, "--listen", addr], None)
}

/// Config text for upstreams `(name, url)` plus extra TOML.
pub fn config(upstreams: &[(&str, &str)], extra: &str) -> String {
    let mut s = String::from(extra);
    s.push('\n');
    for (name, url) in upstreams {
        s.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
    }
    s
}

/// One HTTP response, decoded: status, headers and the JSON-RPC messages
/// (one for JSON bodies, all events for SSE bodies) with arrival times.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub messages: Vec<(Instant, Value)>,
}

impl Reply {
    /// The last message (the response).
    pub fn last(&self) -> &Value {
        &self.messages.last().expect("a message").1
    }
}

/// Sends one POST and decodes the reply, streaming SSE as it arrives.
pub async fn post(url: &str, headers: &[(&str, String)], body: &Value) -> Reply {
    let client = crate::harness::http();
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("request sent");
    decode(resp).await
}

async fn decode(mut resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let sse = headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let mut messages = Vec::new();
    if sse {
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            let now = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:").map(|d| d.trim_start()))
                    .collect();
                if !data.is_empty() {
                    messages.push((now, serde_json::from_str(&data.join("\n")).unwrap()));
                }
            }
        }
    } else {
        let text = resp.text().await.unwrap();
        if !text.is_empty() {
            messages.push((
                Instant::now(),
                serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
            ));
        }
    }
    Reply {
        status,
        headers,
        messages,
    }
}

/// A legacy (initialize + session) MCP client.
pub struct Legacy {
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    pub next: AtomicU64,
    /// Bearer token sent with every request, if any.
    pub bearer: Option<String>,
}

impl Legacy {
    /// Initializes a session at `url` with the given client capabilities.
    pub async fn connect_with(url: &str, capabilities: Value) -> Legacy {
        Self::connect_as(url, capabilities, None).await
    }

    /// Initializes a session at `url`, authenticating with `bearer`.
    pub async fn connect_as(url: &str, capabilities: Value, bearer: Option<&str>) -> Legacy {
        let auth: Vec<(&str, String)> = bearer
            .map(|t| ("authorization", format!("Bearer {t}")))
            .into_iter()
            .collect();
        let reply = post(
            url,
            &auth,
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities,
                "clientInfo": {"name": "tether-tests", "version": "1"},
            }}),
        )
        .await;
        assert_eq!(reply.status, 200, "initialize: {:?}", reply.messages);
        let session = reply
            .headers
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string());
        let version = reply.last()["result"]["protocolVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let client = Legacy {
            url: url.into(),
            session,
            version,
            next: AtomicU64::new(1),
            bearer: bearer.map(str::to_owned),
        };
        let r = client
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(r.status, 202);
        client
    }

    /// Initializes with no client capabilities.
    pub async fn connect(url: &str) -> Legacy {
        Self::connect_with(url, json!({})).await
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("mcp-protocol-version", self.version.clone())];
        if let Some(t) = &self.bearer {
            h.push(("authorization", format!("Bearer {t}")));
        }
        if let Some(s) = &self.session {
            h.push(("mcp-session-id", s.clone()));
        }
        h
    }

    /// Sends any message with this session's headers.
    pub async fn send(&self, body: &Value) -> Reply {
        post(&self.url, &self.headers(), body).await
    }

    /// POSTs a message with this session's headers and returns the response
    /// unread (to read an SSE reply event by event).
    pub async fn open_post(&self, body: &Value) -> reqwest::Response {
        let mut req = http()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (k, v) in self.headers() {
            req = req.header(k, v);
        }
        req.send().await.expect("request sent")
    }

    /// Opens the session's GET stream (resuming after `last_event_id`).
    pub async fn open_get(&self, last_event_id: Option<&str>) -> reqwest::Response {
        let mut req = http().get(&self.url).header("accept", "text/event-stream");
        for (k, v) in self.headers() {
            req = req.header(k, v);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        req.send().await.expect("request sent")
    }

    /// Sends a request and returns the whole reply.
    pub async fn request(&self, method: &str, params: Value) -> Reply {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    /// Sends a request and returns its `result`, panicking on errors.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let reply = self.request(method, params).await;
        assert_eq!(reply.status, 200, "{method}: {:?}", reply.messages);
        let last = reply.last().clone();
        assert!(last.get("error").is_none(), "{method}: {last}");
        last["result"].clone()
    }

    /// Calls a tool and returns its result.
    pub async fn call(&self, tool: &str, args: Value) -> Value {
        self.result("tools/call", json!({"name": tool, "arguments": args}))
            .await
    }

    /// Sends DELETE for the session.
    pub async fn delete(&self) -> u16 {
        let client = crate::harness::http();
        let mut req = client.delete(&self.url);
        for (k, v) in self.headers() {
            req = req.header(k, v);
        }
        req.send().await.unwrap().status().as_u16()
    }
}

/// A 2026-07-28 (stateless) request with correct headers and `_meta`.
pub async fn modern(url: &str, method: &str, params: Value) -> Reply {
    modern_with(url, method, params, &[]).await
}

/// [`modern`] with `extra` headers (`Mcp-Param-*`, say).
pub async fn modern_with(
    url: &str,
    method: &str,
    params: Value,
    extra: &[(&'static str, &str)],
) -> Reply {
    modern_as(url, method, params, json!({}), extra).await
}

/// A 2026-07-28 request declaring `capabilities` in its `_meta`, with the
/// `Mcp-Name` its method mirrors and `extra` headers.
pub async fn modern_as(
    url: &str,
    method: &str,
    mut params: Value,
    capabilities: Value,
    extra: &[(&'static str, &str)],
) -> Reply {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "tether-tests", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    });
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28".to_string()),
        ("mcp-method", method.to_string()),
    ];
    let name = match method {
        "tools/call" | "prompts/get" => params["name"].as_str().map(String::from),
        "resources/read" => params["uri"].as_str().map(String::from),
        "tasks/get" | "tasks/update" | "tasks/cancel" => {
            params["taskId"].as_str().map(String::from)
        }
        _ => None,
    };
    if let Some(n) = name {
        headers.push(("mcp-name", n));
    }
    headers.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    post(
        url,
        &headers,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
    .await
}

/// The text of the first content block of a tool result.
pub fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

/// Reads a counter value from a Prometheus text page.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A shared HTTP client (with the TLS provider installed first).
pub fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            tether_gateway::install_crypto_provider();
            reqwest::Client::new()
        })
        .clone()
}

/// A client that keeps no connection: each request on one of its own (after
/// a refusal the gateway closes a connection whose body it did not read).
pub fn http_unpooled() -> reqwest::Client {
    tether_gateway::install_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A throwaway PostgreSQL server on loopback (the test starts and stops it;
/// the server binaries come from the `postgresql` package).
pub struct Postgres {
    dir: TempDir,
    bin: std::path::PathBuf,
    /// Connection URL.
    pub url: String,
}

impl Postgres {
    /// Initialises a cluster in a temporary folder and starts it.
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|v| v.ok())
                    .map(|v| v.path().join("bin"))
                    .max()
            })
            .filter(|bin| bin.join("initdb").exists())
            .expect(
                "PostgreSQL server binaries are needed (apt-get install postgresql; .ci/run does)",
            );
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            url: format!("postgres://tether@127.0.0.1:{port}/postgres"),
            dir,
            bin,
        };
        if is_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&pg.dir.0)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = pg.dir.0.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "tether",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            pg.dir.0.display()
        );
        let log = pg.dir.0.join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().expect("PostgreSQL tool runs");
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.0.join("data");
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
            )
        }));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Waits until the demo's `/stats` field `key` equals `want`.
pub async fn wait_for_stat(server: &Proc, key: &str, want: u64) {
    for _ in 0..100 {
        if server.stats().await[key] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} never became {want}: {}", server.stats().await);
}
