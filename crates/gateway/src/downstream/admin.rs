//! The admin API: JSON over HTTP under `/admin`, for operators and the
//! `tether upstreams` / `tether sessions` commands. Every request needs
//! `Authorization: Bearer <admin.token>`; without a configured token the API
//! is off.
//!
//! - `GET /admin/upstreams`, `POST /admin/upstreams` (a definition),
//!   `GET|PUT|DELETE /admin/upstreams/{name}` (the config file's upstreams
//!   are read-only here), `DELETE /admin/upstreams/{name}/sessions`
//! - `GET /admin/sessions[?limit=N]` (this node's), `DELETE /admin/sessions/{id}`
//! - `POST /admin/reload` (the config file, like SIGHUP)
//! - `GET /admin/stats` (totals for the console's live charts),
//!   `GET /admin/cluster` (the nodes)
//! - `/admin/ui/` the console ([`super::admin_ui`]): its page and assets
//!   need no token; the page asks for it and sends it with every API call

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::App;
use super::admin_answers::{bad_definition, problem, refused};
use super::checks::edge::CheckEdge;
use super::checks::layer::{Check, CheckLayer, Verdict};
use crate::auth::Caller;
use crate::clock::now_ms;
use crate::config::UpstreamConfig;
use crate::lifecycle::{Change, Refusal};
use crate::session::{ClientSession, Scope};
use crate::upstream::Upstream;

/// What replaces a secret (header values, environment values) in answers.
const REDACTED: &str = "<redacted>";

/// The `/admin` routes.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/upstreams", get(list_upstreams).post(create_upstream))
        .route(
            "/upstreams/{name}",
            get(show_upstream)
                .put(update_upstream)
                .delete(delete_upstream),
        )
        .route(
            "/upstreams/{name}/sessions",
            delete(evict_upstream_sessions),
        )
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", delete(evict_session))
        .route("/reload", post(reload))
        .route("/cluster", get(show_cluster))
        .route("/stats", get(show_stats))
        .merge(super::admin_virtual_servers::routes())
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(CheckLayer(CheckEdge(app.edge.clone())))
                .layer(CheckLayer(AdminToken(app.clone()))),
        )
        // Definitions are bodies like any other: `server.max_body_bytes` (413 beyond).
        .layer(axum::extract::DefaultBodyLimit::max(app.edge.max_body()))
        .merge(super::admin_ui::router(app))
}

/// The check of the admin API: the admin token, compared in constant time.
#[derive(Clone)]
struct AdminToken(Arc<App>);

impl Check for AdminToken {
    type Admitted = ();

    fn admit(&self, req: &mut Request) -> Verdict<()> {
        match refusal(&self.0.config.admin.token, req) {
            None => Verdict::Pass(()),
            Some(refusal) => Verdict::Refuse(refusal),
        }
    }
}

/// The refusal of a request that does not carry the admin token `expected`.
fn refusal(expected: &str, req: &Request) -> Option<Response> {
    let expected = expected.as_bytes();
    if expected.is_empty() {
        return Some(problem(
            StatusCode::FORBIDDEN,
            "the admin API is off: set admin.token (TETHER_ADMIN__TOKEN)",
        ));
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(presented.as_bytes(), expected) {
        let mut r = problem(
            StatusCode::UNAUTHORIZED,
            "a valid admin bearer token is required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tether-admin\""),
        );
        return Some(r);
    }
    None
}

/// Compares two secrets without leaking through timing where they differ or
/// how long they are: their digests are compared, every byte of them.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (
        ring::digest::digest(&ring::digest::SHA256, a),
        ring::digest::digest(&ring::digest::SHA256, b),
    );
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

/// A definition as shown: secrets redacted.
fn redacted(mut def: UpstreamConfig) -> UpstreamConfig {
    for value in def.headers.values_mut().chain(def.env.values_mut()) {
        *value = REDACTED.into();
    }
    def
}

fn upstream_view(def: UpstreamConfig, source: Value, live: Option<&Arc<Upstream>>) -> Value {
    let mut view = json!({
        "definition": redacted(def),
        "source": source,
    });
    if let Some(up) = live {
        use std::sync::atomic::Ordering::Relaxed;
        view["healthy"] = up.is_healthy().into();
        view["transport"] = format!("{:?}", up.wiring()).into();
        view["upstream_sessions"] = up.stats.sessions_live.load(Relaxed).into();
        view["upstream_sessions_created"] = up.stats.sessions_created.load(Relaxed).into();
        view["eras"] = match up.known_eras() {
            Some(eras) => json!({ "legacy": eras.legacy, "modern": eras.modern }),
            None => Value::Null,
        };
        view["requests"] = up.stats.requests.load(Relaxed).into();
        view["errors"] = up.stats.errors.load(Relaxed).into();
        view["latency_us_sum"] = up.stats.latency_us.load(Relaxed).into();
    }
    view
}

async fn list_upstreams(State(app): State<Arc<App>>) -> Response {
    let live = app.router.upstreams();
    let all: Vec<Value> = app
        .lifecycle
        .definitions()
        .into_iter()
        .map(|(def, source)| {
            let up = live.get(&def.name);
            upstream_view(def, json!(source), up)
        })
        .collect();
    Json(json!({ "upstreams": all })).into_response()
}

async fn show_upstream(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let live = app.router.upstreams();
    match app
        .lifecycle
        .definitions()
        .into_iter()
        .find(|(d, _)| d.name == name)
    {
        Some((def, source)) => {
            Json(upstream_view(def, json!(source), live.get(&name))).into_response()
        }
        None => problem(StatusCode::NOT_FOUND, format!("no upstream named {name:?}")),
    }
}

fn changed(result: Result<Change, Refusal>, ok: StatusCode) -> Response {
    match result {
        Ok(change) => (ok, Json(json!({ "change": change }))).into_response(),
        Err(e) => refused(e, "no such upstream"),
    }
}

type Body = Result<Json<UpstreamConfig>, axum::extract::rejection::JsonRejection>;

async fn create_upstream(State(app): State<Arc<App>>, body: Body) -> Response {
    match body {
        Ok(Json(def)) => changed(app.lifecycle.create(def).await, StatusCode::CREATED),
        Err(e) => bad_definition("upstream", e),
    }
}

async fn update_upstream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    match body {
        Ok(Json(def)) => changed(app.lifecycle.update(&name, def).await, StatusCode::OK),
        Err(e) => bad_definition("upstream", e),
    }
}

async fn delete_upstream(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    changed(app.lifecycle.delete(&name).await, StatusCode::OK)
}

async fn evict_upstream_sessions(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Response {
    match app.lifecycle.evict_sessions(&name).await {
        Ok(n) => Json(json!({ "closed_sessions": n })).into_response(),
        Err(_) => problem(StatusCode::NOT_FOUND, format!("no upstream named {name:?}")),
    }
}

async fn reload(State(app): State<Arc<App>>) -> Response {
    changed(app.lifecycle.reload().await, StatusCode::OK)
}

fn session_view(s: &ClientSession, now: i64) -> Value {
    let (created, last_seen, uses) = s.activity();
    let upstreams: Vec<Value> = s
        .upstreams
        .sessions()
        .iter()
        .map(|u| {
            json!({
                "upstream": &*u.upstream.name,
                "era": u.era.as_str(),
                "protocol_version": u.protocol_version,
                "transport": format!("{:?}", u.upstream.wiring()),
            })
        })
        .collect();
    json!({
        "id": s.id,
        "principal": &*s.principal,
        "endpoint": match &s.scope {
            Scope::Federated => "federated".to_owned(),
            other => other.label().into_owned(),
        },
        "transport": if s.stream_bound { "sse" } else { "streamable-http" },
        "protocol_version": s.protocol_version,
        "created_ms": created,
        "last_used_ms": last_seen,
        "age_secs": (now - created).max(0) / 1000,
        "idle_secs": (now - last_seen).max(0) / 1000,
        "uses": uses,
        "upstreams": upstreams,
    })
}

/// `?limit=N` on the sessions listing.
#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// `GET /admin/sessions`: this node's client sessions, oldest first; with
/// `?limit=N`, the N most recently used, most recent first (the console
/// asks for a page of them, however many there are). `total` counts all.
async fn list_sessions(
    State(app): State<Arc<App>>,
    query: Result<Query<Limit>, QueryRejection>,
) -> Response {
    let Ok(Query(Limit { limit })) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "limit must be a non-negative integer",
        );
    };
    let now = now_ms();
    let mut held = app.sessions.held();
    let total = held.len();
    match limit {
        None => held.sort_by_key(|s| s.activity().0),
        Some(n) => {
            held.sort_by_key(|s| std::cmp::Reverse(s.activity().1));
            held.truncate(n);
        }
    }
    let shown: Vec<Value> = held.iter().map(|s| session_view(s, now)).collect();
    Json(json!({ "sessions": shown, "total": total })).into_response()
}

/// `GET /sessions`: the caller's own client sessions on this node (what the
/// admin API shows for all of them).
pub async fn own_sessions(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    let now = now_ms();
    let mine: Vec<Value> = app
        .sessions
        .held()
        .iter()
        .filter(|s| s.principal == caller.principal)
        .map(|s| session_view(s, now))
        .collect();
    Json(json!({ "sessions": mine })).into_response()
}

/// `GET /admin/cluster`: this node's id and every node the store knows.
async fn show_cluster(State(app): State<Arc<App>>) -> Response {
    let Some(cluster) = &app.cluster else {
        return problem(
            StatusCode::NOT_FOUND,
            "this node is not part of a cluster (its store is not postgres://)",
        );
    };
    match cluster.nodes().await {
        Ok(nodes) => {
            let nodes: Vec<Value> = nodes
                .iter()
                .map(|n| {
                    json!({
                        "id": n.id,
                        "address": n.address,
                        "silent_ms": n.silent_ms,
                        "draining": n.draining,
                        "alive": cluster.counts_alive(n),
                    })
                })
                .collect();
            Json(json!({ "node": &**cluster.node(), "nodes": nodes })).into_response()
        }
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /admin/stats`: this node's request totals so far (the console
/// charts their rates from two readings).
async fn show_stats(State(app): State<Arc<App>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let totals = app.metrics.totals();
    let upstream_sessions: i64 = (app.router.upstreams().iter())
        .map(|u| u.stats.sessions_live.load(Relaxed))
        .sum();
    Json(json!({
        "node": app.cluster.as_ref().map(|c| c.node().to_string()),
        "uptime_secs": app.metrics.uptime().as_secs(),
        "requests": totals.requests,
        "errors": totals.errors,
        "latency_us_sum": totals.latency_us,
        "downstream_sessions": app.metrics.downstream_sessions.load(Relaxed),
        "upstream_sessions": upstream_sessions,
    }))
    .into_response()
}

async fn evict_session(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if app.sessions.end(&id).await {
        Json(json!({ "ended": id })).into_response()
    } else {
        problem(StatusCode::NOT_FOUND, "no such session")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cret-and-more"));
        assert!(!same_secret(b"", b"s3cret"));
    }

    #[test]
    fn definitions_are_shown_without_secrets() {
        let mut def = UpstreamConfig::http("a", "http://127.0.0.1:1/mcp");
        def.headers
            .insert("Authorization".into(), "Bearer x".into());
        def.env.insert("TOKEN".into(), "y".into());
        let shown = serde_json::to_string(&redacted(def)).unwrap();
        assert!(
            !shown.contains("Bearer x") && !shown.contains("\"y\""),
            "{shown}"
        );
        assert!(shown.contains("Authorization"));
    }
}
