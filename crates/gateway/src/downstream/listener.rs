//! Accepted connections: `TCP_NODELAY`, a write-stall timeout that cuts off
//! a peer which stopped reading ([invariant: streams-stay-alive]), and the choice between
//! the router and the lean SSE path. A response blocked on a full socket for
//! longer than the send timeout fails the connection, which ends its body —
//! and so runs the cleanup of a stream bound to it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;

/// How long a new connection may stay silent before it is handed to the
/// router anyway (which then waits for its request as usual).
const CLASSIFY_WAIT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the router.
const BACKLOG: usize = 1024;

type Accepted = (StallGuarded<TcpStream>, SocketAddr);

/// The TCP listener: connections time out stalled writes, and a connection
/// that opens with an SSE stream request is served on the lean path
/// ([`super::lean_sse`]); the rest go to the HTTP stack.
pub struct Listener {
    accepted: mpsc::Receiver<Accepted>,
    local: SocketAddr,
    acceptor: tokio::task::AbortHandle,
}

impl Listener {
    /// Starts accepting on `inner`; connections that open with an SSE
    /// stream request are served by `routes` on the lean path.
    pub fn new(
        inner: TcpListener,
        send_timeout: Duration,
        routes: axum::Router,
    ) -> io::Result<Self> {
        let local = inner.local_addr()?;
        let (tx, accepted) = mpsc::channel(BACKLOG);
        let acceptor = tokio::spawn(accept(inner, send_timeout, routes, tx)).abort_handle();
        Ok(Listener {
            accepted,
            local,
            acceptor,
        })
    }
}

/// Stops accepting (graceful shutdown drops the listener); streams already
/// served on the lean path end with their sessions.
impl Drop for Listener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept(
    inner: TcpListener,
    send_timeout: Duration,
    routes: axum::Router,
    router: mpsc::Sender<Accepted>,
) {
    loop {
        let (tcp, addr) = match inner.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or a connection reset before accept:
            // pause briefly instead of spinning.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (routes, router) = (routes.clone(), router.clone());
        tokio::spawn(async move {
            let io = StallGuarded::new(tcp, send_timeout);
            if opens_stream(io.get_ref()).await {
                super::lean_sse::serve(routes, io).await;
            } else {
                let _ = router.send((io, addr)).await;
            }
        });
    }
}

/// Whether the connection's first bytes ask for an SSE stream (peeked, not consumed).
async fn opens_stream(tcp: &TcpStream) -> bool {
    let mut start = [0u8; 64];
    match tokio::time::timeout(CLASSIFY_WAIT, tcp.peek(&mut start)).await {
        Ok(Ok(n)) => super::lean_sse::is_stream_request(&start[..n]),
        _ => false,
    }
}

impl axum::serve::Listener for Listener {
    type Io = StallGuarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor only stops with the listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// An I/O stream whose writes fail once they have waited longer than a limit
/// for the peer to make room.
pub struct StallGuarded<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits (allocated only then).
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuarded<S> {
    /// Guards `inner` with `limit`.
    pub fn new(inner: S, limit: Duration) -> Self {
        StallGuarded {
            inner,
            limit,
            stalled: None,
        }
    }

    /// The guarded stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Passes a ready result through (disarming the timer) or, while the
    /// write waits, fails it once the limit has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write() {
        // A small in-memory pipe nobody reads: the writer fills it and stalls.
        let (near, _far) = tokio::io::duplex(64);
        let mut guarded = StallGuarded::new(near, Duration::from_millis(100));
        let start = std::time::Instant::now();
        let result = guarded.write_all(&[0u8; 4096]).await;
        let e = result.expect_err("stalled write fails");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_reading_peer_is_never_cut_off() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut guarded = StallGuarded::new(near, Duration::from_millis(50));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut sink)
                .await
                .map(|_| sink.len())
        });
        for _ in 0..20 {
            guarded.write_all(&[1u8; 256]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        guarded.shutdown().await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap().unwrap(), 20 * 256);
    }
}
