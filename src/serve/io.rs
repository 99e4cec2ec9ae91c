//! The connection's socket as hyper sees it: the TCP stream, with read and write progress
//! noted in the connection's [`ConnState`], handed back to the connection's task when hyper
//! drops it so that the close can linger.
//!
//! After a `101 Switching Protocols` the socket outlives hyper's connection: hyper hands it to
//! the application (a WebSocket) inside its `Upgraded`. Its drop then ends the upgraded
//! request ([`ConnState::release_upgrade`]) and closes it, and the drain deadline makes its
//! reads and writes fail ([`ConnState::cut_upgrade`]).

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

/// The error of an upgraded connection's reads and writes once the drain deadline cut it.
fn cut() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the drain deadline (PODCYCLE_DRAIN_TIMEOUT) closed this upgraded connection",
    )
}

impl Drop for ProgressIo {
    fn drop(&mut self) {
        if self.conn.is_upgraded() {
            // The application's upgraded connection ended: closed here, not lingered (the
            // protocol on it is the application's).
            self.conn.release_upgrade();
            return;
        }
        if let Some(socket) = self.inner.take() {
            self.conn.keep_socket(socket);
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Notes an HTTP/2 connection from its first bytes, so that the sweep gives a client that
/// connects ahead of its first request the idle timeout, not the header-read one.
#[cold]
#[inline(never)]
fn first_read(conn: &ConnState, bytes: &[u8]) {
    if bytes.starts_with(PREFACE) {
        conn.saw_http2();
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
        if this.conn.is_upgraded() && this.conn.upgraded_read_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
        let before = buf.filled().len();
        let read = ready!(this.socket().poll_read(cx, buf));
        if buf.filled().len() > before && this.conn.read() == 0 {
            // The connection's first bytes: an HTTP/2 client starts with the preface.
            first_read(&this.conn, &buf.filled()[before..]);
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
        if this.conn.is_upgraded() && this.conn.upgraded_write_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
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
        if this.conn.is_upgraded() && this.conn.upgraded_write_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
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
        let this = self.get_mut();
        if this.conn.is_upgraded() && this.conn.upgraded_write_cut(cx.waker()) {
            return Poll::Ready(Err(cut()));
        }
        this.socket().poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().socket().poll_shutdown(cx)
    }
}
