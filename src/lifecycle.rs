//! [`Lifecycle`]: the one handle a service owner wires in.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::checks::Probe;
use crate::config::{Config, OnWarmupFailure};
use crate::error::{BoxError, Error};
use crate::metrics::Metrics;
use crate::phase::Phase;
use crate::probes::Probes;
use crate::serve::accept_loop;
use crate::shutdown::{delay_and_drain, run_hooks, Outcome};
use crate::state::{Shared, ShutdownReason};
use crate::warmup::{Progress, Warmup};

/// The lifecycle of one HTTP service: warm-ups, checks, probes, signals, serving and the
/// shutdown sequence. Cheap to clone; every clone is the same lifecycle.
///
/// # Example
/// ```no_run
/// use axum::{routing::get, Router};
///
/// # async fn load_kb() -> Result<Vec<String>, std::io::Error> { Ok(vec![]) }
/// #[tokio::main]
/// async fn main() -> Result<podcycle::Outcome, podcycle::Error> {
///     // Signal handlers and the admin listener (probes) start here, before any warm-up.
///     let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
///     let kb = lifecycle.warmup("knowledge-base", load_kb());
///     lifecycle.readiness_check("kb-not-empty", {
///         let kb = kb.clone();
///         move || {
///             let ok = kb.get().is_some_and(|kb| !kb.is_empty());
///             async move { if ok { Ok(()) } else { Err("knowledge base is empty") } }
///         }
///     });
///     let app = Router::new().route("/v1/articles", get(move || async move {
///         kb.get().map_or(0, |kb| kb.len()).to_string()
///     }));
///     Ok(lifecycle.serve(app).await) // returns when drained; exit code tells how it ended
/// }
/// ```
#[derive(Clone)]
pub struct Lifecycle {
    shared: Arc<Shared>,
    metrics: Metrics,
    _halt: Arc<DropGuard>,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("phase", &self.phase())
            .field("version", &self.version())
            .field("app_addr", &self.app_addr())
            .field("admin_addr", &self.admin_addr())
            .finish()
    }
}

impl Lifecycle {
    /// Reads [`Config::from_env`] and starts the lifecycle. `version` is the default for
    /// `APP_VERSION`: pass `env!("CARGO_PKG_VERSION")`.
    ///
    /// Must be called inside a tokio runtime.
    pub fn from_env(version: &str) -> Result<Lifecycle, Error> {
        Lifecycle::new(Config::from_env(version)?)
    }

    /// Starts a lifecycle: validates the configuration, binds the admin listener on its own
    /// thread, installs SIGTERM/SIGINT handlers and starts the runtime watchdog.
    ///
    /// Must be called inside a tokio runtime (checks, warm-ups and the watchdog run on it).
    pub fn new(config: Config) -> Result<Lifecycle, Error> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let shared = Arc::new(Shared::new(config));
        let halt = shared.halt.clone().drop_guard();
        let metrics = Metrics::new(&shared).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let render = metrics.clone();
        let _ = shared.metrics.set(Arc::new(move || render.render()));
        crate::admin::start(shared.clone()).map_err(Error::Io)?;
        crate::watchdog::start(shared.clone());
        tracing::info!(
            version = %shared.config.version,
            addr = %shared.config.addr,
            admin_addr = ?shared.admin_addr.get(),
            shutdown_delay = ?shared.config.shutdown_delay,
            drain_timeout = ?shared.config.drain_timeout,
            hook_timeout = ?shared.config.hook_timeout,
            "podcycle lifecycle started"
        );
        Ok(Lifecycle {
            shared,
            metrics,
            _halt: Arc::new(halt),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The version reported in probes, metrics and logs (`APP_VERSION`).
    pub fn version(&self) -> &str {
        &self.shared.config.version
    }

    /// Runs `fut` as the named warm-up. Readiness (and serving) wait until every warm-up has
    /// succeeded; a failure stops startup (see [`OnWarmupFailure`]). A panic is a failure.
    pub fn warmup<T, E, F>(&self, name: &str, fut: F) -> Warmup<T>
    where
        T: Send + Sync + 'static,
        E: fmt::Display + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.shared.warmups.start(name, fut)
    }

    /// Adds a readiness check, run every `PODCYCLE_CHECK_INTERVAL` with a
    /// `PODCYCLE_CHECK_TIMEOUT` timeout. `/readyz` fails while its last result is a failure.
    pub fn readiness_check<F, Fut, E>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.add_check(Probe::Readiness, name, check);
    }

    /// Adds a liveness check: `/livez` fails (and the kubelet restarts the container) while its
    /// last result is a failure. Keep these about this process, not its dependencies.
    pub fn liveness_check<F, Fut, E>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.add_check(Probe::Liveness, name, check);
    }

    fn add_check<F, Fut, E>(&self, probe: Probe, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let c = &self.shared.config;
        self.shared.checks.add(
            probe,
            name,
            check,
            c.check_interval,
            c.check_timeout,
            self.shared.halt.clone(),
            self.shared.subscribe(),
        );
    }

    /// Registers a shutdown hook (flush, close pools): `hook` is polled only once in-flight
    /// requests have drained, concurrently with the other hooks, within `PODCYCLE_HOOK_TIMEOUT`.
    pub fn on_shutdown<F>(&self, name: &str, hook: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_owned(), Box::pin(hook)));
    }

    /// Spawns background work tracked for shutdown: after the drain, its token
    /// ([`Lifecycle::shutdown_token`]) is cancelled and the task is awaited within the hook timeout.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.tasks.spawn(task)
    }

    /// The tracker behind [`Lifecycle::spawn`], for code that takes a `TaskTracker`.
    pub fn task_tracker(&self) -> TaskTracker {
        self.shared.tasks.clone()
    }

    /// A token cancelled when background work must stop (after the drain, before hooks).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.background.clone()
    }

    /// Starts the shutdown sequence as if SIGTERM had arrived. Idempotent.
    pub fn shutdown(&self) {
        self.shared.request_shutdown(ShutdownReason::Requested);
    }

    /// Why shutdown started, once it has.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        self.shared.shutdown_reason()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    /// A receiver that sees every phase change.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.shared.subscribe()
    }

    /// Resolves once the lifecycle has reached `phase` (or a later one).
    pub fn reached(&self, phase: Phase) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p >= phase).await;
        }
    }

    /// Resolves when shutdown starts (readiness turns off; still serving during the delay).
    pub fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(Phase::Deregistering)
    }

    /// Resolves when in-flight work should finish: the listener is closed and the drain
    /// deadline is running. Streams should send a last event and end here.
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(Phase::Draining)
    }

    /// Whether `/readyz` would pass right now (ignoring exclusions).
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// The probe endpoints as a service, to mount on the application router as well.
    pub fn probes(&self) -> Probes {
        Probes {
            shared: self.shared.clone(),
        }
    }

    /// The application listener's address, once bound.
    pub fn app_addr(&self) -> Option<SocketAddr> {
        self.shared.app_addr.get().copied()
    }

    /// The admin listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        crate::admin::addr(&self.shared)
    }

    /// Requests received after readiness turned off: a measure of load-balancer lag.
    pub fn requests_after_unready(&self) -> u64 {
        self.shared
            .requests_after_unready
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The metrics: the layer recording requests, and the registry behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits for warm-ups, binds `PODCYCLE_ADDR`, serves `app` until shutdown and runs the
    /// shutdown sequence. Returns how it ended.
    ///
    /// `app` is any tower `Service` for `Request<hyper::body::Incoming>`, e.g. an axum `Router`
    /// (given its state once, as `axum::serve` does, so its handlers are not turned into routes
    /// on every request). With a [`MetricsLayer`](crate::MetricsLayer) in `app`, the serving
    /// stack, which already tracks every request for the drain, also times it; the layer only
    /// names the route.
    pub async fn serve<S, B>(self, app: S) -> Outcome
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_inner(None, app).await
    }

    /// Like [`Lifecycle::serve`], on a listener the caller bound. Connections wait in the
    /// backlog until warm-ups are done.
    pub async fn serve_with_listener<S, B>(self, listener: TcpListener, app: S) -> Outcome
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_inner(Some(listener), app).await
    }

    async fn serve_inner<S, B>(self, listener: Option<TcpListener>, app: S) -> Outcome
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let app = prepare_router(app);
        let shared = self.shared.clone();
        if let Some(early) = self.wait_for_warmups().await {
            return early;
        }
        let listener = match listener {
            Some(l) => l,
            None => match TcpListener::bind(shared.config.addr).await {
                Ok(l) => l,
                Err(e) => {
                    let msg = format!("binding {}: {e}", shared.config.addr);
                    tracing::error!(error = %msg, "cannot serve");
                    shared.request_shutdown(ShutdownReason::Requested);
                    self.finish_without_serving().await;
                    return Outcome::Failed(msg);
                }
            },
        };
        if let Ok(addr) = listener.local_addr() {
            let _ = shared.app_addr.set(addr);
            tracing::info!(%addr, "application listener bound");
        }
        let connections = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            shared.clone(),
            listener,
            app,
            connections.clone(),
            self.metrics.core(),
        ));
        shared.set_phase(Phase::Serving);
        shared.shutdown_requested.cancelled().await;

        let forced = delay_and_drain(&shared, &connections).await;
        let _ = accept.await;
        let hooks = run_hooks(&shared).await;
        shared.set_phase(Phase::Stopped);
        if forced > 0 {
            Outcome::DrainTimedOut {
                connections: forced,
            }
        } else if let Some((pending_hooks, pending_tasks)) = hooks {
            Outcome::HooksTimedOut {
                pending_hooks,
                pending_tasks,
            }
        } else {
            Outcome::Drained
        }
    }

    /// Waits until every warm-up is done. Returns the outcome instead when startup ends early
    /// (shutdown requested, a warm-up failed or missed the deadline).
    async fn wait_for_warmups(&self) -> Option<Outcome> {
        let shared = &self.shared;
        let deadline = shared
            .config
            .warmup_timeout
            .map(|t| tokio::time::Instant::from_std(shared.started + t));
        let mut changed = shared.warmups.subscribe();
        let failure = loop {
            if shared.shutdown_requested.is_cancelled() {
                break None;
            }
            match shared.warmups.progress() {
                Progress::AllDone => return None,
                Progress::Failed { name, error } => break Some((name, error)),
                Progress::Running => {}
            }
            let sleep_until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed.changed() => {}
                _ = shared.shutdown_requested.cancelled() => {}
                _ = sleep_until => {
                    let t = shared.config.warmup_timeout.unwrap_or_default();
                    shared.warmups.abort_running(&format!(
                        "did not finish within PODCYCLE_WARMUP_TIMEOUT {}",
                        crate::config::fmt_duration(t)
                    ));
                }
            }
        };
        match failure {
            None => {
                tracing::info!("shutdown requested during warm-up: nothing was served");
                shared
                    .warmups
                    .abort_running("cancelled: shutdown requested during warm-up");
                self.finish_without_serving().await;
                Some(Outcome::StoppedDuringStartup)
            }
            Some((warmup, error)) => {
                tracing::error!(warmup = %warmup, %error, "warm-up failed: startup failed");
                if shared.config.on_warmup_failure == OnWarmupFailure::StayUnready {
                    tracing::warn!("staying up and unready until a signal arrives (PODCYCLE_ON_WARMUP_FAILURE=stay-unready)");
                    shared.shutdown_requested.cancelled().await;
                } else {
                    shared.request_shutdown(ShutdownReason::WarmupFailed);
                }
                shared
                    .warmups
                    .abort_running("cancelled: another warm-up failed");
                self.finish_without_serving().await;
                Some(Outcome::WarmupFailed { warmup, error })
            }
        }
    }

    /// Hooks and tracked tasks run even when nothing was served (no delay: no load balancer
    /// ever had this endpoint).
    async fn finish_without_serving(&self) {
        let _ = run_hooks(&self.shared).await;
        self.shared.set_phase(Phase::Stopped);
    }
}

/// An axum `Router<()>` turns its handlers into routes on every request until its state is
/// given; `axum::serve` does that once (`with_state(())`), and so do we. Measured with the load
/// benchmark's `callgrind` runs: ~1,000 instructions and two allocations per request saved.
/// Any other service is served as it is.
fn prepare_router<S: 'static>(app: S) -> S {
    let mut app = Some(app);
    if let Some(router) =
        (&mut app as &mut dyn std::any::Any).downcast_mut::<Option<axum::Router>>()
    {
        *router = router.take().map(|r| r.with_state(()));
    }
    app.expect("put back above")
}
