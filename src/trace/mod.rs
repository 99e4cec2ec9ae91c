//! W3C trace context on the application listener: each request's `traceparent` and
//! `tracestate` read (HTTP and gRPC alike), a sampling decision, one `tracing` span per
//! sampled request in which the application's future and response body are polled, and the
//! [`TraceContext`] in the request's extensions for the handler.
//!
//! # Example
//! ```no_run
//! use axum::Extension;
//! use podcycle::TraceContext;
//!
//! // Present when the request came with a valid `traceparent` or started a sampled trace.
//! async fn hello(trace: Option<Extension<TraceContext>>) -> String {
//!     // Its log lines join the request's span: `trace_id` and `span_id` in JSON logs.
//!     tracing::info!("saying hello");
//!     match trace {
//!         Some(Extension(cx)) => format!("hello from trace {}\n", cx.trace_id()),
//!         None => "hello\n".into(),
//!     }
//! }
//! let app: axum::Router = axum::Router::new().route("/hello", axum::routing::get(hello));
//! ```
//!
//! # Sampling
//!
//! `PODCYCLE_TRACE_SAMPLING` (a ratio, `0` to `1`, default `0`; [`Config::trace_sampling`])
//! is parent-based: a request with a valid `traceparent` follows its caller's `sampled`
//! flag; a request without one starts a new trace, sampled with that probability (decided on
//! the trace id, as OpenTelemetry's `TraceIdRatioBased`). A sampled request gets a span
//! (`request`, target `podcycle::request`, level INFO) and an exemplar on the latency
//! histogram; an unsampled one with a `traceparent` gets its [`TraceContext`] only (so that
//! outgoing calls continue the trace, unsampled); an unsampled one without gets nothing: a
//! header lookup and a branch is all it costs. A malformed `traceparent` is ignored: a new
//! trace starts, as if it were absent.
//!
//! See `docs/tracing.md` for propagation to outgoing calls (reqwest, tonic) and for linking
//! logs, metrics and traces in Grafana.
//!
//! [`Config::trace_sampling`]: crate::Config::trace_sampling

mod context;
mod ids;

use std::sync::Arc;

use http::{HeaderMap, Request};
use tracing::field::Empty;
use tracing::Level;

pub use self::context::{SpanId, TraceContext, TraceId};

/// How requests are sampled: the parent's flag, else this ratio of new traces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sampling {
    /// A new trace is sampled when the last 8 bytes of its id are under this (0: never).
    threshold: u64,
    /// Every new trace is sampled (ratio 1).
    always: bool,
}

impl Sampling {
    /// Sampling `ratio` (0 to 1) of the new traces, parent-based.
    pub(crate) fn ratio(ratio: f64) -> Sampling {
        Sampling {
            threshold: (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            always: ratio >= 1.0,
        }
    }

    /// Whether a new trace with `trace_id` is sampled.
    fn samples(self, trace_id: TraceId) -> bool {
        self.always || trace_id.low() < self.threshold
    }

    /// Whether no request without a `traceparent` is ever sampled.
    #[inline]
    fn never_root(self) -> bool {
        self.threshold == 0 && !self.always
    }
}

/// What the serving stack needs to trace requests: the sampling and the `version` field.
#[derive(Clone, Debug)]
pub(crate) struct Tracing {
    sampling: Sampling,
    version: Arc<str>,
}

/// A sampled request's span, entered while its future and body are polled.
#[derive(Debug)]
pub(crate) struct RequestSpan {
    pub(crate) span: tracing::Span,
}

impl RequestSpan {
    /// Enters the span until the guard is dropped (out of line: the request path only
    /// branches on whether there is a span).
    #[cold]
    #[inline(never)]
    pub(crate) fn enter(&self) -> tracing::span::Entered<'_> {
        self.span.enter()
    }

    /// Records the response's status and, if known, its route's template.
    pub(crate) fn at_response(&self, status: u16, route: Option<&str>) {
        self.span.record("http.response.status_code", status);
        if let Some(route) = route {
            self.span.record("http.route", route);
        }
    }
}

impl Tracing {
    /// Tracing with `sampling`, the spans carrying `version`.
    pub(crate) fn new(sampling: Sampling, version: &str) -> Tracing {
        Tracing {
            sampling,
            version: Arc::from(version),
        }
    }

    /// Whether a request with `headers` may be traced: it has a `traceparent`, or new
    /// traces may be sampled. If not, [`Tracing::start`] need not be called: the request is
    /// not traced. One header lookup and a branch.
    #[inline]
    pub(crate) fn may_trace(&self, headers: &HeaderMap) -> bool {
        !self.sampling.never_root() || has_traceparent(headers)
    }

    /// Request start: reads the trace context of `req`, puts a [`TraceContext`] in its
    /// extensions, and returns its span if it is sampled. Call it when
    /// [`Tracing::may_trace`] says so.
    #[cold]
    #[inline(never)]
    pub(crate) fn start<B>(&self, req: &mut Request<B>) -> Option<Box<RequestSpan>> {
        // No `traceparent` (the common case when sampling new traces): no header lookup, and
        // no span id for a new trace the ratio does not sample.
        let parent = if has_traceparent(req.headers()) {
            context::parent(req.headers())
        } else {
            None
        };
        let cx = match parent {
            Some(parent) => {
                TraceContext::child(parent, ids::span_id(), context::tracestate(req.headers()))
            }
            None => {
                let trace_id = ids::trace_id();
                if !self.sampling.samples(trace_id) {
                    // A new trace nobody records: nothing to pass on.
                    return None;
                }
                TraceContext::root(trace_id, ids::span_id(), true)
            }
        };
        // A span only if a subscriber wants it (`enabled!` asks the subscriber, not the `log`
        // crate that axum's default `tower-log` feature wires in): else nothing to create,
        // enter, record or drop per request; the trace context below still reaches the
        // handlers and the exemplar.
        let wanted = cx.is_sampled() && tracing::enabled!(target: "podcycle::request", Level::INFO);
        let span = wanted
            .then(|| {
                tracing::info_span!(
                    target: "podcycle::request",
                    "request",
                    http.request.method = %req.method(),
                    http.route = Empty,
                    http.response.status_code = Empty,
                    version = %self.version,
                    trace_id = %cx.trace_id(),
                    span_id = %cx.span_id(),
                )
            })
            .filter(|span| !span.is_disabled())
            .map(|span| Box::new(RequestSpan { span }));
        req.extensions_mut().insert(cx);
        span
    }
}

/// Whether `headers` has a `traceparent`. A request has few headers (wrk sends one, a
/// browser about 15): comparing names, most of which are standard ones (an enum compare), costs
/// less than hashing the name for a lookup; a large map is looked up.
#[inline]
fn has_traceparent(headers: &HeaderMap) -> bool {
    if headers.keys_len() <= 16 {
        headers.keys().any(|name| *name == context::TRACEPARENT)
    } else {
        headers.contains_key(&context::TRACEPARENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn request(traceparent: Option<&str>) -> Request<()> {
        let mut b = Request::get("/");
        if let Some(t) = traceparent {
            b = b.header("traceparent", t);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn sampling_follows_the_parent_else_the_ratio() {
        let sampled = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let unsampled = format!("00-{TRACE}-00f067aa0ba902b7-00");
        let invalid = format!("00-{}-00f067aa0ba902b7-01", TRACE.to_uppercase());
        // (ratio, traceparent, span?, context?, same trace id?)
        let cases: [(f64, Option<&str>, bool, bool, bool); 9] = [
            (0.0, None, false, false, false),
            (0.0, Some(&sampled), true, true, true),
            (0.0, Some(&unsampled), false, true, true),
            (0.0, Some(&invalid), false, false, false),
            (1.0, None, true, true, false),
            (1.0, Some(&unsampled), false, true, true),
            (1.0, Some(&invalid), true, true, false),
            (0.5, Some(&sampled), true, true, true),
            (0.5, Some(&unsampled), false, true, true),
        ];
        for (ratio, tp, span, context, same) in cases {
            let tracing = Tracing::new(Sampling::ratio(ratio), "1.2.3");
            let mut req = request(tp);
            let got = if tracing.may_trace(req.headers()) {
                tracing.start(&mut req)
            } else {
                None
            };
            // No subscriber listens in unit tests: no span, whatever the sampling said
            // (tests/trace_context.rs has one).
            assert!(got.is_none(), "span: {ratio} {tp:?}");
            let cx = req.extensions().get::<TraceContext>();
            assert_eq!(cx.is_some(), context, "context: {ratio} {tp:?}");
            if let Some(cx) = cx {
                assert_eq!(cx.trace_id().to_string() == TRACE, same, "{ratio} {tp:?}");
                assert_eq!(cx.is_sampled(), span);
                assert_eq!(cx.parent_span_id().is_some(), same);
            }
        }
    }

    #[test]
    fn a_ratio_samples_about_that_share_of_new_traces() {
        let tracing = Tracing::new(Sampling::ratio(0.25), "1");
        let sampled = (0..4000)
            .filter(|_| {
                let mut req = request(None);
                tracing.may_trace(req.headers())
                    && tracing.start(&mut req).is_none()
                    && req
                        .extensions()
                        .get::<TraceContext>()
                        .is_some_and(TraceContext::is_sampled)
            })
            .count();
        assert!((700..1300).contains(&sampled), "{sampled} of 4000 at 0.25");
    }

    #[test]
    fn traceparent_is_found_among_few_or_many_headers() {
        for n in [0, 3, 15, 16, 17, 40] {
            let mut headers = HeaderMap::new();
            for i in 0..n {
                headers.insert(
                    http::HeaderName::try_from(format!("x-h{i}")).unwrap(),
                    "v".parse().unwrap(),
                );
            }
            headers.insert(http::header::HOST, "h".parse().unwrap());
            assert!(!has_traceparent(&headers), "{n}");
            headers.insert("traceparent", "x".parse().unwrap());
            assert!(has_traceparent(&headers), "{n}");
            // Header names are lowercase on the wire and in a HeaderMap.
            let mut upper = HeaderMap::new();
            upper.insert("TraceParent", "x".parse().unwrap());
            assert!(has_traceparent(&upper));
        }
    }

    #[test]
    fn the_ratio_is_decided_on_the_trace_id() {
        let s = Sampling::ratio(0.5);
        let id = |low: u64| {
            let mut b = [0u8; 16];
            b[0] = 1;
            b[8..].copy_from_slice(&low.to_be_bytes());
            TraceId::from_bytes(b).unwrap()
        };
        assert!(s.samples(id(0)));
        assert!(s.samples(id(u64::MAX / 2 - 1)));
        assert!(!s.samples(id(u64::MAX / 2 + 2)));
        assert!(!Sampling::ratio(0.0).samples(id(0)));
        assert!(Sampling::ratio(1.0).samples(id(u64::MAX)));
    }
}
