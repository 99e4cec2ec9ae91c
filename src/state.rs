//! The lifecycle's state: its phase, why shutdown started, how long each shutdown step took,
//! its named signals and its counters. Nothing here is global: each lifecycle has its own.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::counters::Counters;
use crate::phase::Phase;

/// Why shutdown started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// A signal (its number, e.g. 15 for SIGTERM).
    Signal(i32),
    /// [`Lifecycle::shutdown`](crate::Lifecycle::shutdown) was called.
    Requested,
    /// A warm-up failed or missed its deadline.
    WarmupFailed,
}

impl std::fmt::Display for ShutdownReason {
    /// `SIGTERM`, `SIGINT`, `SIGQUIT` (`signal N` for another), `requested` or `warm-up failed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShutdownReason::Signal(15) => f.write_str("SIGTERM"),
            ShutdownReason::Signal(2) => f.write_str("SIGINT"),
            ShutdownReason::Signal(3) => f.write_str("SIGQUIT"),
            ShutdownReason::Signal(n) => write!(f, "signal {n}"),
            ShutdownReason::Requested => f.write_str("requested"),
            ShutdownReason::WarmupFailed => f.write_str("warm-up failed"),
        }
    }
}

/// The shutdown steps whose durations are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Delay = 0,
    Drain = 1,
    Hooks = 2,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))] // read by the step gauge
impl Step {
    pub(crate) const ALL: [Step; 3] = [Step::Delay, Step::Drain, Step::Hooks];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Step::Delay => "delay",
            Step::Drain => "drain",
            Step::Hooks => "hooks",
        }
    }
}

/// The named moments of a lifecycle, each a token cancelled once when it happens (as
/// kube-apiserver's `lifecycleSignals`). Code that must act at a moment waits on its token.
#[derive(Debug, Default)]
pub(crate) struct LifecycleSignals {
    /// Shutdown was requested: readiness is off (or turns off when the delay is over, with
    /// `ready_during_delay`).
    pub(crate) shutdown_requested: CancellationToken,
    /// The propagation delay is over: stop accepting, close connections politely.
    pub(crate) delay_over: CancellationToken,
    /// The application listener is closed (or, in reject mode, the reject window ended).
    pub(crate) listener_closed: CancellationToken,
    /// The drain deadline passed: drop every remaining connection.
    pub(crate) drain_deadline: CancellationToken,
    /// Every connection is gone (drained, or closed by the deadline).
    pub(crate) drained: CancellationToken,
    /// The application's background work must stop (hooks start).
    pub(crate) background_cancelled: CancellationToken,
    /// The last `Lifecycle` handle is gone: stops the admin thread, checks and the watchdog.
    pub(crate) halt: CancellationToken,
}

/// Phase, shutdown reason, step durations, signals and counters of one lifecycle.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) started: Instant,
    phase: AtomicU8,
    phase_tx: watch::Sender<Phase>,
    reason: Mutex<Option<ShutdownReason>>,
    step_nanos: [AtomicU64; 3],
    pub(crate) signals: LifecycleSignals,
    /// When the propagation delay ended (set just before `delay_over` fires): the start of
    /// the stream close spread.
    pub(crate) draining_since: OnceLock<tokio::time::Instant>,
    /// When shutdown was requested: the start of the delay's keep-alive close schedule.
    pub(crate) shutdown_since: OnceLock<tokio::time::Instant>,
    /// What the lifecycle counted (requests after readiness turned off, connections the drain
    /// closed, streams, failed accepts).
    pub(crate) counters: Counters,
}

impl Default for State {
    fn default() -> Self {
        State {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            phase_tx: watch::channel(Phase::Starting).0,
            reason: Mutex::new(None),
            step_nanos: Default::default(),
            signals: LifecycleSignals::default(),
            draining_since: OnceLock::new(),
            shutdown_since: OnceLock::new(),
            counters: Counters::default(),
        }
    }
}

impl State {
    /// The current phase, from one atomic load with `Acquire` ordering (it is on the request
    /// path; `Acquire` pairs with the `AcqRel` of [`State::set_phase`]).
    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase_tx.subscribe()
    }

    /// Moves forward to `to` (never backwards). Returns the phase it moved from, or `None`
    /// when it was already there or later. The caller logs.
    pub(crate) fn set_phase(&self, to: Phase) -> Option<Phase> {
        let from = Phase::from_u8(self.phase.fetch_max(to as u8, Ordering::AcqRel));
        if from >= to {
            return None;
        }
        self.phase_tx.send_replace(to);
        Some(from)
    }

    /// Records why shutdown started, moves to [`Phase::Deregistering`] and fires
    /// `shutdown_requested`. Returns the phase it left (`None` if it was already past
    /// `Serving`), or `Err(())` if shutdown had already been requested.
    pub(crate) fn request_shutdown(&self, reason: ShutdownReason) -> Result<Option<Phase>, ()> {
        {
            let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_some() {
                return Err(());
            }
            *r = Some(reason);
        }
        let _ = self.shutdown_since.set(tokio::time::Instant::now());
        // The phase store flips /readyz before anything else happens.
        let from = self.set_phase(Phase::Deregistering);
        self.signals.shutdown_requested.cancel();
        Ok(from)
    }

    pub(crate) fn shutdown_reason(&self) -> Option<ShutdownReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record_step(&self, step: Step, took: Duration) {
        self.step_nanos[step as usize].store(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // read by the step gauge
    pub(crate) fn step_duration(&self, step: Step) -> Duration {
        Duration::from_nanos(self.step_nanos[step as usize].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward_and_shutdown_is_requested_once() {
        let state = State::default();
        assert_eq!(state.set_phase(Phase::Serving), Some(Phase::Starting));
        assert_eq!(state.set_phase(Phase::Serving), None);
        assert_eq!(
            state.request_shutdown(ShutdownReason::Signal(15)),
            Ok(Some(Phase::Serving))
        );
        assert_eq!(state.request_shutdown(ShutdownReason::Requested), Err(()));
        assert_eq!(state.shutdown_reason(), Some(ShutdownReason::Signal(15)));
        assert_eq!(state.phase(), Phase::Deregistering);
        assert!(state.signals.shutdown_requested.is_cancelled());
        assert_eq!(state.set_phase(Phase::Serving), None, "never backwards");
    }
}
