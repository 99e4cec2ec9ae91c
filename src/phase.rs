//! The phases a process goes through, from start to exit.

use std::fmt;

/// Where the process is in its lifecycle. Phases only move forward.
///
/// ```text
/// Starting ──▶ Serving ──▶ Deregistering ──▶ Draining ──▶ Stopping ──▶ Stopped
///  warm-ups     ready       readiness 503,    listener      hooks,
///  running                  still serving     closed,       tracked tasks
///                           (shutdown delay)  in-flight
///                                             finishing
/// ```
///
/// `Deregistering` and `Draining` are both "draining" in Kubernetes terms: the first waits for
/// load balancers to notice the readiness flip, the second finishes what is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Phase {
    /// Warm-ups are running; not ready.
    Starting = 0,
    /// Warmed up and serving; ready when every readiness check passes.
    Serving = 1,
    /// Shutdown requested: readiness is 503 but new connections and requests are still
    /// served while load balancers remove the endpoint (`PODCYCLE_SHUTDOWN_DELAY` at least,
    /// then until no new connection arrived for `PODCYCLE_SHUTDOWN_QUIET`); keep-alive
    /// connections are closed one by one meanwhile.
    Deregistering = 2,
    /// The listener is closed (or rejecting); in-flight requests and streams are finishing
    /// (`PODCYCLE_DRAIN_TIMEOUT`).
    Draining = 3,
    /// Background work is cancelled; shutdown hooks and tracked tasks run (`PODCYCLE_HOOK_TIMEOUT`).
    Stopping = 4,
    /// Everything is done; [`Lifecycle::serve`](crate::Lifecycle::serve) returns.
    Stopped = 5,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 6] = [
        Phase::Starting,
        Phase::Serving,
        Phase::Deregistering,
        Phase::Draining,
        Phase::Stopping,
        Phase::Stopped,
    ];

    /// The lower-case name used in logs, probes and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Deregistering => "deregistering",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }

    /// Whether shutdown has begun (readiness is off for good).
    pub fn is_shutting_down(self) -> bool {
        self >= Phase::Deregistering
    }

    pub(crate) fn from_u8(v: u8) -> Phase {
        Phase::ALL[usize::from(v).min(5)]
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
