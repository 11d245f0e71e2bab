//! The 2024-11-05 HTTP+SSE client transport: a GET opens the session's event
//! stream, whose first event names the endpoint to POST messages to; every
//! reply and server message arrives on that stream. One stream per upstream
//! session, so isolation holds as for every other transport.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tether_wire::sse;

use super::endpoint::{HttpEndpoint, MAX_UPSTREAM_MESSAGE};
use super::error::UpstreamError;
use super::link::{Closer, Link, Outbound};
use super::reply::message_data;

/// How long a probe waits for the `endpoint` event when detecting the transport.
const PROBE_WAIT: Duration = Duration::from_secs(5);

type ByteStream = futures_util::stream::BoxStream<'static, Result<Bytes, UpstreamError>>;

/// POSTs a session's messages to the endpoint its stream announced.
struct Poster {
    upstream: Arc<HttpEndpoint>,
    endpoint: reqwest::Url,
}

impl Outbound for Poster {
    fn send(&self, message: Bytes) -> BoxFuture<'_, Result<(), UpstreamError>> {
        Box::pin(self.upstream.post_message(&self.endpoint, message))
    }

    /// A POST always waits for its answer: never sent without waiting.
    fn try_send(&self, _message: Bytes) -> bool {
        false
    }
}

/// The task reading the session's stream.
struct Reader(tokio::task::AbortHandle);

impl Closer for Reader {
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.0.abort();
        Box::pin(std::future::ready(()))
    }
}

/// An opened event stream whose `endpoint` has been read.
struct Opened {
    body: ByteStream,
    decoder: sse::Decoder,
    endpoint: reqwest::Url,
    /// Messages that arrived in the same read as the endpoint.
    early: VecDeque<Bytes>,
}

/// Opens the SSE stream at the upstream's URL and reads its `endpoint` event.
async fn open(upstream: &HttpEndpoint, wait: Duration) -> Result<Opened, UpstreamError> {
    let url = upstream.url();
    let resp = upstream.open_stream(None, None).await?;
    let status = resp.status();
    if !status.is_success() || !resp.is_event_stream() {
        return Err(UpstreamError::Status {
            status: status.as_u16(),
            body: "GET did not open an SSE stream".into(),
        });
    }
    let mut body = resp.into_stream();
    let mut decoder = sse::Decoder::new(MAX_UPSTREAM_MESSAGE);
    let read_endpoint = async {
        loop {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(UpstreamError::Protocol(
                        "SSE stream ended before its endpoint event".into(),
                    ));
                }
            };
            let events = decoder.feed(&chunk).map_err(UpstreamError::malformed)?;
            let mut events = events.into_iter();
            for event in events.by_ref() {
                if event.event == "endpoint" {
                    let endpoint = same_origin_endpoint(url, event.data.trim())?;
                    let early = events.filter_map(message_data).collect();
                    return Ok((endpoint, early));
                }
            }
        }
    };
    let (endpoint, early) = tokio::time::timeout(wait, read_endpoint)
        .await
        .map_err(|_| UpstreamError::Timeout)??;
    Ok(Opened {
        body,
        decoder,
        endpoint,
        early,
    })
}

/// The endpoint announced by the server, resolved against the stream's URL.
/// It must stay on the same origin: the POSTs carry the upstream's credentials.
fn same_origin_endpoint(
    base: &reqwest::Url,
    announced: &str,
) -> Result<reqwest::Url, UpstreamError> {
    let endpoint = base
        .join(announced)
        .map_err(|e| UpstreamError::Protocol(format!("bad endpoint {announced:?}: {e}").into()))?;
    if endpoint.origin() != base.origin() {
        return Err(UpstreamError::Protocol(
            format!("endpoint {announced:?} is not on the SSE stream's origin").into(),
        ));
    }
    Ok(endpoint)
}

/// Opens an HTTP+SSE session with the upstream `name` and links to it.
pub async fn connect(
    name: &Arc<str>,
    upstream: &Arc<HttpEndpoint>,
) -> Result<Arc<Link>, UpstreamError> {
    let opened = open(upstream, upstream.timeout()).await?;
    let poster = Poster {
        upstream: upstream.clone(),
        endpoint: opened.endpoint,
    };
    let link = Link::new(name.clone(), Box::new(poster), false);
    for message in opened.early {
        link.incoming(message);
    }
    let reader = tokio::spawn(read_stream(
        opened.body,
        opened.decoder,
        Arc::downgrade(&link),
    ));
    link.set_closer(Box::new(Reader(reader.abort_handle())));
    Ok(link)
}

/// Whether the upstream's URL serves the HTTP+SSE transport (it opens an SSE
/// stream announcing an endpoint); the probe's stream is dropped at once.
pub async fn probe(upstream: &HttpEndpoint) -> bool {
    open(upstream, PROBE_WAIT).await.is_ok()
}

async fn read_stream(mut body: ByteStream, mut decoder: sse::Decoder, link: Weak<Link>) {
    let reason = loop {
        let chunk = body.next().await;
        let Some(link) = link.upgrade() else { return };
        match chunk {
            Some(Ok(chunk)) => match decoder.feed(&chunk) {
                Ok(events) => events
                    .into_iter()
                    .filter_map(message_data)
                    .for_each(|m| link.incoming(m)),
                Err(e) => break format!("upstream SSE stream is malformed: {e}"),
            },
            Some(Err(e)) => break format!("upstream SSE stream failed: {e}"),
            None => break "upstream SSE stream ended".to_owned(),
        }
    };
    if let Some(link) = link.upgrade() {
        link.fail(&reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_stay_on_the_stream_origin() {
        let base = reqwest::Url::parse("http://127.0.0.1:9000/sse").unwrap();
        assert_eq!(
            same_origin_endpoint(&base, "/messages?session_id=abc")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9000/messages?session_id=abc"
        );
        assert!(same_origin_endpoint(&base, "http://127.0.0.1:9000/m").is_ok());
        assert!(same_origin_endpoint(&base, "http://evil.example/m").is_err());
        assert!(same_origin_endpoint(&base, "https://127.0.0.1:9000/m").is_err());
    }
}
