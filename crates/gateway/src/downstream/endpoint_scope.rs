//! Which upstreams a client request's endpoint reaches, from its path:
//! `/mcp`, `/sse` and `/message` all of them (federated), `/u/<upstream>/…`
//! one upstream, `/v/<name>/…` a virtual server's selection; the upstream
//! or virtual server must exist (404 otherwise).

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use tether_wire::jsonrpc::code;

use super::{App, reply};
use crate::session::Scope;

/// The scope of the endpoint a request came to.
pub struct EndpointScope(pub Scope);

impl FromRequestParts<Arc<App>> for EndpointScope {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let params = RawPathParams::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let not_found =
            |what: String| reply::error(StatusCode::NOT_FOUND, code::INVALID_REQUEST, what);
        match params.iter().next() {
            Some(("upstream", name)) => match app.router.upstream(name) {
                Some(up) => Ok(EndpointScope(Scope::Single(up.name.clone()))),
                None => Err(not_found(format!("no upstream named {name:?}"))),
            },
            Some(("virtual", name)) => match app.router.virtual_server(name) {
                Some(server) => Ok(EndpointScope(Scope::Virtual(
                    server.config.name.as_str().into(),
                ))),
                None => Err(not_found(format!("no virtual server named {name:?}"))),
            },
            _ => Ok(EndpointScope(Scope::Federated)),
        }
    }
}
