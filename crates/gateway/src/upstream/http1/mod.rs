//! A lean HTTP/1.1 client for plain-`http://` upstreams, the relay's hot
//! path: a request is one write of its head and body on a pooled
//! connection, and its response is read and decoded in the caller's own
//! task — no connection task, no channel between them, no wake-up of
//! another task per call. HTTPS and HTTP/2 upstreams take the general
//! client instead (see `super::endpoint`).
//!
//! A connection goes back to its pool when its response body has been read
//! to the end and both sides allow keep-alive; a response dropped before
//! its end drops the connection. A pooled connection the upstream closed
//! while idle is noticed before reuse (the socket reads EOF) and replaced;
//! a request whose write fails on a reused connection before any of its
//! bytes left is written once more on a new one — never one that may have
//! partly arrived. Connections carry TCP keepalive, so a silent peer fails
//! a quiet stream instead of holding it forever.

mod framing;
mod head;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sync::lock;
pub use framing::FramingError;
use framing::{Decoder, Framing, Step};
pub use head::HeadError;

/// Idle connections kept per upstream at most.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bodies up to this size are copied behind the head and sent in one write.
const INLINE_BODY: usize = 64 * 1024;
/// Read buffer growth per read.
const READ_SIZE: usize = 8 * 1024;
/// TCP keepalive: first probe after this much silence, then every this long.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// TCP keepalive probes unanswered before the connection is dead.
const KEEPALIVE_PROBES: u32 = 3;
/// Data unacknowledged this long fails the connection (Linux).
#[cfg(any(target_os = "linux", target_os = "android"))]
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug)]
pub enum Error {
    /// No connection could be made (nothing was sent).
    Connect(io::Error),
    /// Connecting took longer than the connect timeout (nothing was sent).
    ConnectTimeout,
    /// The connection failed after the request was (perhaps) sent.
    Io(io::Error),
    /// The upstream closed the connection before its response was complete.
    Closed,
    /// The response head is not valid HTTP/1.1.
    Head(HeadError),
    /// The response body breaks its framing.
    Framing(FramingError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::ConnectTimeout => f.write_str("connect timed out"),
            Error::Io(e) => write!(f, "connection: {e}"),
            Error::Closed => f.write_str("connection closed before the response was complete"),
            Error::Head(e) => write!(f, "{e}"),
            Error::Framing(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::Io(e) => Some(e),
            Error::Head(e) => Some(e),
            Error::Framing(e) => Some(e),
            Error::Closed | Error::ConnectTimeout => None,
        }
    }
}

impl Error {
    /// Whether the request provably never left Tether.
    pub fn not_sent(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::ConnectTimeout)
    }
}

/// Where connections go: an IP address, or a name resolved per connection.
#[derive(Debug, Clone)]
enum Target {
    Ip(std::net::SocketAddr),
    Name(String, u16),
}

/// One open connection and what has been read from it but not yet used.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Whether an idle connection is still usable: the upstream has neither
    /// closed it nor sent anything unasked. Uses tokio's cached readiness,
    /// so a quiet socket costs no system call.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The connections to one upstream origin.
struct Pool {
    target: Target,
    /// The `Host` header: the URL's authority as written.
    host: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// The most recently used idle connection that is still open.
    fn take(&self) -> Option<Conn> {
        let mut idle = lock(&self.idle);
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT && entry.conn.still_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn give_back(&self, mut conn: Conn) {
        // An idle connection holds no read buffer (the last one may sit in
        // a large allocation a big response head grew); the next read
        // allocates one.
        conn.buf = BytesMut::new();
        let mut idle = lock(&self.idle);
        // The oldest come first: close those idle too long (after a burst
        // they would otherwise stay open until taken).
        let expired = idle
            .iter()
            .take_while(|e| e.since.elapsed() >= IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let connecting = async {
            match &self.target {
                Target::Ip(addr) => TcpStream::connect(addr).await,
                Target::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
            }
        };
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| Error::ConnectTimeout)?
            .map_err(Error::Connect)?;
        let _ = stream.set_nodelay(true);
        keep_alive(&stream);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
        })
    }
}

/// Makes a silent peer (powered off, partitioned, dropped by a NAT) fail
/// the connection within about a minute, even on a stream that waits for
/// events without a timeout of its own.
fn keep_alive(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&probes);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_tcp_user_timeout(Some(USER_TIMEOUT));
}

/// A client for one `http://` origin (see the module documentation).
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("http1::Client")
            .field("host", &self.pool.host)
            .finish()
    }
}

impl Client {
    /// A client for `url`'s origin, or `None` when the URL is not plain
    /// `http://` without credentials in it (those take the general client).
    pub fn for_url(url: &url::Url, connect_timeout: Duration) -> Option<Client> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let port = url.port_or_known_default()?;
        let target = match url.host()? {
            url::Host::Ipv4(ip) => Target::Ip((ip, port).into()),
            url::Host::Ipv6(ip) => Target::Ip((ip, port).into()),
            url::Host::Domain(name) => Target::Name(name.to_owned(), port),
        };
        let host = url[url::Position::BeforeHost..url::Position::AfterPort].to_owned();
        Some(Client {
            pool: Arc::new(Pool {
                target,
                host,
                connect_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Sends one request to `target` (a path and query on this origin) and
    /// reads its response head; the body is read from the [`Response`].
    pub async fn send(
        &self,
        method: &Method,
        target: &str,
        configured: &HeaderMap,
        extra: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, Error> {
        let carries_body = !body.is_empty() || *method == Method::POST || *method == Method::PUT;
        let inline = body.len() <= INLINE_BODY;
        let mut out = Vec::with_capacity(256 + if inline { body.len() } else { 0 });
        head::write_request(
            &mut out,
            method,
            target,
            &self.pool.host,
            configured,
            extra,
            carries_body.then_some(body.len()),
        );
        // The request as written: the head (with a small body behind it),
        // then a large body as it is.
        let tail: &[u8] = if inline {
            out.extend_from_slice(&body);
            &[]
        } else {
            &body
        };
        let request = [out.as_slice(), tail];
        let mut conn = match self.pool.take() {
            Some(mut conn) => match write(&mut conn, request).await {
                Ok(()) => conn,
                // The upstream had closed it before a byte left: nothing
                // was delivered, so the request goes out on a new one.
                Err(Unsent::Nothing(_)) => self.fresh(request).await?,
                // Part of it may have arrived: never sent again.
                Err(Unsent::Partly(e)) => return Err(Error::Io(e)),
            },
            None => self.fresh(request).await?,
        };
        let head = loop {
            match head::parse_response(&mut conn.buf, method).map_err(Error::Head)? {
                // 100 Continue and other interim answers precede the real one.
                Some(head) if head.status.is_informational() => continue,
                Some(head) => break head,
                None => read_more(&mut conn).await?,
            }
        };
        let mut body = Body {
            conn: Some(conn),
            decoder: Decoder::new(head.framing),
            keep_alive: head.keep_alive,
            pool: self.pool.clone(),
            failed: false,
        };
        body.release_if_done();
        Ok(Response {
            status: head.status,
            headers: head.headers,
            content_length: match head.framing {
                Framing::Length(n) => Some(n),
                Framing::Empty => Some(0),
                Framing::Chunked | Framing::UntilClose => None,
            },
            body,
        })
    }

    /// A new connection with the request written on it.
    async fn fresh(&self, request: [&[u8]; 2]) -> Result<Conn, Error> {
        let mut conn = self.pool.connect().await?;
        match write(&mut conn, request).await {
            Ok(()) => Ok(conn),
            Err(Unsent::Nothing(e) | Unsent::Partly(e)) => Err(Error::Io(e)),
        }
    }
}

/// A request write that failed: before any byte left, or after some did.
enum Unsent {
    Nothing(io::Error),
    Partly(io::Error),
}

/// Writes the request's parts in order.
async fn write(conn: &mut Conn, parts: [&[u8]; 2]) -> Result<(), Unsent> {
    let mut sent = 0usize;
    for part in parts {
        let mut rest = part;
        while !rest.is_empty() {
            let written = match conn.stream.write(rest).await {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                other => other,
            };
            match written {
                Ok(n) => {
                    sent += n;
                    rest = &rest[n..];
                }
                Err(e) if sent == 0 => return Err(Unsent::Nothing(e)),
                Err(e) => return Err(Unsent::Partly(e)),
            }
        }
    }
    Ok(())
}

async fn read_more(conn: &mut Conn) -> Result<(), Error> {
    conn.buf.reserve(READ_SIZE);
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) => Err(Error::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Io(e)),
    }
}

/// A response: its head, and its body to read.
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body's length, when the head gives it.
    pub content_length: Option<u64>,
    /// The body.
    pub body: Body,
}

/// A response body being read off its connection.
pub struct Body {
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Arc<Pool>,
    /// A read failed: the body stays failed (never looks complete).
    failed: bool,
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if self.failed {
            return Err(Error::Closed);
        }
        let next = self.next_chunk().await;
        if next.is_err() {
            self.failed = true;
            self.conn = None;
        }
        next
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match self.decoder.decode(&mut conn.buf).map_err(Error::Framing)? {
                Step::Data(data) => return Ok(Some(data)),
                Step::Done => {
                    self.release_if_done();
                    return Ok(None);
                }
                Step::Incomplete => match read_more(conn).await {
                    Err(Error::Closed) if self.decoder.ends_at_close() => {
                        self.conn = None;
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                    Ok(()) => {}
                },
            }
        }
    }

    /// Hands the connection back once the body is complete (and the
    /// connection may carry another request).
    fn release_if_done(&mut self) {
        if !self.decoder.is_done() {
            return;
        }
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.pool.give_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next of
    /// `answers` (raw bytes) and closes the connection after the last one,
    /// counting connections.
    async fn server(
        answers: Vec<&'static [u8]>,
    ) -> (url::Url, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answer in answers {
                        // Read one request: head, then its content-length body.
                        loop {
                            let mut chunk = [0u8; 4096];
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            let text = String::from_utf8_lossy(&buf).to_string();
                            if let Some(end) = text.find("\r\n\r\n") {
                                let len = text[..end]
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |v| v.parse::<usize>().unwrap());
                                if buf.len() >= end + 4 + len {
                                    buf.drain(..end + 4 + len);
                                    break;
                                }
                            }
                        }
                        s.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (url, conns)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    async fn post(client: &Client, body: &'static [u8]) -> Result<Response, Error> {
        let body = Bytes::from_static(body);
        client
            .send(&Method::POST, "/mcp", &HeaderMap::new(), &[], body)
            .await
    }

    async fn body(mut r: Response) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = r.body.chunk().await.unwrap() {
            out.extend_from_slice(&c);
        }
        out
    }

    #[tokio::test]
    async fn reuses_a_kept_alive_connection() {
        let (url, conns) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let client = Client::for_url(&url, Duration::from_secs(5)).unwrap();
        let r = post(&client, b"{}").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_length, Some(5));
        assert_eq!(body(r).await, b"first");
        let keepalive = {
            let idle = lock(&client.pool.idle);
            socket2::SockRef::from(&idle[0].conn.stream)
                .keepalive()
                .unwrap()
        };
        assert!(keepalive, "pooled connections carry TCP keepalive");
        let r = post(&client, b"{}").await.unwrap();
        assert_eq!(body(r).await, b"second");
        // Not read at all: an empty body still frees the connection.
        let r = post(&client, b"").await.unwrap();
        assert_eq!(r.status, StatusCode::ACCEPTED);
        drop(r);
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer() {
        // A 40 KiB response head grows the read buffer while it arrives.
        let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-big: ".to_vec();
        big.resize(big.len() + 40_000, b'x');
        big.extend_from_slice(b"\r\n\r\nok");
        let (url, _) = server(vec![Box::leak(big.into_boxed_slice()), OK]).await;
        let client = Client::for_url(&url, Duration::from_secs(5)).unwrap();
        let r = post(&client, b"{}").await.unwrap();
        assert_eq!(r.headers["x-big"].len(), 40_000);
        assert_eq!(body(r).await, b"ok");
        let kept = lock(&client.pool.idle)[0].conn.buf.capacity();
        assert_eq!(kept, 0, "an idle connection holds no read buffer");
        let r = post(&client, b"{}").await.unwrap();
        assert_eq!(body(r).await, b"ok");
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // Each connection answers once, then the server closes it.
        let (url, conns) = server(vec![OK]).await;
        let client = Client::for_url(&url, Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            let r = post(&client, b"{}").await.unwrap();
            assert_eq!(body(r).await, b"ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_response_cut_short_is_an_error() {
        let (url, _) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let client = Client::for_url(&url, Duration::from_secs(5)).unwrap();
        let mut r = post(&client, b"{}").await.unwrap();
        assert_eq!(
            r.body.chunk().await.unwrap().as_deref(),
            Some(&b"short"[..])
        );
        assert!(matches!(r.body.chunk().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn refused_connections_were_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url =
            url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let client = Client::for_url(&url, Duration::from_secs(5)).unwrap();
        let e = post(&client, b"").await.err().unwrap();
        assert!(e.not_sent(), "{e}");
    }

    #[test]
    fn only_plain_http_takes_this_client() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(Client::for_url(&url("https://example.com/mcp"), Duration::ZERO).is_none());
        assert!(Client::for_url(&url("http://u:p@example.com/mcp"), Duration::ZERO).is_none());
        let c = Client::for_url(&url("http://[::1]:8080/mcp"), Duration::ZERO).unwrap();
        assert_eq!(c.pool.host, "[::1]:8080");
        let c = Client::for_url(&url("http://example.com/mcp"), Duration::ZERO).unwrap();
        assert_eq!(c.pool.host, "example.com");
    }
}
