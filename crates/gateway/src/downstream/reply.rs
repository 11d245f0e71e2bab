//! Turning router outcomes into HTTP responses: JSON bodies, live SSE
//! streams with keepalives, 202s and JSON-RPC error bodies.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream;
use http::{HeaderValue, StatusCode, header};
use tokio::sync::mpsc;

use opentelemetry::context::FutureExt as _;

use crate::router::Outcome;
use crate::telemetry::{self, spans::ServerSpan};
use tether_wire::jsonrpc::{self, ErrorObject, code};
use tether_wire::protocol::{self, Era};
use tether_wire::sse;

/// A response body that holds a guard (an in-flight permit) until the body
/// has been sent or dropped.
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G> Guarded<G> {
    /// Wraps `inner`, keeping `guard` alive as long as the body.
    pub fn new(inner: Body, guard: G) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves the future `respond` makes inside `span`; the span ends with the
/// response's body. (The future is made where it is awaited, so it is
/// stored once.)
pub async fn traced<R: Future<Output = Response>>(
    span: ServerSpan,
    respond: impl FnOnce() -> R,
) -> Response {
    let resp = respond().with_context(span.context()).await;
    let rpc_error = resp.extensions().get::<RpcError>().map(|e| e.0);
    let ends = span.finish(Some(resp.status().as_u16()), rpc_error);
    resp.map(|body| Body::new(Guarded::new(body, ends)))
}

/// The JSON-RPC error code a response answers with, for its span.
#[derive(Debug, Clone, Copy)]
struct RpcError(i64);

/// The JSON-RPC error code `outcome` answers with, when tracing is on (a
/// relayed stream is not read for it).
pub fn rpc_error(outcome: &Outcome) -> Option<i64> {
    telemetry::get()?;
    match outcome {
        Outcome::Error(err, _) => Some(err.code),
        Outcome::Message(body) if jsonrpc::contains(body, b"\"error\"") => {
            jsonrpc::error_code(body)
        }
        Outcome::Message(_) | Outcome::Stream(_) | Outcome::Accepted => None,
    }
}

/// What the client's `Accept` header allows.
#[derive(Debug, Clone, Copy)]
pub struct Accepts {
    /// `application/json` (or a wildcard).
    pub json: bool,
    /// `text/event-stream` (or a wildcard).
    pub sse: bool,
}

impl Accepts {
    /// Parses `Accept`; a missing header accepts both.
    pub fn from_headers(headers: &http::HeaderMap) -> Accepts {
        let Some(v) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Accepts {
                json: true,
                sse: true,
            };
        };
        // One pass over the media ranges, parameters ignored.
        let mut accepts = Accepts {
            json: false,
            sse: false,
        };
        for range in v.split(',') {
            let media = range.split(';').next().unwrap_or("").trim();
            let (kind, sub) = media.split_once('/').unwrap_or((media, ""));
            let any_sub = sub == "*";
            if kind == "*" && any_sub {
                return Accepts {
                    json: true,
                    sse: true,
                };
            }
            if kind.eq_ignore_ascii_case("application") {
                accepts.json |= any_sub || sub.eq_ignore_ascii_case("json");
            } else if kind.eq_ignore_ascii_case("text") {
                accepts.sse |= any_sub || sub.eq_ignore_ascii_case("event-stream");
            }
        }
        accepts
    }
}

/// Settings for rendering replies.
#[derive(Debug, Clone, Copy)]
pub struct ReplyStyle {
    /// What the client accepts.
    pub accepts: Accepts,
    /// The client's era (picks HTTP statuses for errors).
    pub era: Era,
    /// SSE keepalive interval (`None`: off).
    pub keepalive: Option<Duration>,
}

/// A JSON body with a status.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut resp = Response::new(Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON-RPC error body (id null) with a status.
pub fn error(status: StatusCode, code: i64, message: impl Into<String>) -> Response {
    json(status, ErrorObject::new(code, message).to_response(None))
}

/// A refusal the client may retry: the status, a JSON-RPC error and
/// `Retry-After: 1`.
pub fn retry_later(status: StatusCode, text: &'static str) -> Response {
    let mut r = error(status, code::INTERNAL_ERROR, text);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// 405 with `Allow: allow`.
pub fn method_not_allowed(text: &'static str, allow: &'static str) -> Response {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, code::INVALID_REQUEST, text);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// 202 Accepted with no body.
pub fn accepted() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// Renders an outcome.
pub async fn render(outcome: Outcome, style: ReplyStyle) -> Response {
    let rpc_error = rpc_error(&outcome);
    let mut resp = render_outcome(outcome, style).await;
    if let Some(code) = rpc_error {
        resp.extensions_mut().insert(RpcError(code));
    }
    resp
}

async fn render_outcome(outcome: Outcome, style: ReplyStyle) -> Response {
    match outcome {
        Outcome::Accepted => accepted(),
        Outcome::Message(body) => {
            let status = status_for(style.era, &body);
            single(body, status, style)
        }
        Outcome::Error(err, id) => {
            let body = Bytes::from(err.to_response(id.as_deref()));
            if let Some(wait) = crate::router::retry_after(&err) {
                // A call limit: 429 with Retry-After, the JSON-RPC error as its body.
                let mut refused = json(StatusCode::TOO_MANY_REQUESTS, body);
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                refused
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return refused;
            }
            let status = status_for(style.era, &body);
            single(body, status, style)
        }
        Outcome::Stream(rx) if style.accepts.sse => event_stream(rx, None, style.keepalive),
        Outcome::Stream(mut rx) => {
            // The client takes JSON only: wait for the final message.
            let mut last = None;
            while let Some(m) = rx.recv().await {
                last = Some(m);
            }
            match last {
                Some(m) => json(StatusCode::OK, m),
                None => error(
                    StatusCode::BAD_GATEWAY,
                    code::INTERNAL_ERROR,
                    "upstream ended without answering",
                ),
            }
        }
    }
}

/// HTTP status for a relayed JSON-RPC message. 2026-07-28 gives some errors
/// their own status: an unknown method is 404 (so clients can tell a modern
/// server from a legacy one); header mismatches, missing client capabilities
/// and unsupported versions are 400. An upstream's status is not relayed, so
/// it is derived from the code again here.
fn status_for(era: Era, body: &[u8]) -> StatusCode {
    if era != Era::Modern || !tether_wire::jsonrpc::contains(body, b"\"error\"") {
        return StatusCode::OK;
    }
    match tether_wire::jsonrpc::error_code(body) {
        Some(code::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(
            protocol::ERROR_HEADER_MISMATCH
            | protocol::ERROR_MISSING_CAPABILITY
            | protocol::ERROR_UNSUPPORTED_VERSION,
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

fn single(body: Bytes, status: StatusCode, style: ReplyStyle) -> Response {
    if style.accepts.json || !style.accepts.sse {
        return json(status, body);
    }
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(body);
    drop(tx);
    event_stream(rx, None, None)
}

/// An SSE response relaying `rx` as `message` events as they arrive, with an
/// optional `retry:` hint first and keepalive comments while idle.
pub fn event_stream(
    rx: mpsc::Receiver<Bytes>,
    retry: Option<Duration>,
    keepalive: Option<Duration>,
) -> Response {
    sse_response(
        rx,
        retry_preamble(retry),
        keepalive,
        |m| sse::message_event(&m),
        (),
    )
}

/// An SSE response relaying events already framed (with ids) by a
/// resumable stream.
pub fn framed_stream(
    rx: mpsc::Receiver<Bytes>,
    retry: Option<Duration>,
    keepalive: Option<Duration>,
) -> Response {
    sse_response(rx, retry_preamble(retry), keepalive, |frame| frame, ())
}

/// The `retry:` hint to send first, if any.
fn retry_preamble(retry: Option<Duration>) -> Vec<Bytes> {
    retry
        .map(|r| sse::retry_hint(r.as_millis() as u64))
        .into_iter()
        .collect()
}

/// An SSE response: the `preamble` frames, then each message of `rx` framed
/// by `frame`, with keepalive comments while idle. It ends when every sender
/// of `rx` is gone; `guard` lives exactly as long as the stream (it is
/// dropped however the stream ends: finished, failed or cut off).
pub fn sse_response<G: Send + 'static>(
    rx: mpsc::Receiver<Bytes>,
    preamble: Vec<Bytes>,
    keepalive: Option<Duration>,
    frame: fn(Bytes) -> Bytes,
    guard: G,
) -> Response {
    let ticker = keepalive.map(|k| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + k, k);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let state = SseState {
        rx,
        ticker,
        preamble: preamble.into(),
        spin: SpinGuard::default(),
        _guard: guard,
    };
    let frames = stream::unfold(state, move |mut st| async move {
        let frame = match st.preamble.pop_front() {
            Some(f) => f,
            None => match st.ticker.as_mut() {
                Some(t) => tokio::select! {
                    m = st.rx.recv() => m.map(frame),
                    _ = t.tick() => Some(sse::keepalive()),
                },
                None => st.rx.recv().await.map(frame),
            }?,
        };
        if st.spin.spinning(std::time::Instant::now()) {
            tracing::warn!("SSE stream produced frames impossibly fast; closed it");
            return None;
        }
        Some((Ok::<_, std::convert::Infallible>(frame), st))
    });
    let mut resp = Response::new(Body::from_stream(frames));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

struct SseState<G> {
    rx: mpsc::Receiver<Bytes>,
    ticker: Option<tokio::time::Interval>,
    preamble: std::collections::VecDeque<Bytes>,
    spin: SpinGuard,
    _guard: G,
}

/// Frames one SSE stream may send within [`SPIN_WINDOW`]; more means the
/// stream loop is spinning (say, writes completing at once because the peer
/// is gone and nothing waits), not relaying real traffic.
const SPIN_LIMIT: u32 = 50_000;
const SPIN_WINDOW: Duration = Duration::from_secs(1);

/// Detects a stream loop that spins: too many frames in one window.
#[derive(Default)]
struct SpinGuard {
    window: Option<std::time::Instant>,
    frames: u32,
}

impl SpinGuard {
    /// Counts a frame sent at `now`; true when the stream should be closed.
    fn spinning(&mut self, now: std::time::Instant) -> bool {
        match self.window {
            Some(start) if now.duration_since(start) < SPIN_WINDOW => {
                self.frames += 1;
                self.frames > SPIN_LIMIT
            }
            _ => {
                self.window = Some(now);
                self.frames = 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinning_stream_is_detected_and_a_busy_one_is_not() {
        let start = std::time::Instant::now();
        let mut busy = SpinGuard::default();
        // 20,000 frames a second for five seconds: busy, not spinning.
        for i in 0..100_000u64 {
            let at = start + Duration::from_micros(i * 50);
            assert!(!busy.spinning(at));
        }
        let mut spin = SpinGuard::default();
        let tripped = (0..=SPIN_LIMIT).any(|_| spin.spinning(start));
        assert!(tripped, "the limit within one instant trips the guard");
    }

    #[test]
    fn modern_error_statuses() {
        let body = |code: i64| {
            format!(r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":{code},"message":"m"}}}}"#)
        };
        assert_eq!(
            status_for(Era::Modern, body(-32601).as_bytes()),
            StatusCode::NOT_FOUND
        );
        for code in [-32020, -32021, -32022] {
            assert_eq!(
                status_for(Era::Modern, body(code).as_bytes()),
                StatusCode::BAD_REQUEST
            );
        }
        assert_eq!(
            status_for(Era::Modern, body(-32602).as_bytes()),
            StatusCode::OK
        );
        assert_eq!(
            status_for(Era::Legacy, body(-32601).as_bytes()),
            StatusCode::OK
        );
        assert_eq!(
            status_for(Era::Modern, br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            StatusCode::OK
        );
    }

    #[test]
    fn parses_accept() {
        let mut h = http::HeaderMap::new();
        let a = Accepts::from_headers(&h);
        assert!(a.json && a.sse);
        h.insert(
            header::ACCEPT,
            "application/json, text/event-stream".parse().unwrap(),
        );
        let a = Accepts::from_headers(&h);
        assert!(a.json && a.sse);
        h.insert(header::ACCEPT, "text/event-stream;q=1".parse().unwrap());
        let a = Accepts::from_headers(&h);
        assert!(!a.json && a.sse);
        h.insert(header::ACCEPT, "text/html".parse().unwrap());
        let a = Accepts::from_headers(&h);
        assert!(!a.json && !a.sse);
        h.insert(
            header::ACCEPT,
            "Application/*; q=0.5, TEXT/html".parse().unwrap(),
        );
        let a = Accepts::from_headers(&h);
        assert!(a.json && !a.sse);
        h.insert(header::ACCEPT, "image/png, */*;q=0.1".parse().unwrap());
        let a = Accepts::from_headers(&h);
        assert!(a.json && a.sse);
    }
}
