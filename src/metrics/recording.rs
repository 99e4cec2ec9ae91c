//! Recording a request at the right moment, for both wrappers that time requests:
//! [`MetricsLayer`](super::MetricsLayer)'s future (outside `Lifecycle::serve`) and the serving
//! stack's.
//!
//! ```text
//! let res = match ready!(poll_naming_route(&mut timer, inner, cx)) { // the layer names the route
//!     Ok(res) => res,
//!     Err(panicked) => { let route = at_panic(timer); /* answer 500, log */ }
//! };
//! let timer = at_response(timer, &res);                           // failed or bodiless: recorded
//! res.map(|res| res.map(|body| RecordingBody::new(body, timer)))  // else: recorded at its end
//! ```
//!
//! A request is recorded once: when its response future fails (as a 500) or panics (as a 500
//! with `error_type="panic"`), when its response has no body to send, when its body ends,
//! fails or panics ([`RecordingBody::panicked`]), or, if the body is dropped before that, as
//! aborted (the [`Timer`]'s drop; as `panic` if a panic unwinds through it).

use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::thread;

use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::handoff::{self, NO_ROUTE};
use super::series::Incomplete;
use super::timer::Timer;

/// Polls the response future `inner` of a request timed by `timer`; when the timer is waiting
/// for its route, with the route hand-off open so that a layer inside can name it. A panic
/// is caught here, inside the hand-off, so that the slot is closed and the route named before
/// it kept: `Err` holds its payload (see [`at_panic`]), and `inner` must not be polled again.
#[inline]
pub(crate) fn poll_naming_route<F: Future>(
    timer: &mut Option<Timer>,
    inner: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<thread::Result<F::Output>> {
    match timer {
        Some(timer) if timer.route == NO_ROUTE => {
            let (res, route) = handoff::open(timer.core().id(), || poll_catching(inner, cx));
            if let Some(route) = route {
                timer.route = route;
            }
            res
        }
        _ => poll_catching(inner, cx),
    }
}

/// Polls `inner`, catching a panic: `Ready(Err(payload))`.
#[inline]
pub(crate) fn poll_catching<F: Future>(
    inner: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<thread::Result<F::Output>> {
    match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(payload)),
    }
}

/// Records the request of `timer`, whose response future panicked, as a 500 with
/// `error_type="panic"`; returns its route's template (if a layer named it) for the log line.
#[cold]
pub(crate) fn at_panic(timer: Option<Timer>) -> Option<Arc<str>> {
    timer?.record_panic()
}

/// The response future's part, once it is ready: records a request whose future failed (as
/// a 500) or whose response sends no body (hyper may never poll it: recorded now rather than
/// as aborted at drop), and otherwise returns the timer for the body to carry.
#[inline]
pub(crate) fn at_response<B: Body, E>(
    timer: Option<Timer>,
    result: &Result<Response<B>, E>,
) -> Option<Timer> {
    let mut timer = timer?;
    match result {
        Ok(res) => {
            timer.status = res.status().as_u16();
            // A gRPC error before any message is trailers-only: its status is in the headers.
            timer.observe_headers(res.headers());
            if timer.bodiless() || res.body().is_end_stream() {
                timer.record(Incomplete::No);
                return None;
            }
            Some(timer)
        }
        Err(_) => {
            // The connection ends with the error; the request counts as a server error.
            timer.status = 500;
            timer.record(Incomplete::No);
            None
        }
    }
}

/// The measurement of an upgraded connection (a `101 Switching Protocols` response, e.g. a
/// WebSocket): recorded with status 101 when the upgraded connection ends
/// ([`UpgradeTimer::ended`]), or, dropped unfinished by the drain deadline, with
/// `error_type="drain_deadline"`.
#[derive(Debug)]
pub(crate) struct UpgradeTimer(Timer);

/// The response future's part for a `101` response: the timer, kept until the upgraded
/// connection ends (instead of [`at_response`], which would record it now).
#[inline]
pub(crate) fn at_upgrade(timer: Option<Timer>) -> Option<UpgradeTimer> {
    let mut timer = timer?;
    timer.status = 101;
    Some(UpgradeTimer(timer))
}

impl UpgradeTimer {
    /// Records the upgraded connection as completed.
    pub(crate) fn ended(self) {
        self.0.record(Incomplete::No);
    }
}

pin_project! {
    /// A response body that keeps its request measured until it ends: recorded after the last
    /// frame, on a body error (`body_error`), or, dropped before either, as aborted.
    pub(crate) struct RecordingBody<B> {
        #[pin]
        inner: B,
        timer: Option<Timer>,
    }
}

impl<B> RecordingBody<B> {
    /// `inner`, recording the request of `timer` (if any) when it ends.
    #[inline]
    pub(crate) fn new(inner: B, timer: Option<Timer>) -> RecordingBody<B> {
        RecordingBody { inner, timer }
    }
}

impl<B> RecordingBody<B> {
    /// Records the request as panicked in its body (`error_type="panic"`, the response's status
    /// kept), unless it is recorded already; returns its route's template for the log line.
    #[cold]
    pub(crate) fn panicked(self: Pin<&mut Self>) -> Option<Arc<str>> {
        self.project().timer.take()?.record_panic()
    }
}

impl<B> fmt::Debug for RecordingBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingBody")
            .field("timer", &self.timer)
            .finish_non_exhaustive()
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
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        #[cfg(feature = "grpc")]
        if let (Some(timer), Some(Ok(f))) = (this.timer.as_mut(), &frame) {
            if let Some(trailers) = f.trailers_ref() {
                timer.observe_headers(trailers);
            }
        }
        if this.timer.is_some() {
            let outcome = match &frame {
                // Trailers are a body's last frame, whether or not it says it has ended
                // (hyper does not poll a body again after them).
                Some(Ok(f)) if !f.is_trailers() && !this.inner.is_end_stream() => None,
                Some(Ok(_)) | None => Some(Incomplete::No),
                Some(Err(_)) => Some(Incomplete::BodyError),
            };
            if let Some(outcome) = outcome {
                if let Some(t) = this.timer.take() {
                    t.record(outcome);
                }
            }
        }
        Poll::Ready(frame)
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
