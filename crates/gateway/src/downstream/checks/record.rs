//! Counts every response once: its status and latency (to the response
//! head; for SSE, until the stream starts) under the label its endpoint set
//! on it, or `(rejected)` when a check refused the request first.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::downstream::App;
use crate::metrics::Label;

/// The layer (see the module documentation).
pub async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let resp = next.run(req).await;
    let label = resp
        .extensions()
        .get::<Label>()
        .copied()
        .unwrap_or(Label::REJECTED);
    app.metrics
        .record(label, resp.status().as_u16(), start.elapsed());
    resp
}

/// `resp`, counted under `label`.
pub fn labelled(mut resp: Response, label: Label) -> Response {
    resp.extensions_mut().insert(label);
    resp
}
