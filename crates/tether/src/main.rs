//! The `tether` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod admin_cli;
mod allocator;
mod connect;
mod json_log;

use clap::{Parser, Subcommand};
use tether_demo::{CacheHint, DemoEra, DemoProfile, DemoServer};
use tether_gateway::config::{Config, UpstreamConfig};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "MCP gateway: federates MCP servers, speaks every MCP era, keeps sessions isolated"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// TOML config file (default: ./tether.toml when present, else built-in defaults).
        #[arg(long, env = "TETHER_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the built-in demo MCP server.
    DemoUpstream {
        /// Listen address for HTTP.
        #[arg(long, default_value = "127.0.0.1:9000", conflicts_with = "stdio")]
        listen: SocketAddr,
        /// Serve one client over stdin/stdout instead of HTTP.
        #[arg(long)]
        stdio: bool,
        /// Which protocol era(s) to answer.
        #[arg(long, value_enum, default_value = "dual")]
        era: DemoEra,
        /// Which catalogue to serve: the demo tools, or the MCP conformance suite's fixture.
        #[arg(long, value_enum, default_value = "demo")]
        profile: DemoProfile,
        /// Require `Authorization: Bearer <TOKEN>` on HTTP requests.
        #[arg(long, value_name = "TOKEN")]
        bearer: Option<String>,
        /// The `ttlMs` of modern list and `resources/read` results.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        ttl_ms: u64,
        /// Mark those results `cacheScope: "private"` (default `public`).
        #[arg(long)]
        private_cache: bool,
    },
    /// Serve MCP on stdin/stdout, relaying every message to a remote
    /// Streamable HTTP MCP server (for clients that only launch stdio servers).
    Connect {
        /// The remote MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
        url: String,
        /// An extra HTTP header for every request to the remote (repeatable).
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = connect::parse_header)]
        headers: Vec<(String, String)>,
        /// Seconds to wait for a reply, or for the next message of a streamed one.
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
    },
    /// List the upstreams of a running Tether (admin API).
    Upstreams {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the virtual servers of a running Tether (admin API).
    VirtualServers {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the client sessions a running Tether holds (admin API).
    Sessions {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// End one client session, or close one upstream's sessions (admin API).
    Evict {
        /// A session id, or `upstream:<name>` for all of one upstream's sessions.
        target: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a running Tether read its config file again (admin API; like SIGHUP).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// TOML config file.
        #[arg(long, env = "TETHER_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Lets the gateway hold as many connections (and stdio pipes) as the
/// system allows: the soft open-file limit is often far below the hard one.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// How to reach a running Tether's admin API.
#[derive(clap::Args)]
struct AdminArgs {
    /// Base URL of the running Tether.
    #[arg(long, env = "TETHER_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin token (admin.token in its configuration).
    #[arg(long, env = "TETHER_ADMIN__TOKEN", hide_env_values = true)]
    token: String,
}

impl AdminArgs {
    fn client(self) -> admin_cli::Admin {
        admin_cli::Admin {
            url: self.url,
            token: self.token,
        }
    }
}

fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let default = PathBuf::from("tether.toml");
        default.exists().then_some(default)
    })
}

/// With no upstream configured, `tether serve` serves the built-in demo
/// upstream, started in-process on a loopback port, as `demo`.
async fn start_demo_upstream() -> std::io::Result<UpstreamConfig> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(DemoServer::new(DemoEra::Dual).serve_http(listener));
    tracing::info!(%addr, "no upstreams configured: serving the built-in demo upstream as \"demo\"");
    Ok(UpstreamConfig::http("demo", &format!("http://{addr}/mcp")))
}

/// Logs to stderr, filtered by `TETHER_LOG` (default `info`); as JSON lines
/// with `TETHER_LOG_FORMAT=json`, as text without it or with `text`.
fn init_logging() -> Result<(), String> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match std::env::var("TETHER_LOG_FORMAT").ok().as_deref() {
        Some("json") => logs.event_format(json_log::JsonLines).init(),
        // Colour codes only for a terminal, never in files or log collectors.
        None | Some("" | "text") => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Some(other) => {
            return Err(format!(
                "TETHER_LOG_FORMAT must be text or json, not {other:?}"
            ));
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging() {
        eprintln!("tether: {e}");
        return std::process::ExitCode::from(2);
    }
    tether_gateway::install_crypto_provider();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("TETHER_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        runtime.worker_threads(n);
    }
    runtime.on_thread_park(allocator::tidy_when_idle);
    let runtime = runtime.enable_all().build().expect("tokio runtime starts");
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, listen } => {
                raise_open_file_limit();
                let path = config_path(config);
                let mut config = Config::load(path.as_deref())?;
                if let Some(listen) = listen {
                    config.server.listen = listen;
                }
                tether_gateway::serve::run(config, path, start_demo_upstream).await
            }
            Command::DemoUpstream {
                listen,
                stdio,
                era,
                profile,
                bearer,
                ttl_ms,
                private_cache,
            } => {
                let hint = CacheHint {
                    ttl_ms,
                    private: private_cache,
                };
                let server = DemoServer::with_options(era, profile, bearer).with_cache_hint(hint);
                if stdio {
                    server.serve_stdio().await?;
                } else {
                    let listener = tokio::net::TcpListener::bind(listen).await?;
                    println!(
                        "demo upstream listening on http://{}/mcp",
                        listener.local_addr()?
                    );
                    server.serve_http(listener).await?;
                }
                Ok(())
            }
            Command::Connect {
                url,
                headers,
                timeout,
            } => connect::run(url, headers, Duration::from_secs(timeout)).await,
            Command::Upstreams { admin } => admin.client().upstreams().await,
            Command::VirtualServers { admin } => admin.client().virtual_servers().await,
            Command::Sessions { admin } => admin.client().sessions().await,
            Command::Evict { target, admin } => match target.strip_prefix("upstream:") {
                Some(name) => admin.client().evict_upstream(name).await,
                None => admin.client().evict_session(&target).await,
            },
            Command::Reload { admin } => admin.client().reload().await,
            Command::CheckConfig { config } => {
                let config = Config::load(config_path(config).as_deref())?;
                println!("{}", serde_json::to_string_pretty(&config.redacted())?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
