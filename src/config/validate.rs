//! [`Config::validate`]: the checks a configuration passes before anything starts, whether it
//! was built in code or read from the environment.

use std::net::SocketAddr;

use super::error::{fmt_duration, ADMISSION, ADMISSION_QUEUE, CONNECTIONS, LABEL_NAME};
use super::vars::{valid_label_name, Read, VARS};
use super::{Config, ConfigError};

/// The longest `PODCYCLE_ADMISSION_QUEUE`: a request that waits longer than this for a slot
/// is better answered so that its client can try another pod.
const MAX_ADMISSION_QUEUE: std::time::Duration = std::time::Duration::from_secs(10);

impl Config {
    /// Checks the settings made in code as [`Config::from_env`] checks the environment:
    ///
    /// - every duration is at most [`MAX_DURATION`](crate::MAX_DURATION) (365 days);
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
        // Every duration in the table of variables, with the bounds its variable has.
        for var in VARS {
            let Read::Duration { floor, get, .. } = var.read else {
                continue;
            };
            let Some(d) = get(self) else { continue };
            if let Err(expected) = floor.check_set(d) {
                return Err(ConfigError::InvalidSetting {
                    setting: var.setting,
                    var: var.name,
                    value: fmt_duration(d).to_string(),
                    expected,
                });
            }
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
        if !(0.0..=1.0).contains(&self.trace_sampling) {
            return Err(ConfigError::InvalidSetting {
                setting: "trace_sampling",
                var: "PODCYCLE_TRACE_SAMPLING",
                value: self.trace_sampling.to_string(),
                expected: super::error::SAMPLING,
            });
        }
        let s = &self.shutdown;
        let spread = self.spread_in_force();
        if !spread.is_zero() && spread >= s.drain_timeout {
            return Err(ConfigError::SpreadExceedsDrainTimeout {
                spread,
                drain: s.drain_timeout,
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
        if !self.admission.is_valid() {
            return Err(ConfigError::InvalidSetting {
                setting: "admission",
                var: "PODCYCLE_ADMISSION",
                value: self.admission.to_string(),
                expected: ADMISSION,
            });
        }
        if self.admission_queue > MAX_ADMISSION_QUEUE {
            return Err(ConfigError::InvalidSetting {
                setting: "admission_queue",
                var: "PODCYCLE_ADMISSION_QUEUE",
                value: fmt_duration(self.admission_queue).to_string(),
                expected: ADMISSION_QUEUE,
            });
        }
        if let Some(grace_period) = s.grace_period {
            // Each part is at most a year (checked above): the sum cannot overflow, but a
            // saturated sum would still be refused, never wrap.
            let need = self.fixed_need();
            if need > grace_period {
                return Err(ConfigError::BudgetExceedsGracePeriod {
                    prestop: s.prestop,
                    delay: s.delay,
                    drain: s.drain_timeout,
                    hooks: s.hook_timeout,
                    grace_period,
                });
            }
        }
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::error::DURATION;
    use crate::config::vars;
    use crate::config::MAX_DURATION;

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
