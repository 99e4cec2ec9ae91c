//! The shutdown sequence and how it ended.
//!
//! ```text
//! signal ─▶ readiness 503 ─▶ keep serving ─▶ stop accepting ─▶ in-flight done ─▶ hooks ─▶ exit
//!           (at once)        SHUTDOWN_DELAY   Connection:close  DRAIN_TIMEOUT     HOOK_TIMEOUT
//! ```

use std::fmt;
use std::process::{ExitCode, Termination};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use crate::phase::Phase;
use crate::state::{Shared, Step};

/// How [`Lifecycle::serve`](crate::Lifecycle::serve) ended. Return it from `main` (it is a
/// [`Termination`]) or call [`Outcome::exit_code`].
///
/// | exit code | outcome |
/// |---|---|
/// | 0 | [`Outcome::Drained`], [`Outcome::StoppedDuringStartup`] |
/// | 1 | [`Outcome::Failed`] (e.g. the listener could not be bound) |
/// | 3 | [`Outcome::WarmupFailed`] |
/// | 4 | [`Outcome::DrainTimedOut`]: the drain deadline closed connections with requests in flight |
/// | 5 | [`Outcome::HooksTimedOut`] |
/// | 128 + n | a second signal n forced exit (the process exits at once, `serve` never returns) |
#[must_use = "return the outcome from main, or use its exit code"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every request finished, every hook ran.
    Drained,
    /// Shutdown was requested before warm-up finished; nothing was served.
    StoppedDuringStartup,
    /// A warm-up failed or missed the warm-up deadline.
    WarmupFailed {
        /// The warm-up's name.
        warmup: String,
        /// Its error.
        error: String,
    },
    /// The drain deadline force-closed connections that still had requests in flight.
    DrainTimedOut {
        /// How many connections were closed.
        connections: u64,
    },
    /// Shutdown hooks or tracked tasks did not finish within the hook timeout.
    HooksTimedOut {
        /// Hooks still running at the deadline.
        pending_hooks: Vec<String>,
        /// Tracked tasks still running at the deadline.
        pending_tasks: usize,
    },
    /// Serving could not start.
    Failed(String),
}

impl Outcome {
    /// Exit code for this outcome; see the table above.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Drained | Outcome::StoppedDuringStartup => 0,
            Outcome::Failed(_) => 1,
            Outcome::WarmupFailed { .. } => 3,
            Outcome::DrainTimedOut { .. } => 4,
            Outcome::HooksTimedOut { .. } => 5,
        }
    }

    /// Whether everything in flight completed.
    pub fn is_clean(&self) -> bool {
        self.exit_code() == 0
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Drained => f.write_str("drained: every request completed"),
            Outcome::StoppedDuringStartup => f.write_str("stopped during warm-up"),
            Outcome::WarmupFailed { warmup, error } => {
                write!(f, "warm-up {warmup:?} failed: {error}")
            }
            Outcome::DrainTimedOut { connections } => write!(
                f,
                "drain deadline reached: {connections} connection(s) closed with requests in flight"
            ),
            Outcome::HooksTimedOut {
                pending_hooks,
                pending_tasks,
            } => write!(
                f,
                "hook timeout reached: hooks still running {pending_hooks:?}, {pending_tasks} tracked task(s) still running"
            ),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

impl Termination for Outcome {
    fn report(self) -> ExitCode {
        if self.is_clean() {
            tracing::info!(outcome = %self, "podcycle: exiting");
        } else {
            tracing::error!(outcome = %self, code = self.exit_code(), "podcycle: exiting");
        }
        ExitCode::from(self.exit_code())
    }
}

/// Steps 2-4: the propagation delay while still serving, then stop accepting and drain.
/// Returns how many connections the drain deadline closed.
pub(crate) async fn delay_and_drain(shared: &Arc<Shared>, connections: &TaskTracker) -> u64 {
    let config = &shared.config;
    let delay_started = Instant::now();
    tracing::info!(
        delay = ?config.shutdown_delay,
        "keeping serving while load balancers remove this endpoint"
    );
    tokio::time::sleep(config.shutdown_delay).await;
    shared.record_step(Step::Delay, delay_started.elapsed());
    tracing::info!(
        requests_after_unready = shared.requests_after_unready.load(Ordering::Relaxed),
        "propagation delay over"
    );

    let drain_started = Instant::now();
    shared.set_phase(Phase::Draining);
    shared.stop_accepting.cancel();
    connections.close();
    let drained = tokio::time::timeout(config.drain_timeout, connections.wait())
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            in_flight = shared.connections.in_flight(),
            connections = shared.connections.len(),
            timeout = ?config.drain_timeout,
            "drain deadline reached: closing remaining connections"
        );
        shared.force_close.cancel();
        // Connection tasks drop their connection as soon as they see the token.
        let _ = tokio::time::timeout(Duration::from_secs(1), connections.wait()).await;
    }
    shared.force_close.cancel(); // also ends reject-mode connections
    shared.record_step(Step::Drain, drain_started.elapsed());
    shared.connections_force_closed.load(Ordering::Relaxed)
}

/// Step 5: cancel background work, run hooks and wait for tracked tasks, bounded.
pub(crate) async fn run_hooks(shared: &Arc<Shared>) -> Option<(Vec<String>, usize)> {
    let started = Instant::now();
    shared.set_phase(Phase::Stopping);
    shared.background.cancel();
    shared.tasks.close();
    let hooks = std::mem::take(&mut *shared.hooks.lock().unwrap_or_else(|e| e.into_inner()));
    let names: Vec<String> = hooks.iter().map(|(n, _)| n.clone()).collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, (name, hook)) in hooks.into_iter().enumerate() {
        set.spawn(async move {
            let started = Instant::now();
            hook.await;
            tracing::info!(hook = %name, elapsed = ?started.elapsed(), "shutdown hook done");
            i
        });
    }
    let mut done = vec![false; names.len()];
    let all = async {
        while let Some(r) = set.join_next().await {
            match r {
                Ok(i) => done[i] = true,
                Err(e) if e.is_panic() => {
                    tracing::error!(error = %e, "shutdown hook panicked")
                }
                Err(_) => {}
            }
        }
        shared.tasks.wait().await;
    };
    let finished = tokio::time::timeout(shared.config.hook_timeout, all)
        .await
        .is_ok();
    shared.record_step(Step::Hooks, started.elapsed());
    if finished {
        return None;
    }
    let pending: Vec<String> = names
        .into_iter()
        .zip(&done)
        .filter(|(_, d)| !**d)
        .map(|(n, _)| n)
        .collect();
    // A panicked hook is neither done nor pending; keep only those still running.
    let pending: Vec<String> = if set.is_empty() { Vec::new() } else { pending };
    let tasks = shared.tasks.len();
    tracing::error!(?pending, tracked_tasks = tasks, "hook timeout reached");
    set.abort_all();
    Some((pending, tasks))
}
