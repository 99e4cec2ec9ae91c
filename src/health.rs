//! The health model: the one place that decides startup, readiness and liveness, from the
//! warm-ups, the checks, the lifecycle's phase, the application's serving switch and the
//! runtime watchdog. The probes, [`Lifecycle::is_ready`](crate::Lifecycle::is_ready) and the
//! `podcycle_ready` gauge all read it.
//!
//! | probe | lines, in order | passes when |
//! |---|---|---|
//! | `/startupz` | `ping`, `warmup/<name>` | every warm-up is done |
//! | `/readyz` | `ping`, `warmup/<name>`, readiness checks, `serving`, `connections`, `shutdown` | every gating line passes |
//! | `/livez` | `ping`, `watchdog`, liveness checks | every gating line passes |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::checks::{Checks, Probe};
use crate::config::HealthOptions;
use crate::connections::AppSlots;
use crate::phase::Phase;
use crate::state::State;
use crate::warmup::{Progress, WarmupStatus, Warmups};

/// One of the three probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Livez,
    Readyz,
    Startupz,
}

impl Endpoint {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
            Endpoint::Startupz => "startupz",
        }
    }
}

/// One named line of a probe and its current result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) result: Result<(), String>,
    /// Whether a failure of this line fails the probe.
    pub(crate) gating: bool,
}

impl Line {
    fn gating(name: impl Into<String>, result: Result<(), String>) -> Line {
        Line {
            name: name.into(),
            result,
            gating: true,
        }
    }
}

/// Everything the probes decide from. Shared by the application runtime and the admin thread.
#[derive(Debug)]
pub(crate) struct Health {
    state: Arc<State>,
    pub(crate) warmups: Arc<Warmups>,
    pub(crate) checks: Checks,
    options: HealthOptions,
    /// The application's own switch ([`Lifecycle::set_serving`](crate::Lifecycle::set_serving)).
    serving: AtomicBool,
    /// Follows `serving`, for those who wait for a change ([`Health::subscribe`]).
    serving_changed: watch::Sender<bool>,
    /// Milliseconds since the lifecycle started at the runtime watchdog's last heartbeat.
    heartbeat_ms: AtomicU64,
    /// The application listener's connection slots (the `connections` line of `/readyz`).
    pub(crate) slots: Arc<AppSlots>,
}

impl Health {
    pub(crate) fn new(state: Arc<State>, options: HealthOptions) -> Health {
        Health {
            state,
            warmups: Arc::new(Warmups::default()),
            checks: Checks::default(),
            options,
            serving: AtomicBool::new(true),
            serving_changed: watch::channel(true).0,
            heartbeat_ms: AtomicU64::new(0),
            slots: Arc::new(AppSlots::default()),
        }
    }

    /// The lines of `endpoint`, in the order probes print them.
    pub(crate) fn report(&self, endpoint: Endpoint) -> Vec<Line> {
        let mut out = vec![Line::gating("ping", Ok(()))];
        if endpoint != Endpoint::Livez {
            for w in self.warmups.entries() {
                let result = match w.status() {
                    WarmupStatus::Done(_) => Ok(()),
                    WarmupStatus::Running => Err("still running".into()),
                    WarmupStatus::Failed(e) => Err(format!("failed: {e}")),
                };
                out.push(Line::gating(format!("warmup/{}", w.name), result));
            }
        }
        match endpoint {
            Endpoint::Startupz => {}
            Endpoint::Readyz => {
                out.extend(self.check_lines(Probe::Readiness));
                out.push(Line::gating("serving", self.serving_line()));
                out.push(Line::gating("connections", self.slots.line()));
                out.push(Line::gating("shutdown", self.shutdown_line()));
            }
            Endpoint::Livez => {
                out.push(Line::gating("watchdog", self.watchdog_line()));
                out.extend(self.check_lines(Probe::Liveness));
            }
        }
        out
    }

    fn check_lines(&self, probe: Probe) -> impl Iterator<Item = Line> {
        self.checks.of(probe).into_iter().map(|c| Line {
            name: c.name.clone(),
            result: c.result(),
            gating: c.gating,
        })
    }

    fn serving_line(&self) -> Result<(), String> {
        if !self.serving.load(Ordering::Acquire) {
            Err("switched off by the application".into())
        } else if self.state.phase() == Phase::Starting {
            // Expected, not a fault: say what startup is waiting for.
            Err(match self.warmups.progress() {
                Progress::Running => "starting: warm-ups pending".into(),
                Progress::Failed { .. } => "starting: a warm-up failed".into(),
                Progress::AllDone => "starting: listener not bound yet".into(),
            })
        } else {
            Ok(())
        }
    }

    fn shutdown_line(&self) -> Result<(), String> {
        let phase = self.state.phase();
        let ready_phase = if self.options.ready_during_delay {
            Phase::Deregistering
        } else {
            Phase::Serving
        };
        // During startup the `serving` line fails instead: nothing is shutting down.
        if phase > ready_phase {
            Err(format!("process is shutting down (phase {phase})"))
        } else {
            Ok(())
        }
    }

    fn watchdog_line(&self) -> Result<(), String> {
        let stall = self.stalled_for();
        if stall > self.options.watchdog_stall {
            Err(format!(
                "application runtime made no progress for {}",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(stall.as_millis()).unwrap_or(u64::MAX)
                ))
            ))
        } else {
            Ok(())
        }
    }

    /// Whether `endpoint` passes (ignoring exclusions).
    pub(crate) fn passes(&self, endpoint: Endpoint) -> bool {
        self.report(endpoint)
            .iter()
            .all(|l| !l.gating || l.result.is_ok())
    }

    /// Whether `/readyz` passes (ignoring exclusions).
    pub(crate) fn is_ready(&self) -> bool {
        self.passes(Endpoint::Readyz)
    }

    /// Sets the application's serving switch; returns the previous value.
    pub(crate) fn set_serving(&self, serving: bool) -> bool {
        let was = self.serving.swap(serving, Ordering::AcqRel);
        self.serving_changed.send_replace(serving);
        was
    }

    /// Receivers that, together, see every event that can change a probe's answer: the
    /// phase, warm-ups, checks starting or stopping to pass, and the serving switch. (The
    /// watchdog line changes with time alone: it has no event.)
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // the gRPC health service follows it
    pub(crate) fn subscribe(&self) -> HealthChanges {
        HealthChanges {
            phase: self.state.subscribe(),
            warmups: self.warmups.subscribe(),
            checks: self.checks.subscribe(),
            serving: self.serving_changed.subscribe(),
        }
    }

    /// Records that the application runtime made progress (the watchdog's heartbeat).
    pub(crate) fn beat(&self) {
        let ms = u64::try_from(self.state.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the application runtime last showed it makes progress.
    pub(crate) fn stalled_for(&self) -> Duration {
        let now = self.state.started.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.heartbeat_ms.load(Ordering::Relaxed),
        ))
    }
}

/// What [`Health::subscribe`] returns: resolves [`HealthChanges::changed`] at each event that
/// may change a probe's answer.
#[derive(Debug)]
#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
pub(crate) struct HealthChanges {
    phase: watch::Receiver<Phase>,
    warmups: watch::Receiver<u64>,
    checks: watch::Receiver<u64>,
    serving: watch::Receiver<bool>,
}

#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
impl HealthChanges {
    /// Waits for the next event (at once if one happened since the last call). Never
    /// resolves once every sender is gone (the lifecycle is over).
    pub(crate) async fn changed(&mut self) {
        tokio::select! {
            Ok(()) = self.phase.changed() => {}
            Ok(()) = self.warmups.changed() => {}
            Ok(()) = self.checks.changed() => {}
            Ok(()) = self.serving.changed() => {}
            else => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ShutdownReason;

    fn health(ready_during_delay: bool) -> (Arc<State>, Health) {
        let state = Arc::new(State::default());
        let health = Health::new(
            state.clone(),
            HealthOptions {
                watchdog_stall: Duration::from_secs(10),
                ready_during_delay,
            },
        );
        health.beat();
        (state, health)
    }

    #[test]
    fn readiness_follows_the_phase_and_the_serving_switch() {
        let (state, health) = health(false);
        assert!(!health.is_ready(), "starting");
        assert!(health.passes(Endpoint::Startupz), "no warm-ups");
        state.set_phase(Phase::Serving);
        assert!(health.is_ready());
        assert!(health.set_serving(false));
        assert!(!health.is_ready());
        let serving = health.report(Endpoint::Readyz);
        let line = serving.iter().find(|l| l.name == "serving").unwrap();
        assert_eq!(line.result, Err("switched off by the application".into()));
        health.set_serving(true);
        assert!(health.is_ready());
        state.request_shutdown(ShutdownReason::Requested).unwrap();
        assert!(!health.is_ready(), "flips at once by default");
        assert!(health.passes(Endpoint::Livez), "liveness stays green");
    }

    #[test]
    fn ready_during_delay_keeps_readyz_green_until_draining() {
        let (state, health) = health(true);
        state.set_phase(Phase::Serving);
        state.request_shutdown(ShutdownReason::Signal(15)).unwrap();
        assert!(health.is_ready(), "deregistering: still ready");
        state.set_phase(Phase::Draining);
        assert!(!health.is_ready());
    }
}
