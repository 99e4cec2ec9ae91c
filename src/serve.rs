//! The application listener: accepts connections, counts requests in flight until their
//! bodies end, and closes connections politely once the propagation delay is over.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use crate::config::StopAccepting;
use crate::connections::{ConnState, Connections, RequestGuard, Timeouts};
use crate::error::BoxError;
#[cfg(feature = "metrics")]
use crate::metrics::{at_panic, at_response, poll_naming_route, HttpMetrics, RecordingBody, Timer};
#[cfg(not(feature = "metrics"))]
use crate::metrics_off::{
    at_panic, at_response, poll_naming_route, HttpMetrics, RecordingBody, Timer,
};
use crate::phase::Phase;
use crate::state::State;

/// How long a connection that is idle when draining starts may stay open before it is closed.
/// A keep-alive client sending back to back gets its next response with `Connection: close`
/// instead of having the connection closed under a request already on the wire.
pub(crate) const IDLE_LINGER: Duration = Duration::from_millis(250);

/// What the serving stack needs of the lifecycle: its phase and signals, the connection
/// registry, the stop-accepting mode and the connection limit.
#[derive(Debug)]
pub(crate) struct ServeContext {
    pub(crate) state: Arc<State>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) stop_accepting: StopAccepting,
    pub(crate) timeouts: Timeouts,
    /// The most connections open at once ([`crate::connections::max_app_connections`]).
    pub(crate) max_connections: usize,
}

/// How often at most the accept loop logs that it is waiting at the connection limit.
const AT_LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long reject-mode connections may take to receive their 503 once the drain is over.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Accepts connections until the propagation delay is over (or, in reject mode, until the
/// drain is over), serving each with `service`.
///
/// Each connection's task holds a permit of a semaphore of `max_connections`: at the limit
/// the loop accepts nothing until a connection closes (the kernel's backlog holds the rest),
/// so a flood cannot take every file descriptor and starve the admin listener.
pub(crate) async fn accept_loop<S, B>(
    shared: Arc<ServeContext>,
    listener: TcpListener,
    service: S,
    connections: tokio_util::task::TaskTracker,
    metrics: &'static HttpMetrics,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // No hyper timer, as `axum::serve`: with one, hyper allocates and polls a header-read
    // sleep for every HTTP/1 request (~2% of server CPU in the load benchmark).
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let reject = shared.stop_accepting == StopAccepting::Reject;
    let signals = &shared.state.signals;
    // Reject mode: connections accepted after the delay, answered 503 and closed. Not part of
    // the drain (they would hold it until the listener closes), but given their answer.
    let rejecting = tokio_util::task::TaskTracker::new();
    // One coarse sweep for every connection's header-read and idle timeouts, instead of a
    // timer per read (hyper's timer cost ~2% of server CPU in the load benchmark).
    let _sweep = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
        let (connections, timeouts) = (shared.connections.clone(), shared.timeouts);
        async move {
            let mut tick = tokio::time::interval(timeouts.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                connections.sweep(timeouts);
            }
        }
    }));
    let reject_cut = signals.drain_deadline.child_token();
    let mut backlog_left: usize = 0;
    let limit = Arc::new(Semaphore::new(
        shared.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut at_limit_logged: Option<Instant> = None;
    loop {
        if permit.is_none() {
            permit = limit.clone().try_acquire_owned().ok();
            if permit.is_none()
                && at_limit_logged.is_none_or(|at| at.elapsed() >= AT_LIMIT_LOG_EVERY)
            {
                tracing::warn!(
                    max_connections = shared.max_connections,
                    "connection limit reached: accepting again when a connection closes \
                     (logged at most every 10 s)"
                );
                at_limit_logged = Some(Instant::now());
            }
        }
        let accepted = if backlog_left > 0 {
            // Closing: connections the kernel already completed would be reset by the close;
            // take them and answer their requests (with `Connection: close`) instead, as far
            // as the connection limit allows.
            backlog_left -= 1;
            if permit.is_none() {
                break;
            }
            match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                Ok(accepted) => accepted,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                _ = signals.drain_deadline.cancelled() => break,
                _ = signals.drained.cancelled() => {
                    // Reject mode, drain over: answer what is in the backlog, then close.
                    backlog_left = 1024;
                    continue;
                }
                _ = signals.delay_over.cancelled(), if !reject => {
                    backlog_left = 1024;
                    continue;
                }
                acquired = limit.clone().acquire_owned(), if permit.is_none() => {
                    permit = acquired.ok();
                    continue;
                }
                accepted = listener.accept(), if permit.is_some() => accepted,
            }
        };
        let (stream, _remote) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                shared.connections.app_accept_errors.record("app", &e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Held by the connection's task until it ends.
        let permit = permit.take();
        let shared = shared.clone();
        let service = service.clone();
        let builder = builder.clone();
        if reject && shared.state.signals.delay_over.is_cancelled() {
            let cut = reject_cut.clone();
            rejecting.spawn(async move {
                let _permit = permit;
                tokio::select! {
                    _ = serve_connection(shared, &builder, stream, service, metrics) => {}
                    _ = cut.cancelled() => {}
                }
            });
        } else {
            connections.spawn(async move {
                let _permit = permit;
                serve_connection(shared, &builder, stream, service, metrics).await;
            });
        }
    }
    drop(listener);
    signals.listener_closed.cancel();
    tracing::info!("application listener closed");
    rejecting.close();
    if tokio::time::timeout(REJECT_LINGER, rejecting.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = rejecting.len(),
            "reject-mode connections not done after their linger: closing them"
        );
        reject_cut.cancel();
        rejecting.wait().await;
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection<S, B>(
    shared: Arc<ServeContext>,
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: S,
    metrics: &'static HttpMetrics,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (conn_state, _registered) = shared
        .connections
        .open(shared.state.signals.delay_over.child_token());
    let service = TrackedService {
        inner: service,
        conn: conn_state.clone(),
        shared: shared.clone(),
        metrics,
    };
    let io = ProgressIo {
        inner: stream,
        conn: conn_state.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // Serve until the propagation delay is over. Not `select!`: that would poll the
    // cancellation future, which takes a lock, on every wake-up of a busy connection. Polled
    // once, it keeps this task's waker; after that, the phase (one atomic load) says when.
    let signals = &shared.state.signals;
    // Woken when the delay is over, or when the sweep times the connection out.
    let stop = conn_state.wake.cancelled();
    tokio::pin!(stop);
    let mut registered = false;
    let mut goaway = false;
    let served = std::future::poll_fn(|cx| {
        let stopping = if registered {
            shared.state.phase() >= Phase::Draining || conn_state.timed_out()
        } else {
            registered = true;
            stop.as_mut().poll(cx).is_ready()
        };
        if stopping {
            return Poll::Ready(None);
        }
        if !goaway && conn_state.aged() && conn_state.is_http2() {
            // Past its maximum age: a graceful GOAWAY, in-flight streams finish, the client
            // reconnects (to another pod, after a rollout). HTTP/1 gets `Connection: close`
            // on its next response instead (TrackedService).
            goaway = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await;
    if let Some(res) = served {
        return log_connection_end(res);
    }
    if conn_state.timed_out() && shared.state.phase() < Phase::Draining {
        // Nothing in flight past the header-read or idle timeout: close.
        return;
    }
    // Draining. A connection busy with a request gets `Connection: close` on its response
    // (hyper disables keep-alive); an idle one is given a short linger so that a request
    // already on the wire is answered, with `Connection: close`, rather than reset.
    if conn_state.in_flight() == 0 {
        tokio::select! {
            res = conn.as_mut() => return log_connection_end(res),
            _ = tokio::time::sleep(IDLE_LINGER) => {}
            _ = signals.drain_deadline.cancelled() => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    loop {
        let before = conn_state.progress();
        tokio::select! {
            res = conn.as_mut() => return log_connection_end(res),
            _ = signals.drain_deadline.cancelled() => {
                let in_flight = conn_state.in_flight();
                if in_flight > 0 {
                    shared.connections.force_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(in_flight, "drain deadline: connection closed with requests in flight");
                }
                return;
            }
            _ = tokio::time::sleep(IDLE_LINGER) => {
                // Nothing in flight, no request started and no byte written for a whole
                // linger: idle, or a request whose headers never completed (hyper's graceful
                // shutdown waits for those). It must not hold the drain, and was not cut.
                if conn_state.in_flight() == 0 && conn_state.progress() == before {
                    tracing::debug!("closing a draining connection with no request in flight");
                    return;
                }
            }
        }
    }
}

pin_project! {
    /// The connection's socket, noting write progress in its [`ConnState`] so that the drain
    /// can tell a connection still sending a response from one that does nothing.
    #[derive(Debug)]
    struct ProgressIo {
        #[pin]
        inner: TcpStream,
        conn: Arc<ConnState>,
    }
}

impl tokio::io::AsyncRead for ProgressIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let read = ready!(this.inner.poll_read(cx, buf));
        if buf.filled().len() > before {
            this.conn.read();
        }
        Poll::Ready(read)
    }
}

impl tokio::io::AsyncWrite for ProgressIo {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let written = ready!(this.inner.poll_write(cx, buf));
        this.conn.wrote();
        Poll::Ready(written)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let written = ready!(this.inner.poll_write_vectored(cx, bufs));
        this.conn.wrote();
        Poll::Ready(written)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

fn log_connection_end(res: Result<(), BoxError>) {
    if let Err(error) = res {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Wraps the application's service: counts requests per connection, marks responses
/// `Connection: close` while draining, and rejects in reject mode.
#[derive(Clone, Debug)]
pub(crate) struct TrackedService<S> {
    inner: S,
    conn: Arc<ConnState>,
    shared: Arc<ServeContext>,
    metrics: &'static HttpMetrics,
}

// hyper's `Service` takes `&self`: nothing of ours is cloned per request (only the inner
// service, as `axum::serve` does).
impl<S, B> hyper::service::Service<Request<Incoming>> for TrackedService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
    B: Body,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<Oneshot<S, Request<Incoming>>>;

    #[inline]
    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let request = RequestLine::of(&req);
        let phase = self.shared.state.phase();
        let mut close = false;
        if phase >= Phase::Deregistering {
            self.shared
                .connections
                .requests_after_unready
                .fetch_add(1, Ordering::Relaxed);
            if phase >= Phase::Draining {
                close = req.version() <= Version::HTTP_11;
                if self.shared.stop_accepting == StopAccepting::Reject {
                    return TrackedFuture {
                        inner: None,
                        guard: None,
                        timer: None,
                        close,
                        request,
                    };
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
        // Timed here, outside the router, when the application has a metrics layer: the
        // layer names the route through the hand-off while this future polls the router.
        let timer = Timer::for_serving(self.metrics, req.method());
        TrackedFuture {
            guard: Some(self.conn.start()),
            inner: Some(self.inner.clone().oneshot(req)),
            timer,
            close,
            request,
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
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<RequestGuard>,
        timer: Option<Timer>,
        close: bool,
        request: RequestLine,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            let mut res = Response::new(TrackedBody::text(b"", None));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            if *this.close {
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            return Poll::Ready(Ok(res));
        };
        let res = match ready!(poll_naming_route(this.timer, inner, cx)) {
            Ok(res) => res,
            Err(payload) => {
                let route = at_panic(this.timer.take());
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
        let close = *this.close;
        let guard = this.guard.take();
        // Recorded now if the request failed or sends no body; else when its body ends.
        let timer = at_response(this.timer.take(), &res);
        Poll::Ready(res.map(|res| {
            let mut res = res.map(|body| TrackedBody {
                inner: Some(RecordingBody::new(body, timer)),
                guard,
                text: b"",
            });
            if close {
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }))
    }
}

/// The answer to a request whose response future panicked (recorded already): logged, and
/// a `500` with a short text, `Connection: close` on HTTP/1 (the application may be in a
/// state its next request should not see on this connection).
#[cold]
#[inline(never)]
fn answer_panic<B>(
    payload: Box<dyn Any + Send>,
    route: Option<Arc<str>>,
    request: &RequestLine,
    guard: Option<RequestGuard>,
) -> Response<TrackedBody<B>> {
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
    let mut res = Response::new(TrackedBody::text(PANIC_TEXT, guard));
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
    /// [`RecordingBody`], measured). A panic of the application's body is caught: the body
    /// ends with [`BodyPanicked`], so that hyper cuts the response short.
    #[derive(Debug)]
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: Option<RecordingBody<B>>,
        guard: Option<RequestGuard>,
        // Without `inner`: podcycle's own body (the `500` of a panic), sent as one frame.
        text: &'static [u8],
    }
}

impl<B> TrackedBody<B> {
    /// A body of podcycle's own: `text`, keeping `guard` until it is sent.
    fn text(text: &'static [u8], guard: Option<RequestGuard>) -> TrackedBody<B> {
        TrackedBody {
            inner: None,
            guard,
            text,
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = TrackedData<B::Data>;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            this.guard.take();
            if this.text.is_empty() {
                return Poll::Ready(None);
            }
            let text = std::mem::take(this.text);
            return Poll::Ready(Some(Ok(Frame::data(TrackedData::Text(text)))));
        };
        let frame = match panic::catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(Poll::Ready(frame)) => frame,
            Ok(Poll::Pending) => return Poll::Pending,
            Err(payload) => {
                let inner = this.inner.as_mut().as_pin_mut();
                let route = inner.and_then(RecordingBody::panicked);
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
            None => self.text.is_empty(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(self.text.len() as u64),
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
