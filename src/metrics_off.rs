//! What the serving stack records with when the `metrics` feature is off: nothing. Stand-ins
//! with the recording helpers' signatures, each compiling to nothing, so that the serving
//! stack reads the same either way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// No recorder: the serving stack is handed [`DISABLED`].
#[derive(Debug)]
pub(crate) struct HttpMetrics;

/// The one recorder of a build without metrics.
pub(crate) static DISABLED: HttpMetrics = HttpMetrics;

/// No timer can exist: `Option<Timer>` is always `None`.
#[derive(Debug)]
pub(crate) enum Timer {}

impl Timer {
    #[inline]
    pub(crate) fn for_serving<B>(_: &'static HttpMetrics, _: &http::Request<B>) -> Option<Timer> {
        None
    }
}

#[inline]
pub(crate) fn poll_naming_route<F: Future>(
    _: &mut Option<Timer>,
    inner: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<std::thread::Result<F::Output>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(payload)),
    }
}

#[inline]
pub(crate) fn at_panic(_: Option<Timer>) -> Option<std::sync::Arc<str>> {
    None
}

#[inline]
pub(crate) fn at_response<B, E>(_: Option<Timer>, _: &Result<Response<B>, E>) -> Option<Timer> {
    None
}

/// No timer, no upgrade timer.
#[derive(Debug)]
pub(crate) enum UpgradeTimer {}

impl UpgradeTimer {
    pub(crate) fn ended(self) {
        match self {}
    }
}

#[inline]
pub(crate) fn at_upgrade(_: Option<Timer>) -> Option<UpgradeTimer> {
    None
}

pin_project! {
    /// The response body as it is.
    #[derive(Debug)]
    pub(crate) struct RecordingBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B> RecordingBody<B> {
    #[inline]
    pub(crate) fn new(inner: B, _: Option<Timer>) -> Self {
        RecordingBody { inner }
    }

    #[inline]
    pub(crate) fn panicked(self: Pin<&mut Self>) -> Option<std::sync::Arc<str>> {
        None
    }
}

impl<B: Body> Body for RecordingBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
