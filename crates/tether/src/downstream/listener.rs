//! Accepted connections: `TCP_NODELAY`, and a write-stall timeout that cuts
//! off a peer which stopped reading (DESIGN invariant 9). A response blocked
//! on a full socket for longer than the send timeout fails the connection,
//! which ends its body — and so runs the cleanup of a stream bound to it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// A TCP listener whose connections time out stalled writes.
pub struct Listener {
    inner: TcpListener,
    send_timeout: Duration,
}

impl Listener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, send_timeout: Duration) -> Self {
        Listener {
            inner,
            send_timeout,
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = StallGuarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return (StallGuarded::new(tcp, self.send_timeout), addr);
                }
                // Out of descriptors or a connection reset before accept:
                // pause briefly instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
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
