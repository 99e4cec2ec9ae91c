//! The application listener: accepts connections, counts requests in flight until their
//! bodies end, and closes connections politely once the propagation delay is over.
//!
//! - this module: the accept loop (connection limit, reject mode, the timeout sweep) and each
//!   connection's life (serve, time out, drain);
//! - [`io`]: the connection's socket, noting read and write progress for the sweep and the drain;
//! - [`warming`]: the listener during warm-up, answering `503` at once;
//! - [`tracked`]: the per-request wrapper around the application's service (in-flight guard,
//!   `Connection: close` while draining, reject mode, timing, panics answered 500).

mod io;
mod request_body;
mod tracked;
mod warming;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Service;

use crate::config::StopAccepting;
use crate::connections::{AppSlots, ConnState, Connections, Timeouts};
use crate::error::BoxError;
use crate::phase::Phase;
use crate::recorder::Recorder;
use crate::state::State;

use self::io::ProgressIo;
pub(crate) use self::request_body::AppBody;
use self::tracked::TrackedService;
pub(crate) use self::warming::answer_while_warming;

/// The application's service as the serving stack needs it: for `Request<AppBody>`, answering
/// `Response<B>`, cloned per request, sent to each connection's task. Implemented for every
/// such service: this only names the bound once.
pub(crate) trait AppService<B>:
    Service<Request<AppBody>, Response = Response<B>, Error: Into<BoxError>, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> AppService<B> for S
where
    S: Service<Request<AppBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
}

/// The response body of an [`AppService`]: sent to the connection's task, its errors boxed.
pub(crate) trait AppResponseBody:
    Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> AppResponseBody for B
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
}

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
    /// The most upgraded connections (WebSockets) open at once, fewer than
    /// `max_connections` so that they never take the last slots from ordinary requests.
    pub(crate) max_upgraded: usize,
    /// The listener's slots as `/readyz` sees them.
    pub(crate) slots: Arc<AppSlots>,
    /// The shutdown delay's keep-alive close schedule: each connection is due to close at its
    /// own moment within this time of the shutdown request (half the delay's floor).
    pub(crate) close_spread: Duration,
    /// Admission control (`PODCYCLE_ADMISSION`): `None` when it is off.
    pub(crate) admission: Option<Arc<crate::admission::Controller>>,
    /// The status of a shed request (`PODCYCLE_SHED_STATUS`).
    pub(crate) shed_status: crate::config::ShedStatus,
    /// W3C trace context: sampling, and the request span's fields.
    pub(crate) trace: crate::trace::Tracing,
}

/// The most concurrent streams an HTTP/2 client may open on one connection (hyper's default
/// is 200; Go's 250; RFC 9113 §6.5.2 advises no fewer than 100, so as not to limit
/// parallelism). Each stream whose handler waits for a request body holds the handler for up
/// to the minimum body rate's grace period (5 s) before its rate is checked and the stream is
/// reset: 100 bounds what one connection can hold that way, at the RFC's floor.
#[cfg(feature = "http2")]
pub(crate) const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// How long a client has, after an HTTP/2 GOAWAY, before the connection stops serving the new
/// streams it opens anyway (`REFUSED_STREAM`) and, idle, is closed even if it never
/// acknowledged the GOAWAY's PING (Go's HTTP/2 server waits 1 s the same way).
pub(crate) const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// The application listener's accept backlog: connections the kernel completes while the
/// accept loop is at the connection limit or busy. The kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4); Go asks for that, nginx for 511;
/// the standard library's and tokio's `bind` ask for 128.
pub(crate) const BACKLOG: u32 = 4096;

/// Binds the application listener (address reuse on, as `TcpListener::bind`) with
/// [`BACKLOG`].
pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
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
pub(crate) async fn accept_loop<S, B, R>(
    shared: Arc<ServeContext>,
    listener: TcpListener,
    service: S,
    connections: tokio_util::task::TaskTracker,
    recorder: R,
) where
    S: AppService<B>,
    B: AppResponseBody,
    R: Recorder,
{
    // No hyper timer, as `axum::serve`: with one, hyper allocates and polls a header-read
    // sleep for every HTTP/1 request (~2% of server CPU in the load benchmark).
    #[cfg_attr(not(feature = "http2"), allow(unused_mut))]
    let mut builder = auto::Builder::new(TokioExecutor::new());
    #[cfg(feature = "http2")]
    builder
        .http2()
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);
    shared
        .connections
        .upgrade_slots
        .set_max(shared.max_upgraded);
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
    // The adaptive admission limit's sampler (off the request path), while this listener
    // serves.
    let _admission = shared
        .admission
        .clone()
        .map(|c| tokio_util::task::AbortOnDropHandle::new(tokio::spawn(c.run())));
    let reject_cut = signals.drain_deadline.child_token();
    let mut backlog_left: usize = 0;
    let limit = Arc::new(Semaphore::new(
        shared.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    shared.slots.serve(limit.clone(), shared.max_connections);
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut at_limit_logged: Option<Instant> = None;
    loop {
        if permit.is_none() {
            permit = limit.clone().try_acquire_owned().ok();
            if permit.is_none() {
                shared.slots.mark_full();
            }
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
                shared.state.counters.app_accept_errors.record("app", &e);
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
                    _ = serve_connection(shared, &builder, stream, service, recorder) => {}
                    _ = cut.cancelled() => {}
                }
            });
        } else {
            connections.spawn(async move {
                let _permit = permit;
                serve_connection(shared, &builder, stream, service, recorder).await;
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

/// How long a closing connection's socket lingers after the peer's last byte: written,
/// half-closed, reading and discarding what the peer still sends, until it closes too (Go's
/// net/http waits 500 ms). Closing a socket with unread bytes sends a reset, and a reset makes
/// the kernels drop response bytes not delivered yet.
pub(crate) const CLOSE_LINGER_QUIET: Duration = Duration::from_millis(500);

/// The longest a closing connection lingers, however long its peer keeps sending (nginx's
/// `lingering_time` is 30 s, its `lingering_timeout` 5 s); never past the drain deadline.
pub(crate) const CLOSE_LINGER_MAX: Duration = Duration::from_secs(5);

/// How a connection's serving ended.
enum Closed {
    /// hyper finished the connection: every response it took is written to the socket.
    Politely,
    /// Closed by podcycle (a timeout, an idle or cut connection in the drain): no lingering.
    Abruptly,
}

async fn serve_connection<S, B, R>(
    shared: Arc<ServeContext>,
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: S,
    recorder: R,
) where
    S: AppService<B>,
    B: AppResponseBody,
    R: Recorder,
{
    let (conn_state, _registered) = shared
        .connections
        .open(shared.state.signals.delay_over.child_token());
    let closed = serve_until_closed(&shared, &conn_state, builder, stream, service, recorder).await;
    // hyper's connection is gone; after a `101` the socket lives on in the application's
    // hands (a WebSocket). The connection stays registered, its request in flight, until
    // the application drops it or the drain deadline cuts it.
    if conn_state.is_upgraded() {
        tokio::select! {
            _ = conn_state.upgrade_ended() => {}
            _ = shared.state.signals.drain_deadline.cancelled() => {
                if conn_state.cut_upgrade() {
                    shared.state.counters.force_closed.fetch_add(1, Ordering::Relaxed);
                    shared.state.counters.streams_cut.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("drain deadline: upgraded connection (WebSocket) cut");
                }
            }
        }
        return;
    }
    // hyper dropped the socket by now (unless the connection was upgraded): it is back here.
    if let (Closed::Politely, Some(socket)) = (closed, conn_state.take_socket()) {
        linger(socket, &shared.state.signals.drain_deadline).await;
    }
}

/// Closes `socket` the way Go and nginx do: half-close (everything written is sent first, then
/// a FIN), then read and discard what the peer still sends until it closes too, or is quiet
/// for [`CLOSE_LINGER_QUIET`], for at most [`CLOSE_LINGER_MAX`] and never past the drain
/// deadline. Closing at once instead would reset a connection whose peer had pipelined
/// requests hyper never read, and the reset destroys response bytes still queued.
async fn linger(mut socket: TcpStream, drain_deadline: &tokio_util::sync::CancellationToken) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut discard = [0u8; 1024];
    // Usually the peer closed first (hyper saw its FIN): no timer.
    match socket.try_read(&mut discard) {
        Ok(0) => return,
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return,
        _ => {}
    }
    if socket.shutdown().await.is_err() {
        return;
    }
    let give_up = tokio::time::Instant::now() + CLOSE_LINGER_MAX;
    let quiet = tokio::time::sleep(CLOSE_LINGER_QUIET);
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            read = socket.read(&mut discard) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let next = tokio::time::Instant::now() + CLOSE_LINGER_QUIET;
                    quiet.as_mut().reset(next.min(give_up));
                }
            },
            _ = &mut quiet => return,
            _ = drain_deadline.cancelled() => return,
        }
    }
}

async fn serve_until_closed<S, B, R>(
    shared: &Arc<ServeContext>,
    conn_state: &Arc<ConnState>,
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: S,
    recorder: R,
) -> Closed
where
    S: AppService<B>,
    B: AppResponseBody,
    R: Recorder,
{
    let service = TrackedService {
        inner: service,
        conn: conn_state.clone(),
        shared: shared.clone(),
        recorder,
    };
    let io = ProgressIo::new(stream, conn_state.clone());
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
        if !conn_state.is_http2() {
            // Nothing in flight past the header-read or idle timeout: close.
            return Closed::Abruptly;
        }
        // HTTP/2 idle past the idle timeout: a graceful GOAWAY, so that the client opens its
        // next stream on a new connection instead of racing the close.
        conn.as_mut().graceful_shutdown();
        return close_after_goaway(shared, conn_state, conn).await;
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
        count_closed_idle(shared, conn_state);
    }
    conn.as_mut().graceful_shutdown();
    close_after_goaway(shared, conn_state, conn).await
}

/// After a graceful shutdown of `conn` (HTTP/2: GOAWAY; HTTP/1: no keep-alive): serves what is
/// in flight until it ends, closes the connection once nothing is in flight and nothing
/// happens for [`IDLE_LINGER`], and cuts it at the drain deadline.
///
/// HTTP/2 is given [`GOAWAY_GRACE`] first: hyper's GOAWAY waits for the client to acknowledge
/// a PING before it refuses new streams, so a client that never acknowledges, or ignores the
/// GOAWAY, would otherwise be served forever. Past the grace, while draining, its new streams
/// are refused (`REFUSED_STREAM`, safe to retry elsewhere); and PINGs, SETTINGS or
/// WINDOW_UPDATEs (whose answers are writes) do not count as activity: only requests do.
async fn close_after_goaway<C>(
    shared: &Arc<ServeContext>,
    conn_state: &Arc<ConnState>,
    mut conn: std::pin::Pin<&mut C>,
) -> Closed
where
    C: Future<Output = Result<(), BoxError>>,
{
    let signals = &shared.state.signals;
    let http2 = conn_state.is_http2();
    let grace_over = tokio::time::Instant::now() + GOAWAY_GRACE;
    loop {
        let progress = || {
            let (activity, writes) = conn_state.progress();
            (activity, if http2 { 0 } else { writes })
        };
        let before = progress();
        tokio::select! {
            res = conn.as_mut() => return log_connection_end(res),
            _ = signals.drain_deadline.cancelled() => {
                let in_flight = conn_state.in_flight();
                if in_flight > 0 {
                    shared.state.counters.force_closed.fetch_add(1, Ordering::Relaxed);
                    shared.state.counters.streams_cut.fetch_add(in_flight, Ordering::Relaxed);
                    tracing::warn!(in_flight, "drain deadline: connection closed with requests in flight");
                }
                return Closed::Abruptly;
            }
            _ = tokio::time::sleep(IDLE_LINGER) => {
                if http2 && tokio::time::Instant::now() < grace_over {
                    continue;
                }
                if http2 && shared.state.phase() >= Phase::Draining {
                    conn_state.refuse_new_streams();
                }
                // Nothing in flight, no request started and no byte written for a whole
                // linger: idle, or a request whose headers never completed (hyper's graceful
                // shutdown waits for those). It must not hold the drain, and was not cut.
                if conn_state.in_flight() == 0 && progress() == before {
                    tracing::debug!("closing a draining connection with no request in flight");
                    return Closed::Abruptly;
                }
            }
        }
    }
}

/// Counts a connection that had nothing in flight when the shutdown delay ended and stayed
/// idle through its linger: closed now, it is the race a keep-alive client can lose (a request
/// written as the connection closes gets EOF).
fn count_closed_idle(shared: &ServeContext, conn_state: &ConnState) {
    if conn_state.in_flight() == 0 {
        shared
            .state
            .counters
            .closed_idle
            .fetch_add(1, Ordering::Relaxed);
    }
}

fn log_connection_end(res: Result<(), BoxError>) -> Closed {
    match res {
        Ok(()) => Closed::Politely,
        Err(error) => {
            tracing::debug!(%error, "connection ended with an error");
            Closed::Abruptly
        }
    }
}
