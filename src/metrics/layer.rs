//! The tower layer that records every application request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::http::{method_index, HttpMetrics, Incomplete};

/// Maps a request path to its route template, for services without axum's `MatchedPath`.
/// Return `None` for "no route matched".
pub type RouteFn = fn(&http::Method, &str) -> Option<&'static str>;

/// Records `http_server_request_duration_seconds` and `http_server_active_requests` for every
/// request through it. Get one from [`Metrics::layer`](crate::metrics::Metrics::layer) and add
/// it with axum's `Router::layer` (not outside the router), so that the route template
/// ([`MatchedPath`]) is known; unmatched requests are labelled `http_route="unmatched"`.
///
/// The request is timed from the call to the end of its response body; it stays counted as
/// active until then, whatever ends it (completion, body error, client abort, drain deadline).
#[derive(Clone, Copy)]
pub struct MetricsLayer {
    pub(crate) core: &'static HttpMetrics,
    pub(crate) route_fn: Option<RouteFn>,
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("route_fn", &self.route_fn.is_some())
            .finish()
    }
}

impl MetricsLayer {
    /// Uses `route_fn` to name routes instead of axum's `MatchedPath` (for non-axum services).
    pub fn route_fn(mut self, route_fn: RouteFn) -> Self {
        self.route_fn = Some(route_fn);
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            layer: *self,
        }
    }
}

/// The service produced by [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S: fmt::Debug> fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsService")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let method = method_index(req.method());
        let core = self.layer.core;
        let route = match self.layer.route_fn {
            None => core.start(
                method,
                req.extensions().get::<MatchedPath>().map(|m| m.as_str()),
            ),
            Some(f) => core.start(method, f(req.method(), req.uri().path())),
        };
        let started = Instant::now();
        MetricsFuture {
            inner: self.inner.call(req),
            timer: Some(Timer {
                core,
                started,
                method,
                route,
                status: 0,
            }),
        }
    }
}

/// One request's measurement; records exactly once, on completion or drop.
struct Timer {
    core: &'static HttpMetrics,
    started: Instant,
    method: u8,
    route: u32,
    status: u16,
}

impl Timer {
    #[inline]
    fn record(self, incomplete: Incomplete) {
        let incomplete =
            if incomplete == Incomplete::ClientAborted && self.core.force_closing.is_cancelled() {
                Incomplete::DrainDeadline
            } else {
                incomplete
            };
        self.core.finish(
            self.method,
            self.route,
            self.status,
            incomplete,
            self.started.elapsed(),
        );
        std::mem::forget(self);
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // Dropped without an explicit record: the future or body went away unfinished.
        let t = Timer {
            core: self.core,
            started: self.started,
            method: self.method,
            route: self.route,
            status: self.status,
        };
        t.record(Incomplete::ClientAborted);
    }
}

pin_project! {
    /// Response future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        timer: Option<Timer>,
    }
}

impl<F> fmt::Debug for MetricsFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<MetricsBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut timer = this.timer.take();
        Poll::Ready(match result {
            Ok(res) => {
                if let Some(t) = timer.as_mut() {
                    t.status = res.status().as_u16();
                }
                // An empty body never gets polled: record now rather than at drop.
                if res.body().is_end_stream() {
                    if let Some(t) = timer.take() {
                        t.record(Incomplete::No);
                    }
                }
                Ok(res.map(|inner| MetricsBody { inner, timer }))
            }
            Err(e) => {
                if let Some(mut t) = timer {
                    t.status = 500;
                    t.record(Incomplete::No);
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// Response body of [`MetricsService`]: the request is measured until this ends.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        timer: Option<Timer>,
    }
}

impl<B> fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(_)) => {
                if this.inner.is_end_stream() {
                    if let Some(t) = this.timer.take() {
                        t.record(Incomplete::No);
                    }
                }
            }
            None => {
                if let Some(t) = this.timer.take() {
                    t.record(Incomplete::No);
                }
            }
            Some(Err(_)) => {
                if let Some(t) = this.timer.take() {
                    t.record(Incomplete::BodyError);
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
