//! Counts every response once: its status and latency (to the response
//! head; for SSE, until the stream starts) under the label its endpoint set
//! on it, or `(rejected)` when a check refused the request first.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;

use super::layer::{Check, Verdict};
use crate::metrics::{Label, Metrics};

/// The check (see the module documentation).
#[derive(Clone)]
pub struct Record(pub Arc<Metrics>);

impl Check for Record {
    type Admitted = Instant;

    fn admit(&self, _req: &mut Request) -> Verdict<Instant> {
        Verdict::Pass(Instant::now())
    }

    fn finish(&self, start: Instant, resp: Response) -> Response {
        let label = resp
            .extensions()
            .get::<Label>()
            .copied()
            .unwrap_or(Label::REJECTED);
        self.0
            .record(label, resp.status().as_u16(), start.elapsed());
        resp
    }
}

/// `resp`, counted under `label`.
pub fn labelled(mut resp: Response, label: Label) -> Response {
    resp.extensions_mut().insert(label);
    resp
}
