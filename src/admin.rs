//! The admin thread: its own single-threaded runtime serving probes and `/metrics`, and
//! handling signals, so that neither depends on the application's runtime making progress.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Serves probes and `/metrics`: at most [`ADMIN_MAX_CONNECTIONS`] connections at once
/// (further ones wait in the backlog), each closed after [`ADMIN_HEADER_READ_TIMEOUT`] without
/// complete headers or [`ADMIN_IDLE_TIMEOUT`] without a request and with none in flight.
async fn serve_admin(shared: Arc<Admin>, listener: tokio::net::TcpListener, grpc: Grpc) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let limit = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shared.state.signals.halt.cancelled() => return,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, _) = tokio::select! {
            _ = shared.state.signals.halt.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    shared.connections.admin_accept_errors.record("admin", &e);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let grpc = grpc.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Requests started on this connection: unchanged for a whole idle timeout, with
            // none in flight (a response whose body is still being sent: a `Watch`), idle.
            let requests = Arc::new(AtomicU64::new(0));
            let in_flight = Arc::new(AtomicU64::new(0));
            let counted = requests.clone();
            let open = in_flight.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                counted.fetch_add(1, Ordering::Relaxed);
                let guard = InFlight::new(&open);
                let res = respond(&shared, &grpc, req);
                async move {
                    let res = res.await?;
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
            loop {
                let before = requests.load(Ordering::Relaxed);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = tokio::time::sleep(ADMIN_IDLE_TIMEOUT) => {
                        if requests.load(Ordering::Relaxed) == before
                            && in_flight.load(Ordering::Relaxed) == 0
                        {
                            break;
                        }
                    }
                }
            }
            // Idle: closed politely, and dropped if that takes too long (a silent HTTP/2
            // client, a response nobody reads).
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(ADMIN_CLOSE_LINGER, conn).await;
        });
    }
}

/// Counts one admin request in flight on its connection while it lives.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(count: &Arc<AtomicU64>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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

/// Answers one admin request: a probe or `/metrics`.
#[cfg(not(feature = "grpc"))]
fn respond(
    shared: &Admin,
    _grpc: &Grpc,
    req: Request<Incoming>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(admin_response(shared, &req)))
}

/// Answers one admin request: a probe, `/metrics`, or a `grpc.health.v1.Health` RPC.
#[cfg(feature = "grpc")]
fn respond(
    shared: &Admin,
    grpc: &Grpc,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Result<Response<AdminBody>, Infallible>> {
    use http_body_util::Either;
    use tower::ServiceExt;
    let call = if crate::grpc_health::GrpcHealth::is_for(&req) {
        Err((grpc.clone(), req))
    } else {
        Ok(admin_response(shared, &req))
    };
    async move {
        match call {
            Ok(res) => Ok(res.map(Either::Left)),
            Err((grpc, req)) => Ok(grpc.oneshot(req).await?.map(Either::Right)),
        }
    }
}

/// An admin response's body: a probe's or `/metrics`' text, or a gRPC response.
#[cfg(feature = "grpc")]
type AdminBody = http_body_util::Either<Full<Bytes>, tonic::body::Body>;

fn admin_response<B>(admin: &Admin, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" {
        #[cfg(feature = "metrics")]
        let res = {
            let mut res = Response::new(Full::new(Bytes::from(admin.metrics.render())));
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
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
    use crate::{Config, Lifecycle};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    /// An open `Watch` outlasts the admin idle timeout (300 ms in unit tests) and still sees
    /// the next change; a connection with nothing in flight is closed after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_watch_is_not_idle() {
        let config = Config::default()
            .admin_addr(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
            .handle_signals(false);
        let lifecycle = Lifecycle::new(config).unwrap();
        let admin = lifecycle.admin_addr().unwrap();
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
        lifecycle.shutdown();
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
