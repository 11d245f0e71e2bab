//! Requests in flight, bounded twice ([invariant: bounded]): all POSTs this
//! node serves at once (503), and the requests of one client session (429).
//! A permit lives as long as the response body, so a stream counts until it
//! ends.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::downstream::App;
use crate::downstream::reply::{self, Guarded};

/// The layer: POSTs beyond the node's limit get 503 + `Retry-After`.
pub async fn admit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Ok(permit) = app.inflight.clone().try_acquire_owned() else {
        return reply::retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry later",
        );
    };
    next.run(req)
        .await
        .map(|body| Body::new(Guarded::new(body, permit)))
}

/// A place among one session's requests in flight, or the 429 refusing it.
pub fn session_permit(limit: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Box<Response>> {
    limit.clone().try_acquire_owned().map_err(|_| {
        Box::new(reply::retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight on this session; retry later",
        ))
    })
}
