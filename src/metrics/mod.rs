//! Version-labelled RED metrics and lifecycle metrics, served on the admin listener's
//! `/metrics`, built on the `prometheus` crate.
//!
//! - `http_server_request_duration_seconds` (histogram; labels `http_request_method`,
//!   `http_route`, `http_response_status_code`, `version`, and `error_type` when the request
//!   failed: the status code for 5xx, `panic` for a handler that panicked, or
//!   `client_aborted`, `body_error`, `drain_deadline` for requests that never completed) and `http_server_active_requests` (gauge), recorded by
//!   [`MetricsLayer`].
//! - `podcycle_build_info`, `podcycle_phase`, `podcycle_ready`, `podcycle_warmup_duration_seconds`,
//!   `podcycle_shutdown_step_duration_seconds`, `podcycle_requests_after_unready_total`
//!   (label `connection`: `new` or `reused`), `podcycle_shutdown_last_new_connection_seconds`,
//!   `podcycle_connections_closed_idle_total`, `podcycle_connections_force_closed_total`, `podcycle_accept_errors_total`,
//!   `podcycle_check_status`, `podcycle_upgraded_connections`, `podcycle_streams_ended_total`,
//!   and with admission control on `podcycle_admission_limit`, `podcycle_admission_in_flight`,
//!   `podcycle_requests_shed_total`.
//! - Process metrics under their standard names (`process_cpu_seconds_total`,
//!   `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//!   `process_max_fds`, `process_threads`, `process_start_time_seconds`), read from `/proc`
//!   at scrape time (absent without `/proc`).
//! - The application runtime: `podcycle_runtime_workers`, `podcycle_runtime_alive_tasks`,
//!   `podcycle_runtime_global_queue_depth`, `podcycle_runtime_busy_seconds_total`,
//!   `podcycle_runtime_parks_total` (tokio's stable `RuntimeMetrics`, at scrape time) and
//!   `podcycle_runtime_scheduling_lag_seconds` (histogram: how late the watchdog's ticks ran).
//!
//! With `PODCYCLE_NATIVE_HISTOGRAMS=true`, `http_server_request_duration_seconds` has native
//! (exponential) buckets too, served in the protobuf exposition to a scraper that asks for it
//! ([`Metrics::render_protobuf`]; see `docs/metrics.md`).
//!
//! Every series carries `version` (`APP_VERSION`) and the constant labels from
//! `PODCYCLE_METRIC_LABELS` (e.g. `track=canary`). Register your own metrics on
//! [`Metrics::registry`]; they get the same labels.
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), podcycle::Error> {
//! let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
//! let app = axum::Router::new()
//!     .route("/hello/{name}", axum::routing::get(|| async { "hi" }))
//!     // `Router::layer`, so the route template is known: http_route="/hello/{name}".
//!     .layer(lifecycle.metrics().layer());
//! let answers = prometheus::IntCounter::new("chatbot_answers_total", "Answers given.").unwrap();
//! lifecycle.metrics().registry().register(Box::new(answers.clone())).unwrap();
//! lifecycle.serve(app).await;
//! # Ok(()) }
//! ```

mod exemplars;
#[cfg(feature = "grpc")]
mod grpc;
mod handoff;
mod layer;
mod named;
mod native;
mod openmetrics;
mod placement;
mod process;
mod protobuf;
mod recorder;
mod recording;
mod render;
mod routes;
mod runtime;
pub mod schema;
mod series;
mod shard;
mod table;
mod timer;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::config::Config;
use crate::connections::Connections;
use crate::health::Health;
use crate::lag::SchedulingLag;
use crate::phase::Phase;
use crate::state::{State, Step};
use crate::warmup::WarmupStatus;

pub use self::layer::{MetricsFuture, MetricsLayer, MetricsService, RouteFn};
pub use self::recorder::DEFAULT_BUCKETS;
pub use self::routes::UNMATCHED_ROUTE;

pub(crate) use self::named::name_route;
pub(crate) use self::recorder::HttpMetrics;

/// The content type of the text format.
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics of one lifecycle: the request recorder and a `prometheus` registry.
#[derive(Clone)]
pub struct Metrics {
    core: &'static HttpMetrics,
    registry: Registry,
    gauges: Arc<LifecycleGauges>,
    /// What the lifecycle gauges are read from at scrape time.
    sources: Sources,
}

/// The lifecycle state the gauges are read from (none of it refers back to the metrics).
#[derive(Clone)]
pub(crate) struct Sources {
    pub(crate) state: Arc<State>,
    pub(crate) health: Arc<Health>,
    pub(crate) connections: Arc<Connections>,
    /// The application runtime, for its `RuntimeMetrics`.
    pub(crate) runtime: tokio::runtime::Handle,
    /// The watchdog's scheduling lag.
    pub(crate) lag: Arc<SchedulingLag>,
    /// Admission control, when it is on.
    pub(crate) admission: Option<Arc<crate::admission::Controller>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("http_series", &self.core.series_count())
            .finish_non_exhaustive()
    }
}

/// The HTTP metrics as a [`prometheus::core::Collector`]; see [`Metrics::http_collector`].
#[derive(Debug)]
pub struct HttpCollector {
    core: &'static HttpMetrics,
    descs: Vec<prometheus::core::Desc>,
}

impl prometheus::core::Collector for HttpCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.core.families()
    }
}

struct LifecycleGauges {
    phase: IntGaugeVec,
    ready: IntGauge,
    warmup: prometheus::GaugeVec,
    steps: prometheus::GaugeVec,
    after_unready: prometheus::IntCounterVec,
    last_new_connection: prometheus::Gauge,
    closed_idle: IntCounter,
    force_closed: IntCounter,
    accept_errors: prometheus::IntCounterVec,
    checks: IntGaugeVec,
    upgraded: IntGauge,
    streams_ended: prometheus::IntCounterVec,
    admission: Option<AdmissionGauges>,
}

/// Admission control's limit, requests in flight and requests shed.
struct AdmissionGauges {
    limit: IntGauge,
    in_flight: IntGauge,
    shed: IntCounter,
}

impl Metrics {
    pub(crate) fn new(config: &Config, sources: Sources) -> Result<Metrics, prometheus::Error> {
        let mut labels = std::collections::HashMap::new();
        labels.insert(schema::VERSION.to_owned(), config.version.clone());
        for (k, v) in &config.metric_labels {
            labels.insert(k.clone(), v.clone());
        }
        let registry = Registry::new_custom(None, Some(labels))?;
        let build_info = IntGauge::with_opts(Opts::new(
            schema::BUILD_INFO,
            "Always 1; labels tell the application version.",
        ))?;
        build_info.set(1);
        let phase = IntGaugeVec::new(
            Opts::new(
                schema::PHASE_METRIC,
                "1 for the current lifecycle phase, 0 for the others.",
            ),
            &[schema::PHASE],
        )?;
        let ready = IntGauge::new(schema::READY, "1 when /readyz passes.")?;
        let warmup = prometheus::GaugeVec::new(
            Opts::new(
                schema::WARMUP_DURATION,
                "How long each finished warm-up took.",
            ),
            &[schema::WARMUP],
        )?;
        let steps = prometheus::GaugeVec::new(
            Opts::new(
                schema::SHUTDOWN_STEP_DURATION,
                "Time spent in each shutdown step (delay, drain, hooks) of this process.",
            ),
            &[schema::STEP],
        )?;
        let after_unready = prometheus::IntCounterVec::new(
            Opts::new(
                schema::REQUESTS_AFTER_UNREADY,
                "Requests received after readiness turned off (load-balancer removal lag), on \
                 connections opened after it (new) or before it (reused).",
            ),
            &[schema::CONNECTION],
        )?;
        for c in [schema::CONNECTION_NEW, schema::CONNECTION_REUSED] {
            after_unready.with_label_values(&[c]);
        }
        let last_new_connection = prometheus::Gauge::new(
            schema::SHUTDOWN_LAST_NEW_CONNECTION,
            "Seconds from the shutdown request to the last new connection the shutdown delay \
             saw (0 until one arrives): the load balancer's removal lag.",
        )?;
        let closed_idle = IntCounter::new(
            schema::CONNECTIONS_CLOSED_IDLE,
            "Keep-alive connections idle when the shutdown delay ended, closed then.",
        )?;
        let force_closed = IntCounter::new(
            schema::CONNECTIONS_FORCE_CLOSED,
            "Connections closed by the drain deadline with requests in flight.",
        )?;
        let checks = IntGaugeVec::new(
            Opts::new(
                schema::CHECK_STATUS,
                "1 when the check passes, 0 when it fails.",
            ),
            &[schema::CHECK, schema::PROBE],
        )?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(phase.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(warmup.clone()))?;
        registry.register(Box::new(steps.clone()))?;
        registry.register(Box::new(after_unready.clone()))?;
        registry.register(Box::new(last_new_connection.clone()))?;
        registry.register(Box::new(closed_idle.clone()))?;
        let accept_errors = prometheus::IntCounterVec::new(
            Opts::new(
                schema::ACCEPT_ERRORS,
                "Failed accepts (out of file descriptors and the like), by listener.",
            ),
            &[schema::LISTENER],
        )?;
        registry.register(Box::new(force_closed.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        for listener in ["app", "admin"] {
            accept_errors.with_label_values(&[listener]);
        }
        registry.register(Box::new(checks.clone()))?;
        let upgraded = IntGauge::new(
            schema::UPGRADED_CONNECTIONS,
            "Upgraded connections (WebSockets) open now.",
        )?;
        let streams_ended = prometheus::IntCounterVec::new(
            Opts::new(
                schema::STREAMS_ENDED,
                "Long-lived streams and upgraded connections the drain ended: by their \
                 staggered drain signal, or cut by the drain deadline.",
            ),
            &[schema::ENDED_BY],
        )?;
        registry.register(Box::new(upgraded.clone()))?;
        registry.register(Box::new(streams_ended.clone()))?;
        for by in [schema::ENDED_BY_SIGNAL, schema::ENDED_BY_DEADLINE] {
            streams_ended.with_label_values(&[by]);
        }
        let admission = match &sources.admission {
            None => None,
            Some(_) => {
                let a = AdmissionGauges {
                    limit: IntGauge::new(
                        schema::ADMISSION_LIMIT,
                        "Admission control's limit of requests in flight now.",
                    )?,
                    in_flight: IntGauge::new(
                        schema::ADMISSION_IN_FLIGHT,
                        "Requests admitted by admission control and in flight now.",
                    )?,
                    shed: IntCounter::new(
                        schema::REQUESTS_SHED,
                        "Requests shed by admission control (answered 503 or \
                         RESOURCE_EXHAUSTED without reaching the application).",
                    )?,
                };
                registry.register(Box::new(a.limit.clone()))?;
                registry.register(Box::new(a.in_flight.clone()))?;
                registry.register(Box::new(a.shed.clone()))?;
                Some(a)
            }
        };
        registry.register(Box::new(process::ProcessCollector::new()))?;
        registry.register(Box::new(runtime::RuntimeCollector::new(
            sources.runtime.clone(),
            sources.lag.clone(),
        )))?;
        for p in Phase::ALL {
            phase.with_label_values(&[p.as_str()]).set(0);
        }
        let mut const_labels = config.metric_labels.clone();
        const_labels.sort();
        let core = HttpMetrics::leak(
            &config.version,
            &const_labels,
            &config.buckets,
            config.native_histograms,
            sources.state.signals.drain_deadline.clone(),
        );
        Ok(Metrics {
            core,
            registry,
            gauges: Arc::new(LifecycleGauges {
                phase,
                ready,
                warmup,
                steps,
                after_unready,
                last_new_connection,
                closed_idle,
                force_closed,
                accept_errors,
                checks,
                upgraded,
                streams_ended,
                admission,
            }),
            sources,
        })
    }

    /// The recorder the serving stack times requests with: the metrics core. It times every
    /// request; a [`crate::routing`] handler or a [`MetricsLayer`] inside the application
    /// names its route, and a request nobody named is recorded as `unmatched` once the
    /// application names routes, else not at all (see [`MetricsLayer`]).
    pub(crate) fn recorder(&self) -> &'static HttpMetrics {
        self.core
    }

    /// The layer recording application requests. Add it with `Router::layer`. Getting it has
    /// no effect of its own; wrapping a service with it does (see [`MetricsLayer`]).
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer {
            core: self.core,
            route_fn: None,
        }
    }

    /// The registry behind `/metrics`: register your own metrics here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How many `http_server_request_duration_seconds` label sets exist so far.
    pub fn http_series_count(&self) -> usize {
        self.core.series_count()
    }

    /// Renders everything in the Prometheus text format, as `/metrics` serves it.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = String::with_capacity(64 * 1024);
        self.core.render(&mut out);
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        out
    }

    /// Renders everything in the Prometheus protobuf exposition (length-delimited
    /// `io.prometheus.client.MetricFamily` messages), as `/metrics` serves it to a scraper
    /// that asks for it: the HTTP families with their native histograms when
    /// `PODCYCLE_NATIVE_HISTOGRAMS` is on, then the registry's.
    pub fn render_protobuf(&self) -> Vec<u8> {
        self.refresh();
        let mut out = Vec::with_capacity(64 * 1024);
        self.core.render_protobuf(&mut out);
        protobuf::families(&mut out, &self.registry.gather());
        out
    }

    /// What `/metrics` answers a request with `Accept` header `accept`: the body and its
    /// content type. The protobuf exposition if asked for (Prometheus with native histograms
    /// on), else OpenMetrics text with exemplars if preferred to the text format (Prometheus by
    /// default), else the Prometheus text format.
    pub(crate) fn respond(
        &self,
        accept: Option<&http::HeaderValue>,
    ) -> (bytes::Bytes, &'static str) {
        if protobuf::accepts(accept) {
            (self.render_protobuf().into(), protobuf::CONTENT_TYPE)
        } else if openmetrics::wants_openmetrics(accept) {
            (self.render_openmetrics().into(), openmetrics::OPENMETRICS)
        } else {
            (self.render().into(), TEXT_CONTENT_TYPE)
        }
    }

    /// The HTTP metrics as a `prometheus` [`Collector`](prometheus::core::Collector), for
    /// registering in a registry of your own (e.g. one you push to a gateway). `/metrics`
    /// does not need it: it renders these families directly, from pre-escaped label sets.
    pub fn http_collector(&self) -> HttpCollector {
        let desc = |name: &str, help: &str| {
            prometheus::core::Desc::new(name.into(), help.into(), Vec::new(), Default::default())
                .expect("valid metric name")
        };
        HttpCollector {
            core: self.core,
            descs: vec![
                desc(
                    schema::HTTP_REQUEST_DURATION,
                    "Duration of HTTP server requests.",
                ),
                desc(
                    schema::HTTP_ACTIVE_REQUESTS,
                    "Number of active HTTP server requests.",
                ),
            ],
        }
    }

    /// `GET /metrics` as an axum `Router`, for a service without the admin listener
    /// (`PODCYCLE_ADMIN_ADDR=off`) that must serve its metrics on the application port:
    ///
    /// ```no_run
    /// # fn app(lifecycle: &podcycle::Lifecycle) -> axum::Router {
    /// axum::Router::new()
    ///     .route("/hello", podcycle::routing::get(|| async { "hello" }))
    ///     .merge(lifecycle.metrics().router())   // scrapes are not recorded
    /// # }
    /// ```
    ///
    /// It answers what the admin listener's `/metrics` answers, with the same content type.
    /// Its scrapes are not recorded as requests, whether the application's routes are named by
    /// [`podcycle::routing`](crate::routing) handlers or by a layer added before the merge.
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: http::HeaderMap| {
                // Called within the serving stack's poll: scrapes are not application traffic.
                named::unrecorded();
                let (body, content_type) = metrics.respond(headers.get(http::header::ACCEPT));
                async move { ([(http::header::CONTENT_TYPE, content_type)], body) }
            }),
        )
    }

    /// Renders only the HTTP metric families (the fast path, without the registry).
    pub fn render_http(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        self.core.render(&mut out);
        out
    }

    fn refresh(&self) {
        let Sources {
            state,
            health,
            connections,
            ..
        } = &self.sources;
        let g = &self.gauges;
        let counters = &state.counters;
        let current = state.phase();
        for p in Phase::ALL {
            g.phase
                .with_label_values(&[p.as_str()])
                .set(i64::from(p == current));
        }
        g.ready.set(i64::from(health.is_ready()));
        for w in health.warmups.entries() {
            if let WarmupStatus::Done(took) = w.status() {
                g.warmup
                    .with_label_values(&[w.name.as_str()])
                    .set(took.as_secs_f64());
            }
        }
        for step in Step::ALL {
            g.steps
                .with_label_values(&[step.as_str()])
                .set(state.step_duration(step).as_secs_f64());
        }
        for (label, count) in [
            (schema::CONNECTION_NEW, &counters.requests_after_unready_new),
            (schema::CONNECTION_REUSED, &counters.requests_after_unready),
        ] {
            let counter = g.after_unready.with_label_values(&[label]);
            counter.inc_by(count.load(Ordering::Relaxed).saturating_sub(counter.get()));
        }
        if let Some(at) = counters.last_arrival() {
            g.last_new_connection.set(at.as_secs_f64());
        }
        let idle = counters.closed_idle.load(Ordering::Relaxed);
        g.closed_idle
            .inc_by(idle.saturating_sub(g.closed_idle.get()));
        let forced = counters.force_closed.load(Ordering::Relaxed);
        g.force_closed
            .inc_by(forced.saturating_sub(g.force_closed.get()));
        for (listener, errors) in [
            ("app", &counters.app_accept_errors),
            ("admin", &counters.admin_accept_errors),
        ] {
            let counter = g.accept_errors.with_label_values(&[listener]);
            counter.inc_by(errors.total().saturating_sub(counter.get()));
        }
        g.upgraded
            .set(i64::try_from(connections.upgraded()).unwrap_or(i64::MAX));
        for (by, count) in [
            (schema::ENDED_BY_SIGNAL, &counters.streams_signalled),
            (schema::ENDED_BY_DEADLINE, &counters.streams_cut),
        ] {
            let counter = g.streams_ended.with_label_values(&[by]);
            counter.inc_by(count.load(Ordering::Relaxed).saturating_sub(counter.get()));
        }
        if let (Some(g), Some(c)) = (&g.admission, &self.sources.admission) {
            g.limit.set(i64::from(c.limit()));
            g.in_flight.set(i64::from(c.in_flight()));
            g.shed.inc_by(c.shed().saturating_sub(g.shed.get()));
        }
        for c in health.checks.all() {
            g.checks
                .with_label_values(&[c.name.as_str(), c.probe.as_str()])
                .set(i64::from(c.result().is_ok()));
        }
    }
}

/// podcycle's recording core, for the `recording` benchmark only: not API, not in the default
/// build (the `__bench` feature), and free to change with the recording core.
#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod __bench {
    use super::recorder::HttpMetrics;
    use super::routes::RouteName;
    use super::series::{Incomplete, SeriesKey};

    /// A leaked metrics core, as one lifecycle has.
    #[derive(Clone, Copy, Debug)]
    pub struct Core(&'static HttpMetrics);

    impl Core {
        /// A new core with `buckets` (seconds) and `version`, no constant labels.
        pub fn new(version: &str, buckets: &[f64]) -> Core {
            Core::with_native(version, buckets, false)
        }

        /// A new core as [`Core::new`], recording native histogram buckets too if `native`.
        pub fn with_native(version: &str, buckets: &[f64], native: bool) -> Core {
            Core(HttpMetrics::leak(
                version,
                &[],
                buckets,
                native,
                tokio_util::sync::CancellationToken::new(),
            ))
        }

        /// A raw timestamp (one clock read), for [`Core::finish`].
        #[inline]
        pub fn now(self) -> u64 {
            self.0.now()
        }

        /// Request start on the route `route`: its route id; counts the request active.
        #[inline]
        pub fn start(self, method: u8, route: &'static str) -> u32 {
            self.0.start(method, RouteName::Static(route), true)
        }

        /// Request end, completed with `status`, after `nanos`.
        #[inline]
        pub fn observe(self, method: u8, route: u32, status: u16, nanos: u64) {
            self.0.observe(Self::key(method, route, status), nanos);
        }

        /// Request end, completed with `status`, timed from `started` (a second clock read).
        #[inline]
        pub fn finish(self, method: u8, route: u32, status: u16, started: u64) {
            self.0.finish(Self::key(method, route, status), started);
        }

        /// Both HTTP families in the text format.
        pub fn render(self, out: &mut String) {
            self.0.render(out);
        }

        /// Both HTTP families in the protobuf exposition.
        pub fn render_protobuf(self, out: &mut Vec<u8>) {
            self.0.render_protobuf(out);
        }

        #[inline]
        fn key(method: u8, route: u32, status: u16) -> SeriesKey {
            SeriesKey {
                method,
                route,
                status,
                error: Incomplete::No,
            }
        }
    }
}
