//! Recording a request at the right moment, for both wrappers that time requests:
//! [`MetricsLayer`](super::MetricsLayer)'s future (outside `Lifecycle::serve`) and the serving
//! stack's, through the seam of [`crate::recorder`] (implemented here for the metrics core).
//!
//! ```text
//! let mut timer = core.start(&req);                            // serving: the route unnamed
//! let res = Measure::poll_app(&mut timer, || poll(app));      // a layer inside names it
//! let timer = at_response(timer, &res);                        // failed or bodiless: recorded
//! res.map(|res| res.map(|body| RecordingBody::new(body, timer)))  // else: recorded at its end
//! ```
//!
//! A request is recorded once: when its response future fails (as a 500) or panics (as a 500
//! with `error_type="panic"`), when its response has no body to send, when its body ends,
//! fails or panics ([`RecordingBody::panicked`]), or, if the body is dropped before that, as
//! aborted (the [`Timer`]'s drop; as `panic` if a panic unwinds through it).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::handoff::{self, NO_ROUTE};
use super::recorder::HttpMetrics;
use super::series::Incomplete;
use super::timer::Timer;
use crate::connections::UpgradeEnd;
use crate::recorder::{Measure, Recorder};

/// The serving stack's recorder: times every request from its start, its route named through
/// the hand-off by a [`crate::routing`] handler or a [`MetricsLayer`](super::MetricsLayer)
/// inside the application.
impl Recorder for &'static HttpMetrics {
    type Measure = Timer;

    #[inline]
    fn start<B>(self, req: &Request<B>) -> Option<Timer> {
        Some(Timer::unnamed(self, req.method()).of_request(req))
    }
}

impl Measure for Timer {
    type Body<B: Body + Send + 'static> = RecordingBody<B>;

    /// While the timer waits for its route, polls with the route hand-off open, so that a
    /// layer inside can name it. The caller catches a panic inside `poll`, so that the slot is
    /// closed and the route named before it kept.
    #[inline]
    fn poll_app<T>(this: &mut Option<Self>, poll: impl FnOnce() -> T) -> T {
        match this {
            Some(timer) if timer.route == NO_ROUTE => {
                let (res, route) = handoff::open(timer.core(), poll);
                if let Some(route) = route {
                    timer.route = route;
                }
                res
            }
            _ => poll(),
        }
    }

    #[cold]
    fn route(this: &Option<Self>) -> Option<Arc<str>> {
        this.as_ref()?.route_name()
    }

    #[inline]
    fn at_response<B: Body, E>(self, res: &Result<Response<B>, E>) -> Option<Self> {
        at_response(Some(self), res)
    }

    fn at_upgrade(mut self) -> Box<dyn UpgradeEnd> {
        self.status = 101;
        Box::new(UpgradeTimer(self))
    }

    /// Records the request, whose response future panicked, as a 500 with
    /// `error_type="panic"`.
    #[cold]
    fn at_panic(self) -> Option<Arc<str>> {
        self.record_panic()
    }

    #[inline]
    fn body<B: Body + Send + 'static>(this: Option<Self>, body: B) -> RecordingBody<B> {
        RecordingBody::new(body, this)
    }

    #[cold]
    fn body_panicked<B: Body + Send + 'static>(
        body: Pin<&mut RecordingBody<B>>,
    ) -> Option<Arc<str>> {
        body.panicked()
    }
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
    if timer.route == NO_ROUTE && !timer.core().names_routes() {
        // Nobody named it, and the application names no routes: nothing to record, no body
        // to wrap with a timer.
        timer.discard();
        return None;
    }
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
/// ([`UpgradeEnd::ended`]), or, dropped unfinished by the drain deadline, with
/// `error_type="drain_deadline"`.
#[derive(Debug)]
pub(crate) struct UpgradeTimer(Timer);

impl UpgradeEnd for UpgradeTimer {
    /// Records the upgraded connection as completed.
    fn ended(self: Box<Self>) {
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
