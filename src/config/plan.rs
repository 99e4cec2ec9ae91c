//! The shutdown timings and [`ShutdownPlan`]: how the shutdown delay and the drain share the
//! pod's grace period.

use std::time::Duration;

use super::{Config, DEFAULT_SHUTDOWN_QUIET, GRACE_MARGIN, KUBERNETES_GRACE_PERIOD};

/// The shutdown sequence's settings, as [`Config`] holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShutdownTimings {
    /// The least the propagation delay lasts (`PODCYCLE_SHUTDOWN_DELAY`).
    pub(crate) delay: Duration,
    /// The adaptive delay's quiet period (`PODCYCLE_SHUTDOWN_QUIET`); zero: a fixed delay.
    pub(crate) quiet: Duration,
    /// The pod's `preStop` hook time (`PODCYCLE_PRESTOP`).
    pub(crate) prestop: Duration,
    /// `PODCYCLE_DRAIN_TIMEOUT`.
    pub(crate) drain_timeout: Duration,
    /// `PODCYCLE_HOOK_TIMEOUT`.
    pub(crate) hook_timeout: Duration,
    /// `PODCYCLE_GRACE_PERIOD`; unset: no budget check, and the plan assumes
    /// [`KUBERNETES_GRACE_PERIOD`].
    pub(crate) grace_period: Option<Duration>,
    /// `PODCYCLE_STREAM_CLOSE_SPREAD`; unset: half of the drain timeout.
    pub(crate) stream_close_spread: Option<Duration>,
}

impl Default for ShutdownTimings {
    fn default() -> Self {
        ShutdownTimings {
            delay: Duration::from_secs(5),
            quiet: DEFAULT_SHUTDOWN_QUIET,
            prestop: Duration::ZERO,
            drain_timeout: Duration::from_secs(20),
            hook_timeout: Duration::from_secs(3),
            grace_period: None,
            stream_close_spread: None,
        }
    }
}

impl Config {
    /// The stream close spread in force: the one set, or half of the drain timeout.
    pub(crate) fn spread_in_force(&self) -> Duration {
        let s = &self.shutdown;
        s.stream_close_spread.unwrap_or(s.drain_timeout / 2)
    }

    /// The longest a shutdown can take: delay + drain timeout + hook timeout (saturating at
    /// `Duration::MAX` rather than overflowing, for a configuration not yet
    /// [validated](Config::validate)).
    pub fn shutdown_budget(&self) -> Duration {
        let s = &self.shutdown;
        s.delay
            .saturating_add(s.drain_timeout)
            .saturating_add(s.hook_timeout)
    }

    /// preStop + delay + drain + hooks + margin: what the grace period must hold when the delay
    /// ends at its floor and the drain takes its whole timeout (saturating).
    pub(super) fn fixed_need(&self) -> Duration {
        self.shutdown
            .prestop
            .saturating_add(self.shutdown_budget())
            .saturating_add(GRACE_MARGIN)
    }

    /// How the shutdown shares the grace period between the delay and the drain; see
    /// [`Config::shutdown_quiet`].
    pub(crate) fn shutdown_plan(&self) -> ShutdownPlan {
        let s = &self.shutdown;
        let grace = s
            .grace_period
            .unwrap_or_else(|| KUBERNETES_GRACE_PERIOD.max(self.fixed_need()));
        // What the delay and the drain share: the grace period less the preStop hook, the hooks
        // and the margin.
        let shared = grace
            .saturating_sub(s.prestop)
            .saturating_sub(s.hook_timeout)
            .saturating_sub(GRACE_MARGIN);
        let drain_minimum = s.drain_timeout / 4;
        let cap = if s.quiet.is_zero() {
            s.delay
        } else {
            shared.saturating_sub(drain_minimum).max(s.delay)
        };
        ShutdownPlan {
            floor: s.delay,
            quiet: s.quiet,
            cap,
            drain_timeout: s.drain_timeout,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars;

    #[test]
    fn defaults_fit_the_kubernetes_default_grace_period() {
        let c = Config::from_vars("1.0.0", &vars(&[("PODCYCLE_GRACE_PERIOD", "30s")])).unwrap();
        assert_eq!(c.shutdown_budget(), Duration::from_secs(28));
        assert_eq!(c.version, "1.0.0");
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
            let total = delay + plan.drain_after(delay) + c.shutdown.hook_timeout + GRACE_MARGIN;
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
        assert_eq!(
            plan.drain_after(Duration::from_secs(7)),
            c.shutdown.drain_timeout
        );
        assert_eq!(
            plan.drain_after(Duration::from_secs(70)),
            c.shutdown.drain_timeout
        );
    }
}
