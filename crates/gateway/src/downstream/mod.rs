//! The HTTP face of Tether: the endpoints clients reach, the checks in front
//! of them, and how router outcomes become HTTP responses.
//!
//! A connection is accepted by the [`Listener`] (`TCP_NODELAY`, a stall
//! timeout, and the lean path for HTTP+SSE streams); each request then meets
//! the [`checks`] in request order and reaches its endpoint: Streamable HTTP
//! ([`streamable_http`], both eras), the 2024-11-05 HTTP+SSE transport
//! ([`http_sse`]), the admin API ([`admin`]) or the operational endpoints.

mod admin;
mod admin_answers;
mod admin_ui;
mod admin_virtual_servers;
pub mod checks;
mod endpoint_scope;
mod handshake;
mod http_sse;
mod lean_sse;
mod listener;
mod modern_request;
mod pass_on;
mod reply;
mod shared_process;
mod streamable_http;

pub use checks::edge::EdgePolicy;
pub use http_sse::SseHub;
pub use listener::Listener;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use tether_wire::jsonrpc::Incoming;
use tower::ServiceBuilder;

use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::session::SessionRegistry;
use crate::sync::Closing;
use checks::authenticate::{self, AuthenticateLayer, METADATA_PATH};
use checks::edge::CheckEdge;
use checks::inflight::Admit;
use checks::layer::CheckLayer;
use checks::peer::FromPeer;
use checks::rate_limit::{LimitRate, RateLimiter};
use checks::record::Record;

/// Everything a request handler needs.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// The router over all upstreams.
    pub router: Router,
    /// Client sessions of this node.
    pub sessions: Arc<SessionRegistry>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// HTTP+SSE connections of this node.
    pub sse: SseHub,
    /// Ends the session GET streams this node relays from other nodes when
    /// it shuts down, as the streams it serves itself end: the client opens
    /// its stream again elsewhere and resumes it with `Last-Event-ID`.
    pub relays: Closing,
    /// The upstream lifecycle (admin API).
    pub lifecycle: Arc<Lifecycle>,
    /// Who is calling.
    pub auth: Auth,
    /// The cluster this node is part of, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Requests per principal.
    limiter: Arc<RateLimiter>,
    edge: Arc<EdgePolicy>,
    /// POSTs being served at once.
    inflight: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// Assembles the application state.
    pub fn new(
        config: Config,
        router: Router,
        sessions: Arc<SessionRegistry>,
        metrics: Arc<Metrics>,
        lifecycle: Arc<Lifecycle>,
        auth: Auth,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<App> {
        let edge = Arc::new(EdgePolicy::new(&config.server));
        let limiter = Arc::new(RateLimiter::new(
            config.server.rate_limit_per_principal,
            config.server.rate_limit_burst,
            cluster.clone(),
        ));
        let inflight = Arc::new(tokio::sync::Semaphore::new(
            config.server.max_inflight_requests,
        ));
        Arc::new(App {
            config,
            router,
            sessions,
            metrics,
            sse: SseHub::default(),
            relays: Closing::default(),
            lifecycle,
            auth,
            cluster,
            limiter,
            edge,
            inflight,
        })
    }

    /// The one message a POST carries: its body read within the limits
    /// (413, 408) and parsed (400), or the response refusing it.
    async fn read_message(
        &self,
        headers: &http::HeaderMap,
        body: axum::body::Body,
    ) -> Result<Incoming, Box<axum::response::Response>> {
        App::parse(self.read_body(headers, body).await?)
    }

    /// A POST's body, read within the limits (413, 408), or the response refusing it.
    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: axum::body::Body,
    ) -> Result<bytes::Bytes, Box<axum::response::Response>> {
        self.edge
            .read_body(headers, body)
            .await
            .map_err(|e| Box::new(e.response()))
    }

    /// The message a body carries, or the 400 refusing it.
    fn parse(raw: bytes::Bytes) -> Result<Incoming, Box<axum::response::Response>> {
        Incoming::parse(raw).map_err(|e| {
            Box::new(reply::error(
                http::StatusCode::BAD_REQUEST,
                e.code(),
                e.message(),
            ))
        })
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.config.server.send_timeout_secs.max(1))
    }

    fn keepalive(&self) -> Option<Duration> {
        let secs = self.config.server.sse_keepalive_secs;
        (secs > 0).then(|| Duration::from_secs(secs))
    }
}

/// Every endpoint, behind the checks it needs, applied in request order.
pub fn router(app: Arc<App>) -> axum::Router {
    let record = CheckLayer(Record(app.metrics.clone()));
    let from_peer = CheckLayer(FromPeer(app.cluster.clone()));
    let edge = CheckLayer(CheckEdge(app.edge.clone()));
    let authenticate = AuthenticateLayer(app.clone());
    // MCP over Streamable HTTP and HTTP+SSE: every check.
    let mcp = axum::Router::new()
        .route("/mcp", any(streamable_http::endpoint))
        .route("/u/{upstream}/mcp", any(streamable_http::endpoint))
        .route("/sse", any(http_sse::open))
        .route("/u/{upstream}/sse", any(http_sse::open))
        .route("/message", any(http_sse::message))
        .route("/u/{upstream}/message", any(http_sse::message))
        .route("/v/{virtual}/mcp", any(streamable_http::endpoint))
        .route("/v/{virtual}/sse", any(http_sse::open))
        .route("/v/{virtual}/message", any(http_sse::message))
        .route_layer(
            ServiceBuilder::new()
                .layer(record)
                .layer(from_peer)
                .layer(edge.clone())
                .layer(authenticate.clone())
                .layer(CheckLayer(LimitRate(app.limiter.clone())))
                .layer(CheckLayer(Admit(app.inflight.clone()))),
        );
    // A caller's own sessions: the edge and who is asking.
    let own_sessions = axum::Router::new()
        .route("/sessions", get(admin::own_sessions))
        .route_layer(ServiceBuilder::new().layer(edge).layer(authenticate));
    axum::Router::new()
        .merge(mcp)
        .merge(own_sessions)
        .nest("/admin", admin::router(app.clone()))
        // Other cluster nodes (proof of the cluster secret checked there).
        .route(
            &format!("{}/{{upstream}}", crate::cluster::PROCESS_PATH),
            axum::routing::post(shared_process::serve),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(METADATA_PATH, get(authenticate::metadata))
        .route(
            &format!("{METADATA_PATH}/{{*resource}}"),
            get(authenticate::metadata),
        )
        .with_state(app)
}

/// Ready while serving; 503 once the node is leaving (so load balancers
/// stop sending to it before it stops accepting), or while a cluster node
/// cannot reach the store.
async fn readyz(State(app): State<Arc<App>>) -> axum::response::Response {
    if app.cluster.as_ref().is_some_and(|c| c.is_unready()) {
        return (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: this node is leaving, or cannot reach the session store\n",
        )
            .into_response();
    }
    let sessions = app.sessions.len();
    let upstreams = app.router.upstreams().len();
    format!("ready: {upstreams} upstreams, {sessions} client sessions\n").into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let text = app
        .metrics
        .render(app.router.upstreams().iter().map(|u| (&*u.name, &u.stats)));
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
}

/// A header map from `(name, value)` pairs, for unit tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().expect("valid header value"));
    }
    h
}
