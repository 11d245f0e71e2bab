//! What an upstream answers a request with — one JSON-RPC message, a stream
//! of messages ending with the response, or 202 — and the stream itself:
//! upstream SSE decoded incrementally (resumed with `Last-Event-ID` when the
//! upstream closes it early) or the messages a message link routes to one
//! request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::HeaderValue;
use tether_wire::jsonrpc::Message;
use tether_wire::sse;
use tokio::sync::mpsc;

use super::endpoint::{self, HttpEndpoint, MAX_UPSTREAM_MESSAGE, SessionHeaders};
use super::error::UpstreamError;
use super::response::HttpResponse;
use crate::sync::lock;
use crate::telemetry::spans::EndsSpan;

/// How many times a stream closed before its response is resumed with `Last-Event-ID`.
const MAX_RESUMES: u32 = 5;

/// What the upstream answered to a request.
pub enum Reply {
    /// One JSON-RPC message.
    Json(Bytes),
    /// A stream of messages, ending with the response.
    Stream(Box<EventStream>),
    /// 202: a notification or response was accepted.
    Accepted,
}

/// What a message link's reply streams carry.
pub type Item = Result<Bytes, UpstreamError>;

/// Where an HTTP event stream is opened again after the upstream closed it
/// early: the upstream, and what names the session then.
pub struct Reopen {
    /// The upstream.
    pub endpoint: Arc<HttpEndpoint>,
    /// The upstream's `Mcp-Session-Id`, if it issued one.
    pub session_id: Option<HeaderValue>,
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// The session's credentials as they are when the stream is reopened.
    pub credentials: Credentials,
}

/// The client credentials an upstream session forwards, shared with its
/// streams so a reconnect uses the latest ones.
pub type Credentials = Arc<Mutex<Option<HeaderValue>>>;

impl Reopen {
    fn headers(&self) -> SessionHeaders {
        SessionHeaders {
            session_id: self.session_id.clone(),
            protocol_version: self.protocol_version.clone(),
            credentials: lock(&self.credentials).clone(),
        }
    }
}

/// Messages of an upstream SSE response (or of a message link's reply
/// channel), in arrival order, never buffered beyond one network chunk.
pub struct EventStream {
    /// Messages from a link instead of an HTTP body.
    channel: Option<mpsc::Receiver<Item>>,
    body: Option<BoxStream<'static, Item>>,
    decoder: sse::Decoder,
    ready: VecDeque<Bytes>,
    last_event_id: Option<String>,
    retry: Duration,
    resumes: u32,
    reopen: Option<Reopen>,
    idle_timeout: Option<Duration>,
    /// The span of the request this stream answers, ended with the stream.
    span: Option<EndsSpan>,
}

impl EventStream {
    /// The events of an HTTP response; `idle` bounds the wait for each chunk.
    pub fn http(resp: HttpResponse, reopen: Option<Reopen>, idle: Option<Duration>) -> Self {
        EventStream {
            channel: None,
            body: Some(resp.into_stream()),
            decoder: sse::Decoder::new(MAX_UPSTREAM_MESSAGE),
            ready: VecDeque::new(),
            last_event_id: None,
            retry: Duration::from_millis(500),
            resumes: 0,
            reopen,
            idle_timeout: idle,
            span: None,
        }
    }

    /// The messages of a link's reply channel; `idle` bounds the wait for each.
    pub fn channel(rx: mpsc::Receiver<Item>, idle: Option<Duration>) -> Self {
        EventStream {
            channel: Some(rx),
            body: None,
            decoder: sse::Decoder::new(0),
            ready: VecDeque::new(),
            last_event_id: None,
            retry: Duration::ZERO,
            resumes: 0,
            reopen: None,
            idle_timeout: idle,
            span: None,
        }
    }

    /// Ends `span` (the request's) when the stream is dropped, read or not.
    pub fn ending(mut self: Box<Self>, span: EndsSpan) -> Box<Self> {
        self.span = Some(span);
        self
    }

    /// Puts a message back at the front (it is read again next).
    pub fn push_front(&mut self, message: Bytes) {
        self.ready.push_front(message);
    }

    /// Drops the idle timeout (for long-lived streams that may be quiet for hours).
    pub fn without_idle_timeout(mut self: Box<Self>) -> Box<Self> {
        self.idle_timeout = None;
        self
    }

    /// The next JSON-RPC message; `None` when the stream ended for good.
    /// A stream the upstream closed early is resumed with `Last-Event-ID`.
    pub async fn next_message(&mut self) -> Option<Item> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(Ok(m));
            }
            if let Some(rx) = self.channel.as_mut() {
                return match self.idle_timeout {
                    Some(idle) => tokio::time::timeout(idle, rx.recv())
                        .await
                        .unwrap_or(Some(Err(UpstreamError::Timeout))),
                    None => rx.recv().await,
                };
            }
            let Some(body) = self.body.as_mut() else {
                match self.resume().await {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(e) => return Some(Err(e)),
                }
            };
            let next = match self.idle_timeout {
                Some(idle) => tokio::time::timeout(idle, body.next()).await,
                None => Ok(body.next().await),
            };
            match next {
                Err(_) => return Some(Err(UpstreamError::Timeout)),
                Ok(None) => self.body = None,
                Ok(Some(Err(e))) => {
                    self.body = None;
                    if self.last_event_id.is_none() {
                        return Some(Err(e));
                    }
                }
                Ok(Some(Ok(chunk))) => match self.decoder.feed(&chunk) {
                    Err(e) => return Some(Err(UpstreamError::malformed(e))),
                    Ok(events) => {
                        for mut ev in events {
                            if let Some(id) = ev.id.take() {
                                self.last_event_id = Some(id);
                            }
                            if let Some(data) = message_data(ev) {
                                self.ready.push_back(data);
                            }
                        }
                        if let Some(ms) = self.decoder.retry_millis() {
                            self.retry = Duration::from_millis(ms.min(5_000));
                        }
                    }
                },
            }
        }
    }

    /// Reconnects with `GET` + `Last-Event-ID` (2025-11-25 polling/resumption).
    async fn resume(&mut self) -> Result<bool, UpstreamError> {
        let (Some(last), Some(reopen)) = (self.last_event_id.clone(), self.reopen.as_ref()) else {
            return Ok(false);
        };
        if self.resumes >= MAX_RESUMES {
            return Ok(false);
        }
        self.resumes += 1;
        tokio::time::sleep(self.retry).await;
        let session = reopen.headers();
        let resp = reopen
            .endpoint
            .open_stream(Some(&session), Some(&last))
            .await?;
        let resp = check_stream(resp, session.session_id.is_some())?;
        self.body = Some(resp.into_stream());
        self.decoder = sse::Decoder::new(MAX_UPSTREAM_MESSAGE);
        Ok(true)
    }
}

/// The data of an event that carries a JSON-RPC message (`message` or unnamed).
pub fn message_data(event: sse::Event) -> Option<Bytes> {
    ((event.event.is_empty() || event.event == "message") && !event.data.is_empty())
        .then(|| Bytes::from(event.data))
}

/// Accepts the answer to a GET that opens a session's stream: a success, or
/// the session is gone (404 for a request that named one), or an unusable status.
pub fn check_stream(
    resp: HttpResponse,
    named_session: bool,
) -> Result<HttpResponse, UpstreamError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        http::StatusCode::NOT_FOUND if named_session => Err(UpstreamError::SessionLost),
        s => Err(UpstreamError::Status {
            status: s.as_u16(),
            body: String::new(),
        }),
    }
}

/// Classifies an upstream's HTTP response to a POST: 202, the session is gone
/// (404 to a request that `named_session`), a live stream (resumed where
/// `reopen` says), a JSON message (also a JSON-RPC error answering the
/// request with a 4xx), or an unusable status.
pub async fn classify(
    resp: HttpResponse,
    timeout: Duration,
    named_session: bool,
    reopen: impl FnOnce() -> Option<Reopen>,
) -> Result<Reply, UpstreamError> {
    let status = resp.status();
    if status == http::StatusCode::ACCEPTED {
        return Ok(Reply::Accepted);
    }
    if status == http::StatusCode::NOT_FOUND && named_session {
        return Err(UpstreamError::SessionLost);
    }
    if status.is_success() && resp.is_event_stream() {
        return Ok(Reply::Stream(Box::new(EventStream::http(
            resp,
            reopen(),
            Some(timeout),
        ))));
    }
    let body = endpoint::read_body(resp, timeout).await?;
    if status.is_success() {
        if body.is_empty() {
            return Ok(Reply::Accepted);
        }
        return Ok(Reply::Json(body));
    }
    // A JSON-RPC error answering our request (it has our id) is an answer to relay.
    if status.is_client_error() && Message::parse(&body).is_ok_and(|m| m.error.is_some()) {
        return Ok(Reply::Json(body));
    }
    Err(UpstreamError::Status {
        status: status.as_u16(),
        body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    })
}

/// Reads the first JSON-RPC response out of a reply (skipping notifications on a stream).
pub async fn first_response(reply: Reply) -> Result<Bytes, UpstreamError> {
    match reply {
        Reply::Json(b) => Ok(b),
        Reply::Accepted => Err(UpstreamError::Protocol(
            "upstream answered a request with 202".into(),
        )),
        Reply::Stream(mut s) => {
            while let Some(m) = s.next_message().await {
                let m = m?;
                if is_response(&m) {
                    return Ok(m);
                }
            }
            Err(UpstreamError::Transport(
                "upstream stream ended before the response".into(),
            ))
        }
    }
}

/// Whether a message is a response (not a request or notification).
pub fn is_response(message: &[u8]) -> bool {
    Message::parse(message).is_ok_and(|m| m.method.is_none())
}
