//! The shutdown sequence and how it ended: [`Shutdown::run`] takes over from serving (or from
//! a startup that served nothing) and runs every step in order, firing the lifecycle's named
//! signals ([`LifecycleSignals`](crate::state::LifecycleSignals)) as it goes, as
//! kube-apiserver's `lifecycleSignals`:
//!
//! | step | signal fired | phase |
//! |---|---|---|
//! | shutdown requested ([`request`]: a signal, `Lifecycle::shutdown`, a failed warm-up) | `shutdown_requested` | `deregistering` |
//! | propagation delay over | `delay_over` | `draining` |
//! | drain deadline (only if the drain runs out) | `drain_deadline` | |
//! | the accept loop ends (after `delay_over`; in reject mode, after `drained`) | `listener_closed` | |
//! | drained | `drained` | |
//! | hooks start | `background_cancelled` | `stopping` |
//! | hooks done or timed out | | `stopped` |
//!
//! ```text
//! signal ─▶ readiness 503 ─▶ keep serving ───────────▶ stop accepting ─▶ in-flight done ─▶ hooks ─▶ exit
//!           (at once)        SHUTDOWN_DELAY at least,   Connection:close  DRAIN_TIMEOUT     HOOK_TIMEOUT
//!                            then until no new connection
//!                            for SHUTDOWN_QUIET (capped);
//!                            keep-alive connections closed
//!                            one by one meanwhile
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::process::{ExitCode, Termination};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::config::ShutdownPlan;
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

/// Starts the shutdown sequence (readiness off at once) and logs it. Returns `false` if it
/// had already started. Reads the registry: the connections opened so far (the mark that
/// tells new connections from reused ones) and, for the log line, what is in flight.
pub(crate) fn request(state: &State, connections: &Connections, reason: ShutdownReason) -> bool {
    let (in_flight, open) = (connections.in_flight(), connections.len());
    // Before the phase flips: requests after it tell new connections from reused ones.
    state.counters.mark_unready(connections.opened());
    let Ok(from) = state.request_shutdown(reason) else {
        return false;
    };
    if let Some(from) = from {
        log_phase(state, Phase::Deregistering, from, in_flight, open);
    }
    crate::stderr::unless_subscribed(|| {
        format!("shutdown requested ({reason}): readiness is now failing")
    });
    tracing::info!(%reason, "shutdown requested: readiness is now failing");
    true
}

/// Logs a phase change with the connection counts read just before it.
fn log_phase(state: &State, to: Phase, from: Phase, in_flight: u64, open: usize) {
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

/// Why the propagation delay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DelayEnd {
    /// At its floor: nothing new arrived in the last quiet period (or the delay is fixed).
    Floor,
    /// Past its floor, once no new connection arrived for the quiet period.
    Quiet,
    /// At the cap the grace period allows, with connections still arriving.
    Cap,
}

/// How the propagation delay went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DelayTaken {
    /// How long it lasted.
    pub(crate) took: Duration,
    /// From its start to the last new connection seen, if any.
    pub(crate) last_arrival: Option<Duration>,
    /// Why it ended.
    pub(crate) end: DelayEnd,
}

/// The adaptive propagation delay: serves at least `plan.floor`; then, while new connections
/// still arrive (`arrivals` counts them: the accept loop's count, sampled here, so serving pays
/// nothing for it), until none arrived for `plan.quiet`; at most `plan.cap`. A zero quiet
/// period is a fixed delay of `plan.floor`. `seen` is told each arrival's time from the start.
pub(crate) async fn adaptive_delay(
    plan: ShutdownPlan,
    arrivals: impl Fn() -> u64,
    seen: impl Fn(Duration),
) -> DelayTaken {
    let started = tokio::time::Instant::now();
    if plan.quiet.is_zero() || plan.cap <= plan.floor {
        tokio::time::sleep(plan.floor).await;
        return DelayTaken {
            took: started.elapsed(),
            last_arrival: None,
            end: DelayEnd::Floor,
        };
    }
    // Arrivals are noticed within a tick: an eighth of the quiet period, 10-250 ms.
    let tick = (plan.quiet / 8).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut count = arrivals();
    let mut last: Option<Duration> = None;
    loop {
        let now = started.elapsed();
        let n = arrivals();
        if n != count {
            count = n;
            last = Some(now);
            seen(now);
        }
        let quiet_end = last.map_or(plan.floor, |at| at.saturating_add(plan.quiet));
        let end = quiet_end.max(plan.floor).min(plan.cap);
        if now >= end {
            let end = if now >= plan.cap && quiet_end > plan.cap {
                DelayEnd::Cap
            } else if quiet_end > plan.floor {
                DelayEnd::Quiet
            } else {
                DelayEnd::Floor
            };
            return DelayTaken {
                took: now,
                last_arrival: last,
                end,
            };
        }
        tokio::time::sleep_until(started + now.saturating_add(tick).min(end)).await;
    }
}

/// What the shutdown sequence takes over.
#[derive(Debug)]
pub(crate) enum Handover {
    /// The application listener serves: its accept loop and its connections' tasks.
    Serving {
        /// The accept loop, awaited once the listener closed.
        accept: AbortOnDropHandle<()>,
        /// The connections' tasks: the drain waits for them.
        connections: TaskTracker,
    },
    /// Startup ended before anything was served, with this outcome: no delay, no drain (no
    /// load balancer ever had this endpoint), only the hooks and tracked tasks.
    NothingServed(Outcome),
}

/// The shutdown sequence of one lifecycle: its hooks and tracked tasks, and what the steps
/// read (the lifecycle's state, the connection registry, the plan).
#[derive(Debug)]
pub(crate) struct Shutdown {
    state: Arc<State>,
    connections: Arc<Connections>,
    /// Registered by `Lifecycle::on_shutdown` and `Lifecycle::spawn`.
    pub(crate) hooks: Hooks,
    plan: ShutdownPlan,
    hook_timeout: Duration,
}

impl Shutdown {
    /// The sequence for the lifecycle of `state` and `connections`, with the delay and drain of
    /// `plan` and hooks bounded by `hook_timeout`.
    pub(crate) fn new(
        state: Arc<State>,
        connections: Arc<Connections>,
        plan: ShutdownPlan,
        hook_timeout: Duration,
    ) -> Shutdown {
        Shutdown {
            state,
            connections,
            hooks: Hooks::default(),
            plan,
            hook_timeout,
        }
    }

    /// Runs the lifecycle from `handover` to its end and says how it ended. Serving: the phase
    /// turns `serving` until shutdown is requested, then the propagation delay (none after
    /// SIGINT), the drain, the hooks, `stopped`. Nothing served: the hooks, `stopped`, and the
    /// startup's own outcome.
    pub(crate) async fn run(&self, handover: Handover) -> Outcome {
        let served = match handover {
            Handover::Serving {
                accept,
                connections,
            } => {
                self.enter_phase(Phase::Serving);
                self.state.signals.shutdown_requested.cancelled().await;
                let forced = self.delay_and_drain(&connections, self.plan()).await;
                let _ = accept.await;
                Ok(forced)
            }
            Handover::NothingServed(outcome) => Err(outcome),
        };
        let hooks = self.run_hooks().await;
        self.enter_phase(Phase::Stopped);
        match served {
            Err(startup) => startup,
            Ok(forced) if forced > 0 => Outcome::DrainTimedOut {
                connections: forced,
            },
            Ok(_) => match hooks {
                Some((pending_hooks, pending_tasks)) => Outcome::HooksTimedOut {
                    pending_hooks,
                    pending_tasks,
                },
                None => Outcome::Drained,
            },
        }
    }

    /// Moves to `to` and logs the transition with the connection counts. The counts are read
    /// just before the change: code woken by the new phase (a stream ending on drain) must not
    /// race the log line.
    fn enter_phase(&self, to: Phase) {
        let (in_flight, open) = (self.connections.in_flight(), self.connections.len());
        if let Some(from) = self.state.set_phase(to) {
            log_phase(&self.state, to, from, in_flight, open);
        }
    }

    /// The plan for this shutdown: the configured one, except after SIGINT. Ctrl-C comes from
    /// a terminal, where no load balancer is removing this endpoint: waiting would only keep a
    /// developer waiting. The kubelet sends SIGTERM, which keeps the delay.
    fn plan(&self) -> ShutdownPlan {
        if self.state.shutdown_reason() == Some(ShutdownReason::Signal(signal_hook::consts::SIGINT))
        {
            crate::stderr::unless_subscribed(|| {
                "SIGINT (Ctrl-C): no load balancer to wait for, skipping the propagation delay"
                    .into()
            });
            tracing::info!(
                delay = ?self.plan.floor,
                "SIGINT (Ctrl-C): no load balancer to wait for, skipping the propagation delay"
            );
            self.plan.without_delay()
        } else {
            self.plan
        }
    }

    /// The propagation delay while still serving, then stop accepting and drain
    /// `connection_tasks`. Returns how many connections the drain deadline closed.
    async fn delay_and_drain(&self, connection_tasks: &TaskTracker, plan: ShutdownPlan) -> u64 {
        let (state, connections) = (&*self.state, &*self.connections);
        let (signals, counters) = (&state.signals, &state.counters);
        let delay_started = Instant::now();
        tracing::info!(
            delay = ?plan.floor,
            quiet = ?plan.quiet,
            cap = ?plan.cap,
            "keeping serving while load balancers remove this endpoint"
        );
        // The delay starts at the shutdown request; its clock is the one the close schedule
        // uses.
        let since_request = state
            .shutdown_since
            .get()
            .map_or(Duration::ZERO, |at| at.elapsed());
        let taken = adaptive_delay(
            plan,
            || connections.opened(),
            |at| counters.record_last_arrival(at + since_request),
        )
        .await;
        state.record_step(Step::Delay, delay_started.elapsed());
        let requests_after_unready = counters.requests_after_unready();
        match taken.end {
            DelayEnd::Cap => tracing::warn!(
                took = ?taken.took,
                last_new_connection = ?taken.last_arrival,
                requests_after_unready,
                "propagation delay over at its cap with new connections still arriving: a load \
                 balancer still routes here; raise terminationGracePeriodSeconds (and \
                 PODCYCLE_GRACE_PERIOD)"
            ),
            end => tracing::info!(
                took = ?taken.took,
                last_new_connection = ?taken.last_arrival,
                ended = if end == DelayEnd::Quiet { "quiet" } else { "floor" },
                requests_after_unready,
                "propagation delay over"
            ),
        }

        let drain_timeout = plan.drain_after(delay_started.elapsed());
        let drain_started = Instant::now();
        self.enter_phase(Phase::Draining);
        let _ = state.draining_since.set(tokio::time::Instant::now());
        // Requests waiting for an admission slot are shed now (before the connections see the
        // drain, so that theirs get the answer): the drain never holds them.
        if let Some(admission) = &connections.admission {
            admission.close_queue();
        }
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
        tracing::info!(
            closed_idle = counters.closed_idle.load(Ordering::Relaxed),
            "drain over"
        );
        counters.force_closed.load(Ordering::Relaxed)
    }

    /// Cancels background work, runs the hooks and waits for tracked tasks, within the hook
    /// timeout. Returns the hooks and the number of tracked tasks still running at it, if any.
    async fn run_hooks(&self) -> Option<(Vec<String>, usize)> {
        let (state, hooks) = (&self.state, &self.hooks);
        let started = Instant::now();
        self.enter_phase(Phase::Stopping);
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
        let finished = tokio::time::timeout(self.hook_timeout, all).await.is_ok();
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn plan(floor: u32, quiet: u32, cap: u32) -> ShutdownPlan {
        let c = crate::Config::default()
            .shutdown_delay(S * floor)
            .shutdown_quiet(S * quiet)
            .grace_period(Duration::from_secs(600));
        let mut p = c.shutdown_plan();
        p.cap = S * cap;
        p
    }

    /// Runs the delay while `arrive_at` (seconds from its start) open connections; returns
    /// what it took.
    async fn run(plan: ShutdownPlan, arrive_at: Vec<f64>) -> DelayTaken {
        let count = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let arrivals = tokio::spawn({
            let count = count.clone();
            async move {
                for at in arrive_at {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let taken = adaptive_delay(plan, || count.load(Ordering::Relaxed), |_| {}).await;
        arrivals.abort();
        assert_eq!(taken.took, start.elapsed());
        taken
    }

    /// Moved from `error.rs` (whose tests must not import the shutdown module above it).
    #[test]
    fn an_error_becomes_a_failed_outcome_with_exit_code_1() {
        let e = crate::error::Error::from(crate::config::ConfigError::InvalidEnv {
            var: "PODCYCLE_DRAIN_TIMEOUT",
            value: "20z".into(),
            expected: "a duration",
        });
        let outcome = Outcome::from(e);
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(
            outcome.to_string(),
            "failed: podcycle configuration: invalid PODCYCLE_DRAIN_TIMEOUT=\"20z\": expected a duration"
        );
    }

    fn sequence(config: &crate::Config) -> (Arc<State>, Arc<Connections>, Shutdown) {
        let (state, connections) = (Arc::new(State::default()), Arc::default());
        let shutdown = Shutdown::new(
            state.clone(),
            Arc::clone(&connections),
            config.shutdown_plan(),
            config.shutdown.hook_timeout,
        );
        (state, connections, shutdown)
    }

    #[tokio::test(start_paused = true)]
    async fn after_sigint_the_sequence_skips_the_delay_after_sigterm_it_keeps_it() {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let config = crate::Config::default().shutdown_delay(S * 5);
        for (signal, delay) in [(SIGINT, Duration::ZERO), (SIGTERM, S * 5)] {
            let (state, connections, shutdown) = sequence(&config);
            let run = tokio::spawn(async move {
                let served = Handover::Serving {
                    accept: AbortOnDropHandle::new(tokio::spawn(async {})),
                    connections: TaskTracker::new(),
                };
                shutdown.run(served).await
            });
            tokio::task::yield_now().await;
            assert_eq!(state.phase(), Phase::Serving);
            let started = tokio::time::Instant::now();
            assert!(request(
                &state,
                &connections,
                ShutdownReason::Signal(signal)
            ));
            assert_eq!(run.await.unwrap(), Outcome::Drained);
            assert_eq!(started.elapsed(), delay, "signal {signal}");
            assert_eq!(state.phase(), Phase::Stopped);
            assert!(state.signals.drained.is_cancelled());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_served_the_hooks_run_and_the_startup_outcome_stands() {
        let config = crate::Config::default().hook_timeout(S * 2);
        let (state, _connections, shutdown) = sequence(&config);
        shutdown
            .hooks
            .add("never-done", Box::pin(std::future::pending()));
        let startup = Outcome::WarmupFailed {
            warmup: "kb".into(),
            error: "unreachable".into(),
        };
        let started = tokio::time::Instant::now();
        let outcome = shutdown.run(Handover::NothingServed(startup.clone())).await;
        assert_eq!(outcome, startup, "a hook timeout does not replace it");
        assert_eq!(
            started.elapsed(),
            S * 2,
            "the hooks had their timeout, no delay"
        );
        assert_eq!(state.phase(), Phase::Stopped);
        assert!(state.signals.background_cancelled.is_cancelled());
        assert!(
            !state.signals.delay_over.is_cancelled(),
            "no delay, no drain"
        );
    }

    fn close(a: Duration, secs: f64) -> bool {
        a.as_secs_f64() >= secs && a.as_secs_f64() <= secs + 0.3
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_arriving_the_delay_ends_at_its_floor() {
        let taken = run(plan(5, 2, 21), vec![]).await;
        assert_eq!(taken.took, S * 5);
        assert_eq!((taken.last_arrival, taken.end), (None, DelayEnd::Floor));
    }

    #[tokio::test(start_paused = true)]
    async fn at_low_traffic_it_never_ends_before_the_floor_nor_waits_for_the_cap() {
        // One new connection every 4 s, for a minute: gaps longer than the quiet period.
        let every_4s: Vec<f64> = (0..15).map(|i| 0.5 + 4.0 * f64::from(i)).collect();
        let taken = run(plan(5, 2, 21), every_4s).await;
        assert!(taken.took >= S * 5, "{taken:?}");
        // The arrival at 4.5 s keeps it to 6.5 s; the next one (8.5 s) comes too late.
        assert!(close(taken.took, 6.5), "{taken:?}");
        assert_eq!(taken.end, DelayEnd::Quiet);
        // Arrivals only early in the floor: the floor.
        let taken = run(plan(5, 2, 21), vec![0.2, 1.0, 2.5]).await;
        assert_eq!((taken.took, taken.end), (S * 5, DelayEnd::Floor));
        assert!(close(taken.last_arrival.unwrap(), 2.5), "{taken:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn arrivals_extend_it_until_a_quiet_period_passes() {
        // New connections every 200 ms until the balancer stops routing here at 12 s.
        let until_12s: Vec<f64> = (0..60).map(|i| 0.2 * f64::from(i)).collect();
        let taken = run(plan(5, 2, 21), until_12s).await;
        assert!(close(taken.last_arrival.unwrap(), 11.8), "{taken:?}");
        assert!(close(taken.took, 13.8), "{taken:?}");
        assert_eq!(taken.end, DelayEnd::Quiet);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_while_connections_keep_arriving() {
        let forever: Vec<f64> = (0..1000).map(|i| 0.1 * f64::from(i)).collect();
        let taken = run(plan(5, 2, 21), forever).await;
        assert_eq!((taken.took, taken.end), (S * 21, DelayEnd::Cap));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_quiet_period_is_a_fixed_delay() {
        let forever: Vec<f64> = (0..1000).map(|i| 0.1 * f64::from(i)).collect();
        let mut p = plan(5, 0, 21);
        p.cap = crate::Config::default()
            .shutdown_quiet(Duration::ZERO)
            .shutdown_delay_cap();
        let taken = run(p, forever).await;
        assert_eq!((taken.took, taken.end), (S * 5, DelayEnd::Floor));
    }
}
