//! Why an exchange with an upstream failed, and what that means for the
//! request: whether it may be sent again, whether the upstream session can
//! be reused, whether the upstream may have changed era.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use tether_wire::jsonrpc::Method;

/// The failure underneath an [`UpstreamError`]: the HTTP client's, the
/// operating system's, or a description where there is no error value.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync>);

/// A failure known only by its description.
#[derive(Debug)]
struct Described(String);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Described {}

impl Cause {
    /// Keeps `error` (and its sources).
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }
}

impl From<String> for Cause {
    fn from(text: String) -> Self {
        Cause(Arc::new(Described(text)))
    }
}

impl From<&str> for Cause {
    fn from(text: &str) -> Self {
        Cause::from(text.to_owned())
    }
}

/// The error, then each of its sources, joined by `": "` (the whole story
/// goes into the JSON-RPC error a client sees).
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// The request never left Tether (connection refused, DNS, TLS, a
    /// process that would not start): safe to retry.
    Connect(Cause),
    /// The connection failed after the request may have been delivered.
    Transport(Cause),
    /// No answer within the upstream's timeout.
    Timeout,
    /// The upstream no longer knows the session (HTTP 404 on a session
    /// request, an ended SSE stream, an exited process).
    SessionLost,
    /// An HTTP status Tether cannot use.
    Status {
        /// HTTP status code.
        status: u16,
        /// First bytes of the body, for diagnostics.
        body: String,
    },
    /// The upstream answered something that is not MCP.
    Protocol(Cause),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::Transport(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Timeout => f.write_str("timed out"),
            UpstreamError::SessionLost => f.write_str("upstream session expired"),
            UpstreamError::Status { status, body } => write!(f, "HTTP {status}: {body}"),
            UpstreamError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl UpstreamError {
    /// A short, stable name of what went wrong (a span's `error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Transport(_) => "transport",
            UpstreamError::Timeout => "timeout",
            UpstreamError::SessionLost => "session_lost",
            UpstreamError::Status { .. } => "http_status",
            UpstreamError::Protocol(_) => "protocol",
        }
    }
}

impl Error for UpstreamError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            UpstreamError::Connect(Cause(e))
            | UpstreamError::Transport(Cause(e))
            | UpstreamError::Protocol(Cause(e)) => Some(e.as_ref() as &(dyn Error + 'static)),
            _ => None,
        }
    }
}

impl UpstreamError {
    /// True when the upstream provably did not process the request, so even a
    /// `tools/call` may be retried on a fresh session.
    pub fn provably_not_delivered(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::SessionLost)
    }

    /// Whether a request of `method` that failed this way may be sent again on
    /// a fresh session: always when it provably never arrived; after a broken
    /// connection only when repeating it is harmless (never a `tools/call`,
    /// [invariant: no-replay]).
    pub fn retryable(&self, method: &Method) -> bool {
        self.provably_not_delivered()
            || (*method != Method::ToolsCall && matches!(self, UpstreamError::Transport(_)))
    }

    /// Whether a `tools/call` that failed this way may or may not have run.
    pub fn leaves_outcome_unknown(&self) -> bool {
        !self.provably_not_delivered()
    }

    /// True when the session that produced this error must not be reused.
    /// A timeout does not: the upstream may simply be slow, and closing the
    /// session would throw away its state while a tool may still be running.
    pub fn poisons_session(&self) -> bool {
        !matches!(self, UpstreamError::Status { .. } | UpstreamError::Timeout)
    }

    /// True when the upstream may have switched era or transport (re-probe next time).
    pub fn suggests_era_change(&self) -> bool {
        matches!(
            self,
            UpstreamError::Status {
                status: 400..=499,
                ..
            } | UpstreamError::Protocol(_)
        )
    }

    /// True when the upstream could not be reached at all (backoff applies).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::Timeout | UpstreamError::Transport(_)
        )
    }

    /// The upstream sent something malformed (`e` says what).
    pub fn malformed(e: impl Error + Send + Sync + 'static) -> Self {
        UpstreamError::Protocol(Cause::new(e))
    }

    /// Classifies a lean HTTP/1.1 client failure: connecting (not delivered)
    /// or transport.
    pub fn from_http1(e: super::http1::Error) -> Self {
        if e.not_sent() {
            UpstreamError::Connect(Cause::new(e))
        } else {
            UpstreamError::Transport(Cause::new(e))
        }
    }

    /// Classifies an HTTP client failure: connecting (not delivered), timeout or transport.
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_connect() {
            UpstreamError::Connect(Cause::new(e))
        } else if e.is_timeout() {
            UpstreamError::Timeout
        } else {
            UpstreamError::Transport(Cause::new(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_keep_their_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = UpstreamError::Connect(Cause::new(io));
        assert_eq!(e.to_string(), "cannot connect: refused");
        let source = e.source().expect("the cause is kept");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert!(UpstreamError::Timeout.source().is_none());
    }

    #[test]
    fn tool_calls_are_retried_only_when_they_never_arrived() {
        let reset = UpstreamError::Transport("reset".into());
        assert!(!reset.retryable(&Method::ToolsCall));
        assert!(reset.retryable(&Method::ToolsList));
        assert!(reset.leaves_outcome_unknown());
        assert!(UpstreamError::SessionLost.retryable(&Method::ToolsCall));
        assert!(!UpstreamError::Timeout.retryable(&Method::ToolsList));
    }
}
