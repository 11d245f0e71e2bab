//! `tether serve`: wiring, listener, idle reaper and bounded graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use std::future::IntoFuture;

use tokio::net::TcpListener;

use std::path::PathBuf;

use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::config::{AuthMode, Config, ConfigError, UpstreamConfig};
use crate::downstream::{self, App};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::router::{Router, Timeouts};
use crate::session::{RegistryLimits, SessionRegistry};
use crate::store::{DefinitionKind, Store};
use crate::upstream::UpstreamSet;
use crate::virtual_servers::VirtualServers;

/// Runs the gateway until SIGINT/SIGTERM; SIGHUP reloads the upstreams from
/// `config_path`. With no upstreams configured (in the file or through the
/// admin API), `default_upstream` is started and served.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    default_upstream: impl AsyncFnOnce() -> std::io::Result<UpstreamConfig>,
) -> Result<(), Box<dyn std::error::Error>> {
    crate::telemetry::start(&config.telemetry)?;
    let metrics = Arc::new(Metrics::default());
    let close_timeout = Duration::from_secs(config.server.shutdown_timeout_secs.max(1));
    let send_timeout = Duration::from_secs(config.server.send_timeout_secs.max(1));
    let store = Arc::new(Store::open(&config.store.url).await?);
    let listener = TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    let (cluster, events) = match Cluster::join(store.clone(), &config.cluster, addr).await? {
        Some((cluster, events)) => (Some(cluster), Some(events)),
        None => (None, None),
    };
    let mut file_upstreams = config.upstreams.clone();
    if file_upstreams.is_empty()
        && store
            .definitions(DefinitionKind::Upstream)
            .await?
            .is_empty()
    {
        file_upstreams.push(default_upstream().await?);
    }
    let upstreams = Arc::new(UpstreamSet::default());
    let virtual_servers = VirtualServers::new(store.clone());
    let router = Router::new(
        (upstreams.clone(), virtual_servers.clone()),
        (
            config.federation.clone(),
            config.cache.clone(),
            config.tasks.clone(),
        ),
        metrics.clone(),
        store.clone(),
        Timeouts {
            close: close_timeout,
            send: send_timeout,
        },
        cluster.clone(),
    );
    let limits = RegistryLimits {
        max_sessions: config.session.max_sessions,
        idle_ttl: Duration::from_secs(config.session.idle_ttl_secs.max(1)),
        close_timeout,
        max_per_principal: config.session.max_sessions_per_principal,
        absolute_ttl: (config.session.absolute_ttl_secs > 0)
            .then(|| Duration::from_secs(config.session.absolute_ttl_secs)),
        max_inflight: config.server.max_inflight_per_session,
    };
    let sessions = Arc::new(SessionRegistry::new(
        store.clone(),
        upstreams.clone(),
        limits,
        metrics.clone(),
        cluster.clone(),
    ));
    sessions.spawn_reaper();
    let lifecycle = Lifecycle::new(
        (upstreams, virtual_servers),
        sessions.clone(),
        store.clone(),
        config_path,
        close_timeout,
        cluster.clone(),
    );
    lifecycle
        .start(file_upstreams, config.virtual_servers.clone())
        .await?;
    if let Some(events) = events {
        tokio::spawn(lifecycle.clone().follow_cluster(events));
    }
    refuse_open_access(&config)?;
    let auth = Auth::new(&config.auth).await?;
    let app = App::new(
        config,
        router,
        sessions.clone(),
        metrics,
        lifecycle.clone(),
        auth,
        cluster,
    );
    // Scripts and tests read this line to find the port when listening on :0.
    println!("tether listening on http://{addr}/mcp");
    tracing::info!(%addr, "tether listening");
    let routes = downstream::router(app.clone());
    let listener = downstream::Listener::new(listener, send_timeout, routes.clone())?;
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, routes).with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    let mut server = tokio::spawn(server.into_future());
    tokio::spawn(reload_on_hangup(lifecycle));
    tokio::select! {
        result = &mut server => return result?.map_err(Into::into),
        _ = shutdown_signal() => {}
    }
    if let Some(cluster) = &app.cluster {
        // Not ready any more, still serving: load balancers move the
        // traffic to the other nodes first; then the sessions go to them.
        cluster.start_draining().await;
        app.sessions.release_homes().await;
    }
    shutdown(&app, stop_accepting, server, close_timeout).await;
    if let Some(cluster) = &app.cluster {
        cluster.leave().await;
    }
    Ok(())
}

/// Bounded shutdown ([invariant: bounded-shutdown]) after a cluster node's
/// drain period: stop accepting, end the client
/// sessions' GET streams (and those relayed from other nodes) so they don't
/// hold the drain open, give in-flight
/// requests up to one shutdown timeout, then close every client session and
/// its upstream sessions in parallel, bounded by another.
async fn shutdown(
    app: &App,
    stop_accepting: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    timeout: Duration,
) {
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_accepting.send(());
    app.sessions.close_streams();
    app.sse.close_all();
    app.relays.close_all();
    app.router.close_listens();
    if tokio::time::timeout(timeout, server).await.is_err() {
        tracing::warn!(
            ?timeout,
            "in-flight requests did not finish in time; abandoned"
        );
    }
    tracing::info!(
        "releasing client sessions (kept in a durable store, else ended with their upstream sessions)"
    );
    let upstreams = app.router.upstreams();
    let pools = upstreams.iter().map(|u| u.drain_pool());
    let _ = tokio::time::timeout(
        timeout,
        futures_util::future::join3(
            app.sessions.shutdown(),
            app.router.close_waiting(),
            futures_util::future::join_all(pools),
        ),
    )
    .await;
    // The spans of the last requests, as far as the collector takes them now.
    crate::telemetry::flush(timeout.min(Duration::from_secs(2))).await;
}

/// Without authentication, only loopback listeners are served unless the
/// operator explicitly allows it (and then loudly).
fn refuse_open_access(config: &Config) -> Result<(), ConfigError> {
    let listen = config.server.listen;
    if config.auth.mode != AuthMode::None || listen.ip().is_loopback() {
        return Ok(());
    }
    if !config.auth.allow_unauthenticated {
        return Err(ConfigError::Invalid(format!(
            "refusing to serve {listen} without authentication: set auth.mode = \"jwt\", or auth.allow_unauthenticated = true to accept anyone who can reach it"
        )));
    }
    tracing::warn!(%listen, "SERVING WITHOUT AUTHENTICATION on a non-loopback address: anyone who can reach it can use every upstream");
    Ok(())
}

/// SIGHUP: read the config file again and apply its upstreams.
async fn reload_on_hangup(lifecycle: Arc<Lifecycle>) {
    #[cfg(unix)]
    {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangup.recv().await.is_some() {
            match lifecycle.reload().await {
                Ok(change) => tracing::info!(?change, "reloaded the config file"),
                Err(e) => {
                    tracing::warn!(error = %e, "reload failed; the running upstreams are unchanged")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = lifecycle;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
