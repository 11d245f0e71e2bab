//! `POST /cluster/processes/<upstream>`: the shared stdio process this node
//! runs for the cluster, as other nodes reach it (see
//! `cluster/shared_processes.rs`). Only requests carrying proof of the
//! cluster secret are served. The handshake is answered with the process's
//! own (the process is initialized once); requests are relayed to the
//! process and its reply, a stream included, relayed back; notifications
//! and answers to the process's requests are handed to it.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use tether_wire::jsonrpc::{ErrorObject, Incoming, Method, code};
use tokio::sync::mpsc;

use super::{App, reply};
use crate::upstream::{Reply, UpstreamError, UpstreamSession};

/// Messages of a reply stream queued for the node that asked.
const REPLY_QUEUE: usize = 64;

/// The endpoint (see the module documentation).
pub async fn serve(
    State(app): State<Arc<App>>,
    Path(upstream): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let proven = app
        .cluster
        .as_ref()
        .and_then(|c| c.channel())
        .is_some_and(|ch| ch.admits(&parts.headers));
    if !proven {
        return reply::error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Forbidden: only cluster nodes reach shared processes",
        );
    }
    let Some(upstream) = app
        .router
        .upstream(&upstream)
        .filter(|u| u.runs_one_process())
    else {
        return reply::error(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "no shared stdio upstream by that name",
        );
    };
    // Another node may have claimed it (taking this one for dead): the
    // asking node looks again rather than reach a second process.
    let runs_here = match &app.cluster {
        Some(cluster) => cluster.runs_process(&upstream.name).await.unwrap_or(false),
        None => false,
    };
    if !runs_here {
        return super::pass_on::misdirected();
    }
    let raw = match app.read_body(&parts.headers, body).await {
        Ok(raw) => raw,
        Err(refusal) => return *refusal,
    };
    let incoming = match super::App::parse(raw.clone()) {
        Ok(m) => m,
        Err(refusal) => return *refusal,
    };
    let process = match upstream.shared_process_session().await {
        Ok(p) => p,
        Err(e) => return unavailable(None, &e),
    };
    match incoming {
        Incoming::Request(request) if request.method == Method::Initialize => {
            match process.server_description().await {
                Ok(result) => reply::json(StatusCode::OK, request.answer(&result)),
                Err(e) => unavailable(Some(&request.id), &e),
            }
        }
        Incoming::Request(request) => {
            match process.request(raw, &request.method, None, &[]).await {
                Ok(answer) => relay(answer),
                Err(e) => unavailable(Some(&request.id), &e),
            }
        }
        Incoming::Notification(n) if n.method == Method::Initialized => reply::accepted(),
        Incoming::Notification(_) | Incoming::Response(_) => hand_over(&process, raw).await,
    }
}

/// A notification or an answer, handed to the process: 202.
async fn hand_over(process: &UpstreamSession, raw: Bytes) -> Response {
    match process.send_message(raw).await {
        Ok(()) => reply::accepted(),
        Err(e) => unavailable(None, &e),
    }
}

/// The process's reply, as the node that asked reads it: JSON, or a stream
/// of its messages as they come.
fn relay(answer: Reply) -> Response {
    match answer {
        Reply::Json(body) => reply::json(StatusCode::OK, body),
        Reply::Accepted => reply::accepted(),
        Reply::Stream(mut stream) => {
            let (tx, rx) = mpsc::channel(REPLY_QUEUE);
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next_message().await {
                    if tx.send(message).await.is_err() {
                        return;
                    }
                }
            });
            reply::event_stream(rx, None, None)
        }
    }
}

fn unavailable(id: Option<&serde_json::value::RawValue>, e: &UpstreamError) -> Response {
    let error = ErrorObject::new(
        code::INTERNAL_ERROR,
        format!("the shared process is unavailable: {e}"),
    );
    reply::json(StatusCode::BAD_GATEWAY, error.to_response(id))
}
