//! The admin API's virtual servers: `/admin/virtual-servers` lists and
//! creates them, `/admin/virtual-servers/{name}` shows, replaces and
//! removes one (the config file's are read-only: 409).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde_json::json;

use super::App;
use super::admin_answers::{bad_definition, problem, refused};
use crate::config::VirtualServerConfig;
use crate::definitions::Refusal;

/// The routes (behind the admin API's checks).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/virtual-servers", get(list).post(create))
        .route(
            "/virtual-servers/{name}",
            get(show).put(update).delete(remove),
        )
}

/// A definition with its source, as answers show it.
fn view(def: VirtualServerConfig, source: crate::definitions::Source) -> serde_json::Value {
    let mut view = json!(def);
    view["source"] = json!(source);
    view
}

async fn list(State(app): State<Arc<App>>) -> Response {
    let all: Vec<_> = (app.lifecycle.virtual_servers().definitions().into_iter())
        .map(|(def, source)| view(def, source))
        .collect();
    Json(json!({ "virtual_servers": all })).into_response()
}

async fn show(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let found =
        (app.lifecycle.virtual_servers().definitions().into_iter()).find(|(d, _)| d.name == name);
    match found {
        Some((def, source)) => Json(view(def, source)).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            format!("no virtual server named {name:?}"),
        ),
    }
}

type Body = Result<Json<VirtualServerConfig>, axum::extract::rejection::JsonRejection>;

/// The answer to a change.
fn done(result: Result<(), Refusal>, ok: StatusCode, name: &str) -> Response {
    match result {
        Ok(()) => (ok, Json(json!({ "virtual_server": name }))).into_response(),
        Err(e) => refused(e, "no such virtual server"),
    }
}

async fn create(State(app): State<Arc<App>>, body: Body) -> Response {
    match body {
        Ok(Json(def)) => {
            let name = def.name.clone();
            let created = app.lifecycle.create_virtual_server(def).await;
            done(created, StatusCode::CREATED, &name)
        }
        Err(e) => bad_definition("virtual server", e),
    }
}

async fn update(State(app): State<Arc<App>>, Path(name): Path<String>, body: Body) -> Response {
    match body {
        Ok(Json(def)) => {
            let updated = app.lifecycle.update_virtual_server(&name, def).await;
            done(updated, StatusCode::OK, &name)
        }
        Err(e) => bad_definition("virtual server", e),
    }
}

async fn remove(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let removed = app.lifecycle.delete_virtual_server(&name).await;
    done(removed, StatusCode::OK, &name)
}
