//! The runtime watchdog behind the `watchdog` liveness line: a task on the application
//! runtime records a heartbeat; the admin thread, on its own runtime, reports a failure when the
//! heartbeat is older than `PODCYCLE_WATCHDOG_STALL` (every worker blocked, or the runtime
//! starved by blocking code). Each tick also records how late it ran: the runtime's
//! scheduling lag (`podcycle_runtime_scheduling_lag_seconds`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::lag::SchedulingLag;

/// Starts the heartbeat on the current runtime; it stops when `halt` is cancelled.
pub(crate) fn start(
    health: Arc<Health>,
    lag: Arc<SchedulingLag>,
    stall: Duration,
    halt: CancellationToken,
) {
    let tick = (stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    health.beat();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = halt.cancelled() => return,
                scheduled = interval.tick() => {
                    lag.record(scheduled.elapsed());
                    health.beat();
                }
            }
        }
    });
}
