//! Requests in flight, bounded twice ([invariant: bounded]): all POSTs this
//! node serves at once (503), and the requests of one client session (429).
//! A permit lives as long as the response body, so a stream counts until it
//! ends.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::layer::{Check, Verdict};
use crate::downstream::reply::{self, Guarded};

/// The check: POSTs beyond the node's limit get 503 + `Retry-After`.
#[derive(Clone)]
pub struct Admit(pub Arc<Semaphore>);

impl Check for Admit {
    type Admitted = Option<OwnedSemaphorePermit>;

    fn admit(&self, req: &mut Request) -> Verdict<Self::Admitted> {
        if req.method() != Method::POST {
            return Verdict::Pass(None);
        }
        match self.0.clone().try_acquire_owned() {
            Ok(permit) => Verdict::Pass(Some(permit)),
            Err(_) => Verdict::Refuse(reply::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight; retry later",
            )),
        }
    }

    fn finish(&self, permit: Self::Admitted, resp: Response) -> Response {
        match permit {
            Some(permit) => resp.map(|body| Body::new(Guarded::new(body, permit))),
            None => resp,
        }
    }
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
