//! The runtime watchdog behind the `watchdog` liveness check: a task on the application
//! runtime records a heartbeat; the admin thread, on its own runtime, reports a failure when the
//! heartbeat is older than `PODCYCLE_WATCHDOG_STALL` (every worker blocked, or the runtime
//! starved by blocking code).

use std::sync::Arc;
use std::time::Duration;

use crate::state::Shared;

/// Starts the heartbeat on the current runtime.
pub(crate) fn start(shared: Arc<Shared>) {
    let tick =
        (shared.config.watchdog_stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    shared.beat();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shared.halt.cancelled() => return,
                _ = interval.tick() => shared.beat(),
            }
        }
    });
}
