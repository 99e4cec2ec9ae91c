//! The request body as the application sees it: hyper's body, noting in the connection's
//! [`ConnState`] how many bytes arrived and whether the application is waiting for more, so
//! that the timeout sweep can close a connection whose client sends its body too slowly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::connections::ConnState;

/// The body type the application's service receives: axum's, so an axum `Router` takes it
/// without boxing it again (it would box hyper's body itself).
pub(crate) type AppBody = axum::body::Body;

/// Wraps `body` for the application. An HTTP/1 request with a body is watched (read rate);
/// one without (most `GET`s), or an HTTP/2 stream (flow-controlled by the protocol), is not.
#[inline]
pub(crate) fn app_body(body: Incoming, conn: &Arc<ConnState>, watch: bool) -> AppBody {
    if watch && !body.is_end_stream() {
        AppBody::new(WatchedBody {
            inner: body,
            conn: conn.clone(),
        })
    } else {
        AppBody::new(body)
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
