//! The node-to-node channel: requests one node passes to another, carrying
//! proof of the shared cluster secret. A node without the secret neither
//! sends nor accepts them.
//!
//! The proof is an HMAC of a fixed context under the secret: a bearer
//! credential like a client's token, so the channel belongs on a private
//! network or behind TLS (`cluster.advertise = "https://…"`).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ring::hmac;

use super::members::Peer;

/// Carries the proof of the cluster secret.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("tether-cluster-token");
/// Names the node that passed the request on (and marks it as passed on).
pub const FROM_HEADER: HeaderName = HeaderName::from_static("tether-forwarded-by");

/// What the proof is computed over.
const CONTEXT: &[u8] = b"tether cluster channel v1";

/// Headers that belong to one hop (RFC 9110 section 7.6.1) or that the
/// channel sets itself: never passed on.
fn passes_on(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    ) && *name != TOKEN_HEADER
        && *name != FROM_HEADER
}

/// Why a request did not reach, or did not come back from, a peer.
#[derive(Debug)]
pub enum SendError {
    /// The peer refused the connection: nothing was sent, and nothing
    /// listens at its address any more (it is gone).
    Refused(reqwest::Error),
    /// No connection could be made otherwise (a timeout: a busy or cut-off
    /// peer): nothing was sent.
    NotSent(reqwest::Error),
    /// The request may have been delivered; its outcome is unknown.
    Broken(reqwest::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Refused(e) => write!(f, "node refused the connection: {e}"),
            SendError::NotSent(e) => write!(f, "node not reached: {e}"),
            SendError::Broken(e) => write!(f, "node did not answer: {e}"),
        }
    }
}

/// Whether a failed request's connection was refused (found in its causes).
fn refused(e: &reqwest::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cause = c.source();
    }
    false
}

/// The authenticated channel to the other nodes.
pub struct Channel {
    key: hmac::Key,
    token: HeaderValue,
    client: reqwest::Client,
}

impl Channel {
    /// The channel of the nodes sharing `secret`.
    pub fn new(secret: &str) -> Result<Channel, reqwest::Error> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let proof = hmac::sign(&key, CONTEXT);
        let hex: String = proof.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut token = HeaderValue::from_str(&hex).expect("hex is a valid header value");
        token.set_sensitive(true);
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            // Shorter than the time a node keeps an idle connection open
            // (30 s), so a connection is never reused as the peer closes it.
            .pool_idle_timeout(Duration::from_secs(15))
            .build()?;
        Ok(Channel { key, token, client })
    }

    /// The proof of the secret, as sent in [`TOKEN_HEADER`].
    pub fn token(&self) -> HeaderValue {
        self.token.clone()
    }

    /// The HTTP client of the channel (its connections are shared).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Whether `headers` carry proof of the secret (checked in constant time).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(tag) = decode_hex(given) else {
            return false;
        };
        hmac::verify(&self.key, CONTEXT, &tag).is_ok()
    }

    /// Passes a client's request on to `peer` as it came (`path` with its
    /// query; `headers` minus those of one hop), marked as passed on by
    /// node `from`; the response comes back as the peer produces it.
    pub async fn send(
        &self,
        peer: &Peer,
        from: &str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, SendError> {
        let url = format!("{}{path}", peer.address.trim_end_matches('/'));
        let mut outgoing = HeaderMap::with_capacity(headers.len() + 2);
        for (name, value) in headers.iter().filter(|(n, _)| passes_on(n)) {
            outgoing.append(name.clone(), value.clone());
        }
        outgoing.insert(TOKEN_HEADER, self.token.clone());
        if let Ok(from) = HeaderValue::from_str(from) {
            outgoing.insert(FROM_HEADER, from);
        }
        self.client
            .request(method, url)
            .headers(outgoing)
            .body(body)
            .send()
            .await
            .map_err(|e| match (e.is_connect(), refused(&e)) {
                (true, true) => SendError::Refused(e),
                (true, false) => SendError::NotSent(e),
                (false, _) => SendError::Broken(e),
            })
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether a request says another node passed it on.
pub fn is_passed_on(headers: &HeaderMap) -> bool {
    headers.contains_key(FROM_HEADER)
}

/// Response headers that belong to one hop: not relayed back to the client.
pub fn relays_back(name: &HeaderName) -> bool {
    passes_on(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_is_admitted() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ours = Channel::new("s3cret").unwrap();
        let theirs = Channel::new("other").unwrap();
        let mut headers = HeaderMap::new();
        assert!(!ours.admits(&headers), "no proof");
        headers.insert(TOKEN_HEADER, ours.token.clone());
        assert!(ours.admits(&headers));
        assert!(!theirs.admits(&headers), "another cluster's secret");
        headers.insert(TOKEN_HEADER, HeaderValue::from_static("zz"));
        assert!(!ours.admits(&headers), "not hex");
    }

    #[tokio::test]
    async fn a_refused_connection_is_told_apart() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let channel = Channel::new("s3cret").unwrap();
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let gone = Peer {
            node: "gone".into(),
            address: format!("http://127.0.0.1:{port}").into(),
        };
        let sent = channel
            .send(
                &gone,
                "me",
                Method::POST,
                "/mcp",
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await;
        assert!(matches!(sent, Err(SendError::Refused(_))), "{sent:?}");
    }

    #[test]
    fn hop_headers_stay_behind() {
        for kept in ["authorization", "mcp-session-id", "host", "last-event-id"] {
            assert!(passes_on(&HeaderName::from_static(kept)), "{kept}");
        }
        for dropped in ["connection", "transfer-encoding", "content-length"] {
            assert!(!passes_on(&HeaderName::from_static(dropped)), "{dropped}");
        }
        assert!(!passes_on(&TOKEN_HEADER) && !passes_on(&FROM_HEADER));
    }
}
