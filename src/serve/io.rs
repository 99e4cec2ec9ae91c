//! The connection's socket as hyper sees it: the TCP stream, with read and write progress
//! noted in the connection's [`ConnState`].
//!
//! After a `101 Switching Protocols` the socket outlives hyper's connection: hyper hands it to
//! the application (a WebSocket) inside its `Upgraded`. Its drop then ends the upgraded
//! request ([`ConnState::release_upgrade`]), and the drain deadline makes its reads and
//! writes fail ([`ConnState::cut_upgrade`]).

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

    impl PinnedDrop for ProgressIo {
        fn drop(this: Pin<&mut Self>) {
            this.conn.release_upgrade();
        }
    }
}

/// The error of an upgraded connection's reads and writes once the drain deadline cut it.
fn cut() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the drain deadline (PODCYCLE_DRAIN_TIMEOUT) closed this upgraded connection",
    )
}

impl tokio::io::AsyncRead for ProgressIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if this.conn.is_upgraded() && this.conn.upgraded_read_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
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
        if this.conn.is_upgraded() && this.conn.upgraded_write_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
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
        if this.conn.is_upgraded() && this.conn.upgraded_write_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
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
        let this = self.project();
        if this.conn.is_upgraded() && this.conn.upgraded_write_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
        this.inner.poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
