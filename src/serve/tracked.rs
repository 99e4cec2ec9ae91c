//! The per-request wrapper around the application's service: counts each request in flight
//! on its connection until its response body ends, marks responses `Connection: close` while
//! draining or past the connection's maximum age, answers 503 in reject mode, times requests
//! for the metrics, and answers a panicking handler with a 500.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER, UPGRADE};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::request_body::{app_body, AppBody};
use super::ServeContext;
use crate::admission::{Controller, Ticket};
use crate::config::{ShedStatus, StopAccepting};
use crate::connections::{ConnState, RequestGuard, UpgradeEnd, UpgradeSlot};
use crate::error::BoxError;
use crate::phase::Phase;
use crate::recorder::{Measure, Recorder};
use crate::trace::RequestSpan;

/// Wraps the application's service: counts requests per connection, marks responses
/// `Connection: close` while draining, and rejects in reject mode.
#[derive(Clone, Debug)]
pub(crate) struct TrackedService<S, R> {
    pub(super) inner: S,
    pub(super) conn: Arc<ConnState>,
    pub(super) shared: Arc<ServeContext>,
    pub(super) recorder: R,
}

// hyper's `Service` takes `&self`: nothing of ours is cloned per request (only the inner
// service, as `axum::serve` does).
//
// Its error is a `BoxError` rather than `S::Error` so that a stream refused during the drain
// can carry `REFUSED_STREAM` to hyper (see `refused_stream`); the application's own errors
// pass through unchanged.
impl<S, B, R> hyper::service::Service<Request<Incoming>> for TrackedService<S, R>
where
    S: Service<Request<AppBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    R: Recorder,
{
    type Response = Response<TrackedBody<B, R::Measure>>;
    type Error = BoxError;
    type Future = TrackedFuture<Oneshot<S, Request<AppBody>>, R::Measure>;

    #[inline]
    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let request = RequestLine::of(&req);
        let phase = self.shared.state.phase();
        let mut close = false;
        if phase >= Phase::Deregistering {
            after_unready(&self.shared, &self.conn, phase);
            if phase >= Phase::Draining {
                close = req.version() <= Version::HTTP_11;
                // An HTTP/2 client that ignored the drain's GOAWAY past its grace.
                let refused = self.conn.is_refusing();
                if refused || self.shared.stop_accepting == StopAccepting::Reject {
                    let answer = if refused {
                        Answer::Refused
                    } else {
                        Answer::Unavailable
                    };
                    return TrackedFuture::answer(answer, close, request);
                }
            }
        }
        if self.conn.aged() {
            // Past its maximum age: this HTTP/1 response closes the connection (HTTP/2 gets a
            // GOAWAY from the connection's task).
            close |= req.version() <= Version::HTTP_11;
        }
        if req.version() == Version::HTTP_2 {
            self.conn.saw_http2();
        }
        if let Some(admission) = &self.shared.admission {
            if !admission.try_acquire() {
                if let Some(answer) = shed(admission, &req, self.shared.shed_status) {
                    return self.beyond_limit(admission, req, answer, close, request);
                }
            }
        }
        // The trace context first, so that the measurement sees a sampled request's trace
        // (its exemplar). Without a `traceparent` and sampling off: a lookup and a branch.
        let span = if self.shared.trace.may_trace(req.headers()) {
            self.shared.trace.start(&mut req)
        } else {
            None
        };
        // Request start: measured here, outside the application (e.g. timed, when it has a
        // metrics layer to name the route while this future polls it).
        let measure = self.recorder.start(&req);
        let http1 = req.version() <= Version::HTTP_11;
        let req = req.map(|body| app_body(body, &self.conn, http1, &self.shared.timeouts));
        TrackedFuture {
            guard: Some(self.conn.start()),
            inner: Some(self.inner.clone().oneshot(req)),
            measure,
            span,
            close,
            answer: Answer::Unavailable,
            request,
            queued: None,
        }
    }
}

impl<S, R> TrackedService<S, R> {
    /// A request beyond admission control's limit, shed with `answer` at once or, with a
    /// queue (`PODCYCLE_ADMISSION_QUEUE`), when its wait ends without a slot. Not in flight
    /// (no guard) until admitted.
    #[cold]
    #[inline(never)]
    fn beyond_limit<B>(
        &self,
        admission: &Arc<Controller>,
        req: Request<Incoming>,
        answer: Answer,
        close: bool,
        request: RequestLine,
    ) -> TrackedFuture<Oneshot<S, Request<AppBody>>, R::Measure>
    where
        S: Service<Request<AppBody>, Response = Response<B>> + Clone + Send + 'static,
        R: Recorder,
    {
        let Some(ticket) = admission.enqueue() else {
            admission.count_shed();
            return TrackedFuture::answer(answer, close, request);
        };
        let (conn, inner, recorder) = (self.conn.clone(), self.inner.clone(), self.recorder);
        let http1 = req.version() <= Version::HTTP_11;
        let req = req.map(|body| app_body(body, &self.conn, http1, &self.shared.timeouts));
        // Measured from its admission: the wait is bounded by the queue's setting.
        let admit = Box::new(move || {
            let measure = recorder.start(&req);
            (inner.oneshot(req), measure, conn.start())
        });
        let mut future = TrackedFuture::answer(answer, close, request);
        future.queued = Some(Box::new(Queued { ticket, admit }));
        future
    }
}

/// A request waiting for an admission slot: its place in the queue, and what admits it (the
/// application's future, its measurement, its in-flight guard).
pub(crate) struct Queued<F, M> {
    ticket: Ticket,
    #[allow(clippy::type_complexity)]
    admit: Box<dyn FnOnce() -> (F, Option<M>, RequestGuard) + Send>,
}

impl<F, M> fmt::Debug for Queued<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

/// Polls a waiting request's ticket (`queued`, if any): `Ready(true)` once admitted, with
/// the application's future, measurement and guard in place; `Ready(false)` when it is to
/// be answered without the application (shed, or never queued).
#[cold]
#[inline(never)]
fn admit_queued<F, M>(
    queued: &mut Option<Box<Queued<F, M>>>,
    mut inner: Pin<&mut Option<F>>,
    measure: &mut Option<M>,
    guard: &mut Option<RequestGuard>,
    cx: &mut Context<'_>,
) -> Poll<bool> {
    let Some(q) = queued else {
        return Poll::Ready(false);
    };
    let admitted = ready!(q.ticket.poll_admit(cx));
    if let Some(q) = queued.take() {
        if admitted {
            let (future, m, g) = (q.admit)();
            inner.set(Some(future));
            (*measure, *guard) = (m, Some(g));
        }
    }
    Poll::Ready(admitted)
}

/// A request beyond admission control's limit: the answer that sheds it (`503` or `429`,
/// `RESOURCE_EXHAUSTED` to a gRPC request), or `None` for a WebSocket upgrade or a `CONNECT`,
/// never shed (admitted beyond the limit; its guard releases it as any other's).
#[cold]
#[inline(never)]
fn shed<B>(admission: &Controller, req: &Request<B>, status: ShedStatus) -> Option<Answer> {
    if req.headers().contains_key(UPGRADE) || req.method() == Method::CONNECT {
        admission.acquire_anyway();
        return None;
    }
    let grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    Some(match (grpc, status) {
        (true, _) => Answer::ShedGrpc,
        (false, ShedStatus::ServiceUnavailable) => Answer::Shed,
        (false, ShedStatus::TooManyRequests) => Answer::ShedTooMany,
    })
}

/// A request after readiness turned off: counted as on a new or a reused connection; during
/// the delay, the connection is closed after this response once it is due in the close
/// schedule, so that keep-alive clients re-dial while the listener is still open.
#[cold]
#[inline(never)]
fn after_unready(shared: &ServeContext, conn: &ConnState, phase: Phase) {
    let counters = &shared.state.counters;
    let counter = if conn.opened_after(counters.unready_mark()) {
        &counters.requests_after_unready_new
    } else {
        &counters.requests_after_unready
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if phase == Phase::Deregistering && !conn.aged() {
        let since = shared
            .state
            .shutdown_since
            .get()
            .map_or(Duration::MAX, |at| at.elapsed());
        if since >= conn.close_due(shared.close_spread) {
            conn.close_soon();
        }
    }
}

/// What a panic's log line and answer need of its request (the request itself is the
/// application's by then).
#[derive(Debug)]
pub(crate) struct RequestLine {
    method: Method,
    path: Option<PathAndQuery>,
    http1: bool,
}

impl RequestLine {
    #[inline]
    fn of<B>(req: &Request<B>) -> RequestLine {
        RequestLine {
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            http1: req.version() <= Version::HTTP_11,
        }
    }

    fn path(&self) -> &str {
        self.path.as_ref().map_or("/", PathAndQuery::path)
    }
}

/// The body of the `500` that answers a request whose handler panicked.
const PANIC_TEXT: &[u8] = b"Internal Server Error\n";

pin_project! {
    /// The response future of [`TrackedService`]; holds the in-flight guard until the
    /// response exists, then hands it to the body. A panic of the application's future is
    /// caught and answered `500` (see [`answer_panic`]).
    #[derive(Debug)]
    pub(crate) struct TrackedFuture<F, M> {
        #[pin]
        inner: Option<F>,
        guard: Option<RequestGuard>,
        measure: Option<M>,
        // A sampled request's span: entered while the application's future is polled.
        span: Option<Box<RequestSpan>>,
        close: bool,
        // Without `inner`: what to answer instead of the application.
        answer: Answer,
        request: RequestLine,
        // Without `inner`: a request waiting for an admission slot.
        queued: Option<Box<Queued<F, M>>>,
    }
}

/// What a request that never reaches the application gets.
///
/// One byte, as the `bool` it replaced: the future of every request carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `503` with `Retry-After: 1` (reject mode during the drain).
    Unavailable,
    /// The stream is refused (`REFUSED_STREAM`): an HTTP/2 client past its GOAWAY grace.
    Refused,
    /// Shed by admission control: `503` with `Retry-After: 1`.
    Shed,
    /// Shed by admission control: `429` with `Retry-After: 1` (`PODCYCLE_SHED_STATUS=429`).
    ShedTooMany,
    /// Shed by admission control, a gRPC request: trailers-only `RESOURCE_EXHAUSTED`.
    ShedGrpc,
}

impl<F, M> TrackedFuture<F, M> {
    /// A request answered without the application (and not in flight).
    #[cold]
    #[inline(never)]
    fn answer(answer: Answer, close: bool, request: RequestLine) -> Self {
        TrackedFuture {
            inner: None,
            guard: None,
            measure: None,
            span: None,
            close,
            answer,
            request,
            queued: None,
        }
    }
}

/// The answer of a request that never reached the application (see [`Answer`]).
#[cold]
#[inline(never)]
fn answer_without_app<B: Body + Send + 'static, M: Measure>(
    answer: Answer,
    close: bool,
) -> Result<Response<TrackedBody<B, M>>, BoxError> {
    if answer == Answer::Refused {
        return Err(refused_stream());
    }
    let mut res = Response::new(TrackedBody::own(false, None));
    match answer {
        Answer::ShedGrpc => {}
        Answer::ShedTooMany => *res.status_mut() = StatusCode::TOO_MANY_REQUESTS,
        _ => *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE,
    }
    let headers = res.headers_mut();
    if answer == Answer::ShedGrpc {
        // Trailers-only: the status in the headers of an empty response (gRPC over HTTP/2).
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("overloaded:%20request%20shed%20by%20admission%20control"),
        );
    } else {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(res)
}

impl<F, B, E, M> Future for TrackedFuture<F, M>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body + Send + 'static,
    M: Measure,
{
    type Output = Result<Response<TrackedBody<B, M>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            if ready!(admit_queued(
                this.queued,
                this.inner,
                this.measure,
                this.guard,
                cx
            )) {
                // Admitted after a wait: polled again at once, with the application's future.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(answer_without_app(*this.answer, *this.close));
        };
        let polled = {
            // Entered out of line (sampled requests only), so that this poll stays as small as
            // it was for the others.
            let _entered = this.span.as_deref().map(RequestSpan::enter);
            ready!(M::poll_app(this.measure, || poll_catching(inner, cx)))
        };
        if let Some(span) = this.span.as_ref() {
            span_at_response(span, &polled, this.measure);
        }
        let res = match polled {
            Ok(res) => res,
            Err(payload) => {
                let route = this.measure.take().and_then(M::at_panic);
                // Poisoned: never polled again. Dropped now, its own panic (if any) caught.
                let _ = panic::catch_unwind(AssertUnwindSafe(|| this.inner.set(None)));
                return Poll::Ready(Ok(answer_panic(
                    payload,
                    route,
                    this.request,
                    this.guard.take(),
                )));
            }
        };
        let mut close = *this.close;
        let mut guard = this.guard.take();
        let mut res = res;
        let slot = if matches!(&res, Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS)
            && this.request.http1
        {
            upgrade_slot_or_refuse(&guard, &mut res)
        } else {
            None
        };
        let measure = if let Some(slot) = slot {
            // An upgrade (a WebSocket): in flight, and measured, until the upgraded I/O is
            // dropped; never `Connection: close` (it would replace `Connection: upgrade`).
            close = false;
            hold_upgrade(guard.take(), slot, this.measure.take().map(M::at_upgrade));
            None
        } else {
            // Response head: recorded now if the request failed or sends no body; else when
            // its body ends.
            this.measure.take().and_then(|m| m.at_response(&res))
        };
        Poll::Ready(res.map_err(Into::into).map(|res| {
            let span = this.span.take();
            let mut res = res.map(|body| TrackedBody {
                inner: Some(M::body(measure, body)),
                guard,
                span,
                panic_text: false,
            });
            if close {
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }))
    }
}

/// Records the response's status (500 for a panic or an error) and its route on a sampled
/// request's span.
#[cold]
#[inline(never)]
fn span_at_response<B, E, M: Measure>(
    span: &RequestSpan,
    polled: &std::thread::Result<Result<Response<B>, E>>,
    measure: &Option<M>,
) {
    let status = match polled {
        Ok(Ok(res)) => res.status().as_u16(),
        _ => 500,
    };
    span.at_response(status, M::route(measure).as_deref());
}

/// A slot for the `101` in `res` under the upgraded connections' cap
/// (`PODCYCLE_MAX_UPGRADED_CONNECTIONS`); without one, `res` becomes a `503` with
/// `Retry-After: 1` (the application's upgrade then never happens), so that upgraded
/// connections cannot take the last connection slots from ordinary requests.
#[cold]
#[inline(never)]
fn upgrade_slot_or_refuse<B, E>(
    guard: &Option<RequestGuard>,
    res: &mut Result<Response<B>, E>,
) -> Option<UpgradeSlot> {
    let slot = guard.as_ref()?.upgrade_slot();
    if slot.is_some() {
        return slot;
    }
    if let Ok(res) = res {
        tracing::warn!(
            "upgrade refused with 503: PODCYCLE_MAX_UPGRADED_CONNECTIONS upgraded connections \
             are open (the rest of the connection limit is kept for ordinary requests)"
        );
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = res.headers_mut();
        headers.remove(http::header::UPGRADE);
        headers.remove(http::header::SEC_WEBSOCKET_ACCEPT);
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    None
}

/// Keeps the in-flight guard and the measurement of a request answered `101` on its
/// connection until the upgraded I/O is dropped or cut.
#[cold]
#[inline(never)]
fn hold_upgrade(guard: Option<RequestGuard>, slot: UpgradeSlot, end: Option<Box<dyn UpgradeEnd>>) {
    if let Some(guard) = guard {
        guard.hold_upgrade(slot, end);
    }
}

/// Polls `inner`, catching a panic: `Ready(Err(payload))`, and `inner` must not be polled
/// again.
#[inline]
fn poll_catching<F: Future>(
    inner: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<std::thread::Result<F::Output>> {
    match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(payload)),
    }
}

/// The error that makes hyper reset an HTTP/2 stream with `REFUSED_STREAM` (hyper resets a
/// stream whose service failed with the `h2::Reason` found in the error's sources): the
/// client knows the request was not processed and may retry it on another connection.
#[cold]
#[inline(never)]
fn refused_stream() -> BoxError {
    #[cfg(feature = "http2")]
    {
        Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM))
    }
    #[cfg(not(feature = "http2"))]
    {
        "stream refused: the connection is draining".into()
    }
}

/// The answer to a request whose response future panicked (recorded already): logged, and
/// a `500` with a short text, `Connection: close` on HTTP/1 (the application may be in a
/// state its next request should not see on this connection).
#[cold]
#[inline(never)]
fn answer_panic<B: Body + Send + 'static, M: Measure>(
    payload: Box<dyn Any + Send>,
    route: Option<Arc<str>>,
    request: &RequestLine,
    guard: Option<RequestGuard>,
) -> Response<TrackedBody<B, M>> {
    let message = crate::panic::message(&*payload);
    let method = &request.method;
    match route {
        Some(route) => {
            tracing::error!(%method, %route, panic = %message, "request handler panicked; answered 500")
        }
        None => {
            tracing::error!(%method, path = request.path(), panic = %message, "request handler panicked; answered 500")
        }
    }
    let mut res = Response::new(TrackedBody::own(true, guard));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if request.http1 {
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

pin_project! {
    /// A response body that keeps its request counted in flight until it ends (and, through
    /// the recorder's body `M::Body`, measured). A panic of the application's body is caught:
    /// the body ends with [`BodyPanicked`], so that hyper cuts the response short.
    pub(crate) struct TrackedBody<B, M>
    where
        B: Body,
        B: Send,
        B: 'static,
        M: Measure,
    {
        #[pin]
        inner: Option<M::Body<B>>,
        guard: Option<RequestGuard>,
        // A sampled request's span: entered while the body is polled, closed when it is
        // dropped.
        span: Option<Box<RequestSpan>>,
        // Without `inner`: podcycle's own body, empty or (`true` until sent) the `500` of a
        // panic's text, sent as one frame. A flag, not the text: a word less to move.
        panic_text: bool,
    }
}

impl<B: Body + Send + 'static, M: Measure> fmt::Debug for TrackedBody<B, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedBody")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<B: Body + Send + 'static, M: Measure> TrackedBody<B, M> {
    /// A body of podcycle's own: empty, or [`PANIC_TEXT`]; keeping `guard` until it is sent.
    fn own(panic_text: bool, guard: Option<RequestGuard>) -> TrackedBody<B, M> {
        TrackedBody {
            inner: None,
            guard,
            span: None,
            panic_text,
        }
    }
}

impl<B, M> Body for TrackedBody<B, M>
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    M: Measure,
{
    type Data = TrackedData<B::Data>;
    type Error = BoxError;

    // Not inlined into hyper's dispatcher: inlined, it grows the dispatcher's write path
    // past the point where its own helpers are inlined (callgrind: ~70 instructions per
    // request more, in calls).
    #[inline(never)]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            this.guard.take();
            if !std::mem::take(this.panic_text) {
                return Poll::Ready(None);
            }
            return Poll::Ready(Some(Ok(Frame::data(TrackedData::Text(PANIC_TEXT)))));
        };
        let _entered = this.span.as_deref().map(RequestSpan::enter);
        let frame = match panic::catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(Poll::Ready(frame)) => frame,
            Ok(Poll::Pending) => return Poll::Pending,
            Err(payload) => {
                let inner = this.inner.as_mut().as_pin_mut();
                let route = inner.and_then(M::body_panicked);
                // Poisoned: never polled again. Dropped now, its own panic (if any) caught.
                let _ = panic::catch_unwind(AssertUnwindSafe(|| this.inner.set(None)));
                this.guard.take();
                return Poll::Ready(Some(Err(body_panicked(payload, route))));
            }
        };
        if !matches!(frame, Some(Ok(_))) {
            this.guard.take();
        }
        Poll::Ready(frame.map(|f| match f {
            Ok(f) => Ok(f.map_data(TrackedData::App)),
            Err(e) => Err(e.into()),
        }))
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(b) => b.is_end_stream(),
            None => !self.panic_text,
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(if self.panic_text {
                PANIC_TEXT.len() as u64
            } else {
                0
            }),
        }
    }
}

/// Logs a panic of a response body (recorded already) and makes the error it ends with.
#[cold]
#[inline(never)]
fn body_panicked(payload: Box<dyn Any + Send>, route: Option<Arc<str>>) -> BoxError {
    let message = crate::panic::message(&*payload);
    let route = route.as_deref().unwrap_or("(unknown)");
    tracing::error!(%route, panic = %message, "response body panicked; response cut short");
    Box::new(BodyPanicked)
}

/// The error a response body ends with when it panicked: hyper closes the HTTP/1 connection
/// or resets the HTTP/2 stream, and the client sees a cut-short response.
#[derive(Debug)]
pub(crate) struct BodyPanicked;

impl fmt::Display for BodyPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response body panicked (its message is in the error log); the response was cut short")
    }
}

impl std::error::Error for BodyPanicked {}

/// A chunk of a [`TrackedBody`]: the application's, or podcycle's own text.
#[derive(Debug)]
pub(crate) enum TrackedData<D> {
    /// From the application's body.
    App(D),
    /// podcycle's own (the `500` of a panic).
    Text(&'static [u8]),
}

impl<D: Buf> Buf for TrackedData<D> {
    #[inline]
    fn remaining(&self) -> usize {
        match self {
            TrackedData::App(d) => d.remaining(),
            TrackedData::Text(t) => t.len(),
        }
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        match self {
            TrackedData::App(d) => d.chunk(),
            TrackedData::Text(t) => t,
        }
    }

    #[inline]
    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        match self {
            TrackedData::App(d) => d.chunks_vectored(dst),
            TrackedData::Text(t) => t.chunks_vectored(dst),
        }
    }

    #[inline]
    fn advance(&mut self, cnt: usize) {
        match self {
            TrackedData::App(d) => d.advance(cnt),
            TrackedData::Text(t) => t.advance(cnt),
        }
    }

    #[inline]
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        match self {
            TrackedData::App(d) => d.copy_to_bytes(len),
            TrackedData::Text(t) => t.copy_to_bytes(len),
        }
    }
}
