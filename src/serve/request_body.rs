//! The request body as the application sees it: hyper's body, noting in the connection's
//! [`ConnState`] how many bytes arrived and whether the application is waiting for more, so
//! that the timeout sweep can close an HTTP/1 connection whose client sends its body too
//! slowly, or reset such an HTTP/2 stream (not its connection: the others on it go on).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::connections::{ConnState, StreamBody, Timeouts};
use crate::error::BoxError;

/// The body type the application's service receives: axum's, so an axum `Router` takes it
/// without boxing it again (it would box hyper's body itself).
pub(crate) type AppBody = axum::body::Body;

/// Wraps `body` for the application. A request with a body to come is watched (read rate);
/// one without (most `GET`s) is not. HTTP/1 watches the connection (one request at a time),
/// HTTP/2 the stream, when a minimum body rate is set: its per-stream state is made only once
/// the handler has to wait for a body byte, so a unary call whose body is there already costs
/// a reference count (the connection's), taken and given back.
///
/// Always inlined: with a second caller (a request admitted after waiting for an admission
/// slot) the compiler stopped inlining it into the serving path (+140 instructions a request).
#[inline(always)]
pub(crate) fn app_body(
    body: Incoming,
    conn: &Arc<ConnState>,
    http1: bool,
    timeouts: &Timeouts,
) -> AppBody {
    if body.is_end_stream() {
        AppBody::new(body)
    } else if http1 {
        AppBody::new(WatchedBody {
            inner: body,
            conn: conn.clone(),
        })
    } else if timeouts.min_body_rate.is_some() {
        AppBody::new(StreamWatchedBody {
            inner: body,
            conn: conn.clone(),
            watch: None,
        })
    } else {
        AppBody::new(body)
    }
}

pin_project! {
    /// An HTTP/2 stream's request body, registered with its connection's sweep once the
    /// handler waits for it; the sweep resets it when it arrives slower than the minimum rate.
    #[derive(Debug)]
    struct StreamWatchedBody {
        #[pin]
        inner: Incoming,
        conn: Arc<ConnState>,
        watch: Option<Arc<StreamBody>>,
    }
}

/// The error a request body slower than the minimum rate fails with (HTTP/2: the handler
/// stops waiting, hyper resets the stream once it is answered).
#[derive(Debug)]
pub(crate) struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the request body arrived slower than PODCYCLE_MIN_BODY_RATE while the handler \
             waited for it: the stream is reset",
        )
    }
}

impl std::error::Error for BodyTooSlow {}

impl Body for StreamWatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.watch.as_ref().is_some_and(|w| w.is_reset()) {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                let watch = this
                    .watch
                    .get_or_insert_with(|| this.conn.watch_stream_body());
                if !watch.wait(cx.waker()) {
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                if let Some(watch) = this.watch {
                    let bytes = match &frame {
                        Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len()),
                        _ => 0,
                    };
                    watch.arrived(bytes as u64);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// hyper's request body, counting the bytes that arrive and noting when the application
    /// waits for more.
    #[derive(Debug)]
    struct WatchedBody {
        #[pin]
        inner: Incoming,
        conn: Arc<ConnState>,
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Pending => this.conn.body_waiting(true),
            Poll::Ready(frame) => {
                let bytes = match frame {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len()),
                    _ => 0,
                };
                this.conn.body_arrived(bytes as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
