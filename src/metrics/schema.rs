//! The names of podcycle's metrics and labels: the contract between what podcycle writes on
//! `/metrics` and what readers (dashboards, alert rules, the `podcycle-judge` canary judge)
//! query. Change a value here and every reader must change with it.
//!
//! ```
//! use podcycle::metrics::schema;
//!
//! // The canary's request count, as the judge asks Prometheus for it.
//! let query = format!(
//!     "{}_count{{{}=\"1.1.0\",{}!=\"{}\"}}",
//!     schema::HTTP_REQUEST_DURATION,
//!     schema::VERSION,
//!     schema::HTTP_ROUTE,
//!     schema::UNMATCHED_ROUTE,
//! );
//! assert_eq!(
//!     query,
//!     "http_server_request_duration_seconds_count{version=\"1.1.0\",http_route!=\"unmatched\"}"
//! );
//! ```
//!
//! This module is the bottom layer: it depends on nothing else in podcycle.

// ---- HTTP metrics (OpenTelemetry semantic conventions) ----

/// Histogram of request durations in seconds, one series per method, route, status, version
/// and error type.
pub const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Gauge of requests in flight.
pub const HTTP_ACTIVE_REQUESTS: &str = "http_server_active_requests";

// ---- Lifecycle metrics ----

/// Always 1; its labels tell the application version.
pub const BUILD_INFO: &str = "podcycle_build_info";
/// 1 for the current lifecycle phase (label [`PHASE`]), 0 for the others.
pub const PHASE_METRIC: &str = "podcycle_phase";
/// 1 while `/readyz` passes.
pub const READY: &str = "podcycle_ready";
/// How long each finished warm-up (label [`WARMUP`]) took, in seconds.
pub const WARMUP_DURATION: &str = "podcycle_warmup_duration_seconds";
/// Seconds spent in each shutdown step (label [`STEP`]).
pub const SHUTDOWN_STEP_DURATION: &str = "podcycle_shutdown_step_duration_seconds";
/// Counter, label [`CONNECTION`]: requests received after readiness turned off (load-balancer
/// removal lag), on connections opened after it ([`CONNECTION_NEW`]: the balancer still
/// routes new connections here) or before it ([`CONNECTION_REUSED`]: keep-alive clients).
pub const REQUESTS_AFTER_UNREADY: &str = "podcycle_requests_after_unready_total";
/// Gauge: seconds from the shutdown request to the last new connection the shutdown delay saw
/// (0 until one arrives): the load balancer's real removal lag. The delay actually taken is
/// [`SHUTDOWN_STEP_DURATION`] with [`STEP`] `delay`.
pub const SHUTDOWN_LAST_NEW_CONNECTION: &str = "podcycle_shutdown_last_new_connection_seconds";
/// Counter: keep-alive connections idle when the shutdown delay ended, closed then (a request
/// a client writes at that moment gets EOF: the race moving clients during the delay shrinks).
pub const CONNECTIONS_CLOSED_IDLE: &str = "podcycle_connections_closed_idle_total";
/// Connections closed by the drain deadline with requests in flight.
pub const CONNECTIONS_FORCE_CLOSED: &str = "podcycle_connections_force_closed_total";
/// Gauge: upgraded connections (WebSockets: `101 Switching Protocols`) open now.
pub const UPGRADED_CONNECTIONS: &str = "podcycle_upgraded_connections";
/// Counter, label [`ENDED_BY`]: long-lived streams and upgraded connections the drain ended,
/// by their staggered drain signal ([`ENDED_BY_SIGNAL`]) or cut by the drain deadline
/// ([`ENDED_BY_DEADLINE`]).
pub const STREAMS_ENDED: &str = "podcycle_streams_ended_total";
/// Counter, label [`LISTENER`]: failed accepts (out of file descriptors and the like).
pub const ACCEPT_ERRORS: &str = "podcycle_accept_errors_total";
/// Gauge: admission control's limit of requests in flight now (`PODCYCLE_ADMISSION`; absent
/// when it is off).
pub const ADMISSION_LIMIT: &str = "podcycle_admission_limit";
/// Gauge: requests admitted by admission control and in flight now (absent when it is off).
pub const ADMISSION_IN_FLIGHT: &str = "podcycle_admission_in_flight";
/// Counter: requests shed by admission control (answered `503` or `RESOURCE_EXHAUSTED`
/// without reaching the application; absent when it is off). Not in the request histogram: a
/// shed request never reached the application, as a request refused during the drain.
pub const REQUESTS_SHED: &str = "podcycle_requests_shed_total";
/// 1 when a check (labels [`CHECK`], [`PROBE`]) passes, 0 when it fails.
pub const CHECK_STATUS: &str = "podcycle_check_status";

// ---- Process metrics (the Prometheus client libraries' standard names and meanings) ----
//
// Read from `/proc` at scrape time; absent where `/proc` is not available.

/// Counter: user and system CPU time of the process, in seconds.
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Gauge: resident memory (RSS) in bytes.
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Gauge: virtual memory size in bytes.
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
/// Gauge: open file descriptors.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// Gauge: the soft limit on open file descriptors (`ulimit -n`).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// Gauge: OS threads of the process.
pub const PROCESS_THREADS: &str = "process_threads";
/// Gauge: when the process started, in seconds since the Unix epoch.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

// ---- Application runtime metrics (tokio's stable `RuntimeMetrics`, read at scrape time) ----

/// Gauge: worker threads of the application runtime.
pub const RUNTIME_WORKERS: &str = "podcycle_runtime_workers";
/// Gauge: tasks alive on the application runtime.
pub const RUNTIME_ALIVE_TASKS: &str = "podcycle_runtime_alive_tasks";
/// Gauge: tasks waiting in the application runtime's global (injection) queue.
pub const RUNTIME_GLOBAL_QUEUE_DEPTH: &str = "podcycle_runtime_global_queue_depth";
/// Counter: seconds the application runtime's workers spent busy, summed over workers
/// (`rate(...) / podcycle_runtime_workers` is the runtime's utilisation).
pub const RUNTIME_BUSY: &str = "podcycle_runtime_busy_seconds_total";
/// Counter: times the application runtime's workers parked (went idle), summed over workers.
pub const RUNTIME_PARKS: &str = "podcycle_runtime_parks_total";
/// Histogram: how late the runtime watchdog's timer tick ran, in seconds (scheduling lag of
/// the application runtime).
pub const RUNTIME_SCHEDULING_LAG: &str = "podcycle_runtime_scheduling_lag_seconds";

// ---- Labels ----

/// The application version (`APP_VERSION`), on every series: what tells canary from stable.
pub const VERSION: &str = "version";
/// The matched route template, e.g. `/v1/chat/{id}`, or [`UNMATCHED_ROUTE`].
pub const HTTP_ROUTE: &str = "http_route";
/// The request method, e.g. `GET`, or `_OTHER`.
pub const HTTP_REQUEST_METHOD: &str = "http_request_method";
/// The response status code, absent for requests that never completed.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http_response_status_code";
/// Set only on failed requests: the status code for 5xx, `panic` for a handler that panicked
/// (status 500 if it had not responded yet), or `client_aborted`, `body_error`,
/// `drain_deadline` for requests that never completed; for a gRPC call (feature `grpc`), the
/// name of its non-OK status, e.g. `UNAVAILABLE`.
pub const ERROR_TYPE: &str = "error_type";
/// A histogram bucket's upper bound (Prometheus' own label).
pub const LE: &str = "le";
/// The phase of [`PHASE_METRIC`].
pub const PHASE: &str = "phase";
/// The warm-up of [`WARMUP_DURATION`].
pub const WARMUP: &str = "warmup";
/// The shutdown step of [`SHUTDOWN_STEP_DURATION`].
pub const STEP: &str = "step";
/// The check of [`CHECK_STATUS`].
pub const CHECK: &str = "check";
/// The probe (`livez`, `readyz`, `startupz`) of [`CHECK_STATUS`].
pub const PROBE: &str = "probe";
/// Which listener, `app` or `admin` ([`ACCEPT_ERRORS`]).
pub const LISTENER: &str = "listener";
/// How the drain ended a stream ([`STREAMS_ENDED`]).
pub const ENDED_BY: &str = "ended_by";
/// Whether a request after readiness turned off came on a new or a reused connection
/// ([`REQUESTS_AFTER_UNREADY`]).
pub const CONNECTION: &str = "connection";

// ---- Label values ----

/// The [`HTTP_ROUTE`] of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// [`ENDED_BY`]: a `Lifecycle::stream_drain` signal resolved (the stream should end politely).
pub const ENDED_BY_SIGNAL: &str = "drain_signal";
/// [`CONNECTION`]: a connection opened after readiness turned off.
pub const CONNECTION_NEW: &str = "new";
/// [`CONNECTION`]: a connection opened before readiness turned off.
pub const CONNECTION_REUSED: &str = "reused";
/// [`ENDED_BY`]: the drain deadline cut the stream or upgraded connection.
pub const ENDED_BY_DEADLINE: &str = "drain_deadline";
