//! The shutdown sequence and how it ended.
//!
//! ```text
//! signal ─▶ readiness 503 ─▶ keep serving ─▶ stop accepting ─▶ in-flight done ─▶ hooks ─▶ exit
//!           (at once)        SHUTDOWN_DELAY   Connection:close  DRAIN_TIMEOUT     HOOK_TIMEOUT
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::process::{ExitCode, Termination};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use crate::connections::Connections;
use crate::phase::Phase;
use crate::state::{ShutdownReason, State, Step};

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
#[non_exhaustive]
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

impl From<crate::error::Error> for Outcome {
    /// [`Outcome::Failed`] with the error's message (exit code 1), for `main() -> Outcome`:
    /// `Err(e) => return e.into()`.
    fn from(e: crate::error::Error) -> Self {
        Outcome::Failed(e.to_string())
    }
}

impl Termination for Outcome {
    /// Logs how the process ends (an error for a non-zero code) and returns the exit code.
    /// Without a `tracing` subscriber, an unclean outcome is printed on stderr instead, so a
    /// startup error is never silent.
    fn report(self) -> ExitCode {
        if self.is_clean() {
            tracing::info!(outcome = %self, "podcycle: exiting");
        } else if tracing::dispatcher::has_been_set() {
            tracing::error!(outcome = %self, code = self.exit_code(), "podcycle: exiting");
        } else {
            eprintln!("podcycle: exiting with code {}: {self}", self.exit_code());
        }
        ExitCode::from(self.exit_code())
    }
}

/// Moves `state` to `to` and logs the transition with the connection counts.
/// The counts are read just before the change: code woken by the new phase (a stream ending
/// on drain) must not race the log line.
pub(crate) fn enter_phase(state: &State, connections: &Connections, to: Phase) {
    let (in_flight, open) = (connections.in_flight(), connections.len());
    if let Some(from) = state.set_phase(to) {
        crate::stderr::unless_subscribed(|| {
            phase_line(to, from, state.started.elapsed(), in_flight, open)
        });
        tracing::info!(
            phase = to.as_str(),
            from = from.as_str(),
            elapsed = ?state.started.elapsed(),
            in_flight,
            connections = open,
            "podcycle phase"
        );
    }
}

/// Starts the shutdown sequence (readiness off at once) and logs it. Returns `false` if it
/// had already started.
pub(crate) fn request(state: &State, connections: &Connections, reason: ShutdownReason) -> bool {
    let (in_flight, open) = (connections.in_flight(), connections.len());
    let Ok(from) = state.request_shutdown(reason) else {
        return false;
    };
    if let Some(from) = from {
        crate::stderr::unless_subscribed(|| {
            phase_line(
                Phase::Deregistering,
                from,
                state.started.elapsed(),
                in_flight,
                open,
            )
        });
        tracing::info!(
            phase = Phase::Deregistering.as_str(),
            from = from.as_str(),
            elapsed = ?state.started.elapsed(),
            in_flight,
            connections = open,
            "podcycle phase"
        );
    }
    crate::stderr::unless_subscribed(|| {
        format!("shutdown requested ({reason}): readiness is now failing")
    });
    tracing::info!(%reason, "shutdown requested: readiness is now failing");
    true
}

/// A phase change as one stderr line, for a service without a subscriber.
fn phase_line(to: Phase, from: Phase, elapsed: Duration, in_flight: u64, open: usize) -> String {
    format!(
        "phase {to} (from {from}) at {:.3}s: {in_flight} request(s) in flight, {open} connection(s)",
        elapsed.as_secs_f64()
    )
}

/// A named shutdown hook.
type Hook = (String, Pin<Box<dyn Future<Output = ()> + Send>>);

/// Shutdown hooks and the tracked background tasks, run and awaited after the drain.
#[derive(Default)]
pub(crate) struct Hooks {
    hooks: Mutex<Vec<Hook>>,
    pub(crate) tasks: TaskTracker,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Hooks {
    pub(crate) fn add(&self, name: &str, hook: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_owned(), hook));
    }
}

/// Steps 2-4: the propagation delay while still serving, then stop accepting and drain.
/// Returns how many connections the drain deadline closed.
pub(crate) async fn delay_and_drain(
    state: &State,
    connections: &Connections,
    connection_tasks: &TaskTracker,
    delay: Duration,
    drain_timeout: Duration,
) -> u64 {
    let signals = &state.signals;
    let delay_started = Instant::now();
    tracing::info!(
        delay = ?delay,
        "keeping serving while load balancers remove this endpoint"
    );
    tokio::time::sleep(delay).await;
    state.record_step(Step::Delay, delay_started.elapsed());
    tracing::info!(
        requests_after_unready = connections.requests_after_unready.load(Ordering::Relaxed),
        "propagation delay over"
    );

    let drain_started = Instant::now();
    enter_phase(state, connections, Phase::Draining);
    let _ = state.draining_since.set(tokio::time::Instant::now());
    signals.delay_over.cancel();
    connection_tasks.close();
    let drained = tokio::time::timeout(drain_timeout, connection_tasks.wait())
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            in_flight = connections.in_flight(),
            connections = connections.len(),
            timeout = ?drain_timeout,
            "drain deadline reached: closing remaining connections"
        );
        signals.drain_deadline.cancel();
        // Connection tasks drop their connection as soon as they see the token.
        let _ = tokio::time::timeout(Duration::from_secs(1), connection_tasks.wait()).await;
    }
    // Ends the reject window (reject mode): the accept loop stops and its 503s get a linger.
    signals.drained.cancel();
    state.record_step(Step::Drain, drain_started.elapsed());
    connections.force_closed.load(Ordering::Relaxed)
}

/// Step 5: cancel background work, run hooks and wait for tracked tasks, bounded.
pub(crate) async fn run_hooks(
    state: &State,
    connections: &Connections,
    hooks: &Hooks,
    timeout: Duration,
) -> Option<(Vec<String>, usize)> {
    let started = Instant::now();
    enter_phase(state, connections, Phase::Stopping);
    state.signals.background_cancelled.cancel();
    hooks.tasks.close();
    let list = std::mem::take(&mut *hooks.hooks.lock().unwrap_or_else(|e| e.into_inner()));
    let names: Vec<String> = list.iter().map(|(n, _)| n.clone()).collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, (name, hook)) in list.into_iter().enumerate() {
        set.spawn(async move {
            let started = Instant::now();
            hook.await;
            tracing::info!(
                hook = %name,
                elapsed = ?started.elapsed(),
                "shutdown hook done"
            );
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
        hooks.tasks.wait().await;
    };
    let finished = tokio::time::timeout(timeout, all).await.is_ok();
    state.record_step(Step::Hooks, started.elapsed());
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
    let tasks = hooks.tasks.len();
    tracing::error!(?pending, tracked_tasks = tasks, "hook timeout reached");
    set.abort_all();
    Some((pending, tasks))
}
