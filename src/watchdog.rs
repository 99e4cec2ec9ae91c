//! The runtime watchdog behind the `watchdog` liveness line: a task on the application
//! runtime records a heartbeat; the admin thread, on its own runtime, reports a failure when the
//! heartbeat is older than `PODCYCLE_WATCHDOG_STALL` (every worker blocked, or the runtime
//! starved by blocking code).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Starts the heartbeat on the current runtime; it stops when `halt` is cancelled.
pub(crate) fn start(health: Arc<Health>, stall: Duration, halt: CancellationToken) {
    let tick = (stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    health.beat();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = halt.cancelled() => return,
                _ = interval.tick() => health.beat(),
            }
        }
    });
}
