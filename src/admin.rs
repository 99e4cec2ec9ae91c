//! The admin thread: its own single-threaded runtime serving probes and `/metrics`, and
//! handling signals, so that neither depends on the application's runtime making progress.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
#[cfg(feature = "metrics")]
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_tokio::Signals;
use tokio::sync::Semaphore;

use crate::connections::{Connections, ADMIN_MAX_CONNECTIONS};

mod slots;
use self::slots::{InFlight, NoSlot, Slot, SlotGuard, Slots};
#[cfg(feature = "metrics")]
use crate::metrics::Metrics;
use crate::probes::Probes;
use crate::state::{ShutdownReason, State};

/// Everything the admin thread serves and acts on, handed over when it starts.
#[derive(Debug)]
pub(crate) struct Admin {
    /// Where to listen; `None` serves nothing (signals are still handled).
    pub(crate) addr: Option<SocketAddr>,
    /// Whether to install the signal handlers (see [`handle_signals`]).
    pub(crate) handle_signals: bool,
    pub(crate) state: Arc<State>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) probes: Probes,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Metrics,
}

/// Starts the admin thread. Returns the bound address (if any) once the listener is bound and
/// the signal handlers are installed, or the error that prevented either.
pub(crate) fn start(admin: Admin) -> std::io::Result<Option<SocketAddr>> {
    let listener = match admin.addr {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| crate::error::bind_error("admin", "PODCYCLE_ADMIN_ADDR", addr, e))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let bound = listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::Builder::new()
        .name("podcycle-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(run(Arc::new(admin), listener, bound, ready_tx));
        })?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("admin thread exited during start")))?;
    Ok(bound)
}

async fn run(
    shared: Arc<Admin>,
    listener: Option<std::net::TcpListener>,
    bound: Option<SocketAddr>,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let signals = if shared.handle_signals {
        match Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2]) {
            Ok(s) => Some(s),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    } else {
        None
    };
    let listener = match listener.map(tokio::net::TcpListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if let Some(addr) = bound {
        tracing::info!(%addr, "admin listener (probes, metrics) up");
    }
    let _ = ready.send(Ok(()));
    let signal_handle = signals.as_ref().map(|s| s.handle());
    let signal_task = signals.map(|s| tokio::spawn(handle_signals(shared.clone(), s)));
    if let Some(listener) = listener {
        #[cfg(feature = "grpc")]
        let (grpc, follow) = {
            let grpc = crate::grpc_health::GrpcHealth::new(&shared.probes.health).await;
            let follow = tokio::spawn(grpc.clone().follow(shared.probes.health.clone()));
            (grpc.server(), follow)
        };
        #[cfg(not(feature = "grpc"))]
        let grpc = NoGrpc;
        serve_admin(shared.clone(), listener, grpc).await;
        #[cfg(feature = "grpc")]
        follow.abort();
    } else {
        shared.state.signals.halt.cancelled().await;
    }
    if let Some(h) = signal_handle {
        h.close();
    }
    if let Some(t) = signal_task {
        t.abort();
    }
}

/// SIGTERM, SIGINT and SIGQUIT start the graceful shutdown (SIGINT without the propagation
/// delay: see `Lifecycle::serve`); a second one of them exits at once with 128 + its number.
/// SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored: podcycle has no configuration to reload
/// and nothing to dump, and a reload request must not stop a server (left to their default,
/// each would kill the process without a line).
async fn handle_signals(shared: Arc<Admin>, mut signals: Signals) {
    while let Some(signal) = signals.next().await {
        let name = signal_name(signal);
        if matches!(signal, SIGHUP | SIGUSR1 | SIGUSR2) {
            crate::stderr::unless_subscribed(|| {
                format!("{name} received and ignored (nothing to reload; SIGTERM stops)")
            });
            tracing::warn!(
                signal = name,
                "signal received and ignored: podcycle reads its configuration once and has \
                 nothing to reload or dump; SIGTERM, SIGINT or SIGQUIT stop the process"
            );
            continue;
        }
        if crate::shutdown::request(
            &shared.state,
            &shared.connections,
            ShutdownReason::Signal(signal),
        ) {
            crate::stderr::unless_subscribed(|| {
                format!("{name} received: starting graceful shutdown")
            });
            tracing::info!(signal = name, "signal received: starting graceful shutdown");
        } else {
            let in_flight = shared.connections.in_flight();
            tracing::error!(
                signal = name,
                phase = shared.state.phase().as_str(),
                in_flight,
                connections = shared.connections.len(),
                "second signal: exiting immediately"
            );
            // Without a subscriber the line above goes nowhere: say it on stderr.
            crate::stderr::unless_subscribed(|| {
                format!(
                    "second {name} during shutdown (phase {}): exiting now with {in_flight} request(s) in flight on {} connection(s)",
                    shared.state.phase(),
                    shared.connections.len()
                )
            });
            std::process::exit(128 + signal);
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        SIGHUP => "SIGHUP",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

/// How long an admin client may take to send a request's headers before its connection is
/// closed (HTTP/1): a slow or silent client cannot hold one of the few admin connections.
pub(crate) const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an admin connection may stay open without a request, and with none in flight
/// (an open `Watch` stream is in flight), before it is closed.
#[cfg(not(test))]
pub(crate) const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Short in unit tests, so that a test can outlast it.
#[cfg(test)]
pub(crate) const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a closing admin connection may take to finish before it is dropped.
const ADMIN_CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long an evicted admin connection may take to finish (an HTTP/2 GOAWAY reaching its
/// client) before it is dropped: short, as evictions come in bursts under attack.
const ADMIN_EVICT_LINGER: Duration = Duration::from_millis(100);

/// How often at most the admin listener logs that it evicts connections.
const EVICT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves probes and `/metrics` on at most [`ADMIN_MAX_CONNECTIONS`] connections, held by
/// [`Slots`]: a silent connection is closed after [`slots::FIRST_BYTE_TIMEOUT`], a new
/// connection when all are taken evicts the oldest one that is not busy, and each is closed
/// after [`ADMIN_HEADER_READ_TIMEOUT`] without complete headers (HTTP/1) or
/// [`ADMIN_IDLE_TIMEOUT`] without a request and with none in flight.
async fn serve_admin(shared: Arc<Admin>, listener: tokio::net::TcpListener, grpc: Grpc) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let slots = Slots::new(ADMIN_MAX_CONNECTIONS);
    let watches = Arc::new(Semaphore::new(slots::MAX_WATCHES));
    let mut evicted_logged = (None::<std::time::Instant>, 0);
    loop {
        let (stream, _) = tokio::select! {
            _ = shared.state.signals.halt.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    shared.state.counters.admin_accept_errors.record("admin", &e);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A slot: free, or taken over from the oldest connection that is not busy; else wait
        // (holding this one connection) until one is.
        let slot = loop {
            match slots.take(std::time::Instant::now()) {
                Ok(slot) => break slot,
                Err(NoSlot::RetryIn(wait)) => tokio::select! {
                    _ = shared.state.signals.halt.cancelled() => return,
                    _ = slots.freed_or(wait) => {}
                },
            }
        };
        if slots.evicted() != evicted_logged.1
            && evicted_logged
                .0
                .is_none_or(|at: std::time::Instant| at.elapsed() >= EVICT_LOG_EVERY)
        {
            tracing::warn!(
                evicted = slots.evicted() - evicted_logged.1,
                max_connections = ADMIN_MAX_CONNECTIONS,
                "admin listener full: idle connections closed to make room for new ones \
                 (logged at most every 10 s; evicted counts them since the last line)"
            );
            evicted_logged = (Some(std::time::Instant::now()), slots.evicted());
        }
        let shared = shared.clone();
        let builder = builder.clone();
        let grpc = grpc.clone();
        let watches = watches.clone();
        tokio::spawn(async move {
            serve_admin_connection(shared, builder, stream, slot, grpc, watches).await;
        });
        // Let the new connection's task read its request before the next eviction is decided.
        tokio::task::yield_now().await;
    }
}

/// Serves one admin connection in its slot until it ends, idles out, or is evicted.
async fn serve_admin_connection(
    shared: Arc<Admin>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    slot: SlotGuard,
    grpc: Grpc,
    watches: Arc<Semaphore>,
) {
    let slot = slot; // given back when this task ends
    let evict = slot.slot.evict.clone();
    // A client that sends nothing holds a slot for the first-byte timeout at most (hyper's
    // header-read timeout starts only once the protocol is known, after the first bytes).
    let mut first = [0u8; 1];
    tokio::select! {
        _ = evict.cancelled() => return,
        peeked = tokio::time::timeout(slots::FIRST_BYTE_TIMEOUT, stream.peek(&mut first)) => {
            match peeked {
                Ok(Ok(n)) if n > 0 => {}
                _ => return, // silent, closed, or failed
            }
        }
    }
    let this = slot.slot.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let call = respond(&shared, &grpc, &watches, &this, req);
        async move {
            let (res, guard) = call.await?;
            // The guard lives as long as the body: until its last frame is sent.
            Ok::<_, Infallible>(res.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                })
            }))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut requests = slot.slot.requests();
    let linger = loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = evict.cancelled() => break ADMIN_EVICT_LINGER,
            _ = tokio::time::sleep(ADMIN_IDLE_TIMEOUT) => {
                let now = slot.slot.requests();
                if now == requests && slot.slot.in_flight() == 0 {
                    break ADMIN_CLOSE_LINGER;
                }
                requests = now;
            }
        }
    };
    // Idle or evicted: closed politely, and dropped if that takes too long (a silent HTTP/2
    // client, a response nobody reads).
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(linger, conn).await;
}

/// The gRPC health service the admin listener serves besides the probes (feature `grpc`).
#[cfg(feature = "grpc")]
type Grpc = tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;
/// Without the `grpc` feature: nothing.
#[cfg(not(feature = "grpc"))]
type Grpc = NoGrpc;

/// No gRPC health service (the `grpc` feature is off).
#[cfg(not(feature = "grpc"))]
#[derive(Clone, Debug)]
struct NoGrpc;

/// Answers one admin request: a probe or `/metrics`; with the guard that counts it in flight
/// on its connection.
#[cfg(not(feature = "grpc"))]
fn respond(
    shared: &Admin,
    _grpc: &Grpc,
    _watches: &Arc<Semaphore>,
    slot: &Arc<Slot>,
    req: Request<Incoming>,
) -> std::future::Ready<Answered> {
    let guard = slot.start(false);
    std::future::ready(Ok((admin_response(shared, &req), guard)))
}

/// Answers one admin request: a probe, `/metrics`, or a `grpc.health.v1.Health` RPC; with the
/// guard that counts it in flight on its connection (and, for a `Watch`, holds one of the
/// [`slots::MAX_WATCHES`] permits: beyond them a `Watch` gets `RESOURCE_EXHAUSTED`).
#[cfg(feature = "grpc")]
fn respond(
    shared: &Admin,
    grpc: &Grpc,
    watches: &Arc<Semaphore>,
    slot: &Arc<Slot>,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Answered> {
    use crate::grpc_health::GrpcHealth;
    use http_body_util::Either;
    use tower::ServiceExt;
    enum Call {
        Done(Response<AdminBody>, AdminGuard),
        Grpc(Grpc, Request<Incoming>, AdminGuard),
    }
    let call = if GrpcHealth::is_for(&req) {
        if GrpcHealth::is_watch(&req) {
            match watches.clone().try_acquire_owned() {
                Ok(permit) => Call::Grpc(grpc.clone(), req, (slot.start(true), Some(permit))),
                Err(_) => Call::Done(
                    tonic::Status::resource_exhausted(format!(
                        "at most {} health Watch streams may be open on the admin port",
                        slots::MAX_WATCHES
                    ))
                    .into_http::<tonic::body::Body>()
                    .map(Either::Right),
                    (slot.start(false), None),
                ),
            }
        } else {
            Call::Grpc(grpc.clone(), req, (slot.start(false), None))
        }
    } else {
        let guard = (slot.start(false), None);
        Call::Done(admin_response(shared, &req).map(Either::Left), guard)
    };
    async move {
        match call {
            Call::Done(res, guard) => Ok((res, guard)),
            Call::Grpc(grpc, req, guard) => {
                Ok((grpc.oneshot(req).await?.map(Either::Right), guard))
            }
        }
    }
}

/// An admin response, with what its request holds until the response body ends.
type Answered = Result<(Response<AdminBody>, AdminGuard), Infallible>;

/// Without the `grpc` feature, an admin response's body is a probe's or `/metrics`' text.
#[cfg(not(feature = "grpc"))]
type AdminBody = Full<Bytes>;

/// Without the `grpc` feature, a request holds its in-flight count.
#[cfg(not(feature = "grpc"))]
type AdminGuard = InFlight;

/// What an admin gRPC request holds while it lives: its in-flight count, and a `Watch`'s
/// permit.
#[cfg(feature = "grpc")]
type AdminGuard = (InFlight, Option<tokio::sync::OwnedSemaphorePermit>);

/// An admin response's body: a probe's or `/metrics`' text, or a gRPC response.
#[cfg(feature = "grpc")]
type AdminBody = http_body_util::Either<Full<Bytes>, tonic::body::Body>;

fn admin_response<B>(admin: &Admin, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" {
        #[cfg(feature = "metrics")]
        let res = {
            let (text, content_type) = admin
                .metrics
                .render_for(req.headers().get(http::header::ACCEPT));
            let mut res = Response::new(Full::new(Bytes::from(text)));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            res
        };
        #[cfg(not(feature = "metrics"))]
        let res = {
            let mut res = Response::new(Full::new(Bytes::from_static(
                b"metrics are not enabled (podcycle's `metrics` feature is off)\n",
            )));
            *res.status_mut() = http::StatusCode::NOT_FOUND;
            res
        };
        return res;
    }
    admin.probes.respond(req)
}

#[cfg(all(test, feature = "grpc"))]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::Health;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    /// The admin thread of a lifecycle's parts, wired as `Lifecycle::new` wires them (this
    /// module is below the lifecycle: its tests do not import it). Stops when `State`'s halt
    /// guard, returned, is dropped.
    fn start_admin(
        config: &Config,
    ) -> (
        Arc<State>,
        Arc<Connections>,
        SocketAddr,
        tokio_util::sync::DropGuard,
    ) {
        let state = Arc::new(State::default());
        let halt = state.signals.halt.clone().drop_guard();
        let health = Arc::new(Health::new(state.clone(), config.health));
        let connections = Arc::new(Connections::default());
        let addr = start(Admin {
            addr: config.admin_addr,
            handle_signals: config.handle_signals,
            state: state.clone(),
            connections: connections.clone(),
            probes: Probes {
                health: health.clone(),
            },
            #[cfg(feature = "metrics")]
            metrics: Metrics::new(
                config,
                crate::metrics::Sources {
                    state: state.clone(),
                    health,
                    connections: connections.clone(),
                    runtime: tokio::runtime::Handle::current(),
                    lag: Arc::default(),
                },
            )
            .unwrap(),
        })
        .unwrap()
        .unwrap();
        (state, connections, addr, halt)
    }

    /// An open `Watch` outlasts the admin idle timeout (300 ms in unit tests) and still sees
    /// the next change; a connection with nothing in flight is closed after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_watch_is_not_idle() {
        let config = Config::default()
            .admin_addr(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
            .handle_signals(false);
        let (state, connections, admin, _halt) = start_admin(&config);
        let channel = tonic::transport::Channel::from_shared(format!("http://{admin}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        // `shutdown`: the line of /readyz that fails once shutdown is requested.
        let mut watch = health
            .watch(HealthCheckRequest {
                service: "shutdown".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving);

        // Three idle timeouts (and twice the time an idle connection is given to close)
        // without a new request: the stream stays open (no end, no error).
        let outlast = 3 * ADMIN_IDLE_TIMEOUT + 2 * ADMIN_CLOSE_LINGER;
        let quiet = tokio::time::timeout(outlast, watch.message()).await;
        assert!(quiet.is_err(), "the Watch ended: {quiet:?}");

        // And it still streams the next change.
        crate::shutdown::request(&state, &connections, ShutdownReason::Requested);
        let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("a change within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(next.status(), ServingStatus::NotServing);

        // A connection with nothing in flight is still closed when idle.
        let mut idle = tokio::net::TcpStream::connect(admin).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut idle,
            b"GET /livez HTTP/1.1\r\nhost: admin\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut idle, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "closed after the idle timeout: {read:?}"
        );
        assert!(
            buf.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
    }
}
