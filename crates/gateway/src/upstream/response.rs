//! An upstream's HTTP response, whichever client fetched it: the lean
//! HTTP/1.1 client (plain `http://`) or the general one (TLS, HTTP/2).

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, StatusCode};

use super::error::UpstreamError;
use super::http1;

/// A response head, and its body to read.
pub struct HttpResponse {
    status: StatusCode,
    headers: HeaderMap,
    content_length: Option<u64>,
    body: Body,
}

enum Body {
    Lean(http1::Body),
    General(reqwest::Response),
}

impl From<http1::Response> for HttpResponse {
    fn from(r: http1::Response) -> Self {
        HttpResponse {
            status: r.status,
            headers: r.headers,
            content_length: r.content_length,
            body: Body::Lean(r.body),
        }
    }
}

impl From<reqwest::Response> for HttpResponse {
    fn from(mut r: reqwest::Response) -> Self {
        HttpResponse {
            status: r.status(),
            headers: std::mem::take(r.headers_mut()),
            content_length: r.content_length(),
            body: Body::General(r),
        }
    }
}

impl HttpResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body's length, when the response gives it.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the response carries an event stream.
    pub fn is_event_stream(&self) -> bool {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match &mut self.body {
            Body::Lean(body) => body.chunk().await.map_err(UpstreamError::from_http1),
            Body::General(r) => r.chunk().await.map_err(UpstreamError::from_reqwest),
        }
    }

    /// The body as a stream of pieces.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
        Box::pin(futures_util::stream::unfold(
            Some(self),
            |state| async move {
                let mut resp = state?;
                match resp.chunk().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(resp))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), None)),
                }
            },
        ))
    }
}
