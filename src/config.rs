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

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

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
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) admin_addr: Option<SocketAddr>,
    pub(crate) shutdown_delay: Duration,
    pub(crate) shutdown_quiet: Duration,
    pub(crate) prestop: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) hook_timeout: Duration,
    pub(crate) grace_period: Option<Duration>,
    pub(crate) warmup_timeout: Option<Duration>,
    pub(crate) check_interval: Duration,
    pub(crate) check_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) stream_close_spread: Option<Duration>,
    pub(crate) check_failure_threshold: u32,
    pub(crate) ready_during_delay: bool,
    pub(crate) watchdog_stall: Duration,
    pub(crate) version: String,
    pub(crate) stop_accepting: StopAccepting,
    pub(crate) on_warmup_failure: OnWarmupFailure,
    pub(crate) handle_signals: bool,
    pub(crate) metric_labels: Vec<(String, String)>,
    pub(crate) buckets: Vec<f64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_upgraded_connections: Option<usize>,
    pub(crate) min_body_rate: u64,
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
            shutdown_delay: Duration::from_secs(5),
            shutdown_quiet: DEFAULT_SHUTDOWN_QUIET,
            prestop: Duration::ZERO,
            drain_timeout: Duration::from_secs(20),
            hook_timeout: Duration::from_secs(3),
            grace_period: None,
            warmup_timeout: None,
            check_interval: Duration::from_secs(5),
            check_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(650),
            max_connection_age: None,
            stream_close_spread: None,
            check_failure_threshold: 1,
            ready_during_delay: false,
            watchdog_stall: Duration::from_secs(10),
            version: String::from("unknown"),
            stop_accepting: StopAccepting::CloseListener,
            on_warmup_failure: OnWarmupFailure::Exit,
            handle_signals: true,
            metric_labels: Vec::new(),
            buckets: DEFAULT_BUCKETS.to_vec(),
            max_connections: None,
            max_upgraded_connections: None,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
        }
    }
}

/// A configuration value that cannot be used; startup must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable holds a value that does not parse.
    InvalidEnv {
        /// The variable, e.g. `PODCYCLE_DRAIN_TIMEOUT`.
        var: &'static str,
        /// The value found.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The shutdown budget does not fit inside the pod's termination grace period.
    BudgetExceedsGracePeriod {
        /// `PODCYCLE_PRESTOP`: the pod's `preStop` hook, which runs before SIGTERM.
        prestop: Duration,
        /// `PODCYCLE_SHUTDOWN_DELAY`.
        delay: Duration,
        /// `PODCYCLE_DRAIN_TIMEOUT`.
        drain: Duration,
        /// `PODCYCLE_HOOK_TIMEOUT`.
        hooks: Duration,
        /// `PODCYCLE_GRACE_PERIOD`.
        grace_period: Duration,
    },
    /// The stream close spread does not fit inside the drain timeout: streams told to end
    /// late in the spread would be cut by the drain deadline.
    SpreadExceedsDrainTimeout {
        /// `PODCYCLE_STREAM_CLOSE_SPREAD`.
        spread: Duration,
        /// `PODCYCLE_DRAIN_TIMEOUT`.
        drain: Duration,
    },
    /// The application and admin listeners are set to the same port (on the same address, or
    /// one of them on every address): the second bind would fail with "address in use".
    AddressClash {
        /// `PODCYCLE_ADDR`.
        addr: SocketAddr,
        /// `PODCYCLE_ADMIN_ADDR`.
        admin_addr: SocketAddr,
    },
    /// A setting made in code (or from the environment) holds a value that cannot be used.
    InvalidSetting {
        /// The [`Config`] method that sets it, e.g. `watchdog_stall`.
        setting: &'static str,
        /// The environment variable that sets it, e.g. `PODCYCLE_WATCHDOG_STALL`.
        var: &'static str,
        /// The value found.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidEnv {
                var,
                value,
                expected,
            } => write!(f, "invalid {var}={value:?}: expected {expected}"),
            ConfigError::BudgetExceedsGracePeriod {
                prestop,
                delay,
                drain,
                hooks,
                grace_period,
            } => {
                let need = prestop
                    .saturating_add(*delay)
                    .saturating_add(*drain)
                    .saturating_add(*hooks)
                    .saturating_add(GRACE_MARGIN);
                f.write_str("shutdown budget does not fit the grace period: ")?;
                if !prestop.is_zero() {
                    write!(f, "PODCYCLE_PRESTOP {} + ", fmt_duration(*prestop))?;
                }
                write!(
                    f,
                    "PODCYCLE_SHUTDOWN_DELAY {} + PODCYCLE_DRAIN_TIMEOUT {} + PODCYCLE_HOOK_TIMEOUT {} \
                     + margin {} = {} > PODCYCLE_GRACE_PERIOD {}; raise terminationGracePeriodSeconds \
                     (and PODCYCLE_GRACE_PERIOD) to at least {} or shorten the preStop hook, the delay, drain or hook timeout",
                    fmt_duration(*delay),
                    fmt_duration(*drain),
                    fmt_duration(*hooks),
                    fmt_duration(GRACE_MARGIN),
                    fmt_duration(need),
                    fmt_duration(*grace_period),
                    need.as_secs()
                        .saturating_add(u64::from(need.subsec_nanos() > 0)),
                )
            }
            ConfigError::SpreadExceedsDrainTimeout { spread, drain } => write!(
                f,
                "stream close spread does not fit the drain: PODCYCLE_STREAM_CLOSE_SPREAD {} >= \
                 PODCYCLE_DRAIN_TIMEOUT {}; the last streams told to end would be cut by the drain \
                 deadline. Keep the spread below the drain timeout, leaving the streams' last \
                 answer time to finish (e.g. half of it), or set it to 0s to end them all at once",
                fmt_duration(*spread),
                fmt_duration(*drain),
            ),
            ConfigError::AddressClash { addr, admin_addr } => write!(
                f,
                "PODCYCLE_ADDR={addr} and PODCYCLE_ADMIN_ADDR={admin_addr} use the same port: \
                 the application and admin listeners need a port each (the defaults are 8080 \
                 and 9090; PODCYCLE_ADMIN_ADDR=off turns the admin listener off)"
            ),
            ConfigError::InvalidSetting {
                setting,
                var,
                value,
                expected,
            } => write!(
                f,
                "invalid Config::{setting} ({var}) {value:?}: expected {expected}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Whether two listeners on `a` and `b` would take the same port: the same non-zero port on
/// the same address, or one of them on every address of its family (`0.0.0.0`, or `[::]`,
/// which on Linux also takes IPv4).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip(), b.ip());
    if x == y {
        return true;
    }
    if x.is_ipv4() == y.is_ipv4() {
        x.is_unspecified() || y.is_unspecified()
    } else {
        // Across families only a dual-stack `[::]` takes the other's port.
        (x.is_ipv6() && x.is_unspecified()) || (y.is_ipv6() && y.is_unspecified())
    }
}

fn fmt_duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

const DURATION: &str = "a duration such as 5s, 500ms or 1m30s";
const BOUNDED_DURATION: &str = "a duration of at most 365 days, such as 5s, 500ms or 1m30s";
const NON_ZERO_DURATION: &str = "a non-zero duration of at most 365 days, such as 5s or 500ms";
const WATCHDOG_STALL: &str = "a duration of at least 1s (podcycle::MIN_WATCHDOG_STALL): a shorter \
     stall reads an ordinary busy moment (a CPU quota throttle of up to 100 ms per period, a \
     short blocking call, the heartbeat's own tick) as a hung runtime, and the kubelet would \
     restart a healthy pod";

/// The shortest [`Config::watchdog_stall`] accepted: 1 s. The heartbeat ticks every quarter
/// of the stall (at least every 10 ms), and a container's CPU quota can pause every thread for
/// up to a CFS period (100 ms) at a time; a stall of a few ticks or periods would fail `/livez`
/// on an idle, healthy server (at `1ms`, 93 of 98 probes failed).
pub const MIN_WATCHDOG_STALL: Duration = Duration::from_secs(1);
const LABELS: &str = "comma-separated name=value pairs, each name once, with Prometheus label \
     names (e.g. track=canary), not version/le/error_type/phase/step/check/probe/warmup/listener/ended_by/connection/http_*/__*";
const LABEL_NAME: &str = "a Prometheus label name (letters, digits, `_`, not starting with a \
     digit), used once, not version/le/error_type/phase/step/check/probe/warmup/listener/ended_by/connection/http_*/__*";
const ADDRESS: &str = "a socket address such as 0.0.0.0:8080";
const CONNECTIONS: &str = "a positive whole number of connections, such as 1000";
const BODY_RATE: &str = "a whole number of bytes per second, such as 240 (0: no minimum)";

/// The default [minimum request body rate](Config::min_body_rate), Kestrel's.
const DEFAULT_MIN_BODY_RATE: u64 = 240;

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// | variable | default |
    /// |---|---|
    /// | `PODCYCLE_ADDR` | `0.0.0.0:8080` |
    /// | `PODCYCLE_ADMIN_ADDR` | `0.0.0.0:9090` (`off` disables the admin listener) |
    /// | `PODCYCLE_SHUTDOWN_DELAY` | `5s` (the least the delay lasts) |
    /// | `PODCYCLE_SHUTDOWN_QUIET` | `2s` (`0s`: a fixed delay; see [`Config::shutdown_quiet`]) |
    /// | `PODCYCLE_PRESTOP` | `0s` (the pod's `preStop` hook, counted in the budget) |
    /// | `PODCYCLE_DRAIN_TIMEOUT` | `20s` |
    /// | `PODCYCLE_HOOK_TIMEOUT` | `3s` |
    /// | `PODCYCLE_GRACE_PERIOD` | unset (no budget check) |
    /// | `PODCYCLE_WARMUP_TIMEOUT` | unset (no deadline) |
    /// | `PODCYCLE_CHECK_INTERVAL` / `PODCYCLE_CHECK_TIMEOUT` | `5s` / `1s` |
    /// | `PODCYCLE_HEADER_READ_TIMEOUT` / `PODCYCLE_IDLE_TIMEOUT` | `30s` / `650s` |
    /// | `PODCYCLE_MAX_CONNECTION_AGE` | unset (no limit) |
    /// | `PODCYCLE_STREAM_CLOSE_SPREAD` | half of `PODCYCLE_DRAIN_TIMEOUT`; `0s` ends every stream at once |
    /// | `PODCYCLE_CHECK_FAILURE_THRESHOLD` | `1` (failures in a row before a check counts as failed) |
    /// | `PODCYCLE_READY_DURING_DELAY` | `false` (`true` keeps `/readyz` green until the delay is over) |
    /// | `PODCYCLE_WATCHDOG_STALL` | `10s` |
    /// | `PODCYCLE_STOP_ACCEPTING` | `close` (or `reject`) |
    /// | `PODCYCLE_ON_WARMUP_FAILURE` | `exit` (or `stay-unready`) |
    /// | `PODCYCLE_METRIC_LABELS` | unset; e.g. `track=canary,zone=a` |
    /// | `PODCYCLE_MAX_CONNECTIONS` | unset: the file-descriptor limit less a reserve (see [`Config::max_connections`]) |
    /// | `PODCYCLE_MAX_UPGRADED_CONNECTIONS` | unset: half the connection limit (see [`Config::max_upgraded_connections`]) |
    /// | `PODCYCLE_MIN_BODY_RATE` | `240` bytes per second (`0`: no minimum; see [`Config::min_body_rate`]) |
    /// | `APP_VERSION` | `version`, the application's package version |
    ///
    /// Any invalid value is an error naming the variable, the value and what was expected;
    /// so is a duration over [`MAX_DURATION`], a zero check interval or watchdog stall, and a
    /// label name that is invalid, repeated or podcycle's own. The result is also
    /// [validated](Config::validate).
    pub fn from_env(version: &str) -> Result<Config, ConfigError> {
        Config::from_lookup(version, |name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], reading from a map instead of the environment.
    pub fn from_vars(version: &str, vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(version, |name| vars.get(name).cloned())
    }

    fn from_lookup(
        version: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default().version(version);
        let invalid =
            |var: &'static str, value: &str, expected: &'static str| ConfigError::InvalidEnv {
                var,
                value: value.to_owned(),
                expected,
            };
        let duration = |var: &'static str| -> Result<Option<Duration>, ConfigError> {
            match get(var) {
                None => Ok(None),
                Some(v) => match humantime::parse_duration(v.trim()) {
                    Ok(d) if d <= MAX_DURATION => Ok(Some(d)),
                    // Too many digits for humantime, or too long a duration.
                    Err(humantime::DurationError::NumberOverflow) | Ok(_) => {
                        Err(invalid(var, &v, BOUNDED_DURATION))
                    }
                    Err(_) => Err(invalid(var, &v, DURATION)),
                },
            }
        };
        let non_zero_duration = |var: &'static str| -> Result<Option<Duration>, ConfigError> {
            match duration(var)? {
                Some(d) if d.is_zero() => Err(invalid(
                    var,
                    &get(var).unwrap_or_default(),
                    NON_ZERO_DURATION,
                )),
                d => Ok(d),
            }
        };
        if let Some(v) = get("PODCYCLE_ADDR") {
            c.addr = v
                .trim()
                .parse()
                .map_err(|_| invalid("PODCYCLE_ADDR", &v, ADDRESS))?;
        }
        if let Some(v) = get("PODCYCLE_ADMIN_ADDR") {
            c.admin_addr = match v.trim() {
                "off" => None,
                t => Some(t.parse().map_err(|_| {
                    invalid("PODCYCLE_ADMIN_ADDR", &v, "a socket address or `off`")
                })?),
            };
        }
        if let Some(d) = duration("PODCYCLE_SHUTDOWN_DELAY")? {
            c.shutdown_delay = d;
        }
        if let Some(d) = duration("PODCYCLE_SHUTDOWN_QUIET")? {
            c.shutdown_quiet = d;
        }
        if let Some(d) = duration("PODCYCLE_PRESTOP")? {
            c.prestop = d;
        }
        if let Some(d) = duration("PODCYCLE_DRAIN_TIMEOUT")? {
            c.drain_timeout = d;
        }
        if let Some(d) = duration("PODCYCLE_HOOK_TIMEOUT")? {
            c.hook_timeout = d;
        }
        c.grace_period = duration("PODCYCLE_GRACE_PERIOD")?;
        c.warmup_timeout = duration("PODCYCLE_WARMUP_TIMEOUT")?;
        if let Some(d) = non_zero_duration("PODCYCLE_CHECK_INTERVAL")? {
            c.check_interval = d;
        }
        if let Some(d) = duration("PODCYCLE_CHECK_TIMEOUT")? {
            c.check_timeout = d;
        }
        if let Some(d) = non_zero_duration("PODCYCLE_HEADER_READ_TIMEOUT")? {
            c.header_read_timeout = d;
        }
        if let Some(d) = non_zero_duration("PODCYCLE_IDLE_TIMEOUT")? {
            c.idle_timeout = d;
        }
        if let Some(d) = non_zero_duration("PODCYCLE_MAX_CONNECTION_AGE")? {
            c.max_connection_age = Some(d);
        }
        if let Some(d) = duration("PODCYCLE_STREAM_CLOSE_SPREAD")? {
            c.stream_close_spread = Some(d);
        }
        if let Some(v) = get("PODCYCLE_CHECK_FAILURE_THRESHOLD") {
            c.check_failure_threshold = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    invalid(
                        "PODCYCLE_CHECK_FAILURE_THRESHOLD",
                        &v,
                        "a whole number of failures, at least 1",
                    )
                })?;
        }
        if let Some(v) = get("PODCYCLE_READY_DURING_DELAY") {
            c.ready_during_delay = match v.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(invalid(
                        "PODCYCLE_READY_DURING_DELAY",
                        &v,
                        "`true` or `false`",
                    ))
                }
            };
        }
        if let Some(d) = non_zero_duration("PODCYCLE_WATCHDOG_STALL")? {
            if d < MIN_WATCHDOG_STALL {
                let v = get("PODCYCLE_WATCHDOG_STALL").unwrap_or_default();
                return Err(invalid("PODCYCLE_WATCHDOG_STALL", &v, WATCHDOG_STALL));
            }
            c.watchdog_stall = d;
        }
        if let Some(v) = get("PODCYCLE_STOP_ACCEPTING") {
            c.stop_accepting = v
                .parse()
                .map_err(|expected| invalid("PODCYCLE_STOP_ACCEPTING", &v, expected))?;
        }
        if let Some(v) = get("PODCYCLE_ON_WARMUP_FAILURE") {
            c.on_warmup_failure = v
                .parse()
                .map_err(|expected| invalid("PODCYCLE_ON_WARMUP_FAILURE", &v, expected))?;
        }
        if let Some(v) = get("PODCYCLE_METRIC_LABELS") {
            for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, val) = pair
                    .split_once('=')
                    .map(|(k, val)| (k.trim(), val.trim()))
                    .filter(|(k, _)| {
                        valid_label_name(k) && c.metric_labels.iter().all(|(seen, _)| seen != k)
                    })
                    .ok_or_else(|| invalid("PODCYCLE_METRIC_LABELS", &v, LABELS))?;
                c.metric_labels.push((k.to_owned(), val.to_owned()));
            }
        }
        if let Some(v) = get("PODCYCLE_MAX_CONNECTIONS") {
            c.max_connections = Some(
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("PODCYCLE_MAX_CONNECTIONS", &v, CONNECTIONS))?,
            );
        }
        if let Some(v) = get("PODCYCLE_MAX_UPGRADED_CONNECTIONS") {
            c.max_upgraded_connections = Some(
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("PODCYCLE_MAX_UPGRADED_CONNECTIONS", &v, CONNECTIONS))?,
            );
        }
        if let Some(v) = get("PODCYCLE_MIN_BODY_RATE") {
            c.min_body_rate = v
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid("PODCYCLE_MIN_BODY_RATE", &v, BODY_RATE))?;
        }
        if let Some(v) = get("APP_VERSION") {
            let t = v.trim();
            if t.is_empty() {
                return Err(invalid("APP_VERSION", &v, "a non-empty version string"));
            }
            c.version = t.to_owned();
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the settings made in code as [`Config::from_env`] checks the environment:
    ///
    /// - every duration is at most [`MAX_DURATION`] (365 days);
    /// - the check interval and the watchdog stall are not zero (a zero stall would fail
    ///   `/livez` forever: a restart loop);
    /// - every [metric label](Config::metric_label) has a valid Prometheus name, not one of
    ///   podcycle's own, and no name is used twice (Prometheus would reject the whole scrape);
    /// - the [connection limit](Config::max_connections) and the
    ///   [upgraded connection limit](Config::max_upgraded_connections), when set, are at least 1;
    /// - the [stream close spread](Config::stream_close_spread) is shorter than the drain
    ///   timeout (or zero);
    /// - the shutdown budget (preStop + delay + drain + hooks + 1 s margin) fits inside the
    ///   grace period, when one is set.
    ///
    /// [`Lifecycle::new`](crate::Lifecycle::new) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            (
                "shutdown_delay",
                "PODCYCLE_SHUTDOWN_DELAY",
                Some(self.shutdown_delay),
            ),
            (
                "shutdown_quiet",
                "PODCYCLE_SHUTDOWN_QUIET",
                Some(self.shutdown_quiet),
            ),
            ("prestop", "PODCYCLE_PRESTOP", Some(self.prestop)),
            (
                "drain_timeout",
                "PODCYCLE_DRAIN_TIMEOUT",
                Some(self.drain_timeout),
            ),
            (
                "hook_timeout",
                "PODCYCLE_HOOK_TIMEOUT",
                Some(self.hook_timeout),
            ),
            ("grace_period", "PODCYCLE_GRACE_PERIOD", self.grace_period),
            (
                "warmup_timeout",
                "PODCYCLE_WARMUP_TIMEOUT",
                self.warmup_timeout,
            ),
            (
                "check_interval",
                "PODCYCLE_CHECK_INTERVAL",
                Some(self.check_interval),
            ),
            (
                "check_timeout",
                "PODCYCLE_CHECK_TIMEOUT",
                Some(self.check_timeout),
            ),
            (
                "watchdog_stall",
                "PODCYCLE_WATCHDOG_STALL",
                Some(self.watchdog_stall),
            ),
            (
                "header_read_timeout",
                "PODCYCLE_HEADER_READ_TIMEOUT",
                Some(self.header_read_timeout),
            ),
            (
                "idle_timeout",
                "PODCYCLE_IDLE_TIMEOUT",
                Some(self.idle_timeout),
            ),
            (
                "max_connection_age",
                "PODCYCLE_MAX_CONNECTION_AGE",
                self.max_connection_age,
            ),
            (
                "stream_close_spread",
                "PODCYCLE_STREAM_CLOSE_SPREAD",
                self.stream_close_spread,
            ),
        ];
        for (setting, var, d) in durations {
            let Some(d) = d else { continue };
            let must_not_be_zero = matches!(
                setting,
                "check_interval"
                    | "watchdog_stall"
                    | "header_read_timeout"
                    | "idle_timeout"
                    | "max_connection_age"
            );
            if d > MAX_DURATION || (must_not_be_zero && d.is_zero()) {
                return Err(ConfigError::InvalidSetting {
                    setting,
                    var,
                    value: fmt_duration(d).to_string(),
                    expected: if must_not_be_zero {
                        NON_ZERO_DURATION
                    } else {
                        BOUNDED_DURATION
                    },
                });
            }
        }
        if !self.watchdog_stall.is_zero() && self.watchdog_stall < MIN_WATCHDOG_STALL {
            return Err(ConfigError::InvalidSetting {
                setting: "watchdog_stall",
                var: "PODCYCLE_WATCHDOG_STALL",
                value: fmt_duration(self.watchdog_stall).to_string(),
                expected: WATCHDOG_STALL,
            });
        }
        if let Some(admin_addr) = self.admin_addr {
            if same_port(self.addr, admin_addr) {
                return Err(ConfigError::AddressClash {
                    addr: self.addr,
                    admin_addr,
                });
            }
        }
        for (i, (name, value)) in self.metric_labels.iter().enumerate() {
            let repeated = self.metric_labels[..i].iter().any(|(seen, _)| seen == name);
            if repeated || !valid_label_name(name) {
                return Err(ConfigError::InvalidSetting {
                    setting: "metric_label",
                    var: "PODCYCLE_METRIC_LABELS",
                    value: format!("{name}={value}"),
                    expected: LABEL_NAME,
                });
            }
        }
        let spread = self.spread_in_force();
        if !spread.is_zero() && spread >= self.drain_timeout {
            return Err(ConfigError::SpreadExceedsDrainTimeout {
                spread,
                drain: self.drain_timeout,
            });
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::InvalidSetting {
                setting: "max_connections",
                var: "PODCYCLE_MAX_CONNECTIONS",
                value: String::from("0"),
                expected: CONNECTIONS,
            });
        }
        if self.max_upgraded_connections == Some(0) {
            return Err(ConfigError::InvalidSetting {
                setting: "max_upgraded_connections",
                var: "PODCYCLE_MAX_UPGRADED_CONNECTIONS",
                value: String::from("0"),
                expected: CONNECTIONS,
            });
        }
        if let Some(grace_period) = self.grace_period {
            // Each part is at most a year (checked above): the sum cannot overflow, but a
            // saturated sum would still be refused, never wrap.
            let need = self.fixed_need();
            if need > grace_period {
                return Err(ConfigError::BudgetExceedsGracePeriod {
                    prestop: self.prestop,
                    delay: self.shutdown_delay,
                    drain: self.drain_timeout,
                    hooks: self.hook_timeout,
                    grace_period,
                });
            }
        }
        Ok(())
    }

    /// The stream close spread in force: the one set, or half of the drain timeout.
    pub(crate) fn spread_in_force(&self) -> Duration {
        self.stream_close_spread.unwrap_or(self.drain_timeout / 2)
    }

    /// The longest a shutdown can take: delay + drain timeout + hook timeout (saturating at
    /// `Duration::MAX` rather than overflowing, for a configuration not yet
    /// [validated](Config::validate)).
    pub fn shutdown_budget(&self) -> Duration {
        self.shutdown_delay
            .saturating_add(self.drain_timeout)
            .saturating_add(self.hook_timeout)
    }

    /// preStop + delay + drain + hooks + margin: what the grace period must hold when the delay
    /// ends at its floor and the drain takes its whole timeout (saturating).
    fn fixed_need(&self) -> Duration {
        self.prestop
            .saturating_add(self.shutdown_budget())
            .saturating_add(GRACE_MARGIN)
    }

    /// How the shutdown shares the grace period between the delay and the drain; see
    /// [`Config::shutdown_quiet`].
    pub(crate) fn shutdown_plan(&self) -> ShutdownPlan {
        let grace = self
            .grace_period
            .unwrap_or_else(|| KUBERNETES_GRACE_PERIOD.max(self.fixed_need()));
        // What the delay and the drain share: the grace period less the preStop hook, the hooks
        // and the margin.
        let shared = grace
            .saturating_sub(self.prestop)
            .saturating_sub(self.hook_timeout)
            .saturating_sub(GRACE_MARGIN);
        let drain_minimum = self.drain_timeout / 4;
        let cap = if self.shutdown_quiet.is_zero() {
            self.shutdown_delay
        } else {
            shared
                .saturating_sub(drain_minimum)
                .max(self.shutdown_delay)
        };
        ShutdownPlan {
            floor: self.shutdown_delay,
            quiet: self.shutdown_quiet,
            cap,
            drain_timeout: self.drain_timeout,
            drain_minimum,
            shared,
        }
    }

    /// The longest the adaptive shutdown delay may last: the grace period (or, unset,
    /// [`KUBERNETES_GRACE_PERIOD`] raised to the fixed budget) less the `preStop` hook, the hook
    /// timeout, the 1 s margin and the drain's guaranteed quarter of `PODCYCLE_DRAIN_TIMEOUT`;
    /// never less than the [delay](Config::shutdown_delay) itself. With a zero
    /// [quiet period](Config::shutdown_quiet) (a fixed delay), the delay.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let defaults = podcycle::Config::default();
    /// // 30 s - 3 s hooks - 1 s margin - 20 s / 4 kept for the drain.
    /// assert_eq!(defaults.shutdown_delay_cap(), Duration::from_secs(21));
    /// let long = defaults.grace_period(Duration::from_secs(90));
    /// assert_eq!(long.shutdown_delay_cap(), Duration::from_secs(81));
    /// ```
    pub fn shutdown_delay_cap(&self) -> Duration {
        self.shutdown_plan().cap
    }

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
        self.shutdown_delay = d;
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
    /// connections (see the README's termination contract). Health checks of an external load
    /// balancer on the application port count as arrivals: point them at the admin port.
    pub fn shutdown_quiet(mut self, d: Duration) -> Self {
        self.shutdown_quiet = d;
        self
    }

    /// How long the pod's `preStop` hook may take (`PODCYCLE_PRESTOP`, default `0s`): the
    /// kubelet runs it before sending SIGTERM and it counts against the grace period, so it
    /// enters the budget check. With podcycle a `preStop` sleep is unnecessary: the process
    /// keeps serving through the shutdown delay by itself.
    pub fn prestop(mut self, d: Duration) -> Self {
        self.prestop = d;
        self
    }

    /// How long in-flight requests may take once the listener is closed (`PODCYCLE_DRAIN_TIMEOUT`).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// How long shutdown hooks and tracked tasks may take (`PODCYCLE_HOOK_TIMEOUT`).
    pub fn hook_timeout(mut self, d: Duration) -> Self {
        self.hook_timeout = d;
        self
    }

    /// The pod's `terminationGracePeriodSeconds` (`PODCYCLE_GRACE_PERIOD`).
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace_period = Some(d);
        self
    }

    /// A deadline for all warm-ups together (`PODCYCLE_WARMUP_TIMEOUT`).
    pub fn warmup_timeout(mut self, d: Duration) -> Self {
        self.warmup_timeout = Some(d);
        self
    }

    /// How often readiness and liveness checks run (`PODCYCLE_CHECK_INTERVAL`).
    pub fn check_interval(mut self, d: Duration) -> Self {
        self.check_interval = d.max(Duration::from_millis(1));
        self
    }

    /// How long a client may take to send complete request headers: from accepting the
    /// connection to its first request, and from the first byte of each later request
    /// (`PODCYCLE_HEADER_READ_TIMEOUT`, default 30 s, as hyper's). Slowloris clients are
    /// closed by it. Checked by a coarse sweep: a connection is closed within a quarter of
    /// the shorter timeout (at most 1 s) after it passed.
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d;
        self
    }

    /// How long a keep-alive connection may sit idle between requests before it is closed
    /// (`PODCYCLE_IDLE_TIMEOUT`, default 650 s). Keep it above the load balancer's own idle
    /// timeout (AWS ALB 60 s by default, Google Cloud load balancers 600 s, nginx upstream
    /// keep-alive 60 s), so the balancer, not podcycle, closes idle connections: otherwise it
    /// may send a request on a connection podcycle is closing, and the client gets a 502.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// The longest a connection may live (`PODCYCLE_MAX_CONNECTION_AGE`, default unset: no
    /// limit), spread by ±10% per connection so they do not all end at once. Past it, an
    /// HTTP/1 connection's next response carries `Connection: close` and an HTTP/2 connection
    /// gets a graceful GOAWAY: long-lived clients reconnect, and after a rollout they spread
    /// onto the new pods (kube-apiserver's `--goaway-chance` solves the same problem).
    pub fn max_connection_age(mut self, d: Duration) -> Self {
        self.max_connection_age = Some(d);
        self
    }

    /// The window over which [`Lifecycle::stream_drain`](crate::Lifecycle::stream_drain)
    /// signals are spread once the listener closes (`PODCYCLE_STREAM_CLOSE_SPREAD`, default
    /// half of the drain timeout; `0s`: every stream is told at once). Spread out, the clients
    /// of long-lived streams and WebSockets reconnect to the remaining replicas at a bounded
    /// rate instead of all at the same instant. Must be shorter than the drain timeout.
    pub fn stream_close_spread(mut self, d: Duration) -> Self {
        self.stream_close_spread = Some(d);
        self
    }

    /// How long one check may take before it counts as failed (`PODCYCLE_CHECK_TIMEOUT`).
    pub fn check_timeout(mut self, d: Duration) -> Self {
        self.check_timeout = d;
        self
    }

    /// How many failures in a row make a passing check count as failed, for checks that do not
    /// set their own (`PODCYCLE_CHECK_FAILURE_THRESHOLD`, default 1, at least 1).
    pub fn check_failure_threshold(mut self, failures: u32) -> Self {
        self.check_failure_threshold = failures.max(1);
        self
    }

    /// Keep `/readyz` passing during the shutdown delay, failing it only when the listener
    /// closes (`PODCYCLE_READY_DURING_DELAY`, default `false`: readiness flips at the signal).
    ///
    /// For setups that rely on Kubernetes' terminating-endpoint fallback (a terminating pod
    /// that is still ready keeps receiving traffic when no other endpoint is ready): the
    /// endpoint is marked terminating by the pod's deletion, not by readiness.
    pub fn ready_during_delay(mut self, yes: bool) -> Self {
        self.ready_during_delay = yes;
        self
    }

    /// How long the runtime may make no progress before `/livez` fails (`PODCYCLE_WATCHDOG_STALL`).
    pub fn watchdog_stall(mut self, d: Duration) -> Self {
        self.watchdog_stall = d;
        self
    }

    /// The version reported in metrics, probes and logs (`APP_VERSION`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
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

    /// Histogram bucket boundaries in seconds (default [`DEFAULT_BUCKETS`]).
    pub fn buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets = buckets.to_vec();
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
        self.min_body_rate = bytes_per_second;
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

/// How the shutdown delay and the drain share the grace period ([`Config::shutdown_plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShutdownPlan {
    /// The least the delay lasts (`PODCYCLE_SHUTDOWN_DELAY`).
    pub(crate) floor: Duration,
    /// No new connection for this long ends the delay past its floor; zero: a fixed delay.
    pub(crate) quiet: Duration,
    /// The most the delay lasts.
    pub(crate) cap: Duration,
    drain_timeout: Duration,
    drain_minimum: Duration,
    /// The grace period less the preStop hook, the hooks and the margin.
    shared: Duration,
}

impl ShutdownPlan {
    /// The same plan with no propagation delay at all (SIGINT from a terminal: no load
    /// balancer to wait for); the drain keeps its timeout.
    pub(crate) fn without_delay(self) -> ShutdownPlan {
        ShutdownPlan {
            floor: Duration::ZERO,
            quiet: Duration::ZERO,
            cap: Duration::ZERO,
            ..self
        }
    }

    /// The drain deadline once the delay took `delay`: the drain timeout, or what the grace
    /// period has left, whichever is shorter, never under the drain's guaranteed minimum. A
    /// fixed delay leaves the drain timeout as it is.
    pub(crate) fn drain_after(&self, delay: Duration) -> Duration {
        if self.quiet.is_zero() {
            return self.drain_timeout;
        }
        self.drain_timeout
            .min(self.shared.saturating_sub(delay))
            .max(self.drain_minimum)
    }
}

/// A Prometheus label name that does not clash with podcycle's own labels.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
        && !name.starts_with("http_")
        && !matches!(
            name,
            "version"
                | "le"
                | "error_type"
                | "phase"
                | "step"
                | "check"
                | "probe"
                | "warmup"
                | "listener"
                | "ended_by"
                | "connection"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_fit_the_kubernetes_default_grace_period() {
        let c = Config::from_vars("1.0.0", &vars(&[("PODCYCLE_GRACE_PERIOD", "30s")])).unwrap();
        assert_eq!(c.shutdown_budget(), Duration::from_secs(28));
        assert_eq!(c.version, "1.0.0");
    }

    #[test]
    fn human_durations_are_parsed() {
        let c = Config::from_vars(
            "x",
            &vars(&[
                ("PODCYCLE_SHUTDOWN_DELAY", "500ms"),
                ("PODCYCLE_DRAIN_TIMEOUT", "1m 30s"),
                ("APP_VERSION", "2.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.shutdown_delay, Duration::from_millis(500));
        assert_eq!(c.drain_timeout, Duration::from_secs(90));
        assert_eq!(c.version, "2.0.1");
    }

    #[test]
    fn a_typo_names_the_variable_and_the_value() {
        let err = Config::from_vars("x", &vars(&[("PODCYCLE_DRAIN_TIMEOUT", "20z")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PODCYCLE_DRAIN_TIMEOUT"), "{msg}");
        assert!(msg.contains("\"20z\""), "{msg}");
        assert!(msg.contains("duration"), "{msg}");
    }

    #[test]
    fn bad_addresses_and_modes_are_rejected() {
        for (var, val) in [
            ("PODCYCLE_ADDR", "8080"),
            ("PODCYCLE_ADMIN_ADDR", "localhost"),
            ("PODCYCLE_STOP_ACCEPTING", "maybe"),
            ("PODCYCLE_ON_WARMUP_FAILURE", "retry"),
            ("APP_VERSION", "  "),
            ("PODCYCLE_CHECK_INTERVAL", "0s"),
            ("PODCYCLE_CHECK_FAILURE_THRESHOLD", "0"),
            ("PODCYCLE_CHECK_FAILURE_THRESHOLD", "three"),
            ("PODCYCLE_READY_DURING_DELAY", "maybe"),
            ("PODCYCLE_METRIC_LABELS", "track"),
            ("PODCYCLE_METRIC_LABELS", "version=x"),
            ("PODCYCLE_METRIC_LABELS", "9x=y"),
        ] {
            let err = Config::from_vars("x", &vars(&[(var, val)])).unwrap_err();
            assert!(err.to_string().contains(var), "{err}");
        }
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_ADMIN_ADDR", "off")])).unwrap();
        assert_eq!(c.admin_addr, None);
        let c = Config::from_vars(
            "x",
            &vars(&[("PODCYCLE_METRIC_LABELS", "track=canary, zone=eu-1")]),
        )
        .unwrap();
        assert_eq!(
            c.metric_labels,
            vec![
                ("track".into(), "canary".into()),
                ("zone".into(), "eu-1".into())
            ]
        );
    }

    #[test]
    fn an_upgraded_connection_limit_that_is_not_a_positive_number_is_refused() {
        for val in ["0", "abc", "-5", "1.5", ""] {
            let err = Config::from_vars("x", &vars(&[("PODCYCLE_MAX_UPGRADED_CONNECTIONS", val)]))
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid PODCYCLE_MAX_UPGRADED_CONNECTIONS={val:?}: expected {CONNECTIONS}"
                )
            );
        }
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_MAX_UPGRADED_CONNECTIONS", " 50 ")]))
            .unwrap();
        assert_eq!(c.max_upgraded_connections, Some(50));
        assert_eq!(Config::default().max_upgraded_connections, None);
        let err = Config::default()
            .max_upgraded_connections(0)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid Config::max_upgraded_connections (PODCYCLE_MAX_UPGRADED_CONNECTIONS) \"0\": expected {CONNECTIONS}"
            )
        );
    }

    #[test]
    fn a_connection_limit_that_is_not_a_positive_number_is_refused() {
        for val in ["0", "abc", "-5", "1.5", ""] {
            let err =
                Config::from_vars("x", &vars(&[("PODCYCLE_MAX_CONNECTIONS", val)])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid PODCYCLE_MAX_CONNECTIONS={val:?}: expected {CONNECTIONS}")
            );
        }
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_MAX_CONNECTIONS", " 500 ")])).unwrap();
        assert_eq!(c.max_connections, Some(500));
        assert_eq!(Config::default().max_connections, None);
        let err = Config::default().max_connections(0).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid Config::max_connections (PODCYCLE_MAX_CONNECTIONS) \"0\": expected {CONNECTIONS}"
            )
        );
    }

    #[test]
    fn a_minimum_body_rate_that_is_not_a_whole_number_is_refused() {
        for val in ["abc", "-5", "1.5", "", "240B/s"] {
            let err =
                Config::from_vars("x", &vars(&[("PODCYCLE_MIN_BODY_RATE", val)])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid PODCYCLE_MIN_BODY_RATE={val:?}: expected {BODY_RATE}")
            );
        }
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_MIN_BODY_RATE", " 0 ")])).unwrap();
        assert_eq!(c.min_body_rate, 0, "0 turns the minimum off");
        assert_eq!(Config::default().min_body_rate, 240);
    }

    #[test]
    fn a_budget_over_the_grace_period_shows_the_arithmetic() {
        let err = Config::from_vars(
            "x",
            &vars(&[
                ("PODCYCLE_SHUTDOWN_DELAY", "10s"),
                ("PODCYCLE_DRAIN_TIMEOUT", "20s"),
                ("PODCYCLE_GRACE_PERIOD", "30s"),
            ]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("10s + PODCYCLE_DRAIN_TIMEOUT 20s + PODCYCLE_HOOK_TIMEOUT 3s + margin 1s = 34s > PODCYCLE_GRACE_PERIOD 30s"),
            "{msg}"
        );
        assert!(msg.contains("at least 34"), "{msg}");
    }

    #[test]
    fn a_duration_over_a_year_names_the_variable() {
        for (var, val) in [
            ("PODCYCLE_WARMUP_TIMEOUT", "500000000000y"),
            ("PODCYCLE_WARMUP_TIMEOUT", "366d"),
            ("PODCYCLE_SHUTDOWN_DELAY", "99999999999999999999999s"),
            ("PODCYCLE_DRAIN_TIMEOUT", "18446744073709551615s"),
            ("PODCYCLE_HOOK_TIMEOUT", "2y"),
            ("PODCYCLE_GRACE_PERIOD", "400d"),
            ("PODCYCLE_CHECK_INTERVAL", "10000000000000h"),
            ("PODCYCLE_CHECK_TIMEOUT", "53w"),
            ("PODCYCLE_WATCHDOG_STALL", "1000y"),
        ] {
            let err = Config::from_vars("x", &vars(&[(var, val)])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid {var}={val:?}: expected {BOUNDED_DURATION}")
            );
        }
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_WARMUP_TIMEOUT", "365d")])).unwrap();
        assert_eq!(c.warmup_timeout, Some(MAX_DURATION));
    }

    #[test]
    fn the_stream_close_spread_defaults_to_half_the_drain_and_must_fit_inside_it() {
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_DRAIN_TIMEOUT", "8s")])).unwrap();
        assert_eq!(c.spread_in_force(), Duration::from_secs(4));
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_STREAM_CLOSE_SPREAD", "0s")])).unwrap();
        assert_eq!(c.spread_in_force(), Duration::ZERO);
        let err = Config::from_vars(
            "x",
            &vars(&[
                ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
                ("PODCYCLE_STREAM_CLOSE_SPREAD", "10s"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::SpreadExceedsDrainTimeout {
                spread: Duration::from_secs(10),
                drain: Duration::from_secs(10)
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("PODCYCLE_STREAM_CLOSE_SPREAD 10s >= PODCYCLE_DRAIN_TIMEOUT 10s"),
            "{msg}"
        );
        let in_code = Config::default()
            .drain_timeout(Duration::from_secs(2))
            .stream_close_spread(Duration::from_secs(3));
        assert!(in_code.validate().is_err());
        assert!(Config::default()
            .drain_timeout(Duration::ZERO)
            .validate()
            .is_ok());
    }

    #[test]
    fn the_adaptive_delay_takes_what_the_drain_will_not_need_within_the_grace_period() {
        // Nothing tuned: Kubernetes' 30 s. The delay may run to 30 - 3 - 1 - 20/4 = 21 s: a
        // removal lag of 15 s plus the 2 s quiet period fits.
        let c = Config::default();
        let plan = c.shutdown_plan();
        assert_eq!(plan.floor, Duration::from_secs(5));
        assert_eq!(plan.quiet, Duration::from_secs(2));
        assert_eq!(plan.cap, Duration::from_secs(21));
        assert!(Duration::from_secs(15) + plan.quiet <= plan.cap);
        // A delay at its floor leaves the drain its whole timeout; a longer one takes from it,
        // down to the guaranteed quarter; the sum never passes the grace period less hooks
        // and margin.
        assert_eq!(
            plan.drain_after(Duration::from_secs(5)),
            Duration::from_secs(20)
        );
        assert_eq!(
            plan.drain_after(Duration::from_secs(17)),
            Duration::from_secs(9)
        );
        assert_eq!(plan.drain_after(plan.cap), Duration::from_secs(5));
        for secs in 5..=21 {
            let delay = Duration::from_secs(secs);
            let total = delay + plan.drain_after(delay) + c.hook_timeout + GRACE_MARGIN;
            assert!(total <= Duration::from_secs(30), "{secs}s: {total:?}");
        }
        // 90 s: a 60 s lag fits with the drain's whole timeout left.
        let c = Config::default().grace_period(Duration::from_secs(90));
        let plan = c.shutdown_plan();
        assert_eq!(plan.cap, Duration::from_secs(81));
        assert_eq!(
            plan.drain_after(Duration::from_secs(62)),
            Duration::from_secs(20)
        );
        // A preStop hook's time comes out of the delay's share.
        let c = Config::default().grace_period(Duration::from_secs(40));
        assert_eq!(c.shutdown_delay_cap(), Duration::from_secs(31));
        let c = c.prestop(Duration::from_secs(5));
        assert_eq!(c.shutdown_delay_cap(), Duration::from_secs(26));
        // Unset grace period and a long explicit drain: the budget is raised, not the drain cut.
        let c = Config::default().drain_timeout(Duration::from_secs(60));
        assert_eq!(
            c.shutdown_plan().drain_after(Duration::from_secs(5)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_zero_quiet_period_is_the_fixed_delay_of_today() {
        let c = Config::from_vars(
            "x",
            &vars(&[
                ("PODCYCLE_SHUTDOWN_QUIET", "0s"),
                ("PODCYCLE_SHUTDOWN_DELAY", "7s"),
            ]),
        )
        .unwrap();
        let plan = c.shutdown_plan();
        assert_eq!(
            (plan.floor, plan.cap),
            (Duration::from_secs(7), Duration::from_secs(7))
        );
        assert_eq!(plan.drain_after(Duration::from_secs(7)), c.drain_timeout);
        assert_eq!(plan.drain_after(Duration::from_secs(70)), c.drain_timeout);
    }

    #[test]
    fn the_prestop_hook_enters_the_budget_check() {
        let err = Config::from_vars(
            "x",
            &vars(&[("PODCYCLE_PRESTOP", "5s"), ("PODCYCLE_GRACE_PERIOD", "30s")]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("PODCYCLE_PRESTOP 5s + PODCYCLE_SHUTDOWN_DELAY 5s + PODCYCLE_DRAIN_TIMEOUT 20s + PODCYCLE_HOOK_TIMEOUT 3s + margin 1s = 34s > PODCYCLE_GRACE_PERIOD 30s"),
            "{msg}"
        );
        for (var, val) in [
            ("PODCYCLE_PRESTOP", "soon"),
            ("PODCYCLE_SHUTDOWN_QUIET", "2 s-ish"),
        ] {
            let err = Config::from_vars("x", &vars(&[(var, val)])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid {var}={val:?}: expected {DURATION}")
            );
        }
        let err = Config::default()
            .shutdown_quiet(MAX_DURATION + Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidSetting {
                    setting: "shutdown_quiet",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_zero_watchdog_stall_is_refused() {
        for val in ["0s", "0ms", " 0ns "] {
            let err =
                Config::from_vars("x", &vars(&[("PODCYCLE_WATCHDOG_STALL", val)])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid PODCYCLE_WATCHDOG_STALL={val:?}: expected {NON_ZERO_DURATION}")
            );
        }
        let err = Config::default()
            .watchdog_stall(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid Config::watchdog_stall (PODCYCLE_WATCHDOG_STALL) \"0s\": expected {NON_ZERO_DURATION}"
            )
        );
    }

    /// Issue 23 row 11: `1ms` was accepted and `/livez` then failed 93 of 98 probes on an
    /// idle server.
    #[test]
    fn a_watchdog_stall_below_one_second_is_refused_naming_the_minimum_and_why() {
        for val in ["1ms", "999ms", "500ms"] {
            let err =
                Config::from_vars("x", &vars(&[("PODCYCLE_WATCHDOG_STALL", val)])).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "invalid PODCYCLE_WATCHDOG_STALL={val:?}: expected a duration of at least 1s"
                )),
                "{msg}"
            );
            assert!(msg.contains("restart a healthy pod"), "{msg}");
        }
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_WATCHDOG_STALL", "1s")])).unwrap();
        assert_eq!(c.watchdog_stall, MIN_WATCHDOG_STALL);
        let err = Config::default()
            .watchdog_stall(Duration::from_millis(1))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "invalid Config::watchdog_stall (PODCYCLE_WATCHDOG_STALL) \"1ms\": expected a duration of at least 1s"
            ),
            "{err}"
        );
    }

    /// Issue 29 item 4: the same port for both listeners is named before anything is bound.
    #[test]
    fn the_app_and_admin_listeners_on_one_port_are_a_clash_naming_both_variables() {
        for (app, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:9090", "0.0.0.0:9090"),
            ("[::]:8080", "127.0.0.1:8080"),
        ] {
            let err = Config::from_vars(
                "x",
                &vars(&[("PODCYCLE_ADDR", app), ("PODCYCLE_ADMIN_ADDR", admin)]),
            )
            .unwrap_err();
            assert!(
                matches!(err, ConfigError::AddressClash { .. }),
                "{app} {admin}: {err:?}"
            );
            let msg = err.to_string();
            let (app, admin) = (
                app.parse::<SocketAddr>().unwrap(),
                admin.parse::<SocketAddr>().unwrap(),
            );
            assert!(
                msg.starts_with(&format!(
                    "PODCYCLE_ADDR={app} and PODCYCLE_ADMIN_ADDR={admin} use the same port"
                )),
                "{msg}"
            );
        }
        // Different ports, port 0 (the OS picks), other families, or no admin listener: fine.
        for (app, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:9090"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
            ("0.0.0.0:8080", "[::1]:8080"),
            ("127.0.0.1:8080", "off"),
        ] {
            let r = Config::from_vars(
                "x",
                &vars(&[("PODCYCLE_ADDR", app), ("PODCYCLE_ADMIN_ADDR", admin)]),
            );
            assert!(r.is_ok(), "{app} {admin}: {r:?}");
        }
    }

    #[test]
    fn a_duplicated_metric_label_is_refused() {
        let err = Config::from_vars("x", &vars(&[("PODCYCLE_METRIC_LABELS", "track=a,track=b")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid PODCYCLE_METRIC_LABELS=\"track=a,track=b\": expected"),
            "{err}"
        );
        let err = Config::default()
            .metric_label("track", "a")
            .metric_label("track", "b")
            .validate()
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidSetting { setting: "metric_label", value, .. } if value == "track=b"),
            "{err:?}"
        );
    }

    #[test]
    fn a_reserved_or_invalid_metric_label_name_is_reported_not_dropped() {
        for name in [
            "version",
            "le",
            "error_type",
            "phase",
            "step",
            "check",
            "probe",
            "warmup",
            "http_route",
            "__name__",
            "",
            "9lives",
            "zone-a",
            "zoné",
        ] {
            let err = Config::default()
                .metric_label(name, "v")
                .validate()
                .unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "invalid Config::metric_label (PODCYCLE_METRIC_LABELS) \"{name}=v\": expected a Prometheus label name"
                )),
                "{msg}"
            );
            let env = format!("{name}=v");
            let err =
                Config::from_vars("x", &vars(&[("PODCYCLE_METRIC_LABELS", &env)])).unwrap_err();
            assert!(err.to_string().contains("PODCYCLE_METRIC_LABELS"), "{err}");
        }
        let ok = Config::default()
            .metric_label("track", "canary")
            .metric_label("zone", "a");
        ok.validate().unwrap();
        assert_eq!(ok.metric_labels.len(), 2);
    }

    #[test]
    fn a_code_built_duration_over_a_year_is_refused() {
        let year_and_a_day = MAX_DURATION + Duration::from_secs(86_400);
        let cases: [(&str, Config); 8] = [
            (
                "shutdown_delay",
                Config::default().shutdown_delay(year_and_a_day),
            ),
            (
                "drain_timeout",
                Config::default().drain_timeout(year_and_a_day),
            ),
            (
                "hook_timeout",
                Config::default().hook_timeout(year_and_a_day),
            ),
            (
                "grace_period",
                Config::default().grace_period(Duration::MAX),
            ),
            (
                "warmup_timeout",
                Config::default().warmup_timeout(Duration::MAX),
            ),
            (
                "check_interval",
                Config::default().check_interval(Duration::MAX),
            ),
            (
                "check_timeout",
                Config::default().check_timeout(year_and_a_day),
            ),
            (
                "watchdog_stall",
                Config::default().watchdog_stall(Duration::MAX),
            ),
        ];
        for (name, config) in cases {
            let err = config.validate().unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidSetting { setting, .. } if setting == name),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains("at most 365 days"), "{err}");
        }
    }

    #[test]
    fn an_overflowing_budget_is_an_error_not_a_panic() {
        let config = Config::default()
            .shutdown_delay(Duration::MAX)
            .drain_timeout(Duration::MAX)
            .hook_timeout(Duration::MAX)
            .grace_period(Duration::from_secs(30));
        assert_eq!(config.shutdown_budget(), Duration::MAX);
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("PODCYCLE_SHUTDOWN_DELAY"), "{err}");
        // The budget message itself saturates too.
        let msg = ConfigError::BudgetExceedsGracePeriod {
            prestop: Duration::MAX,
            delay: Duration::MAX,
            drain: Duration::MAX,
            hooks: Duration::MAX,
            grace_period: Duration::from_secs(30),
        }
        .to_string();
        assert!(msg.contains("PODCYCLE_GRACE_PERIOD 30s"), "{msg}");
        // At the bound, three years' budget against a year's grace period: refused, no overflow.
        let err = Config::default()
            .shutdown_delay(MAX_DURATION)
            .drain_timeout(MAX_DURATION)
            .hook_timeout(MAX_DURATION)
            .grace_period(MAX_DURATION)
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::BudgetExceedsGracePeriod { .. }),
            "{err:?}"
        );
    }
}

/// Random values for every variable: `Config::from_vars` never panics, and every error names the
/// variable it read.
#[cfg(test)]
mod random_values {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config as Cases, TestRunner};

    const VARS: &[&str] = &[
        "PODCYCLE_ADDR",
        "PODCYCLE_ADMIN_ADDR",
        "PODCYCLE_SHUTDOWN_DELAY",
        "PODCYCLE_SHUTDOWN_QUIET",
        "PODCYCLE_PRESTOP",
        "PODCYCLE_DRAIN_TIMEOUT",
        "PODCYCLE_HOOK_TIMEOUT",
        "PODCYCLE_GRACE_PERIOD",
        "PODCYCLE_WARMUP_TIMEOUT",
        "PODCYCLE_CHECK_INTERVAL",
        "PODCYCLE_CHECK_TIMEOUT",
        "PODCYCLE_CHECK_FAILURE_THRESHOLD",
        "PODCYCLE_READY_DURING_DELAY",
        "PODCYCLE_WATCHDOG_STALL",
        "PODCYCLE_HEADER_READ_TIMEOUT",
        "PODCYCLE_IDLE_TIMEOUT",
        "PODCYCLE_MAX_CONNECTION_AGE",
        "PODCYCLE_STREAM_CLOSE_SPREAD",
        "PODCYCLE_STOP_ACCEPTING",
        "PODCYCLE_ON_WARMUP_FAILURE",
        "PODCYCLE_METRIC_LABELS",
        "PODCYCLE_MAX_CONNECTIONS",
        "PODCYCLE_MAX_UPGRADED_CONNECTIONS",
        "PODCYCLE_MIN_BODY_RATE",
        "APP_VERSION",
    ];

    /// Durations, most of them valid ones: small, huge (up to `u64::MAX` seconds) and in
    /// between, with every unit humantime knows.
    fn duration() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..1000).prop_map(|n| format!("{n}s")),
            any::<u64>().prop_map(|n| format!("{n}s")),
            "[0-9]{1,25} ?(ns|us|ms|s|m|min|h|d|w|M|y|years)",
            "[0-9]{1,12}(d|h|y) [0-9]{1,25}(s|ms|ns|x|)",
        ]
    }

    /// Arbitrary unicode, numbers with and without units (huge ones too), label lists.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            duration(),
            any::<u128>().prop_map(|n| n.to_string()),
            "[ a-z_=,0-9.:-]{0,40}",
        ]
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn random_values_never_panic_and_errors_name_their_variable() {
        for var in VARS {
            let mut runner = TestRunner::new(Cases {
                cases: 256,
                failure_persistence: None,
                ..Cases::default()
            });
            runner
                .run(&value(), |v| {
                    if let Err(e) = Config::from_vars("x", &vars(&[(var, &v)])) {
                        let msg = e.to_string();
                        prop_assert!(msg.contains(var), "{var}={v:?}: {msg}");
                    }
                    Ok(())
                })
                .unwrap();
        }
    }

    #[test]
    fn random_budgets_never_panic() {
        let budget = (duration(), duration(), duration(), duration());
        let mut runner = TestRunner::new(Cases {
            cases: 256,
            failure_persistence: None,
            ..Cases::default()
        });
        runner
            .run(&budget, |(delay, drain, hooks, grace)| {
                let given = [
                    ("PODCYCLE_SHUTDOWN_DELAY", delay.as_str()),
                    ("PODCYCLE_DRAIN_TIMEOUT", drain.as_str()),
                    ("PODCYCLE_HOOK_TIMEOUT", hooks.as_str()),
                    ("PODCYCLE_GRACE_PERIOD", grace.as_str()),
                ];
                if let Err(e) = Config::from_vars("x", &vars(&given)) {
                    let msg = e.to_string();
                    prop_assert!(given.iter().any(|(var, _)| msg.contains(var)), "{msg}");
                }
                Ok(())
            })
            .unwrap();
    }
}
