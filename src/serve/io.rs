//! The connection's socket as hyper sees it: the TCP stream, with read and write progress
//! noted in the connection's [`ConnState`], handed back to the connection's task when hyper
//! drops it so that the close can linger.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::connections::ConnState;

/// The connection's socket, noting write progress in its [`ConnState`] so that the drain
/// can tell a connection still sending a response from one that does nothing.
///
/// Dropped, it hands the socket to its [`ConnState`] instead of closing it:
/// [`super::linger`] then closes it without resetting bytes already written.
#[derive(Debug)]
pub(super) struct ProgressIo {
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
    conn: Arc<ConnState>,
}

impl ProgressIo {
    pub(super) fn new(inner: TcpStream, conn: Arc<ConnState>) -> ProgressIo {
        ProgressIo {
            inner: Some(inner),
            conn,
        }
    }

    #[inline]
    fn socket(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.inner.as_mut().expect("socket present until drop"))
    }
}

impl Drop for ProgressIo {
    fn drop(&mut self) {
        if let Some(socket) = self.inner.take() {
            self.conn.keep_socket(socket);
        }
    }
}

impl AsyncRead for ProgressIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = ready!(this.socket().poll_read(cx, buf));
        if buf.filled().len() > before {
            this.conn.read();
        }
        Poll::Ready(read)
    }
}

impl AsyncWrite for ProgressIo {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(this.socket().poll_write(cx, buf));
        this.conn.wrote();
        Poll::Ready(written)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(this.socket().poll_write_vectored(cx, bufs));
        this.conn.wrote();
        Poll::Ready(written)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().socket().poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().socket().poll_shutdown(cx)
    }
}
