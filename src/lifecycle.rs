//! [`Lifecycle`]: the one handle a service owner wires in.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::OnceLock;

use http::{Request, Response};
use http_body::Body;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower::Service;

use crate::checks::Check;
use crate::config::{Config, OnWarmupFailure};
use crate::connections::Connections;
use crate::error::{BoxError, Error};
use crate::health::Health;
#[cfg(feature = "metrics")]
use crate::metrics::Metrics;
use crate::phase::Phase;
use crate::probes::Probes;
use crate::serve::{accept_loop, AppResponseBody, AppService, ServeContext};
use crate::shutdown::{Handover, Outcome, Shutdown};
use crate::state::{ShutdownReason, State};
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
    inner: Arc<Inner>,
    _halt: Arc<DropGuard>,
}

/// What one lifecycle owns. Each part is its own concern; the parts other modules need are
/// handed to them (the admin thread, the serving stack, the metrics), never this struct.
struct Inner {
    config: Config,
    state: Arc<State>,
    health: Arc<Health>,
    connections: Arc<Connections>,
    shutdown: Shutdown,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
    app_addr: OnceLock<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    /// Admission control, when it is on (`PODCYCLE_ADMISSION`).
    admission: Option<Arc<crate::admission::Controller>>,
}

impl Inner {
    /// The request recorder the serving stack is built with, chosen once (see
    /// [`crate::recorder`]): the metrics core with the `metrics` feature, else none.
    fn recorder(&self) -> impl crate::recorder::Recorder {
        #[cfg(feature = "metrics")]
        return self.metrics.recorder();
        #[cfg(not(feature = "metrics"))]
        crate::recorder::NoRecorder
    }
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
    ///
    /// Logs a warning for each `PODCYCLE_*` variable it does not know, naming the closest
    /// known one (`PODCYCLE_DRAIN_TIMOUT`: did you mean `PODCYCLE_DRAIN_TIMEOUT`?).
    pub fn from_env(version: &str) -> Result<Lifecycle, Error> {
        let config = Config::from_env(version)?;
        crate::env_check::warn_unknown_env();
        Lifecycle::new(config)
    }

    /// Starts a lifecycle: validates the configuration, binds the admin listener on its own
    /// thread, installs the signal handlers (see [`Config::handle_signals`]) and starts the
    /// runtime watchdog.
    ///
    /// Must be called inside a tokio runtime (checks, warm-ups and the watchdog run on it).
    pub fn new(config: Config) -> Result<Lifecycle, Error> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let state = Arc::new(State::default());
        let halt = state.signals.halt.clone().drop_guard();
        let health = Arc::new(Health::new(state.clone(), config.health));
        let admission = crate::admission::Controller::new(config.admission, config.admission_queue);
        let connections = Arc::new(Connections::new(admission.clone()));
        let lag = Arc::new(crate::lag::SchedulingLag::default());
        #[cfg(feature = "metrics")]
        let metrics = Metrics::new(
            &config,
            crate::metrics::Sources {
                state: state.clone(),
                health: health.clone(),
                connections: connections.clone(),
                runtime: tokio::runtime::Handle::current(),
                lag: lag.clone(),
                admission: admission.clone(),
            },
        )
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let admin_addr = crate::admin::start(crate::admin::Admin {
            addr: config.admin_addr,
            handle_signals: config.handle_signals,
            state: state.clone(),
            connections: connections.clone(),
            probes: Probes {
                health: health.clone(),
            },
            #[cfg(feature = "metrics")]
            metrics: metrics.clone(),
        })
        .map_err(Error::Io)?;
        crate::watchdog::start(
            health.clone(),
            lag,
            config.health.watchdog_stall,
            state.signals.halt.clone(),
        );
        crate::stderr::unless_subscribed(|| {
            format!(
                "lifecycle started: version {}, app {}, admin {}, shutdown delay {:?}, drain \
                 timeout {:?}, hook timeout {:?} (no tracing subscriber: podcycle writes its \
                 own lines here; install one, e.g. podcycle::logging::init(), for all of them)",
                config.version,
                config.addr,
                admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
                config.shutdown.delay,
                config.shutdown.drain_timeout,
                config.shutdown.hook_timeout,
            )
        });
        tracing::info!(
            version = %config.version,
            addr = %config.addr,
            admin_addr = %admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            shutdown_delay = ?config.shutdown.delay,
            shutdown_quiet = ?config.shutdown.quiet,
            shutdown_delay_cap = ?config.shutdown_delay_cap(),
            drain_timeout = ?config.shutdown.drain_timeout,
            hook_timeout = ?config.shutdown.hook_timeout,
            "podcycle lifecycle started"
        );
        let shutdown = Shutdown::new(
            state.clone(),
            connections.clone(),
            config.shutdown_plan(),
            config.shutdown.hook_timeout,
        );
        Ok(Lifecycle {
            inner: Arc::new(Inner {
                config,
                state,
                health,
                connections,
                shutdown,
                #[cfg(feature = "metrics")]
                metrics,
                app_addr: OnceLock::new(),
                admin_addr,
                admission,
            }),
            _halt: Arc::new(halt),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The version reported in probes, metrics and logs (`APP_VERSION`).
    pub fn version(&self) -> &str {
        &self.inner.config.version
    }

    /// Runs `fut` as the named warm-up. Readiness (and serving) wait until every warm-up has
    /// succeeded; a failure stops startup (see [`OnWarmupFailure`]). A panic is a failure.
    pub fn warmup<T, E, F>(&self, name: &str, fut: F) -> Warmup<T>
    where
        T: Send + Sync + 'static,
        E: fmt::Display + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.inner.health.warmups.start(name, fut)
    }

    /// Adds a check with its own settings (interval, timeout, failure threshold, gating); see
    /// [`Check`]. It runs in the background until the lifecycle ends; probes read its last
    /// result.
    pub fn check(&self, check: Check) {
        self.inner.health.checks.add(
            check,
            self.inner.config.checks,
            self.inner.state.signals.halt.clone(),
            self.inner.state.subscribe(),
        );
    }

    /// Adds a readiness check with the lifecycle's default settings
    /// (`PODCYCLE_CHECK_INTERVAL`, `PODCYCLE_CHECK_TIMEOUT`, `PODCYCLE_CHECK_FAILURE_THRESHOLD`).
    /// `/readyz` fails while it counts as failed. Shorthand for
    /// `lifecycle.check(Check::readiness(name, check))`.
    pub fn readiness_check<F, Fut, E>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.check(Check::readiness(name, check));
    }

    /// Adds a liveness check with the lifecycle's default settings: `/livez` fails (and the
    /// kubelet restarts the container) while it counts as failed. Keep these about this
    /// process, not its dependencies. Shorthand for `lifecycle.check(Check::liveness(name, check))`.
    pub fn liveness_check<F, Fut, E>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.check(Check::liveness(name, check));
    }

    /// The application's own readiness switch (default on). `set_serving(false)` fails
    /// `/readyz` (line `serving`) at once, for maintenance, without starting a shutdown;
    /// `set_serving(true)` brings it back. Logged when it changes.
    ///
    /// Not for load shedding: an overloaded pod taken out of the endpoints moves its load onto
    /// the others, which then overload in turn (the cascading failure of the SRE book's
    /// chapter 22). Shed with admission control instead ([`Config::admission`]), which answers
    /// the requests beyond the limit at once and leaves readiness and liveness alone.
    pub fn set_serving(&self, serving: bool) {
        let was = self.inner.health.set_serving(serving);
        if was != serving {
            if serving {
                tracing::info!("serving switched on by the application: /readyz may pass");
            } else {
                tracing::warn!("serving switched off by the application: /readyz fails");
            }
        }
    }

    /// Registers a shutdown hook (flush, close pools): `hook` is polled only once in-flight
    /// requests have drained, concurrently with the other hooks, within `PODCYCLE_HOOK_TIMEOUT`.
    pub fn on_shutdown<F>(&self, name: &str, hook: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.shutdown.hooks.add(name, Box::pin(hook));
    }

    /// Spawns background work tracked for shutdown: after the drain, its token
    /// ([`Lifecycle::shutdown_token`]) is cancelled and the task is awaited within the hook timeout.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.shutdown.hooks.tasks.spawn(task)
    }

    /// The tracker behind [`Lifecycle::spawn`], for code that takes a `TaskTracker`.
    pub fn task_tracker(&self) -> TaskTracker {
        self.inner.shutdown.hooks.tasks.clone()
    }

    /// A token cancelled when background work must stop (after the drain, before hooks).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.state.signals.background_cancelled.clone()
    }

    /// Starts the shutdown sequence as if SIGTERM had arrived. Idempotent.
    pub fn shutdown(&self) {
        self.request_shutdown(ShutdownReason::Requested);
    }

    fn request_shutdown(&self, reason: ShutdownReason) {
        crate::shutdown::request(&self.inner.state, &self.inner.connections, reason);
    }

    /// Why shutdown started, once it has.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        self.inner.state.shutdown_reason()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.inner.state.phase()
    }

    /// A receiver that sees every phase change.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.inner.state.subscribe()
    }

    /// Resolves once the lifecycle has reached `phase` (or a later one).
    ///
    /// # Cancellation safety
    /// Cancel safe: the returned future only watches the phase; drop it at any time and call
    /// again.
    pub fn reached(&self, phase: Phase) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.state.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p >= phase).await;
        }
    }

    /// Resolves when shutdown starts (readiness turns off; still serving during the delay).
    ///
    /// # Cancellation safety
    /// Cancel safe, as [`Lifecycle::reached`].
    pub fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(Phase::Deregistering)
    }

    /// Resolves when in-flight work should finish: the listener is closed and the drain
    /// deadline is running. Streams should send a last event and end here.
    ///
    /// # Cancellation safety
    /// Cancel safe, as [`Lifecycle::reached`]: use it in `tokio::select!` freely.
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(Phase::Draining)
    }

    /// Resolves when this long-lived stream (SSE, WebSocket, a long HTTP/2 response) should
    /// end: at its own moment within `PODCYCLE_STREAM_CLOSE_SPREAD` after the listener
    /// closes, so that the clients of many streams reconnect to other replicas at a bounded
    /// rate instead of all at once. Call it once per stream, from any task; finish the
    /// answer in progress, send a last event or a close frame (WebSocket 1001, going away),
    /// then end. Streams still open at the drain deadline are cut (exit code 4).
    ///
    /// Streams that wait get consecutive slots spread evenly over the window (see
    /// `Config::stream_close_spread`); with a spread of `0s` this is [`Lifecycle::draining`].
    /// Each resolution is counted in `podcycle_streams_ended_total{ended_by="drain_signal"}`.
    ///
    /// ```no_run
    /// # async fn f(lifecycle: podcycle::Lifecycle) {
    /// let told = lifecycle.stream_drain();
    /// tokio::select! {
    ///     _ = told => { /* send `event: reconnect`, or close 1001 */ }
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
    /// }
    /// # }
    /// ```
    ///
    /// # Cancellation safety
    /// Cancel safe: dropping it before draining starts costs nothing; dropped while waiting
    /// for its slot, the slot goes unused.
    pub fn stream_drain(&self) -> impl Future<Output = ()> + Send + 'static {
        crate::stream_drain::signal(
            self.inner.state.clone(),
            self.inner.config.spread_in_force(),
        )
    }

    /// `stream`'s items until the drain starts ([`Lifecycle::draining`]), then its end: for
    /// server-sent events, WebSocket feeds and other long responses, so the drain does not
    /// wait for them. See [`until`](crate::until) to send a last event.
    ///
    /// ```no_run
    /// use axum::response::sse::{Event, Sse};
    /// use futures_util::{stream, StreamExt};
    ///
    /// # fn handler(lifecycle: podcycle::Lifecycle) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    /// let ticks = stream::repeat_with(|| Ok(Event::default().data("tick")));
    /// let last = stream::once(async { Ok(Event::default().event("reconnect").data("draining")) });
    /// Sse::new(lifecycle.until_draining(ticks).chain(last))
    /// # }
    /// ```
    pub fn until_draining<S: futures_util::Stream>(
        &self,
        stream: S,
    ) -> crate::until::Until<S, impl Future<Output = ()> + Send + 'static> {
        crate::until::until(stream, self.draining())
    }

    /// Whether `/readyz` would pass right now (ignoring exclusions).
    pub fn is_ready(&self) -> bool {
        self.inner.health.is_ready()
    }

    /// The probe endpoints as a service, to mount on the application router as well.
    pub fn probes(&self) -> Probes {
        Probes {
            health: self.inner.health.clone(),
        }
    }

    /// The application listener's address, once bound.
    pub fn app_addr(&self) -> Option<SocketAddr> {
        self.inner.app_addr.get().copied()
    }

    /// The admin listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// Requests received after readiness turned off, on new and reused connections: a
    /// measure of load-balancer lag.
    pub fn requests_after_unready(&self) -> u64 {
        self.inner.state.counters.requests_after_unready()
    }

    /// The metrics: the layer recording requests, and the registry behind `/metrics`.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Binds `PODCYCLE_ADDR` (at once: a port in use fails without waiting for warm-ups),
    /// waits for warm-ups, serves `app` until shutdown and runs the shutdown sequence. Returns
    /// how it ended.
    ///
    /// Until the warm-ups are done, the listener answers every request at once with `503`,
    /// `Retry-After: 1` and (HTTP/1) `Connection: close`; `app` is not called. After SIGINT
    /// (Ctrl-C: a terminal, no load balancer) the propagation delay is skipped; SIGTERM keeps it.
    ///
    /// `app` is any tower `Service` for `Request<axum::body::Body>`, e.g. an axum `Router`
    /// (given its state once, as `axum::serve` does, so its handlers are not turned into routes
    /// on every request). The body is hyper's, watched for the
    /// [minimum body rate](crate::Config::min_body_rate); an axum `Router` takes it as it is,
    /// without boxing it again. With a [`MetricsLayer`](crate::MetricsLayer) in `app`, the serving
    /// stack, which already tracks every request for the drain, also times it; the layer only
    /// names the route.
    ///
    /// # Examples
    ///
    /// A plain tower service, no axum `Router` (`examples/hyper_service.rs` adds the metrics
    /// layer with a `route_fn`). A `hyper::service::service_fn` is written the same way with
    /// `tower::service_fn`:
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use http_body_util::Full;
    /// use bytes::Bytes;
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<podcycle::Outcome, podcycle::Error> {
    ///     let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
    ///     let service = tower::service_fn(|req: Request<axum::body::Body>| async move {
    ///         let body = format!("hello from {}\n", req.uri().path());
    ///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    ///     });
    ///     Ok(lifecycle.serve(service).await)
    /// }
    /// ```
    ///
    /// A tonic service (HTTP/2 prior knowledge on the same port; GOAWAY when the listener
    /// closes, in-flight RPCs and streams drain). Here tonic-health's service stands for your
    /// own `FooServer::new(...)`; several services: `Routes::new(a).add_service(b)`, or
    /// `route_service("/pkg.Service/{*rest}", server)` in an axum `Router` beside HTTP routes:
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> Result<podcycle::Outcome, podcycle::Error> {
    ///     let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
    ///     let (_reporter, health) = tonic_health::server::health_reporter();
    ///     let grpc = tonic::service::Routes::new(health);
    ///     Ok(lifecycle.serve(grpc).await)
    /// }
    /// ```
    ///
    /// # Cancellation safety
    /// Not cancel safe: drive it to completion (return its [`Outcome`] from `main`). Dropping
    /// the future stops accepting new connections at once (the accept loop ends with it) but
    /// skips the drain and the hooks; connections already accepted are served until they end.
    pub async fn serve<S, B>(self, app: S) -> Outcome
    where
        S: Service<Request<axum::body::Body>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_inner(None, app).await
    }

    /// Like [`Lifecycle::serve`], on a listener the caller bound. Until the warm-ups are done,
    /// requests are answered `503` with `Retry-After: 1` (as with `serve`, which binds before
    /// the warm-ups end).
    ///
    /// # Cancellation safety
    /// As [`Lifecycle::serve`].
    pub async fn serve_with_listener<S, B>(self, listener: TcpListener, app: S) -> Outcome
    where
        S: Service<Request<axum::body::Body>, Response = Response<B>> + Clone + Send + 'static,
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
        S: AppService<B>,
        B: AppResponseBody,
    {
        let app = prepare_router(app);
        let inner = self.inner.clone();
        let (config, state, connections) = (&inner.config, &inner.state, &inner.connections);
        // Bound before the warm-ups end, so a port conflict fails at once, not after a long
        // warm-up; connections wait in the backlog until serving starts (readiness keeps load
        // balancers away until then).
        let listener = match listener {
            Some(l) => l,
            None => match crate::serve::bind(config.addr) {
                Ok(l) => l,
                Err(e) => {
                    let msg =
                        crate::error::bind_error("application", "PODCYCLE_ADDR", config.addr, e)
                            .to_string();
                    tracing::error!(error = %msg, "cannot serve");
                    self.request_shutdown(ShutdownReason::Requested);
                    inner
                        .health
                        .warmups
                        .abort_running("cancelled: the application listener could not be bound");
                    return inner
                        .shutdown
                        .run(Handover::NothingServed(Outcome::Failed(msg)))
                        .await;
                }
            },
        };
        if let Ok(addr) = listener.local_addr() {
            let _ = inner.app_addr.set(addr);
            crate::stderr::unless_subscribed(|| format!("application listener bound on {addr}"));
            tracing::info!(%addr, "application listener bound");
        }
        // Until the warm-ups end, requests get `503` + `Retry-After` at once, not a wait in
        // the backlog; when startup ends early, also while the hooks run. Biased: with the
        // warm-ups already done (or none), the listener is not polled here, and a connection
        // already waiting is served by the application.
        let ended_early = async {
            let startup = self.wait_for_warmups().await?;
            Some(inner.shutdown.run(Handover::NothingServed(startup)).await)
        };
        let early = tokio::select! {
            biased;
            early = ended_early => early,
            never = crate::serve::answer_while_warming(&listener, config.timeouts.header_read) => match never {},
        };
        if let Some(outcome) = early {
            return outcome;
        }
        let connection_tasks = TaskTracker::new();
        let max_connections = crate::connections::max_app_connections(config.max_connections);
        let context = Arc::new(ServeContext {
            state: state.clone(),
            connections: connections.clone(),
            stop_accepting: config.stop_accepting,
            timeouts: config.timeouts,
            max_connections,
            max_upgraded: config
                .max_upgraded_connections
                .unwrap_or((max_connections / 2).max(1)),
            slots: inner.health.slots.clone(),
            close_spread: config.shutdown.delay / 2,
            admission: inner.admission.clone(),
            shed_status: config.shed_status,
            trace: crate::trace::Tracing::new(
                crate::trace::Sampling::ratio(config.trace_sampling),
                &config.version,
            ),
        });
        // Aborted if this future is dropped: nothing keeps accepting for a lifecycle nobody
        // drives any more.
        let accept = AbortOnDropHandle::new(tokio::spawn(accept_loop(
            context,
            listener,
            app,
            connection_tasks.clone(),
            inner.recorder(),
        )));
        inner
            .shutdown
            .run(Handover::Serving {
                accept,
                connections: connection_tasks,
            })
            .await
    }

    /// Waits until every warm-up is done. Returns how startup ended instead when it ends early
    /// (shutdown requested, a warm-up failed or missed the deadline); the shutdown sequence
    /// then runs the hooks without a delay or a drain.
    async fn wait_for_warmups(&self) -> Option<Outcome> {
        let inner = &self.inner;
        let (config, state, warmups) = (&inner.config, &inner.state, &inner.health.warmups);
        let requested = &state.signals.shutdown_requested;
        // `validate` keeps the timeout within a year, so the sum fits; past that (it cannot
        // happen) there would be no deadline rather than a panic.
        let deadline = config
            .warmup_timeout
            .and_then(|t| state.started.checked_add(t))
            .map(tokio::time::Instant::from_std);
        let mut changed = warmups.subscribe();
        let failure = loop {
            if requested.is_cancelled() {
                break None;
            }
            match warmups.progress() {
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
                _ = requested.cancelled() => {}
                _ = sleep_until => {
                    let t = config.warmup_timeout.unwrap_or_default();
                    warmups.abort_running(&format!(
                        "did not finish within PODCYCLE_WARMUP_TIMEOUT {}",
                        humantime::format_duration(t)
                    ));
                }
            }
        };
        match failure {
            None => {
                tracing::info!("shutdown requested during warm-up: nothing was served");
                warmups.abort_running("cancelled: shutdown requested during warm-up");
                Some(Outcome::StoppedDuringStartup)
            }
            Some((warmup, error)) => {
                tracing::error!(warmup = %warmup, %error, "warm-up failed: startup failed");
                if config.on_warmup_failure == OnWarmupFailure::StayUnready {
                    tracing::warn!("staying up and unready until a signal arrives (PODCYCLE_ON_WARMUP_FAILURE=stay-unready)");
                    requested.cancelled().await;
                } else {
                    self.request_shutdown(ShutdownReason::WarmupFailed);
                }
                warmups.abort_running("cancelled: another warm-up failed");
                Some(Outcome::WarmupFailed { warmup, error })
            }
        }
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
