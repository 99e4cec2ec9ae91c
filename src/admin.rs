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
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use signal_hook::consts::{SIGINT, SIGTERM};
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
    /// Whether to install SIGTERM/SIGINT handlers.
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
            let l = std::net::TcpListener::bind(addr).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("binding the admin listener on {addr}: {e}"),
                )
            })?;
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
        match Signals::new([SIGTERM, SIGINT]) {
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
        serve_admin(shared.clone(), listener).await;
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

async fn handle_signals(shared: Arc<Admin>, mut signals: Signals) {
    while let Some(signal) = signals.next().await {
        let name = if signal == SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        if crate::shutdown::request(
            &shared.state,
            &shared.connections,
            ShutdownReason::Signal(signal),
        ) {
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
            if !tracing::dispatcher::has_been_set() {
                eprintln!(
                "podcycle: second {name} during shutdown (phase {}): exiting now with {in_flight} request(s) in flight on {} connection(s)",
                shared.state.phase(),
                shared.connections.len()
            );
            }
            std::process::exit(128 + signal);
        }
    }
}

/// How long an admin client may take to send a request's headers before its connection is
/// closed (HTTP/1): a slow or silent client cannot hold one of the few admin connections.
pub(crate) const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an admin connection may stay open without a request before it is closed.
pub(crate) const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a closing admin connection may take to finish before it is dropped.
const ADMIN_CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Serves probes and `/metrics`: at most [`ADMIN_MAX_CONNECTIONS`] connections at once
/// (further ones wait in the backlog), each closed after [`ADMIN_HEADER_READ_TIMEOUT`] without
/// complete headers or [`ADMIN_IDLE_TIMEOUT`] without a request.
async fn serve_admin(shared: Arc<Admin>, listener: tokio::net::TcpListener) {
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
        tokio::spawn(async move {
            let _permit = permit;
            // Requests started on this connection: unchanged for a whole idle timeout, idle.
            let requests = Arc::new(AtomicU64::new(0));
            let counted = requests.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                counted.fetch_add(1, Ordering::Relaxed);
                let res = admin_response(&shared, &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            loop {
                let before = requests.load(Ordering::Relaxed);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = tokio::time::sleep(ADMIN_IDLE_TIMEOUT) => {
                        if requests.load(Ordering::Relaxed) == before {
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
