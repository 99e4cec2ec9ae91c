//! One request's measurement: a guard started with one clock read that records the request
//! exactly once, with the second.
//!
//! ```text
//! let mut timer = Timer::start(core, method_index(req.method()), route);
//! timer.status = 200;
//! timer.record(Incomplete::No);   // or dropped unfinished: recorded as client_aborted
//!                                 // (as panic when dropped by a panic's unwinding)
//! ```

use std::fmt;
use std::sync::Arc;

use super::handoff::{NO_ROUTE, UNRECORDED};
use super::recorder::HttpMetrics;
use super::routes::RouteName;
use super::series::{method_index, Incomplete, SeriesKey, HEAD_INDEX};
use crate::trace::{TraceContext, TraceId};

/// One request's measurement: started with one clock read, recorded exactly once with the
/// second, on [`Timer::record`] or, if dropped unfinished, as aborted (or, once the drain
/// deadline has passed, as `drain_deadline`; while a panic unwinds, as `panic`). A timer
/// whose route was never named (see [`super::handoff`]) records the request as `unmatched`
/// once the application names routes, else records nothing.
pub(crate) struct Timer {
    core: &'static HttpMetrics,
    started: u64,
    method: u8,
    pub(crate) route: u32,
    pub(crate) status: u16,
    /// What few requests carry: a gRPC call, a sampled request's trace. Boxed: an ordinary
    /// request carries one word for it through every move of its future and body.
    pub(crate) extra: Option<Box<Extra>>,
}

/// What a [`Timer`] carries for a few requests only.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// A gRPC request's path and status (feature `grpc`).
    #[cfg(feature = "grpc")]
    pub(crate) grpc: Option<super::grpc::GrpcCall>,
    /// A sampled request's trace id, for the exemplar of the bucket it falls in.
    pub(crate) trace: Option<TraceId>,
}

impl Timer {
    /// Starts timing a request whose route is `route` (an id from [`HttpMetrics::start`],
    /// which has counted it active).
    #[inline]
    pub(crate) fn start(core: &'static HttpMetrics, method: u8, route: u32) -> Timer {
        Timer {
            core,
            started: core.now(),
            method,
            route,
            status: 0,
            extra: None,
        }
    }

    /// This timer, knowing whether `req` is a gRPC request (feature `grpc`) and the trace of
    /// a sampled request (its exemplar).
    #[inline]
    pub(crate) fn of_request<B>(mut self, req: &http::Request<B>) -> Timer {
        #[cfg(feature = "grpc")]
        if let Some(call) = super::grpc::GrpcCall::of(req) {
            self.extra.get_or_insert_with(Default::default).grpc = Some(call);
        }
        // No extensions (the common case): one branch.
        if let Some(cx) = req.extensions().get::<TraceContext>() {
            if cx.is_sampled() {
                self.extra.get_or_insert_with(Default::default).trace = Some(cx.trace_id());
            }
        }
        self
    }

    /// The template of this timer's route, if named (takes a lock: for a sampled request's
    /// span, not the request path).
    pub(crate) fn route_name(&self) -> Option<Arc<str>> {
        (self.route != NO_ROUTE)
            .then(|| self.core.route_name(self.route))
            .flatten()
    }

    /// Takes a gRPC status from response headers or trailers, if this is a gRPC request.
    #[inline]
    pub(crate) fn observe_headers(&mut self, headers: &http::HeaderMap) {
        #[cfg(feature = "grpc")]
        if let Some(call) = self.extra.as_mut().and_then(|e| e.grpc.as_mut()) {
            call.observe(headers);
        }
        #[cfg(not(feature = "grpc"))]
        let _ = headers;
    }

    /// Starts timing a request of `method` whose route a layer will name later, through the
    /// hand-off (the serving stack's timer).
    #[inline]
    pub(crate) fn unnamed(core: &'static HttpMetrics, method: &http::Method) -> Timer {
        Timer::start(core, method_index(method), NO_ROUTE)
    }

    /// The metrics core this timer records into.
    #[inline]
    pub(crate) fn core(&self) -> &'static HttpMetrics {
        self.core
    }

    /// Whether the response has no body on the wire (a `HEAD` request; 1xx, 204, 304), so that
    /// the server may drop the body without polling it.
    #[inline]
    pub(crate) fn bodiless(&self) -> bool {
        self.method == HEAD_INDEX || matches!(self.status, 100..=199 | 204 | 304)
    }

    /// Records the request as ended by `incomplete` (`Incomplete::No`: completed).
    #[inline]
    pub(crate) fn record(self, incomplete: Incomplete) {
        let mut this = std::mem::ManuallyDrop::new(self);
        this.finish(incomplete);
        // The only field that owns memory: dropped here, as `Drop` does not run.
        drop(this.extra.take());
    }

    /// Drops the timer without recording anything (a request nobody named, in an application
    /// that names no routes).
    #[inline]
    pub(crate) fn discard(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        drop(this.extra.take());
    }

    /// Records the request as panicked: with status 500 if its response future panicked (no
    /// response yet), else with its response's status. Returns the route's template, for the
    /// panic's log line.
    #[cold]
    pub(crate) fn record_panic(mut self) -> Option<Arc<str>> {
        self.status_panicked();
        let route = self.route_name();
        self.record(Incomplete::Panic);
        route
    }

    /// A panic before the response: a server error, as the serving stack answers it.
    fn status_panicked(&mut self) {
        if self.status == 0 {
            self.status = 500;
        }
    }

    #[inline]
    fn finish(&self, incomplete: Incomplete) {
        let route = match self.route {
            NO_ROUTE => match self.unnamed_route() {
                Some(route) => route,
                None => return,
            },
            UNRECORDED => return,
            route => route,
        };
        let error =
            if incomplete == Incomplete::ClientAborted && self.core.force_closing.is_cancelled() {
                Incomplete::DrainDeadline
            } else {
                incomplete
            };
        #[cfg(feature = "grpc")]
        let (route, error) = match self.extra.as_ref().and_then(|e| e.grpc.as_ref()) {
            None => (route, error),
            Some(call) => (
                self.core.grpc_route(route, call),
                if error == Incomplete::No && call.status != 0 {
                    Incomplete::grpc(call.status)
                } else {
                    error
                },
            ),
        };
        let key = SeriesKey {
            method: self.method,
            route,
            status: self.status,
            error,
        };
        match self.extra.as_ref().and_then(|e| e.trace) {
            None => self.core.finish(key, self.started),
            Some(trace) => self.core.finish_sampled(key, self.started, trace),
        }
    }
}

impl Timer {
    /// The route of a request nobody named (the serving stack's timer, see
    /// [`super::handoff`]): none if the application names no routes (nothing recorded, as
    /// without metrics), else `unmatched`, counted active now (it was not at its start) so
    /// that the gauge stays balanced.
    #[cold]
    #[inline(never)]
    fn unnamed_route(&self) -> Option<u32> {
        if !self.core.names_routes() {
            return None;
        }
        self.core.placement.unnamed_answered(self.status);
        Some(self.core.start(self.method, RouteName::Unmatched, true))
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // Dropped without an explicit record: the future or body went away unfinished, or is
        // unwinding from a panic (a `MetricsLayer` outside `Lifecycle::serve`, whose serving
        // stack would have caught it and called `record_panic`).
        if std::thread::panicking() {
            self.status_panicked();
            self.finish(Incomplete::Panic);
        } else {
            self.finish(Incomplete::ClientAborted);
        }
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("route", &self.route)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}
