//! The environment variables: one [`VARS`] table, each row a variable's name, the default the
//! docs show, the [`Config`] method that sets the same in code, and how its value is read.
//!
//! Everything that lists the variables reads this table: [`Config::from_env`] and its docs
//! table, the unknown-variable warning (`env_check`), [`Config::validate`]'s duration bounds,
//! the check of the README's Configuration table and the proptest over every variable. A new
//! variable is one row here, a field with its default and a setter in `mod.rs`, and its README
//! row (which the table check requires).

use std::collections::HashMap;
use std::time::Duration;

use super::error::{
    ADDRESS, ADMIN_ADDRESS, BODY_RATE, BOOL, BOUNDED_DURATION, CONNECTIONS, DURATION, FAILURES,
    LABELS, NON_ZERO_DURATION, SAMPLING, VERSION, WATCHDOG_STALL,
};
use super::{Config, ConfigError, MAX_DURATION, MIN_WATCHDOG_STALL};

/// One environment variable.
#[derive(Clone, Copy)]
pub(crate) struct Var {
    /// The variable, e.g. `PODCYCLE_IDLE_TIMEOUT`.
    pub(crate) name: &'static str,
    /// The default as the README's Configuration table and [`Config::from_env`] show it (read
    /// by the docs table and the tests that hold the README to it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) default: &'static str,
    /// The [`Config`] method that sets the same in code, as [`ConfigError::InvalidSetting`]
    /// names it.
    pub(crate) setting: &'static str,
    /// How a value is read.
    pub(crate) read: Read,
}

/// How a variable's value is read into a [`Config`].
#[derive(Clone, Copy)]
pub(crate) enum Read {
    /// A human duration (`5s`, `500ms`, `1m30s`) of at most [`MAX_DURATION`] and at least
    /// `floor`; [`Config::validate`] holds the value set in code to the same bounds.
    Duration {
        floor: Floor,
        get: fn(&Config) -> Option<Duration>,
        set: fn(&mut Config, Duration),
    },
    /// Any other value: stored, or what was expected instead.
    Value(fn(&mut Config, &str) -> Result<(), &'static str>),
}

/// The least a duration may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Floor {
    /// Zero is allowed.
    Zero,
    /// Zero is refused.
    NonZero,
    /// Zero is refused, and so is anything under the duration, with what was expected.
    AtLeast(Duration, &'static str),
}

impl Floor {
    /// A value from the environment: parsed, at most [`MAX_DURATION`], not under the floor.
    fn parse(self, value: &str) -> Result<Duration, &'static str> {
        let d = match humantime::parse_duration(value.trim()) {
            Ok(d) if d <= MAX_DURATION => d,
            // Too many digits for humantime, or too long a duration.
            Err(humantime::DurationError::NumberOverflow) | Ok(_) => return Err(BOUNDED_DURATION),
            Err(_) => return Err(DURATION),
        };
        self.not_under(d).map(|()| d)
    }

    /// A value set in code: at most [`MAX_DURATION`], not under the floor.
    pub(super) fn check_set(self, d: Duration) -> Result<(), &'static str> {
        if d > MAX_DURATION {
            return Err(match self {
                Floor::Zero => BOUNDED_DURATION,
                _ => NON_ZERO_DURATION,
            });
        }
        self.not_under(d)
    }

    fn not_under(self, d: Duration) -> Result<(), &'static str> {
        match self {
            Floor::Zero => Ok(()),
            _ if d.is_zero() => Err(NON_ZERO_DURATION),
            Floor::AtLeast(min, expected) if d < min => Err(expected),
            _ => Ok(()),
        }
    }
}

/// A duration row: its floor, and where in [`Config`] it lives.
const fn duration(
    floor: Floor,
    get: fn(&Config) -> Option<Duration>,
    set: fn(&mut Config, Duration),
) -> Read {
    Read::Duration { floor, get, set }
}

/// Builds [`VARS`] and, from the same rows, `var_table!()`: the Markdown table of
/// [`Config::from_env`]'s docs.
macro_rules! vars {
    ($($name:literal, $default:literal, $setting:ident => $read:expr;)*) => {
        /// Every variable [`Config::from_env`] reads, in the order it reads them.
        pub(crate) const VARS: &[Var] = &[$(Var {
            name: $name,
            default: $default,
            setting: stringify!($setting),
            read: $read,
        },)*];

        macro_rules! var_table {
            () => {
                concat!(
                    "| variable | default | in code |\n|---|---|---|\n",
                    $("| `", $name, "` | ", $default, " | [`Config::", stringify!($setting), "`] |\n",)*
                )
            };
        }
    };
}

// The defaults are the README's, word for word (`the_readme_table_is_the_table_of_variables`).
vars! {
    "PODCYCLE_ADDR", "`0.0.0.0:8080`", addr => Read::Value(|c, v| {
        c.addr = v.trim().parse().map_err(|_| ADDRESS)?;
        Ok(())
    });
    "PODCYCLE_ADMIN_ADDR", "`0.0.0.0:9090`", admin_addr => Read::Value(|c, v| {
        c.admin_addr = match v.trim() {
            "off" => None,
            t => Some(t.parse().map_err(|_| ADMIN_ADDRESS)?),
        };
        Ok(())
    });
    "PODCYCLE_SHUTDOWN_DELAY", "`5s`", shutdown_delay =>
        duration(Floor::Zero, |c| Some(c.shutdown.delay), |c, d| c.shutdown.delay = d);
    "PODCYCLE_SHUTDOWN_QUIET", "`2s`", shutdown_quiet =>
        duration(Floor::Zero, |c| Some(c.shutdown.quiet), |c, d| c.shutdown.quiet = d);
    "PODCYCLE_PRESTOP", "`0s`", prestop =>
        duration(Floor::Zero, |c| Some(c.shutdown.prestop), |c, d| c.shutdown.prestop = d);
    "PODCYCLE_DRAIN_TIMEOUT", "`20s`", drain_timeout => duration(
        Floor::Zero, |c| Some(c.shutdown.drain_timeout), |c, d| c.shutdown.drain_timeout = d);
    "PODCYCLE_HOOK_TIMEOUT", "`3s`", hook_timeout => duration(
        Floor::Zero, |c| Some(c.shutdown.hook_timeout), |c, d| c.shutdown.hook_timeout = d);
    "PODCYCLE_GRACE_PERIOD", "unset (30 s assumed)", grace_period => duration(
        Floor::Zero, |c| c.shutdown.grace_period, |c, d| c.shutdown.grace_period = Some(d));
    "PODCYCLE_WARMUP_TIMEOUT", "unset", warmup_timeout =>
        duration(Floor::Zero, |c| c.warmup_timeout, |c, d| c.warmup_timeout = Some(d));
    "PODCYCLE_CHECK_INTERVAL", "`5s`", check_interval =>
        duration(Floor::NonZero, |c| Some(c.checks.interval), |c, d| c.checks.interval = d);
    "PODCYCLE_CHECK_TIMEOUT", "`1s`", check_timeout =>
        duration(Floor::Zero, |c| Some(c.checks.timeout), |c, d| c.checks.timeout = d);
    "PODCYCLE_HEADER_READ_TIMEOUT", "`30s`", header_read_timeout => duration(
        Floor::NonZero, |c| Some(c.timeouts.header_read), |c, d| c.timeouts.header_read = d);
    "PODCYCLE_IDLE_TIMEOUT", "`650s`", idle_timeout =>
        duration(Floor::NonZero, |c| Some(c.timeouts.idle), |c, d| c.timeouts.idle = d);
    "PODCYCLE_MAX_CONNECTION_AGE", "unset", max_connection_age =>
        duration(Floor::NonZero, |c| c.timeouts.max_age, |c, d| c.timeouts.max_age = Some(d));
    "PODCYCLE_STREAM_CLOSE_SPREAD", "half of `PODCYCLE_DRAIN_TIMEOUT`", stream_close_spread =>
        duration(
            Floor::Zero,
            |c| c.shutdown.stream_close_spread,
            |c, d| c.shutdown.stream_close_spread = Some(d),
        );
    "PODCYCLE_CHECK_FAILURE_THRESHOLD", "`1`", check_failure_threshold => Read::Value(|c, v| {
        c.checks.failure_threshold = v.trim().parse().ok().filter(|n| *n >= 1).ok_or(FAILURES)?;
        Ok(())
    });
    "PODCYCLE_READY_DURING_DELAY", "`false`", ready_during_delay => Read::Value(|c, v| {
        c.health.ready_during_delay = match v.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(BOOL),
        };
        Ok(())
    });
    "PODCYCLE_WATCHDOG_STALL", "`10s`", watchdog_stall => duration(
        Floor::AtLeast(MIN_WATCHDOG_STALL, WATCHDOG_STALL),
        |c| Some(c.health.watchdog_stall),
        |c, d| c.health.watchdog_stall = d,
    );
    "PODCYCLE_STOP_ACCEPTING", "`close`", stop_accepting => Read::Value(|c, v| {
        c.stop_accepting = v.parse()?;
        Ok(())
    });
    "PODCYCLE_ADMISSION", "`off`", admission => Read::Value(|c, v| {
        c.admission = v.parse()?;
        Ok(())
    });
    "PODCYCLE_ADMISSION_QUEUE", "`0s`", admission_queue =>
        duration(Floor::Zero, |c| Some(c.admission_queue), |c, d| c.admission_queue = d);
    "PODCYCLE_SHED_STATUS", "`503`", shed_status => Read::Value(|c, v| {
        c.shed_status = v.parse()?;
        Ok(())
    });
    "PODCYCLE_ON_WARMUP_FAILURE", "`exit`", on_warmup_failure => Read::Value(|c, v| {
        c.on_warmup_failure = v.parse()?;
        Ok(())
    });
    "PODCYCLE_METRIC_LABELS", "unset", metric_label => Read::Value(read_labels);
    "PODCYCLE_NATIVE_HISTOGRAMS", "`false`", native_histograms => Read::Value(|c, v| {
        c.native_histograms = match v.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(BOOL),
        };
        Ok(())
    });
    "PODCYCLE_MAX_CONNECTIONS", "from `ulimit -n`", max_connections => Read::Value(|c, v| {
        c.max_connections = Some(v.trim().parse().ok().filter(|n| *n >= 1).ok_or(CONNECTIONS)?);
        Ok(())
    });
    "PODCYCLE_MAX_UPGRADED_CONNECTIONS", "half the connection limit", max_upgraded_connections =>
        Read::Value(|c, v| {
            c.max_upgraded_connections =
                Some(v.trim().parse().ok().filter(|n| *n >= 1).ok_or(CONNECTIONS)?);
            Ok(())
        });
    "PODCYCLE_MIN_BODY_RATE", "`240`", min_body_rate => Read::Value(|c, v| {
        let rate: u64 = v.trim().parse().map_err(|_| BODY_RATE)?;
        c.timeouts.min_body_rate = (rate > 0).then_some(rate);
        Ok(())
    });
    "PODCYCLE_TRACE_SAMPLING", "`0`", trace_sampling => Read::Value(|c, v| {
        c.trace_sampling = v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or(SAMPLING)?;
        Ok(())
    });
    "APP_VERSION", "the package version", version => Read::Value(|c, v| {
        let t = v.trim();
        if t.is_empty() {
            return Err(VERSION);
        }
        c.version = t.to_owned();
        Ok(())
    });
}

/// `PODCYCLE_METRIC_LABELS`: `name=value` pairs, each name a valid label name, used once.
fn read_labels(c: &mut Config, v: &str) -> Result<(), &'static str> {
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = pair
            .split_once('=')
            .map(|(k, val)| (k.trim(), val.trim()))
            .filter(|(k, _)| {
                valid_label_name(k) && c.metric_labels.iter().all(|(seen, _)| seen != k)
            })
            .ok_or(LABELS)?;
        c.metric_labels.push((k.to_owned(), val.to_owned()));
    }
    Ok(())
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    #[doc = var_table!()]
    ///
    /// `APP_VERSION`'s default is `version`, the application's package version.
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
        for var in VARS {
            let Some(value) = get(var.name) else { continue };
            let read = match var.read {
                Read::Duration { floor, set, .. } => floor.parse(&value).map(|d| set(&mut c, d)),
                Read::Value(read) => read(&mut c, &value),
            };
            read.map_err(|expected| ConfigError::InvalidEnv {
                var: var.name,
                value,
                expected,
            })?;
        }
        c.validate()?;
        Ok(c)
    }
}

/// A Prometheus label name that does not clash with podcycle's own labels.
pub(super) fn valid_label_name(name: &str) -> bool {
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
    use crate::config::error::CONNECTIONS;
    use crate::config::vars;

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
        assert_eq!(c.shutdown.delay, Duration::from_millis(500));
        assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(90));
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
    fn admission_is_off_adaptive_or_a_positive_limit() {
        use crate::config::{error::ADMISSION, Admission};
        for val in [
            "0",
            "on",
            "-5",
            "1.5",
            "",
            "adaptive:",
            "adaptive:3",
            "adaptive:1001",
            "adaptive:x",
            "fixed:4",
        ] {
            let err = Config::from_vars("x", &vars(&[("PODCYCLE_ADMISSION", val)])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid PODCYCLE_ADMISSION={val:?}: expected {ADMISSION}")
            );
        }
        for (val, want) in [
            ("off", Admission::Off),
            (" adaptive ", Admission::Adaptive),
            ("64", Admission::Fixed(64)),
            ("adaptive:200", Admission::AdaptiveUpTo(200)),
            (" adaptive: 4", Admission::AdaptiveUpTo(4)),
            ("adaptive:1000", Admission::AdaptiveUpTo(1000)),
        ] {
            let c = Config::from_vars("x", &vars(&[("PODCYCLE_ADMISSION", val)])).unwrap();
            assert_eq!(c.admission, want);
        }
        assert_eq!(Config::default().admission, Admission::Off);
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_SHED_STATUS", "429")])).unwrap();
        assert_eq!(c.shed_status, crate::config::ShedStatus::TooManyRequests);
        let err = Config::from_vars("x", &vars(&[("PODCYCLE_SHED_STATUS", "500")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid PODCYCLE_SHED_STATUS=\"500\": expected `503` or `429`"
        );
        let err = Config::default()
            .admission(Admission::Fixed(0))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid Config::admission (PODCYCLE_ADMISSION) \"0\": expected {ADMISSION}")
        );
        let err = Config::default()
            .admission(Admission::AdaptiveUpTo(2))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid Config::admission (PODCYCLE_ADMISSION) \"adaptive:2\": expected {ADMISSION}"
            )
        );
    }

    #[test]
    fn the_admission_queue_is_a_duration_of_at_most_ten_seconds() {
        use crate::config::error::ADMISSION_QUEUE;
        assert_eq!(Config::default().admission_queue, Duration::ZERO);
        let c = Config::from_vars("x", &vars(&[("PODCYCLE_ADMISSION_QUEUE", "50ms")])).unwrap();
        assert_eq!(c.admission_queue, Duration::from_millis(50));
        let err =
            Config::from_vars("x", &vars(&[("PODCYCLE_ADMISSION_QUEUE", "11s")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid Config::admission_queue (PODCYCLE_ADMISSION_QUEUE) \"11s\": expected \
                 {ADMISSION_QUEUE}"
            )
        );
        let err =
            Config::from_vars("x", &vars(&[("PODCYCLE_ADMISSION_QUEUE", "soon")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid PODCYCLE_ADMISSION_QUEUE=\"soon\""),
            "{err}"
        );
        let err = Config::default()
            .admission_queue(Duration::from_secs(60))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("PODCYCLE_ADMISSION_QUEUE"),
            "{err}"
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
        assert_eq!(c.timeouts.min_body_rate, None, "0 turns the minimum off");
        assert_eq!(Config::default().timeouts.min_body_rate, Some(240));
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
        assert_eq!(c.health.watchdog_stall, MIN_WATCHDOG_STALL);
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

    #[test]
    fn trace_sampling_is_a_ratio_from_0_to_1() {
        for (value, ratio) in [("0", 0.0), ("0.01", 0.01), (" 1 ", 1.0)] {
            let c = Config::from_vars("x", &vars(&[("PODCYCLE_TRACE_SAMPLING", value)])).unwrap();
            assert_eq!(c.trace_sampling, ratio, "{value}");
        }
        for bad in ["1.5", "-0.1", "NaN", "10%", "always_on", ""] {
            let err = Config::from_vars("x", &vars(&[("PODCYCLE_TRACE_SAMPLING", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "invalid PODCYCLE_TRACE_SAMPLING={bad:?}: expected a sampling ratio"
                )),
                "{err}"
            );
        }
        let err = Config::default()
            .trace_sampling(2.0)
            .validate()
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidSetting { setting: "trace_sampling", value, .. } if value == "2"),
            "{err:?}"
        );
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

    /// The README's Configuration table: one row per variable of the table (two variables may
    /// share a row, `A` / `B` with defaults `a` / `b`), each showing the table's default.
    fn readme_rows() -> Vec<(String, String)> {
        let readme = include_str!("../../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|l| !l.starts_with("| variable | default |"))
            .skip(2);
        let mut rows = Vec::new();
        for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            let names: Vec<&str> = cells[0].split(" / ").collect();
            let defaults: Vec<&str> = if names.len() > 1 {
                cells[1].split(" / ").collect()
            } else {
                vec![cells[1]]
            };
            assert_eq!(names.len(), defaults.len(), "README row {line}");
            for (name, default) in names.into_iter().zip(defaults) {
                rows.push((name.trim_matches('`').to_owned(), default.to_owned()));
            }
        }
        rows
    }

    #[test]
    fn the_readme_table_is_the_table_of_variables() {
        let rows = readme_rows();
        assert!(
            !rows.is_empty(),
            "no `| variable | default |` table in the README"
        );
        for var in VARS {
            let shown: Vec<&String> = rows
                .iter()
                .filter(|(name, _)| name == var.name)
                .map(|(_, default)| default)
                .collect();
            assert_eq!(
                shown,
                [var.default],
                "{}: the README's Configuration table shows {shown:?}, the table of variables \
                 (config/vars.rs) says {:?}",
                var.name,
                var.default
            );
        }
        for (name, _) in &rows {
            assert!(
                VARS.iter().any(|v| v.name == name),
                "{name} is in the README's Configuration table but not in the table of variables"
            );
        }
    }

    #[test]
    fn the_default_the_docs_show_is_the_default_in_force() {
        let in_force = format!("{:?}", Config::default());
        let mut checked = 0;
        for var in VARS {
            // A default shown as one value (`5s`, `close`), not in words (`unset`, `from ...`).
            let Some(value) = var
                .default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .filter(|d| !d.contains('`'))
            else {
                continue;
            };
            let read = Config::from_vars("unknown", &vars(&[(var.name, value)]))
                .unwrap_or_else(|e| panic!("{}'s default {value:?} does not read: {e}", var.name));
            assert_eq!(
                format!("{read:?}"),
                in_force,
                "{}={value} (its documented default) is not `Config::default()`",
                var.name
            );
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }

    #[test]
    fn the_docs_table_has_a_row_per_variable() {
        let table = var_table!();
        assert_eq!(table.lines().count(), 2 + VARS.len());
        for var in VARS {
            let row = format!(
                "| `{}` | {} | [`Config::{}`] |",
                var.name, var.default, var.setting
            );
            assert!(table.contains(&row), "{row}");
        }
    }
}

/// Random values for every variable of the table: `Config::from_vars` never panics, and every
/// error names the variable it read.
#[cfg(test)]
mod random_values {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config as Cases, TestRunner};

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
        for var in VARS.iter().map(|v| v.name) {
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
