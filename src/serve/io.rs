//! The connection's socket as hyper sees it: the TCP stream, with read and write progress
//! noted in the connection's [`ConnState`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::net::TcpStream;

use crate::connections::ConnState;

pin_project! {
    /// The connection's socket, noting write progress in its [`ConnState`] so that the drain
    /// can tell a connection still sending a response from one that does nothing.
    #[derive(Debug)]
    pub(super) struct ProgressIo {
        #[pin]
        pub(super) inner: TcpStream,
        pub(super) conn: Arc<ConnState>,
    }
}

impl tokio::io::AsyncRead for ProgressIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let read = ready!(this.inner.poll_read(cx, buf));
        if buf.filled().len() > before {
            this.conn.read();
        }
        Poll::Ready(read)
    }
}

impl tokio::io::AsyncWrite for ProgressIo {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let written = ready!(this.inner.poll_write(cx, buf));
        this.conn.wrote();
        Poll::Ready(written)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let written = ready!(this.inner.poll_write_vectored(cx, bufs));
        this.conn.wrote();
        Poll::Ready(written)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
