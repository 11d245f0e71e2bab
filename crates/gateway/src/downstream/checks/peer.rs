//! Requests another node passed on: admitted only with proof of the cluster
//! secret (403 otherwise, and always on a node without it), then marked
//! [`PassedOn`] so they are served here or refused, never passed on again,
//! and not rate-limited twice.

use std::sync::Arc;

use axum::extract::Request;
use http::StatusCode;
use tether_wire::jsonrpc::code;

use super::layer::{Check, Verdict};
use crate::cluster::{Cluster, channel};
use crate::downstream::pass_on::PassedOn;
use crate::downstream::reply;

/// The check (see the module documentation).
#[derive(Clone)]
pub struct FromPeer(pub Option<Arc<Cluster>>);

impl Check for FromPeer {
    type Admitted = ();

    fn admit(&self, req: &mut Request) -> Verdict<()> {
        if !channel::is_passed_on(req.headers()) {
            return Verdict::Pass(());
        }
        let proven = self
            .0
            .as_ref()
            .and_then(|c| c.channel())
            .is_some_and(|ch| ch.admits(req.headers()));
        if !proven {
            return Verdict::Refuse(reply::error(
                StatusCode::FORBIDDEN,
                code::INVALID_REQUEST,
                "Forbidden: a request passed on between cluster nodes needs proof of the cluster secret",
            ));
        }
        req.extensions_mut().insert(PassedOn);
        Verdict::Pass(())
    }
}
