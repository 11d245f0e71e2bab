//! Authentication at the door: the caller of each request (into the
//! request's extensions, for the checks and endpoints after it), a 401 with
//! the challenge OAuth-capable clients follow (`WWW-Authenticate` naming the
//! protected-resource metadata), and that metadata document (RFC 9728).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tether_wire::jsonrpc::code;
use tower::{Layer, Service};

use crate::auth::{Auth, Denial};
use crate::downstream::{App, reply};

/// Where the metadata document is served.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The layer: the request's [`Caller`](crate::auth::Caller) goes into its
/// extensions, or it is answered 401.
#[derive(Clone)]
pub struct AuthenticateLayer(pub Arc<App>);

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            app: self.0.clone(),
            inner,
        }
    }
}

/// The service of an [`AuthenticateLayer`]. Most callers are told apart at
/// once (no authentication, a token seen before, a key at hand); a token
/// naming a key not known yet waits for the key set to be fetched.
#[derive(Clone)]
pub struct Authenticate<S> {
    app: Arc<App>,
    inner: S,
}

type Answer = Result<Response, Infallible>;

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Either<Ready<Answer>, S::Future>, BoxFuture<'static, Answer>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.app.auth.authenticate_now(req.headers()) {
            Some(Ok(caller)) => {
                req.extensions_mut().insert(caller);
                Either::Left(Either::Right(self.inner.call(req)))
            }
            Some(Err(denial)) => {
                Either::Left(Either::Left(ready(Ok(challenge(req.headers(), &denial)))))
            }
            None => {
                let app = self.app.clone();
                let ready_inner = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready_inner);
                Either::Right(Box::pin(async move {
                    let auth: &Auth = &app.auth;
                    match auth.authenticate(req.headers()).await {
                        Ok(caller) => {
                            req.extensions_mut().insert(caller);
                            inner.call(req).await
                        }
                        Err(denial) => Ok(challenge(req.headers(), &denial)),
                    }
                }))
            }
        }
    }
}

/// 401 with `WWW-Authenticate: Bearer resource_metadata="…"` (and, for a
/// token that did not verify, `error="invalid_token"` and why).
fn challenge(headers: &HeaderMap, denial: &Denial) -> Response {
    let metadata = format!("{}{METADATA_PATH}", origin(headers));
    let (value, text) = match denial {
        Denial::Missing => (
            format!("Bearer resource_metadata=\"{metadata}\""),
            "Unauthorized: a bearer token is required".to_owned(),
        ),
        Denial::Invalid(why) => (
            format!(
                "Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\", error_description=\"{}\"",
                why.replace('"', "'")
            ),
            format!("Unauthorized: {why}"),
        ),
    };
    let mut r = reply::error(StatusCode::UNAUTHORIZED, code::INVALID_REQUEST, text);
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// `http://<Host>`: the origin clients reached this server at.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `GET /.well-known/oauth-protected-resource` (also with the MCP path
/// appended): where to get tokens for this server.
pub async fn metadata(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let config = &app.auth.config;
    let resource = if config.resource.is_empty() {
        format!("{}/mcp", origin(&headers))
    } else {
        config.resource.clone()
    };
    let mut doc = json!({
        "resource": resource,
        "authorization_servers": config.authorization_servers,
        "bearer_methods_supported": ["header"],
    });
    if !config.scopes_supported.is_empty() {
        doc["scopes_supported"] = json!(config.scopes_supported);
    }
    reply::json(StatusCode::OK, doc.to_string())
}
