//! The HTTP face of Tether: `/mcp`, `/u/<upstream>/mcp`, the HTTP+SSE
//! `/sse` + `/message` (also under `/u/<upstream>/`), health and metrics.

mod admin;
mod describe;
mod direct;
mod edge;
mod identity;
mod listener;
mod mcp;
mod modern;
mod ratelimit;
mod reply;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{any, get};

pub use edge::EdgePolicy;
pub use listener::Listener;
pub use sse::SseHub;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::session::SessionRegistry;

/// Everything a request handler needs.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// The router over all upstreams.
    pub gateway: Gateway,
    /// Client sessions of this node.
    pub sessions: Arc<SessionRegistry>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// HTTP+SSE connections of this node.
    pub sse: SseHub,
    /// The upstream lifecycle (admin API).
    pub control: Arc<crate::control::Control>,
    /// Who is calling.
    pub auth: crate::auth::Auth,
    /// Requests per principal.
    limiter: ratelimit::RateLimiter,
    edge: EdgePolicy,
    inflight: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// Assembles the application state.
    pub fn new(
        config: Config,
        gateway: Gateway,
        sessions: Arc<SessionRegistry>,
        metrics: Arc<Metrics>,
        control: Arc<crate::control::Control>,
        auth: crate::auth::Auth,
    ) -> Arc<App> {
        let edge = EdgePolicy::new(&config.server);
        let limiter = ratelimit::RateLimiter::new(
            config.server.rate_limit_per_principal,
            config.server.rate_limit_burst,
        );
        let inflight = Arc::new(tokio::sync::Semaphore::new(
            config.server.max_inflight_requests,
        ));
        Arc::new(App {
            config,
            gateway,
            sessions,
            metrics,
            sse: SseHub::default(),
            control,
            auth,
            limiter,
            edge,
            inflight,
        })
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.config.server.send_timeout_secs.max(1))
    }

    /// 429 with `Retry-After` when `caller` has used up its request rate.
    fn rate_limited(&self, caller: &crate::auth::Caller) -> Option<axum::response::Response> {
        let wait = self.limiter.take(&caller.principal).err()?;
        let mut r = reply::error(
            http::StatusCode::TOO_MANY_REQUESTS,
            tether_wire::jsonrpc::code::INTERNAL_ERROR,
            "too many requests from this principal; retry later",
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        Some(r)
    }

    fn keepalive(&self) -> Option<Duration> {
        let secs = self.config.server.sse_keepalive_secs;
        (secs > 0).then(|| Duration::from_secs(secs))
    }
}

/// The axum router for all endpoints.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/mcp", any(mcp::federated))
        .route("/u/{upstream}/mcp", any(mcp::single))
        .route("/sse", any(sse::federated_stream))
        .route("/message", any(sse::federated_message))
        .route("/u/{upstream}/sse", any(sse::single_stream))
        .route("/u/{upstream}/message", any(sse::single_message))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(identity::METADATA_PATH, get(identity::metadata))
        .route(
            &format!("{}/{{*resource}}", identity::METADATA_PATH),
            get(identity::metadata),
        )
        .nest("/admin", admin::router(app.clone()))
        .route("/sessions", get(admin::own_sessions))
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let sessions = app.sessions.len();
    let upstreams = app.gateway.upstreams().len();
    format!("ready: {upstreams} upstreams, {sessions} client sessions\n")
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let text = app
        .metrics
        .render(app.gateway.upstreams().iter().map(|u| (&*u.name, &u.stats)));
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
