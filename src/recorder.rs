//! The seam between serving and recording: what the serving stack tells a request recorder,
//! and when. The serving stack calls it at a few named moments, whatever records behind it:
//!
//! ```text
//! let mut m = recorder.start(&req);                      // request start: Option<Measure>
//! let polled = Measure::poll_app(&mut m, || poll(app));  // while the application runs
//! let m = m.and_then(|m| m.at_response(&res));           // response head: recorded if done
//! res.map(|b| R::Measure::body(m, b))                    // body end: recorded by the body
//! ```
//!
//! A panic is reported with [`Measure::at_panic`] (response future) or
//! [`Measure::body_panicked`] (body), a `101` with [`Measure::at_upgrade`].
//!
//! The choice of recorder is made once, when serving starts: [`NoRecorder`] records nothing
//! and costs nothing (its measurement type has no values, so every hook compiles away, as tower-http's
//! `OnResponse` for `()`); `Option<R>` is `R` or nothing; with the `metrics` feature, the
//! metrics core records (`crate::metrics`). A second recorder (an OTLP exporter, exemplars)
//! implements the same two traits, and a pair of recorders can be composed the same way.

use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;

use crate::connections::UpgradeEnd;

/// Starts a [`Measure`] for each request the serving stack hands to the application.
pub(crate) trait Recorder: Copy + Send + Sync + 'static {
    /// One request's measurement, carried from its start to the end of its response body.
    type Measure: Measure;

    /// Request start: a measurement for `req`, or none (the request is not recorded).
    fn start<B>(self, req: &Request<B>) -> Option<Self::Measure>;
}

/// One request's measurement: told what happens to its request until it is recorded. If
/// dropped before that (the client went away, the drain deadline cut it), the request counts
/// as unfinished.
pub(crate) trait Measure: Send + Sized + 'static {
    /// The response body that records the request when it ends (a body error, its last
    /// frame), or as unfinished when dropped before that.
    type Body<B: Body + Send + 'static>: Body<Data = B::Data, Error = B::Error> + Send + 'static;

    /// Runs `poll`, one poll of the application's response future (e.g. so that a handler or
    /// a layer inside the application can name the route meanwhile).
    fn poll_app<T>(this: &mut Option<Self>, poll: impl FnOnce() -> T) -> T;

    /// The route's template, if named by now (for a sampled request's span; may take a lock).
    fn route(this: &Option<Self>) -> Option<Arc<str>>;

    /// Response head: the application answered (or failed). Records a request that is over
    /// now (failed, or no body to send); else returns the measurement for the body.
    fn at_response<B: Body, E>(self, res: &Result<Response<B>, E>) -> Option<Self>;

    /// A `101 Switching Protocols`: recorded when the upgraded connection ends.
    fn at_upgrade(self) -> Box<dyn UpgradeEnd>;

    /// The response future panicked: recorded as a panic; returns the route's template for
    /// the log line, if known.
    fn at_panic(self) -> Option<Arc<str>>;

    /// The response body, carrying `this` (if any) until it ends.
    fn body<B: Body + Send + 'static>(this: Option<Self>, body: B) -> Self::Body<B>;

    /// The body panicked: recorded as a panic unless recorded already; returns the route's
    /// template for the log line, if known.
    fn body_panicked<B: Body + Send + 'static>(body: Pin<&mut Self::Body<B>>) -> Option<Arc<str>>;
}

/// No recorder: nothing is measured, nothing costs. The serving stack's recorder without the
/// `metrics` feature.
#[cfg_attr(feature = "metrics", allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoRecorder;

impl Recorder for NoRecorder {
    type Measure = NoMeasure;

    #[inline]
    fn start<B>(self, _: &Request<B>) -> Option<NoMeasure> {
        None
    }
}

/// The recorder `R` or, with `None`, none.
impl<R: Recorder> Recorder for Option<R> {
    type Measure = R::Measure;

    #[inline]
    fn start<B>(self, req: &Request<B>) -> Option<R::Measure> {
        self?.start(req)
    }
}

/// The measurement of the no-op recorder: none can exist.
#[cfg_attr(feature = "metrics", allow(dead_code))]
#[derive(Debug)]
pub(crate) enum NoMeasure {}

impl Measure for NoMeasure {
    type Body<B: Body + Send + 'static> = B;

    #[inline]
    fn poll_app<T>(_: &mut Option<Self>, poll: impl FnOnce() -> T) -> T {
        poll()
    }

    fn route(_: &Option<Self>) -> Option<Arc<str>> {
        None
    }

    #[inline]
    fn at_response<B: Body, E>(self, _: &Result<Response<B>, E>) -> Option<Self> {
        match self {}
    }

    fn at_upgrade(self) -> Box<dyn UpgradeEnd> {
        match self {}
    }

    fn at_panic(self) -> Option<Arc<str>> {
        match self {}
    }

    #[inline]
    fn body<B: Body + Send + 'static>(_: Option<Self>, body: B) -> B {
        body
    }

    #[inline]
    fn body_panicked<B: Body + Send + 'static>(_: Pin<&mut B>) -> Option<Arc<str>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_op_recorder_carries_nothing() {
        // No measurement, no state: a request and its body carry zero bytes for it.
        assert_eq!(std::mem::size_of::<Option<NoMeasure>>(), 0);
        let req = Request::get("/").body(()).unwrap();
        let mut none = NoRecorder.start(&req);
        assert!(none.is_none());
        assert_eq!(
            NoMeasure::poll_app(&mut none, || 7),
            7,
            "the poll runs as it is"
        );
        assert!(Option::<NoRecorder>::None.start(&req).is_none());
        assert!(Some(NoRecorder).start(&req).is_none());
    }
}
