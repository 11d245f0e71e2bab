//! The 2024-11-05 HTTP+SSE transport for the demo server.
//!
//! `GET /sse` starts a session and holds its event stream open; the first
//! event (`endpoint`) names the URL (`/messages?session_id=…`) the client
//! POSTs its messages to. Every POST is answered `202 Accepted` at once; the
//! responses, notifications and server→client requests it causes travel on
//! the session's stream as `message` events. Requests are served like a
//! legacy Streamable HTTP session's. The session ends when its stream's
//! client goes away, or when that client stops reading and the bounded
//! outbound queue fills up. Legacy era only: this transport predates the
//! modern era.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};

use super::replies::{KEEPALIVE, reject, sse_body};
use super::{Call, ClientCaps, DemoEra, MAX_SESSIONS, Session, Shared};
use super::{initialize_result, mint_session_id, params_of};
use tether_wire::jsonrpc::{Kind, Message, code, response, to_raw};
use tether_wire::protocol::Era;
use tether_wire::sse;

/// Messages a session's stream may have queued before its client counts as
/// not reading (and the session is dropped).
const QUEUE: usize = 256;
/// Requests one session may have running at once; more get 503.
const MAX_IN_FLIGHT: usize = 64;
/// Longest session id accepted in `session_id` (minted ones are 22 characters).
const MAX_ID_LEN: usize = 64;

/// One HTTP+SSE session: the demo session and the queue feeding its stream.
pub(super) struct Link {
    id: String,
    session: Arc<Session>,
    out: mpsc::Sender<Vec<u8>>,
    calls: Arc<Semaphore>,
}

impl Link {
    /// Queues a message for the stream. A full queue means the client stopped
    /// reading: the session is dropped rather than buffering more. `false`
    /// once the stream is gone.
    fn push(&self, shared: &Shared, message: Vec<u8>) -> bool {
        match self.out.try_send(message) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(session = %self.id, "demo SSE client stopped reading; session dropped");
                end(shared, &self.id);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// Ends a session: forgotten, its stream closed and its pending
/// server→client requests abandoned. Idempotent.
fn end(shared: &Shared, id: &str) {
    if let Some((_, link)) = shared.sse_sessions.remove(id) {
        link.session.closed.send_replace(true);
        link.session.pending.clear();
        tracing::debug!(session = %id, "demo SSE session ended");
    }
}

/// Ends the session when its stream is dropped (the client went away).
struct Registration {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        end(&self.shared, &self.id);
    }
}

/// What a session's stream waits on between frames.
struct Feed {
    queue: mpsc::Receiver<Vec<u8>>,
    announcements: broadcast::Receiver<Value>,
    closed: watch::Receiver<bool>,
    tick: tokio::time::Interval,
    _registration: Registration,
}

/// `GET /sse`: a new session's event stream, `endpoint` event first.
pub(super) async fn open(State(shared): State<Arc<Shared>>) -> Response {
    if shared.era == DemoEra::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if shared.sessions.len() + shared.sse_sessions.len() >= MAX_SESSIONS {
        return reject(503, code::SERVER_ERROR, "Too many sessions");
    }
    let Some(id) = mint_session_id() else {
        return reject(500, code::INTERNAL_ERROR, "Cannot generate a session id");
    };
    let session = Arc::new(Session::new(ClientCaps::default()));
    let (out, queue) = mpsc::channel(QUEUE);
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.reset(); // the first keepalive after one interval, not at once
    let feed = Feed {
        queue,
        announcements: session.listen(),
        closed: session.closed.subscribe(),
        tick,
        _registration: Registration {
            shared: shared.clone(),
            id: id.clone(),
        },
    };
    let endpoint = sse::named_event("endpoint", format!("/messages?session_id={id}").as_bytes());
    let link = Link {
        id: id.clone(),
        session,
        out,
        calls: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    shared.sse_sessions.insert(id.clone(), Arc::new(link));
    tracing::debug!(session = %id, "demo SSE session started");
    let events = stream::once(async move { Ok::<_, Infallible>(endpoint) })
        .chain(stream::unfold(feed, next_frame));
    sse_body(Body::from_stream(events))
}

/// The stream's next frame: a queued message, an announcement or a
/// keepalive; `None` once the session has ended.
async fn next_frame(mut feed: Feed) -> Option<(Result<Bytes, Infallible>, Feed)> {
    let frame = tokio::select! {
        message = feed.queue.recv() => sse::message_event(&message?),
        note = feed.announcements.recv() => match note {
            Ok(m) => sse::message_event(m.to_string().as_bytes()),
            Err(broadcast::error::RecvError::Lagged(_)) => sse::keepalive(),
            Err(broadcast::error::RecvError::Closed) => return None,
        },
        _ = feed.tick.tick() => sse::keepalive(),
        _ = feed.closed.wait_for(|c| *c) => return None,
    };
    Some((Ok(frame), feed))
}

/// The query of `POST /messages`.
#[derive(Deserialize)]
pub(super) struct Target {
    session_id: Option<String>,
}

/// Whether `id` could be a session id this server minted (base64url).
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `POST /messages?session_id=…`: one JSON-RPC message for a session; 202,
/// with anything it causes sent on the session's stream.
pub(super) async fn post_message(
    State(shared): State<Arc<Shared>>,
    Query(target): Query<Target>,
    body: Bytes,
) -> Response {
    if shared.era == DemoEra::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(id) = target.session_id.filter(|id| plausible_id(id)) else {
        return reject(
            400,
            code::SERVER_ERROR,
            "Bad Request: missing or invalid session_id",
        );
    };
    let Some(link) = shared.sse_sessions.get(&id).map(|l| l.value().clone()) else {
        return reject(404, code::SERVER_ERROR, "Session not found");
    };
    let (kind, msg) = match Message::parse(&body).and_then(|m| Ok((m.kind()?, m))) {
        Ok(m) => m,
        Err(e) => return reject(400, e.code(), &e.message()),
    };
    let params = params_of(&msg);
    match (kind, msg.method.map(|m| m.to_string()), msg.id) {
        (Kind::Response, ..) => link
            .session
            .deliver(serde_json::from_slice(&body).unwrap_or(Value::Null)),
        (Kind::Request, Some(method), Some(request_id)) => {
            let Ok(permit) = link.calls.clone().try_acquire_owned() else {
                return reject(503, code::SERVER_ERROR, "Too many requests in flight");
            };
            serve(&shared, &link, method, request_id, params, permit);
        }
        _ => {} // notifications need no answer
    }
    StatusCode::ACCEPTED.into_response()
}

/// Serves one request in the background, sending everything it produces on
/// the session's stream: `initialize` at once, anything else as a legacy
/// session call (its progress, log and sampling messages first).
fn serve(
    shared: &Arc<Shared>,
    link: &Arc<Link>,
    method: String,
    id: Box<RawValue>,
    params: Value,
    permit: OwnedSemaphorePermit,
) {
    if method == "initialize" {
        let (result, caps) = initialize_result(shared.profile, &params);
        link.session.set_caps(caps);
        shared.initializes.fetch_add(1, Ordering::Relaxed);
        link.push(shared, response(&id, &to_raw(&result)));
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(32);
    let mut call = Call::new(shared, Era::Legacy, Some(link.session.clone()), params);
    call.out = Some(tx);
    let (shared, link) = (shared.clone(), link.clone());
    tokio::spawn(async move {
        let _permit = permit;
        // The call's channel closes when it finishes, ending the forwarder;
        // a forwarder that stops early (the stream is gone) cancels the call.
        let run = async move { call.run(&method, &id).await.1 };
        let forward = async {
            while let Some(m) = rx.recv().await {
                if !link.push(&shared, m) {
                    break;
                }
            }
            drop(rx);
        };
        let (body, ()) = tokio::join!(run, forward);
        link.push(&shared, body);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked_before_lookup() {
        assert!(plausible_id(&mint_session_id().unwrap()));
        for bad in ["", "a b", "a/b", "é", &"a".repeat(MAX_ID_LEN + 1)] {
            assert!(!plausible_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_client_that_stops_reading_loses_its_session() {
        let shared = super::super::DemoServer::new(DemoEra::Legacy).shared;
        let (out, _queue) = mpsc::channel(1);
        let link = Arc::new(Link {
            id: "s".into(),
            session: Arc::new(Session::new(ClientCaps::default())),
            out,
            calls: Arc::new(Semaphore::new(1)),
        });
        shared.sse_sessions.insert("s".into(), link.clone());
        assert!(link.push(&shared, b"{}".to_vec()));
        assert!(!link.push(&shared, b"{}".to_vec()), "the queue is full");
        assert!(shared.sse_sessions.is_empty());
        assert!(*link.session.closed.borrow());
    }
}
