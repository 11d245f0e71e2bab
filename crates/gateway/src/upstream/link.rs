//! A message link to an upstream that is not Streamable HTTP — a child
//! process's stdin/stdout, or an HTTP+SSE stream with its POST endpoint: one
//! duplex channel on which responses are matched to requests by id.
//!
//! Every request is renumbered with a link-unique id (and so is its progress
//! token), so clients sharing one link (a shared stdio process) never see
//! each other's responses or progress; their own values are restored on the
//! way back. Messages the server sends on its own (logs, list changes, its
//! requests to the client) go with the request in flight, else to the
//! session's listener, which stands in for the Streamable HTTP GET stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use tether_wire::jsonrpc::{self, Kind, Message, Method, RawObject};
use tokio::sync::mpsc;

use super::error::UpstreamError;
use super::reply::{EventStream, Item, Reply, is_response};
use crate::clock::now_ms;
use crate::sync::lock;

/// Requests awaiting their response on one link.
const MAX_PENDING: usize = 256;
/// Messages queued for one request's reply stream or the listener.
const REPLY_QUEUE: usize = 64;
/// Server-initiated messages kept while no listener is attached.
const BACKLOG: usize = 32;

/// How messages leave Tether on a link (a process's stdin, POSTs to an
/// HTTP+SSE endpoint).
pub trait Outbound: Send + Sync {
    /// Sends one message; fails when the other side is gone.
    fn send(&self, message: Bytes) -> BoxFuture<'_, Result<(), UpstreamError>>;

    /// Sends one message if that can be done without waiting; true when it was.
    fn try_send(&self, message: Bytes) -> bool;
}

/// Lines handed to a task that writes them (a child's stdin): a writer gone
/// means the other side is gone, and nothing was delivered.
impl Outbound for mpsc::Sender<Vec<u8>> {
    fn send(&self, message: Bytes) -> BoxFuture<'_, Result<(), UpstreamError>> {
        Box::pin(async move {
            mpsc::Sender::send(self, message.to_vec())
                .await
                .map_err(|_| UpstreamError::SessionLost)
        })
    }

    fn try_send(&self, message: Bytes) -> bool {
        mpsc::Sender::try_send(self, message.to_vec()).is_ok()
    }
}

/// What ends the thing behind a link (stops a process, stops reading a stream).
pub trait Closer: Send {
    /// Ends it, bounded in time.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

struct Pending {
    /// The id the sender used.
    id: Box<RawValue>,
    /// The progress token the sender used, if any.
    token: Option<Box<RawValue>>,
    tx: mpsc::Sender<Item>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    listener: Option<mpsc::Sender<Item>>,
    backlog: VecDeque<Bytes>,
}

/// One message link (see the module documentation).
pub struct Link {
    upstream: Arc<str>,
    outbound: Box<dyn Outbound>,
    /// Serves several client sessions: server-initiated messages are only
    /// delivered where they cannot reach the wrong client.
    shared: bool,
    state: Mutex<State>,
    next_id: AtomicU64,
    dead: AtomicBool,
    last_used_ms: AtomicI64,
    closer: Mutex<Option<Box<dyn Closer>>>,
}

impl Link {
    /// A link sending through `outbound`; feed it with [`Link::incoming`]
    /// and end it with [`Link::fail`].
    pub fn new(upstream: Arc<str>, outbound: Box<dyn Outbound>, shared: bool) -> Arc<Link> {
        Arc::new(Link {
            upstream,
            outbound,
            shared,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            last_used_ms: AtomicI64::new(now_ms()),
            closer: Mutex::new(None),
        })
    }

    /// Sets what [`Link::close`] ends.
    pub fn set_closer(&self, closer: Box<dyn Closer>) {
        *lock(&self.closer) = Some(closer);
    }

    /// Whether the link is gone (the process exited, the stream ended, or it was closed).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// How long since a message was last sent on the link.
    pub fn idle_for(&self) -> Duration {
        let idle = now_ms() - self.last_used_ms.load(Ordering::Relaxed);
        Duration::from_millis(idle.max(0) as u64)
    }

    /// Sends a request; the reply is JSON when the response comes first, else
    /// a stream of the messages that come with it, ending with the response.
    pub async fn request(&self, body: Bytes, idle: Duration) -> Result<Reply, UpstreamError> {
        if self.is_dead() {
            return Err(UpstreamError::SessionLost);
        }
        let mut msg = Message::parse(&body).map_err(UpstreamError::malformed)?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = msg
            .id
            .replace(jsonrpc::to_raw(&n))
            .ok_or_else(|| UpstreamError::Protocol("a request needs an id".into()))?;
        let token = replace_progress_token(&mut msg, n);
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        {
            let mut state = lock(&self.state);
            if state.pending.len() >= MAX_PENDING {
                // Callers that gave up make room.
                state.pending.retain(|_, p| !p.tx.is_closed());
            }
            if state.pending.len() >= MAX_PENDING {
                return Err(UpstreamError::Protocol(
                    format!("{MAX_PENDING} requests already in flight on this upstream session")
                        .into(),
                ));
            }
            state.pending.insert(n, Pending { id, token, tx });
        }
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        if let Err(e) = self.outbound.send(Bytes::from(msg.to_bytes())).await {
            lock(&self.state).pending.remove(&n);
            return Err(e);
        }
        let mut stream = EventStream::channel(rx, Some(idle));
        match stream.next_message().await {
            Some(Ok(first)) if is_response(&first) => Ok(Reply::Json(first)),
            Some(Ok(first)) => {
                stream.push_front(first);
                Ok(Reply::Stream(Box::new(stream)))
            }
            Some(Err(e)) => {
                lock(&self.state).pending.remove(&n);
                Err(e)
            }
            None => Err(UpstreamError::Transport(
                "upstream link ended before the response".into(),
            )),
        }
    }

    /// Sends a notification or a response to a server request.
    pub async fn send(&self, body: Bytes) -> Result<(), UpstreamError> {
        if self.is_dead() {
            return Err(UpstreamError::SessionLost);
        }
        let body = match self.renumber_cancel(&body) {
            Some(b) => b,
            None => return Ok(()),
        };
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        self.outbound.send(body).await
    }

    /// A cancellation names the request by the client's id: use the link's.
    /// `None` when it cannot be told which request is meant (drop it) — on a
    /// shared link never, as another client may use the same id.
    fn renumber_cancel(&self, body: &Bytes) -> Option<Bytes> {
        if !jsonrpc::contains(body, b"notifications/cancelled") {
            return Some(body.clone());
        }
        if self.shared {
            return None;
        }
        let Ok(mut msg) = Message::parse(body) else {
            return Some(body.clone());
        };
        if msg.method != Some(Method::Cancelled) {
            return Some(body.clone());
        }
        let mut params = msg.params_object().ok()?;
        let asked = params.get("requestId")?.get().to_owned();
        let matches: Vec<u64> = lock(&self.state)
            .pending
            .iter()
            .filter(|(_, p)| p.id.get() == asked)
            .map(|(n, _)| *n)
            .collect();
        let [n] = matches[..] else { return None };
        params.insert("requestId".into(), jsonrpc::to_raw(&n));
        msg.params = Some(jsonrpc::to_raw(&params));
        Some(Bytes::from(msg.to_bytes()))
    }

    /// The stream of server-initiated messages no request claims (the
    /// session's stand-in for a GET stream); replaces an earlier listener.
    pub fn listen(&self) -> EventStream {
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        if !self.shared && !self.is_dead() {
            let mut state = lock(&self.state);
            for message in state.backlog.drain(..) {
                let _ = tx.try_send(Ok(message));
            }
            state.listener = Some(tx);
        }
        EventStream::channel(rx, None)
    }

    /// Handles one message from the upstream.
    pub fn incoming(&self, bytes: Bytes) {
        let Ok(mut msg) = Message::parse(&bytes) else {
            tracing::warn!(upstream = %self.upstream, "upstream sent something that is not JSON-RPC; ignored");
            return;
        };
        match msg.kind() {
            Ok(Kind::Response) => {
                let n = msg.id.as_ref().and_then(|id| id.get().parse::<u64>().ok());
                let Some(pending) = n.and_then(|n| lock(&self.state).pending.remove(&n)) else {
                    tracing::debug!(upstream = %self.upstream, "response to no pending request; ignored");
                    return;
                };
                msg.id = Some(pending.id);
                deliver_last(pending.tx, Bytes::from(msg.to_bytes()));
            }
            Ok(Kind::Notification) if msg.method == Some(Method::Progress) => {
                self.progress(msg);
            }
            Ok(_) => self.unsolicited(bytes, msg),
            Err(_) => {
                tracing::warn!(upstream = %self.upstream, "upstream sent an invalid JSON-RPC message; ignored")
            }
        }
    }

    /// Routes a progress notification to the request whose token it names.
    fn progress(&self, mut msg: Message) {
        let Ok(mut params) = msg.params_object() else {
            return;
        };
        let n = params
            .get("progressToken")
            .and_then(|t| t.get().parse::<u64>().ok());
        let state = lock(&self.state);
        let Some(pending) = n.and_then(|n| state.pending.get(&n)) else {
            return;
        };
        let Some(token) = &pending.token else { return };
        params.insert("progressToken".into(), token.clone());
        msg.params = Some(jsonrpc::to_raw(&params));
        // A client too slow for its progress loses some of it, never the response.
        let _ = pending.tx.try_send(Ok(Bytes::from(msg.to_bytes())));
    }

    /// A server request or notification not tied to a request by the wire
    /// format: with the request in flight when that is unambiguous, else to
    /// the listener (kept for a while when none is attached).
    fn unsolicited(&self, bytes: Bytes, msg: Message) {
        let mut state = lock(&self.state);
        let target = if self.shared {
            // Several clients' requests may be in flight: only one in flight is unambiguous.
            (state.pending.len() == 1)
                .then(|| state.pending.keys().next().copied())
                .flatten()
        } else {
            state.pending.keys().max().copied()
        };
        if let Some(p) = target.and_then(|n| state.pending.get(&n))
            && p.tx.try_send(Ok(bytes.clone())).is_ok()
        {
            return;
        }
        if self.shared {
            drop(state);
            self.refuse(msg);
            return;
        }
        if let Some(listener) = &state.listener
            && listener.try_send(Ok(bytes.clone())).is_ok()
        {
            return;
        }
        if state.backlog.len() >= BACKLOG {
            state.backlog.pop_front();
        }
        state.backlog.push_back(bytes);
    }

    /// Answers a server request no client can take with an error, so the
    /// server does not wait for it; notifications are dropped.
    fn refuse(&self, msg: Message) {
        let (Some(id), Some(method)) = (msg.id, msg.method) else {
            return;
        };
        tracing::debug!(upstream = %self.upstream, %method, "server request on a shared upstream with no single client to ask; refused");
        let error = jsonrpc::ErrorObject::new(
            jsonrpc::code::METHOD_NOT_FOUND,
            "no single client to ask: this upstream process is shared by several client sessions",
        );
        self.outbound
            .try_send(Bytes::from(error.to_response(Some(&id))));
    }

    /// Ends the link: requests in flight and the listener get `reason` as a
    /// transport error (their outcome is unknown); later requests are refused.
    pub fn fail(&self, reason: &str) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pending, listener) = {
            let mut state = lock(&self.state);
            state.backlog.clear();
            (std::mem::take(&mut state.pending), state.listener.take())
        };
        let error = || Err(UpstreamError::Transport(reason.into()));
        for (_, p) in pending {
            let _ = p.tx.try_send(error());
        }
        if let Some(l) = listener {
            let _ = l.try_send(error());
        }
    }

    /// Closes the link and what is behind it (bounded in time).
    pub async fn close(&self) {
        self.fail("upstream session closed");
        let closer = lock(&self.closer).take();
        if let Some(closer) = closer {
            closer.close().await;
        }
    }
}

/// Hands the response to its reply stream; never lost to a full queue.
fn deliver_last(tx: mpsc::Sender<Item>, message: Bytes) {
    if let Err(mpsc::error::TrySendError::Full(item)) = tx.try_send(Ok(message)) {
        tokio::spawn(async move {
            let _ = tx.send(item).await;
        });
    }
}

/// Replaces `params._meta.progressToken` with `n`; returns the original.
fn replace_progress_token(msg: &mut Message, n: u64) -> Option<Box<RawValue>> {
    let raw = msg.params.as_ref()?;
    if !jsonrpc::contains(raw.get().as_bytes(), b"progressToken") {
        return None;
    }
    let mut params: RawObject = serde_json::from_str(raw.get()).ok()?;
    let mut meta: RawObject = serde_json::from_str(params.get("_meta")?.get()).ok()?;
    let original = meta.insert("progressToken".into(), jsonrpc::to_raw(&n))?;
    params.insert("_meta".into(), jsonrpc::to_raw(&meta));
    msg.params = Some(jsonrpc::to_raw(&params));
    Some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(shared: bool) -> (Arc<Link>, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(16);
        (Link::new("t".into(), Box::new(tx), shared), rx)
    }

    fn json(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[tokio::test]
    async fn renumbers_requests_and_restores_ids_and_tokens() {
        let (link, mut wire) = link(true);
        let body = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p1"},"arguments":{"n":1.50}}}"#,
        );
        let call = {
            let link = link.clone();
            tokio::spawn(async move { link.request(body, Duration::from_secs(5)).await })
        };
        let sent = json(&wire.recv().await.unwrap());
        assert_eq!(sent["id"], 1);
        assert_eq!(sent["params"]["_meta"]["progressToken"], 1);
        link.incoming(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":5}}"#,
        ));
        link.incoming(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"v":1.50}}"#,
        ));
        let Ok(Reply::Stream(mut stream)) = call.await.unwrap() else {
            panic!("progress first makes a stream")
        };
        let progress = json(&stream.next_message().await.unwrap().unwrap());
        assert_eq!(progress["params"]["progressToken"], "p1");
        let response = stream.next_message().await.unwrap().unwrap();
        assert_eq!(
            &response[..],
            br#"{"jsonrpc":"2.0","id":"abc","result":{"v":1.50}}"#
        );
    }

    #[tokio::test]
    async fn a_dead_link_fails_requests_in_flight_and_refuses_new_ones() {
        let (link, mut wire) = link(false);
        let call = {
            let link = link.clone();
            let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#);
            tokio::spawn(async move { link.request(body, Duration::from_secs(5)).await })
        };
        wire.recv().await.unwrap();
        link.fail("exited");
        assert!(matches!(
            call.await.unwrap(),
            Err(UpstreamError::Transport(_))
        ));
        let again = link
            .request(
                Bytes::from_static(br#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#),
                Duration::from_secs(1),
            )
            .await;
        assert!(matches!(again, Err(UpstreamError::SessionLost)));
    }

    #[tokio::test]
    async fn unsolicited_messages_wait_for_a_listener_on_a_private_link() {
        let (link, _wire) = link(false);
        link.incoming(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
        ));
        let mut listener = link.listen();
        let m = json(&listener.next_message().await.unwrap().unwrap());
        assert_eq!(m["method"], "notifications/tools/list_changed");
    }

    #[tokio::test]
    async fn a_shared_link_refuses_server_requests_it_cannot_attribute() {
        let (link, mut wire) = link(true);
        link.incoming(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#,
        ));
        let refusal = json(&wire.recv().await.unwrap());
        assert_eq!(refusal["id"], "s1");
        assert_eq!(refusal["error"]["code"], -32601);
    }
}
