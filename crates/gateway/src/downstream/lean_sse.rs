//! A lean HTTP/1.1 path for HTTP+SSE streams. A connection whose first
//! request is `GET /sse` (or `/u/<upstream>/sse`) is served here instead of by
//! the general HTTP stack, which keeps two 8 KiB buffers per connection for
//! its lifetime: for thousands of idle streams that is most of the memory.
//! The request goes through the same routes and checks as any other (so the
//! response is the same: same checks, same stream, same cleanup); only the
//! connection is handled here: the response is written close-delimited, the
//! connection ends with the stream, and the client hanging up is noticed
//! from the read side.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tether_wire::jsonrpc::code;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

use super::reply;

/// Largest request head accepted on this path.
const MAX_HEAD: usize = 16 * 1024;
/// Headers accepted on this path.
const MAX_HEADERS: usize = 64;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest non-stream answer (an error) written on this path.
const MAX_ANSWER: usize = 64 * 1024;

/// Whether the bytes that start a connection are a request for an SSE
/// stream (`GET /sse`, `GET /u/<name>/sse` or `GET /v/<name>/sse`, query
/// allowed). Anything else, including a request line that has not fully
/// arrived, goes to the router.
pub fn is_stream_request(start: &[u8]) -> bool {
    let Some(rest) = start.strip_prefix(b"GET /") else {
        return false;
    };
    let Some(end) = rest.iter().position(|b| *b == b' ' || *b == b'?') else {
        return false;
    };
    let path = &rest[..end];
    if path == b"sse" {
        return true;
    }
    (path
        .strip_prefix(b"u/")
        .or_else(|| path.strip_prefix(b"v/")))
    .and_then(|p| p.strip_suffix(b"/sse"))
    .is_some_and(|name| {
        !name.is_empty()
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    })
}

/// Serves one SSE request on `io` with `routes` and closes the connection
/// when the stream ends.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(routes: axum::Router, mut io: S) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut io)).await {
        Ok(Ok(head)) => head,
        _ => return,
    };
    let resp = match parse(&head).and_then(|(target, headers)| request(&target, headers)) {
        Ok(req) => match routes.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        Err(text) => reply::error(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, text),
    };
    drop(head);
    let _ = write_response(&mut io, resp).await;
}

/// Reads up to the end of the request head (bounded).
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// A `GET` for `target` with `headers`, as the routes take it.
fn request(target: &str, headers: HeaderMap) -> Result<http::Request<Body>, &'static str> {
    let mut req = http::Request::get(target)
        .body(Body::empty())
        .map_err(|_| "bad request target")?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// The target and headers of a `GET` request head.
fn parse(head: &[u8]) -> Result<(String, HeaderMap), &'static str> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("malformed request head"),
    }
    let target = req.path.unwrap_or("/").to_owned();
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "bad header name")?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| "bad header value")?;
        headers.append(name, value);
    }
    Ok((target, headers))
}

/// Writes `resp`: a stream close-delimited until it ends or the client
/// leaves; anything else with its length.
async fn write_response<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    resp: Response,
) -> std::io::Result<()> {
    let (parts, body) = resp.into_parts();
    let streaming = parts.status == StatusCode::OK;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !streaming {
        let body = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        head.extend_from_slice(b"connection: close\r\n\r\n");
        head.extend_from_slice(&body);
        io.write_all(&head).await?;
        return io.shutdown().await;
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    io.write_all(&head).await?;
    drop(head);
    let mut body = std::pin::pin!(body);
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        io.write_all(&data).await?;
                    }
                }
                _ => break,
            },
            // The client sends nothing more on a stream: a read completing
            // means it hung up (or broke the protocol); either way, done.
            _ = io.read(&mut probe) => break,
        }
    }
    io.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_stream_requests_only() {
        for yes in [
            &b"GET /sse HTTP/1.1\r\n"[..],
            b"GET /sse?x=1 HTTP/1.1",
            b"GET /u/demo/sse HTTP/1.1",
            b"GET /u/a-b_c/sse HTTP/1.1",
            b"GET /v/desk/sse HTTP/1.1",
        ] {
            assert!(is_stream_request(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"GET /sse"[..],
            b"POST /sse HTTP/1.1",
            b"GET /mcp HTTP/1.1",
            b"GET /u//sse HTTP/1.1",
            b"GET /u/a/b/sse HTTP/1.1",
            b"GET /x/desk/sse HTTP/1.1",
            b"GET /v//sse HTTP/1.1",
            b"GET /ssex HTTP/1.1",
            b"GET /message?session_id=x HTTP/1.1",
            b"",
        ] {
            assert!(!is_stream_request(no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn parses_heads_and_rejects_garbage() {
        let (target, headers) = parse(
            b"GET /u/demo/sse?a=b HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .unwrap();
        assert_eq!(target, "/u/demo/sse?a=b");
        assert_eq!(headers["host"], "localhost");
        assert!(parse(b"GET /sse HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
        assert!(parse(b"\x00\x01\x02\r\n\r\n").is_err());
    }
}
