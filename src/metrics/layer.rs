//! The tower layer that records every application request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::MatchedPath;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::handoff::{self, Found};
use super::placement::PlacementCheck;
use super::recorder::HttpMetrics;
use super::recording::{at_response, RecordingBody};
use super::routes::RouteName;
use super::series::method_index;
use super::timer::Timer;
use crate::error::BoxError;

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
/// Under [`Lifecycle::serve`](crate::Lifecycle::serve) the serving stack, which already wraps
/// every request, does the timing and the layer only names the route, so the response passes
/// through unwrapped; elsewhere the layer times the request itself. Responses come out as
/// axum's `Body` (a no-op for axum handlers, whose bodies already are).
///
/// Which of the two happens is decided per request: under `Lifecycle::serve` (the serving
/// stack of the same lifecycle polling the request) the layer names, elsewhere (another
/// server, a call from a spawned task) it times. Getting a layer from
/// [`Metrics::layer`](crate::metrics::Metrics::layer), or wrapping a service with it, has no
/// effect of its own.
///
/// Under `Lifecycle::serve` an axum application can also name its routes with
/// [`podcycle::routing`](crate::routing)'s handler functions instead: no `Router::layer`
/// wrapper around each route, the cheaper way (see that module). The layer is the general
/// way: any tower service (tonic services, `route_fn`), any server.
///
/// A handler that panics: under `Lifecycle::serve` the serving stack catches the panic,
/// answers `500` and records it (`error_type="panic"`). Elsewhere the layer does not catch
/// it; the panic unwinds through the layer, which records the request as `panic` (status 500
/// if no response existed yet) and stops counting it active. Add tower-http's
/// `CatchPanicLayer` outside it there for the `500` answer.
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

    /// Wraps `inner`.
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
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<axum::body::Body>;
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
        let found = handoff::find(core);
        let mut check_placement = false;
        let route = match self.layer.route_fn {
            None => match req.extensions().get::<MatchedPath>() {
                Some(matched) => {
                    core.placement.matched();
                    RouteName::Matched(matched)
                }
                None => {
                    check_placement = core.placement.watching();
                    RouteName::Unmatched
                }
            },
            Some(f) => {
                f(req.method(), req.uri().path()).map_or(RouteName::Unmatched, RouteName::Static)
            }
        };
        let route = core.start(method, route, found != Found::Named);
        let timer = if found == Found::Closed {
            // Not under `Lifecycle::serve` (or called from another task): time it here.
            Some(Timer::start(core, method, route).of_request(&req))
        } else {
            // The serving stack times this request; it only needs the route.
            handoff::name(core, route);
            None
        };
        MetricsFuture {
            inner: self.inner.call(req),
            timer,
            placement: check_placement.then_some(&core.placement),
        }
    }
}

pin_project! {
    /// Response future of [`MetricsService`].
    #[must_use = "futures do nothing unless polled"]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        timer: Option<Timer>,
        placement: Option<&'static PlacementCheck>,
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
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<axum::body::Body>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Some(check), Ok(res)) = (this.placement.take(), &result) {
            check.unmatched_answered(res.status());
        }
        let timer = at_response(this.timer.take(), &result);
        Poll::Ready(result.map(|res| match timer {
            // Under the serving stack, or recorded already: the body passes through (no box
            // for axum's `Body`).
            None => res.map(axum::body::Body::new),
            Some(timer) => {
                res.map(|body| axum::body::Body::new(RecordingBody::new(body, Some(timer))))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DEFAULT_BUCKETS;

    /// The serving stack's measurement of a request, through the seam: recorded once, at the
    /// end of its body, with the route the layer named during the application's poll.
    #[tokio::test]
    async fn the_serving_recorder_records_through_the_seam() {
        use crate::recorder::{Measure, Recorder};
        use http_body_util::BodyExt;

        let core = HttpMetrics::leak(
            "1",
            &[],
            DEFAULT_BUCKETS,
            false,
            tokio_util::sync::CancellationToken::new(),
        );
        let mut svc = MetricsLayer {
            core,
            route_fn: Some(|_, _| Some("/named")),
        }
        .layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("hi")))
        }));
        let recorder = core;
        let req = Request::get("/x").body(()).unwrap();
        let mut measure = Recorder::start(recorder, &req);
        let fut = Measure::poll_app(&mut measure, || svc.call(req));
        let res = fut.await;
        let measure = measure.and_then(|m| m.at_response(&res));
        assert!(measure.is_some(), "a body to send: recorded at its end");
        let body = <Timer as Measure>::body(measure, res.unwrap().into_body());
        let counted = |core: &HttpMetrics| {
            let mut text = String::new();
            core.render(&mut text);
            text.lines()
                .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
                .filter(|l| l.contains("http_route=\"/named\"") && l.ends_with(" 1"))
                .count()
        };
        assert_eq!(counted(core), 0, "not recorded before the body ends");
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hi");
        assert_eq!(counted(core), 1, "recorded once, with the named route");
    }
}
