//! The heads of HTTP/1.1 messages the lean client exchanges: a request head
//! written straight into the bytes sent, and a response head parsed out of
//! the read buffer together with how its body is framed.

use std::io::Write;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::framing::Framing;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 100;

/// Appends a request head to `out`: the request line, `Host`, the
/// `configured` headers then the `extra` ones, and a `Content-Length` for
/// `body_len` (when the method carries a body).
pub fn write_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: &str,
    configured: &HeaderMap,
    extra: &[(HeaderName, HeaderValue)],
    body_len: Option<usize>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // A `Host` the upstream's definition sets replaces the URL's.
    if !configured.contains_key(http::header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let extra = extra.iter().map(|(name, value)| (name, value));
    for (name, value) in configured.iter().chain(extra) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = body_len {
        let _ = write!(out, "content-length: {n}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// A response head that is not valid HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError(pub String);

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed HTTP/1.1 response head: {}", self.0)
    }
}

impl std::error::Error for HeadError {}

/// Parses a response head off the front of `buf` (to a request with
/// `method`); `None` when more bytes are needed.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HeadError("response head too large".into()));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError(e.to_string())),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|e| HeadError(e.to_string()))?;
    let http10 = parsed.version == Some(0);
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut length = None;
    let mut chunked = false;
    let mut close = http10;
    for h in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| HeadError(e.to_string()))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|e| HeadError(e.to_string()))?;
        if name == http::header::CONTENT_LENGTH {
            let digits = h.value.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(HeadError("bad content-length".into()));
            }
            let n = std::str::from_utf8(digits)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| HeadError("bad content-length".into()))?;
            if length.is_some_and(|m| m != n) {
                return Err(HeadError("conflicting content-length".into()));
            }
            length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            // Tether asks for no content coding; a compressed body it could
            // not read is refused rather than relayed as if it were JSON.
            chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !chunked {
                return Err(HeadError("unsupported transfer-encoding".into()));
            }
        } else if name == http::header::CONNECTION {
            let tokens = h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii);
            for token in tokens {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    let bodyless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (bodyless, chunked, length) {
        (true, ..) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    };
    // Both lengths at once may be an attempt at response smuggling: the
    // chunked coding wins and the connection is not reused (RFC 9112 §6.3).
    if chunked && length.is_some() {
        close = true;
    }
    let _ = buf.split_to(len);
    Ok(Some(ResponseHead {
        status,
        headers,
        keep_alive: !close && framing != Framing::UntilClose,
        framing,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_request_head() {
        let mut configured = HeaderMap::new();
        configured.insert("x-api-key", HeaderValue::from_static("k"));
        let extra = [(
            HeaderName::from_static("mcp-session-id"),
            HeaderValue::from_static("abc"),
        )];
        let mut out = Vec::new();
        write_request(
            &mut out,
            &Method::POST,
            "/mcp?x=1",
            "127.0.0.1:9",
            &configured,
            &extra,
            Some(12),
        );
        assert_eq!(
            out,
            b"POST /mcp?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-api-key: k\r\nmcp-session-id: abc\r\ncontent-length: 12\r\n\r\n"
        );
        // A configured Host replaces the URL's.
        configured.insert("host", HeaderValue::from_static("mcp.internal"));
        let mut out = Vec::new();
        write_request(
            &mut out,
            &Method::GET,
            "/mcp",
            "127.0.0.1:9",
            &configured,
            &[],
            None,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("host: ").count(), 1, "{text}");
        assert!(text.contains("host: mcp.internal\r\n"), "{text}");
    }

    fn parse(raw: &[u8], method: &Method) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(raw);
        let head = parse_response(&mut buf, method)?;
        if head.is_some() {
            assert!(
                b"BODY".starts_with(&buf),
                "the head is taken off the buffer"
            );
        }
        Ok(head)
    }

    fn head(raw: &[u8], method: &Method) -> ResponseHead {
        parse(raw, method).unwrap().expect("a complete head")
    }

    #[test]
    fn reads_framing_and_keep_alive() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nMcp-Session-Id: s\r\n\r\nBODY",
            &Method::POST,
        );
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(4));
        assert!(h.keep_alive);
        assert_eq!(h.headers["mcp-session-id"], "s");

        let h = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);

        let h = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::POST,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(
            !h.keep_alive,
            "a response with both lengths is not kept alive"
        );

        let h = head(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);

        let h = head(b"HTTP/1.1 202 Accepted\r\n\r\n", &Method::POST);
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head(b"HTTP/1.1 204 No Content\r\n\r\n", &Method::POST);
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);

        let h = head(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            &Method::POST,
        );
        assert!(!h.keep_alive);
        let h = head(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            &Method::POST,
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn incomplete_and_bad_heads() {
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::POST)
                .unwrap()
                .is_none()
        );
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                &Method::POST
            )
            .is_err()
        );
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &Method::POST
            )
            .is_err()
        );
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                &Method::POST
            )
            .is_err()
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(
                parse(bad, &Method::POST).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert!(parse(&huge, &Method::POST).is_err());
    }
}
