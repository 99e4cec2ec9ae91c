//! The application listener: accepts connections, counts requests in flight until their
//! bodies end, and closes connections politely once the propagation delay is over.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use crate::config::StopAccepting;
use crate::connections::{ConnState, Connections, RequestGuard};
use crate::error::BoxError;
#[cfg(feature = "metrics")]
use crate::metrics::{at_response, poll_naming_route, HttpMetrics, RecordingBody, Timer};
#[cfg(not(feature = "metrics"))]
use crate::metrics_off::{at_response, poll_naming_route, HttpMetrics, RecordingBody, Timer};
use crate::phase::Phase;
use crate::state::State;

/// How long a connection that is idle when draining starts may stay open before it is closed.
/// A keep-alive client sending back to back gets its next response with `Connection: close`
/// instead of having the connection closed under a request already on the wire.
pub(crate) const IDLE_LINGER: Duration = Duration::from_millis(250);

/// What the serving stack needs of the lifecycle: its phase and signals, the connection
/// registry, and the stop-accepting mode.
#[derive(Debug)]
pub(crate) struct ServeContext {
    pub(crate) state: Arc<State>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) stop_accepting: StopAccepting,
}

/// How long reject-mode connections may take to receive their 503 once the drain is over.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Accepts connections until the propagation delay is over (or, in reject mode, until the
/// drain is over), serving each with `service`.
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
    let reject_cut = signals.drain_deadline.child_token();
    let mut backlog_left: usize = 0;
    loop {
        let accepted = if backlog_left > 0 {
            // Closing: connections the kernel already completed would be reset by the close;
            // take them and answer their requests (with `Connection: close`) instead.
            backlog_left -= 1;
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
                accepted = listener.accept() => accepted,
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
        let shared = shared.clone();
        let service = service.clone();
        let builder = builder.clone();
        if reject && shared.state.signals.delay_over.is_cancelled() {
            let cut = reject_cut.clone();
            rejecting.spawn(async move {
                tokio::select! {
                    _ = serve_connection(shared, &builder, stream, service, metrics) => {}
                    _ = cut.cancelled() => {}
                }
            });
        } else {
            connections.spawn(async move {
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
    let (conn_state, _registered) = shared.connections.open();
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
    let stop = signals.delay_over.cancelled();
    tokio::pin!(stop);
    let mut registered = false;
    let served = std::future::poll_fn(|cx| {
        let stopping = if registered {
            shared.state.phase() >= Phase::Draining
        } else {
            registered = true;
            stop.as_mut().poll(cx).is_ready()
        };
        if stopping {
            return Poll::Ready(None);
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await;
    if let Some(res) = served {
        return log_connection_end(res);
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
        self.project().inner.poll_read(cx, buf)
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
                    };
                }
            }
        }
        // Timed here, outside the router, when the application has a metrics layer: the
        // layer names the route through the hand-off while this future polls the router.
        let timer = Timer::for_serving(self.metrics, req.method());
        TrackedFuture {
            guard: Some(self.conn.start()),
            inner: Some(self.inner.clone().oneshot(req)),
            timer,
            close,
        }
    }
}

pin_project! {
    /// The response future of [`TrackedService`]; holds the in-flight guard until the
    /// response exists, then hands it to the body.
    #[derive(Debug)]
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<RequestGuard>,
        timer: Option<Timer>,
        close: bool,
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
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let mut res = Response::new(TrackedBody {
                inner: None,
                guard: None,
            });
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            if *this.close {
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            return Poll::Ready(Ok(res));
        };
        let res = ready!(poll_naming_route(this.timer, inner, cx));
        let close = *this.close;
        let guard = this.guard.take();
        // Recorded now if the request failed or sends no body; else when its body ends.
        let timer = at_response(this.timer.take(), &res);
        Poll::Ready(res.map(|res| {
            let mut res = res.map(|body| TrackedBody {
                inner: Some(RecordingBody::new(body, timer)),
                guard,
            });
            if close {
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }))
    }
}

pin_project! {
    /// A response body that keeps its request counted in flight until it ends (and, through
    /// [`RecordingBody`], measured).
    #[derive(Debug)]
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: Option<RecordingBody<B>>,
        guard: Option<RequestGuard>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
