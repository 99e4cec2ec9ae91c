//! Configuration: every knob settable in code and from the environment.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use podcycle::Config;
//!
//! let config = Config::default()
//!     .shutdown_delay(Duration::from_secs(5))
//!     .drain_timeout(Duration::from_secs(20))
//!     .grace_period(Duration::from_secs(30));
//! config.validate().expect("5s + 20s + 3s + 1s margin fits in 30s");
//! ```
//!
//! Here: [`Config`], its defaults and setters, and the bundles of settings the lifecycle hands
//! to each part as they are. Beside it: `vars` (the one table of environment variables and
//! [`Config::from_env`]), `validate`, `plan` (the shutdown timings and [`ShutdownPlan`]) and
//! `error` ([`ConfigError`]).

mod error;
mod plan;
mod validate;
mod vars;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

pub use error::ConfigError;
pub(crate) use plan::{ShutdownPlan, ShutdownTimings};
pub(crate) use vars::VARS;

/// Time reserved between the end of the shutdown budget and the kubelet's SIGKILL.
pub const GRACE_MARGIN: Duration = Duration::from_secs(1);

/// Kubernetes' default `terminationGracePeriodSeconds`: the grace period the adaptive shutdown
/// delay plans against when `PODCYCLE_GRACE_PERIOD` is not set (raised to the fixed budget when
/// that is longer, so an explicit long drain keeps its full length).
pub const KUBERNETES_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// The default [quiet period](Config::shutdown_quiet) of the adaptive shutdown delay.
pub const DEFAULT_SHUTDOWN_QUIET: Duration = Duration::from_secs(2);

/// The longest any configured duration may be: 365 days. Longer values are refused by
/// [`Config::validate`] (and by [`Config::from_env`], naming the variable).
///
/// No timeout or delay of a pod's lifecycle sensibly exceeds a year, and the bound keeps every
/// `Instant + duration` and the shutdown budget's sum far from overflow on every platform
/// (tokio itself caps a sleep at about 30 years).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The shortest [`Config::watchdog_stall`] accepted: 1 s. The heartbeat ticks every quarter
/// of the stall (at least every 10 ms), and a container's CPU quota can pause every thread for
/// up to a CFS period (100 ms) at a time; a stall of a few ticks or periods would fail `/livez`
/// on an idle, healthy server (at `1ms`, 93 of 98 probes failed).
pub const MIN_WATCHDOG_STALL: Duration = Duration::from_secs(1);

/// The default [minimum request body rate](Config::min_body_rate), Kestrel's.
const DEFAULT_MIN_BODY_RATE: u64 = 240;

/// The default histogram buckets for request durations, in seconds: the OpenTelemetry HTTP
/// histogram boundaries, extended for long chat answers.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0,
    60.0, 120.0,
];

/// What happens to new requests once the propagation delay is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StopAccepting {
    /// Close the listener: new connections are refused (the default).
    #[default]
    CloseListener,
    /// Keep the listener open and answer new requests `503 Service Unavailable` with
    /// `Retry-After` and `Connection: close`, as kube-apiserver does.
    Reject,
}

/// Admission control of the application's requests (`PODCYCLE_ADMISSION`): how many may be
/// in flight at once before the next is answered at once (`503` with `Retry-After`, gRPC
/// `RESOURCE_EXHAUSTED`) instead of queueing. WebSocket upgrades are never shed, and the
/// probes and metrics (on the admin listener) never see it; readiness and liveness are never
/// used to shed load (see [`Lifecycle::set_serving`](crate::Lifecycle::set_serving)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Admission {
    /// Every request is admitted (the default): the application queues what it cannot serve.
    #[default]
    Off,
    /// A limit found from the latency the service shows (a gradient controller in the manner
    /// of Envoy's adaptive concurrency filter and Netflix's Gradient2): it grows while latency
    /// stays within 1.25 times its no-load level and shrinks when a queue makes it rise above
    /// that. The no-load level is the lowest latency seen, measured afresh (for one window, at
    /// a limit of 2) when the limit sheds, at most every 30 s. It stays within 4 and 1000
    /// (`adaptive:1000`).
    Adaptive,
    /// The adaptive limit, never above this cap (`adaptive:N`, N from 4 to 1000): a ceiling
    /// the service is known never to need more than (a connection pool's size, a
    /// dependency's quota), so that a latency that stays flat while the service saturates
    /// something the latency does not show cannot grow the limit past it.
    AdaptiveUpTo(u32),
    /// A fixed limit of requests in flight (at least 1).
    Fixed(u32),
}

impl Admission {
    /// The least cap `adaptive:N` takes (the adaptive limit's floor).
    pub(crate) const MIN_CAP: u32 = 4;
    /// The most cap `adaptive:N` takes (the adaptive limit's ceiling).
    pub(crate) const MAX_CAP: u32 = 1000;

    /// Whether this value is one `PODCYCLE_ADMISSION` takes (a fixed limit of at least 1, a
    /// cap from 4 to 1000).
    pub(crate) fn is_valid(self) -> bool {
        match self {
            Admission::Off | Admission::Adaptive => true,
            Admission::AdaptiveUpTo(n) => (Self::MIN_CAP..=Self::MAX_CAP).contains(&n),
            Admission::Fixed(n) => n >= 1,
        }
    }
}

impl fmt::Display for Admission {
    /// As `PODCYCLE_ADMISSION` takes it: `off`, `adaptive`, `adaptive:200`, `64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admission::Off => f.write_str("off"),
            Admission::Adaptive => f.write_str("adaptive"),
            Admission::AdaptiveUpTo(n) => write!(f, "adaptive:{n}"),
            Admission::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Admission {
    type Err = &'static str;

    /// `off`, `adaptive`, `adaptive:N` (N from 4 to 1000) or a positive whole number, as
    /// `PODCYCLE_ADMISSION` takes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let admission = match s.trim() {
            "off" => Admission::Off,
            "adaptive" => Admission::Adaptive,
            n => match n.strip_prefix("adaptive:") {
                Some(cap) => {
                    Admission::AdaptiveUpTo(cap.trim().parse().map_err(|_| error::ADMISSION)?)
                }
                None => Admission::Fixed(n.parse().map_err(|_| error::ADMISSION)?),
            },
        };
        if admission.is_valid() {
            Ok(admission)
        } else {
            Err(error::ADMISSION)
        }
    }
}

/// The status of a request shed by admission control (`PODCYCLE_SHED_STATUS`), with
/// `Retry-After: 1` either way (a gRPC request gets `RESOURCE_EXHAUSTED` either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShedStatus {
    /// `503 Service Unavailable` (the default): clients and proxies retry it elsewhere.
    #[default]
    ServiceUnavailable,
    /// `429 Too Many Requests`, as kube-apiserver's API Priority and Fairness answers.
    TooManyRequests,
}

impl FromStr for ShedStatus {
    type Err = &'static str;

    /// `503` or `429`, as `PODCYCLE_SHED_STATUS` takes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "503" => Ok(ShedStatus::ServiceUnavailable),
            "429" => Ok(ShedStatus::TooManyRequests),
            _ => Err("`503` or `429`"),
        }
    }
}

/// What happens when a warm-up fails or misses the warm-up deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnWarmupFailure {
    /// Shut down and exit with code 3, [`Outcome::WarmupFailed`](crate::Outcome::WarmupFailed)
    /// (the default).
    #[default]
    Exit,
    /// Stay up and unready (the startup probe keeps failing) until a signal arrives.
    StayUnready,
}

/// Lifecycle settings. Build one in code or read it with [`Config::from_env`].
///
/// The settings are grouped by the part of the lifecycle that reads them, as axum groups
/// `ConnectionLimits`: each part is handed its bundle as it is.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) admin_addr: Option<SocketAddr>,
    /// The shutdown sequence's delay, drain, hooks and grace period.
    pub(crate) shutdown: ShutdownTimings,
    pub(crate) warmup_timeout: Option<Duration>,
    /// What a check takes for the settings it leaves unset.
    pub(crate) checks: CheckDefaults,
    /// What the probes decide with.
    pub(crate) health: HealthOptions,
    /// The limits and timeouts applied to each application connection.
    pub(crate) timeouts: Timeouts,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_upgraded_connections: Option<usize>,
    pub(crate) version: String,
    pub(crate) stop_accepting: StopAccepting,
    pub(crate) admission: Admission,
    /// How long a request beyond the admission limit may wait for a slot (`0`: shed at once).
    pub(crate) admission_queue: Duration,
    pub(crate) shed_status: ShedStatus,
    pub(crate) on_warmup_failure: OnWarmupFailure,
    pub(crate) handle_signals: bool,
    pub(crate) metric_labels: Vec<(String, String)>,
    pub(crate) buckets: Vec<f64>,
    /// `PODCYCLE_NATIVE_HISTOGRAMS`: native (exponential) buckets on the request durations.
    pub(crate) native_histograms: bool,
    /// `PODCYCLE_TRACE_SAMPLING`: the share of new traces sampled (parent-based).
    pub(crate) trace_sampling: f64,
}

/// The defaults a check takes for the settings it leaves unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CheckDefaults {
    /// `PODCYCLE_CHECK_INTERVAL`.
    pub(crate) interval: Duration,
    /// `PODCYCLE_CHECK_TIMEOUT`.
    pub(crate) timeout: Duration,
    /// `PODCYCLE_CHECK_FAILURE_THRESHOLD`.
    pub(crate) failure_threshold: u32,
}

/// The health settings: what the probes decide with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HealthOptions {
    /// `PODCYCLE_WATCHDOG_STALL`.
    pub(crate) watchdog_stall: Duration,
    /// `PODCYCLE_READY_DURING_DELAY`.
    pub(crate) ready_during_delay: bool,
}

/// The limits and timeouts the connection sweep applies to connections with no request in
/// flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// From the connection's first byte, or from the first byte of a request after the
    /// previous one ended, to complete request headers; also from accept to the first request
    /// (`PODCYCLE_HEADER_READ_TIMEOUT`).
    pub(crate) header_read: Duration,
    /// Between requests on a keep-alive connection (`PODCYCLE_IDLE_TIMEOUT`).
    pub(crate) idle: Duration,
    /// The maximum age of a connection, if any, spread by ±10% per connection
    /// (`PODCYCLE_MAX_CONNECTION_AGE`).
    pub(crate) max_age: Option<Duration>,
    /// The slowest a request body (HTTP/1: the connection's; HTTP/2: each stream's) may
    /// arrive while the application waits for it, in bytes per second, measured once it has
    /// waited [`BODY_RATE_GRACE`](crate::connections::BODY_RATE_GRACE); `None`: no limit
    /// (`PODCYCLE_MIN_BODY_RATE`, `0`).
    pub(crate) min_body_rate: Option<u64>,
}

impl FromStr for StopAccepting {
    type Err = &'static str;

    /// `close` or `reject`, as `PODCYCLE_STOP_ACCEPTING` takes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "close" => Ok(StopAccepting::CloseListener),
            "reject" => Ok(StopAccepting::Reject),
            _ => Err("`close` or `reject`"),
        }
    }
}

impl FromStr for OnWarmupFailure {
    type Err = &'static str;

    /// `exit` or `stay-unready`, as `PODCYCLE_ON_WARMUP_FAILURE` takes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "exit" => Ok(OnWarmupFailure::Exit),
            "stay-unready" => Ok(OnWarmupFailure::StayUnready),
            _ => Err("`exit` or `stay-unready`"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_addr: Some(SocketAddr::from(([0, 0, 0, 0], 9090))),
            shutdown: ShutdownTimings::default(),
            warmup_timeout: None,
            checks: CheckDefaults {
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                failure_threshold: 1,
            },
            health: HealthOptions {
                watchdog_stall: Duration::from_secs(10),
                ready_during_delay: false,
            },
            timeouts: Timeouts {
                header_read: Duration::from_secs(30),
                idle: Duration::from_secs(650),
                max_age: None,
                min_body_rate: Some(DEFAULT_MIN_BODY_RATE),
            },
            max_connections: None,
            max_upgraded_connections: None,
            version: String::from("unknown"),
            stop_accepting: StopAccepting::CloseListener,
            admission: Admission::Off,
            admission_queue: Duration::ZERO,
            shed_status: ShedStatus::ServiceUnavailable,
            on_warmup_failure: OnWarmupFailure::Exit,
            handle_signals: true,
            metric_labels: Vec::new(),
            buckets: DEFAULT_BUCKETS.to_vec(),
            native_histograms: false,
            trace_sampling: 0.0,
        }
    }
}

impl Config {
    /// The application listener's address (`PODCYCLE_ADDR`).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The admin listener's address (`PODCYCLE_ADMIN_ADDR`); `None` serves no admin listener.
    pub fn admin_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.admin_addr = addr;
        self
    }

    /// How long to keep serving after readiness flips (`PODCYCLE_SHUTDOWN_DELAY`, default 5 s):
    /// the least the shutdown delay lasts. While new connections keep arriving it lasts longer,
    /// up to [`Config::shutdown_delay_cap`] (see [`Config::shutdown_quiet`]).
    pub fn shutdown_delay(mut self, d: Duration) -> Self {
        self.shutdown.delay = d;
        self
    }

    /// The quiet period of the adaptive shutdown delay (`PODCYCLE_SHUTDOWN_QUIET`, default 2 s;
    /// `0s` turns adaptivity off: the delay is exactly [`Config::shutdown_delay`]).
    ///
    /// After the signal podcycle serves at least the [delay](Config::shutdown_delay); then it
    /// keeps serving while new connections still arrive (a load balancer still routes here),
    /// and ends the delay once none arrived for this long, at the latest at
    /// [`Config::shutdown_delay_cap`]. The budget stays one sum inside the grace period: a
    /// delay that runs past its floor takes its extra time from the drain, which keeps at least
    /// a quarter of `PODCYCLE_DRAIN_TIMEOUT` (the drain deadline is the drain timeout or what
    /// is left of the grace period, whichever comes first). Pick a quiet period longer than the
    /// gaps between new connections while the pod is routed to: the default suits a pod that
    /// gets at least a few connections a second once podcycle starts closing keep-alive
    /// connections (see the termination contract in docs/shutdown.md). Health checks of an external load
    /// balancer on the application port count as arrivals: point them at the admin port.
    pub fn shutdown_quiet(mut self, d: Duration) -> Self {
        self.shutdown.quiet = d;
        self
    }

    /// How long the pod's `preStop` hook may take (`PODCYCLE_PRESTOP`, default `0s`): the
    /// kubelet runs it before sending SIGTERM and it counts against the grace period, so it
    /// enters the budget check. With podcycle a `preStop` sleep is unnecessary: the process
    /// keeps serving through the shutdown delay by itself.
    pub fn prestop(mut self, d: Duration) -> Self {
        self.shutdown.prestop = d;
        self
    }

    /// How long in-flight requests may take once the listener is closed (`PODCYCLE_DRAIN_TIMEOUT`).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.shutdown.drain_timeout = d;
        self
    }

    /// How long shutdown hooks and tracked tasks may take (`PODCYCLE_HOOK_TIMEOUT`).
    pub fn hook_timeout(mut self, d: Duration) -> Self {
        self.shutdown.hook_timeout = d;
        self
    }

    /// The pod's `terminationGracePeriodSeconds` (`PODCYCLE_GRACE_PERIOD`).
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.shutdown.grace_period = Some(d);
        self
    }

    /// A deadline for all warm-ups together (`PODCYCLE_WARMUP_TIMEOUT`).
    pub fn warmup_timeout(mut self, d: Duration) -> Self {
        self.warmup_timeout = Some(d);
        self
    }

    /// How often readiness and liveness checks run (`PODCYCLE_CHECK_INTERVAL`).
    pub fn check_interval(mut self, d: Duration) -> Self {
        self.checks.interval = d.max(Duration::from_millis(1));
        self
    }

    /// How long a client may take to send complete request headers: from accepting the
    /// connection to its first request, and from the first byte of each later request
    /// (`PODCYCLE_HEADER_READ_TIMEOUT`, default 30 s, as hyper's). Slowloris clients are
    /// closed by it. Checked by a coarse sweep: a connection is closed within a quarter of
    /// the shorter timeout (at most 1 s) after it passed.
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.timeouts.header_read = d;
        self
    }

    /// How long a keep-alive connection may sit idle between requests before it is closed
    /// (`PODCYCLE_IDLE_TIMEOUT`, default 650 s). Keep it above the load balancer's own idle
    /// timeout (AWS ALB 60 s by default, Google Cloud load balancers 600 s, nginx upstream
    /// keep-alive 60 s), so the balancer, not podcycle, closes idle connections: otherwise it
    /// may send a request on a connection podcycle is closing, and the client gets a 502.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.timeouts.idle = d;
        self
    }

    /// The longest a connection may live (`PODCYCLE_MAX_CONNECTION_AGE`, default unset: no
    /// limit), spread by ±10% per connection so they do not all end at once. Past it, an
    /// HTTP/1 connection's next response carries `Connection: close` and an HTTP/2 connection
    /// gets a graceful GOAWAY: long-lived clients reconnect, and after a rollout they spread
    /// onto the new pods (kube-apiserver's `--goaway-chance` solves the same problem).
    pub fn max_connection_age(mut self, d: Duration) -> Self {
        self.timeouts.max_age = Some(d);
        self
    }

    /// The window over which [`Lifecycle::stream_drain`](crate::Lifecycle::stream_drain)
    /// signals are spread once the listener closes (`PODCYCLE_STREAM_CLOSE_SPREAD`, default
    /// half of the drain timeout; `0s`: every stream is told at once). Spread out, the clients
    /// of long-lived streams and WebSockets reconnect to the remaining replicas at a bounded
    /// rate instead of all at the same instant. Must be shorter than the drain timeout.
    pub fn stream_close_spread(mut self, d: Duration) -> Self {
        self.shutdown.stream_close_spread = Some(d);
        self
    }

    /// How long one check may take before it counts as failed (`PODCYCLE_CHECK_TIMEOUT`).
    pub fn check_timeout(mut self, d: Duration) -> Self {
        self.checks.timeout = d;
        self
    }

    /// How many failures in a row make a passing check count as failed, for checks that do not
    /// set their own (`PODCYCLE_CHECK_FAILURE_THRESHOLD`, default 1, at least 1).
    pub fn check_failure_threshold(mut self, failures: u32) -> Self {
        self.checks.failure_threshold = failures.max(1);
        self
    }

    /// Keep `/readyz` passing during the shutdown delay, failing it only when the listener
    /// closes (`PODCYCLE_READY_DURING_DELAY`, default `false`: readiness flips at the signal).
    ///
    /// For setups that rely on Kubernetes' terminating-endpoint fallback (a terminating pod
    /// that is still ready keeps receiving traffic when no other endpoint is ready): the
    /// endpoint is marked terminating by the pod's deletion, not by readiness.
    pub fn ready_during_delay(mut self, yes: bool) -> Self {
        self.health.ready_during_delay = yes;
        self
    }

    /// How long the runtime may make no progress before `/livez` fails (`PODCYCLE_WATCHDOG_STALL`).
    pub fn watchdog_stall(mut self, d: Duration) -> Self {
        self.health.watchdog_stall = d;
        self
    }

    /// The version reported in metrics, probes and logs (`APP_VERSION`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Admission control (`PODCYCLE_ADMISSION`, default `off`): see [`Admission`]. A request
    /// beyond the limit is answered `503 Service Unavailable` with `Retry-After: 1` (gRPC:
    /// `RESOURCE_EXHAUSTED`) without reaching the application, and is not in flight (the
    /// drain does not wait for it).
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// How long a request beyond the admission limit may wait for a slot before it is shed
    /// (`PODCYCLE_ADMISSION_QUEUE`, default `0`: shed at once; at most 10 s). Waiting requests
    /// are admitted first come, first served as slots free up (a request arriving while others
    /// wait queues behind them); a waiting request is not in flight (the drain does not wait
    /// for it), and the drain sheds every waiting request when it begins. Only requests beyond
    /// the limit wait: an admitted request costs what it did without a queue.
    pub fn admission_queue(mut self, bound: Duration) -> Self {
        self.admission_queue = bound;
        self
    }

    /// The status of a request shed by admission control (`PODCYCLE_SHED_STATUS`, default
    /// `503`): see [`ShedStatus`].
    pub fn shed_status(mut self, status: ShedStatus) -> Self {
        self.shed_status = status;
        self
    }

    /// What happens to new requests after the propagation delay (`PODCYCLE_STOP_ACCEPTING`).
    pub fn stop_accepting(mut self, mode: StopAccepting) -> Self {
        self.stop_accepting = mode;
        self
    }

    /// What a failed warm-up does (`PODCYCLE_ON_WARMUP_FAILURE`).
    pub fn on_warmup_failure(mut self, policy: OnWarmupFailure) -> Self {
        self.on_warmup_failure = policy;
        self
    }

    /// Adds a constant label to every metric (`PODCYCLE_METRIC_LABELS=track=canary,zone=a`).
    ///
    /// The name must be a Prometheus label name, not one podcycle sets itself (`version`,
    /// `le`, `error_type`, `phase`, `step`, `check`, `probe`, `warmup`, `listener`, `ended_by`, `connection`, `http_*`, `__*`), and
    /// used once: [`Config::validate`] (and so [`Lifecycle::new`](crate::Lifecycle::new))
    /// refuses anything else.
    pub fn metric_label(mut self, name: &str, value: &str) -> Self {
        self.metric_labels.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The share of new traces sampled, from 0 to 1 (`PODCYCLE_TRACE_SAMPLING`, default 0):
    /// a request without a valid `traceparent` starts a trace, sampled with this
    /// probability; a request with one follows its caller's `sampled` flag (see
    /// [`crate::trace`]). [`Config::validate`] refuses a ratio outside 0 to 1.
    pub fn trace_sampling(mut self, ratio: f64) -> Self {
        self.trace_sampling = ratio;
        self
    }

    /// Histogram bucket boundaries in seconds (default [`DEFAULT_BUCKETS`]).
    pub fn buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets = buckets.to_vec();
        self
    }

    /// Records native (exponential, schema 3: bounds 9% apart) histogram buckets for
    /// `http_server_request_duration_seconds` beside the classic ones
    /// (`PODCYCLE_NATIVE_HISTOGRAMS`, default off). Prometheus reads them from the protobuf
    /// exposition, which `/metrics` serves when asked for it (Prometheus'
    /// `--enable-feature=native-histograms`). Costs about 2 KB per series and thread that
    /// records it, and one more counter written per request; see `docs/metrics.md`.
    pub fn native_histograms(mut self, on: bool) -> Self {
        self.native_histograms = on;
        self
    }

    /// The slowest a request body may arrive while the application waits for it, in bytes per
    /// second (`PODCYCLE_MIN_BODY_RATE`, default 240 as Kestrel's; `0`: no minimum).
    /// Measured over the time the application's body reads are pending, once that is over a
    /// 5 s grace period: a client that trickles its body (slowloris with a body) has its HTTP/1
    /// connection closed, or its HTTP/2 stream reset (the connection's other streams go on),
    /// and the handler sees its body end with an error. Time a handler spends on anything else
    /// does not count. Checked by the same coarse sweep as the header-read timeout.
    pub fn min_body_rate(mut self, bytes_per_second: u64) -> Self {
        self.timeouts.min_body_rate = (bytes_per_second > 0).then_some(bytes_per_second);
        self
    }

    /// The most application connections open at once (`PODCYCLE_MAX_CONNECTIONS`, at least 1).
    /// At the limit the listener stops accepting until a connection closes; new connections
    /// wait in the kernel's backlog meanwhile.
    ///
    /// Default: the process's soft file-descriptor limit (`ulimit -n`, read from
    /// `/proc/self/limits`) less 64 for the admin listener's connections and max(64, limit/8)
    /// for the runtime and the application's own files, so that a connection flood cannot take
    /// the descriptors the probes need; 10,000 where that limit cannot be read or is unlimited.
    /// The value in force is logged at start; a larger explicit value is allowed, with a
    /// warning.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// The most upgraded connections (HTTP/1 `101 Switching Protocols`: WebSockets) open at
    /// once (`PODCYCLE_MAX_UPGRADED_CONNECTIONS`, at least 1). An upgrade beyond it is
    /// answered `503 Service Unavailable` with `Retry-After: 1` instead of its `101`, so that
    /// long-lived sessions can never take the last connection slots from ordinary requests.
    ///
    /// Default: half the [connection limit](Config::max_connections) in force, at least 1. A
    /// value at or above that limit is used as given (upgrades may then take every slot).
    pub fn max_upgraded_connections(mut self, n: usize) -> Self {
        self.max_upgraded_connections = Some(n);
        self
    }

    /// Whether the lifecycle installs its signal handlers (default `true`): SIGTERM, SIGINT
    /// (without the propagation delay) and SIGQUIT shut down gracefully; SIGHUP, SIGUSR1 and
    /// SIGUSR2 are logged and ignored.
    /// Without them, shutdown starts only through [`Lifecycle::shutdown`](crate::Lifecycle::shutdown).
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }
}

/// A map of variables for `Config::from_vars` in tests.
#[cfg(test)]
fn vars(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
