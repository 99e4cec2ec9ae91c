//! [`ConfigError`]: what is wrong with a setting, and what was expected instead.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::GRACE_MARGIN;

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
        /// The [`Config`](crate::Config) method that sets it, e.g. `watchdog_stall`.
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

pub(super) fn fmt_duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

// What was expected instead: the end of an error message, shared by the environment reader
// and `Config::validate`.
pub(super) const DURATION: &str = "a duration such as 5s, 500ms or 1m30s";
pub(super) const BOUNDED_DURATION: &str =
    "a duration of at most 365 days, such as 5s, 500ms or 1m30s";
pub(super) const NON_ZERO_DURATION: &str =
    "a non-zero duration of at most 365 days, such as 5s or 500ms";
pub(super) const WATCHDOG_STALL: &str =
    "a duration of at least 1s (podcycle::MIN_WATCHDOG_STALL): a shorter \
     stall reads an ordinary busy moment (a CPU quota throttle of up to 100 ms per period, a \
     short blocking call, the heartbeat's own tick) as a hung runtime, and the kubelet would \
     restart a healthy pod";
pub(super) const LABELS: &str = "comma-separated name=value pairs, each name once, with Prometheus label \
     names (e.g. track=canary), not version/le/error_type/phase/step/check/probe/warmup/listener/ended_by/connection/http_*/__*";
pub(super) const LABEL_NAME: &str = "a Prometheus label name (letters, digits, `_`, not starting with a \
     digit), used once, not version/le/error_type/phase/step/check/probe/warmup/listener/ended_by/connection/http_*/__*";
pub(super) const ADDRESS: &str = "a socket address such as 0.0.0.0:8080";
pub(super) const ADMIN_ADDRESS: &str = "a socket address or `off`";
pub(super) const CONNECTIONS: &str = "a positive whole number of connections, such as 1000";
pub(super) const BODY_RATE: &str =
    "a whole number of bytes per second, such as 240 (0: no minimum)";
pub(super) const SAMPLING: &str =
    "a sampling ratio from 0 to 1, such as 0, 0.01 or 1 (0: only requests whose traceparent is sampled)";
pub(super) const FAILURES: &str = "a whole number of failures, at least 1";
pub(super) const ADMISSION: &str =
    "`off`, `adaptive`, `adaptive:N` (a cap N from 4 to 1000, such as adaptive:200) or a positive whole number of requests in flight, such as 100";
pub(super) const ADMISSION_QUEUE: &str =
    "a duration of at most 10s, such as 50ms (0: shed at once)";
pub(super) const BOOL: &str = "`true` or `false`";
pub(super) const VERSION: &str = "a non-empty version string";
