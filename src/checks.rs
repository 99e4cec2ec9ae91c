//! Readiness and liveness checks: each runs in the background on its own interval, bounded by
//! its timeout; probes answer from the last result and never wait on a dependency.
//!
//! A check counts as failed once it has failed `failure_threshold` times in a row (as a
//! kubelet probe's `failureThreshold`), and as failing until it first passes. A check that is
//! not [gating](Check::gating) is reported (in `?verbose`, JSON and `podcycle_check_status`)
//! but does not decide its probe: a degraded dependency need not take the whole fleet out.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use podcycle::Check;
//!
//! # async fn run() -> Result<(), podcycle::Error> {
//! let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
//! lifecycle.check(
//!     Check::readiness("search-index", || async { Ok::<_, String>(()) })
//!         .interval(Duration::from_secs(2))
//!         .timeout(Duration::from_millis(500))
//!         .failure_threshold(3),
//! );
//! // Shown in /readyz?verbose, never fails /readyz:
//! lifecycle.check(Check::readiness("recommendations", || async { Err("slow") }).gating(false));
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::CheckDefaults;
use crate::phase::Phase;

/// Which probe a check belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Probe {
    /// `/readyz`: failing takes the pod out of load balancing.
    Readiness,
    /// `/livez`: failing gets the container restarted.
    Liveness,
}

impl Probe {
    /// `readyz` or `livez`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Probe::Readiness => "readyz",
            Probe::Liveness => "livez",
        }
    }
}

type CheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A readiness or liveness check with its settings. Add it with
/// [`Lifecycle::check`](crate::Lifecycle::check); settings left unset take the lifecycle's
/// defaults (`PODCYCLE_CHECK_INTERVAL`, `PODCYCLE_CHECK_TIMEOUT`,
/// `PODCYCLE_CHECK_FAILURE_THRESHOLD`).
#[must_use = "a check does nothing until it is added with Lifecycle::check"]
pub struct Check {
    name: String,
    probe: Probe,
    run: CheckFn,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    failure_threshold: Option<u32>,
    gating: bool,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("probe", &self.probe.as_str())
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("failure_threshold", &self.failure_threshold)
            .field("gating", &self.gating)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// A check reported by `/readyz`: while it fails, the pod is taken out of load balancing.
    pub fn readiness<F, Fut, E>(name: &str, check: F) -> Check
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        Check::new(Probe::Readiness, name, check)
    }

    /// A check reported by `/livez`: while it fails, the kubelet restarts the container.
    /// Keep these about this process, not its dependencies.
    pub fn liveness<F, Fut, E>(name: &str, check: F) -> Check
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        Check::new(Probe::Liveness, name, check)
    }

    fn new<F, Fut, E>(probe: Probe, name: &str, check: F) -> Check
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let run: CheckFn = Arc::new(move || {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        Check {
            name: name.to_owned(),
            probe,
            run,
            interval: None,
            timeout: None,
            failure_threshold: None,
            gating: true,
        }
    }

    /// How often the check runs (at least 1 ms).
    pub fn interval(mut self, every: Duration) -> Check {
        self.interval = Some(every.max(Duration::from_millis(1)));
        self
    }

    /// How long one run may take before it counts as a failure.
    pub fn timeout(mut self, timeout: Duration) -> Check {
        self.timeout = Some(timeout);
        self
    }

    /// How many failures in a row make a passing check count as failed (at least 1).
    pub fn failure_threshold(mut self, failures: u32) -> Check {
        self.failure_threshold = Some(failures.max(1));
        self
    }

    /// Whether the check decides its probe (default `true`). A non-gating check is only
    /// reported: `?verbose` shows it `[-]` when it fails, `podcycle_check_status` shows 0.
    pub fn gating(mut self, gating: bool) -> Check {
        self.gating = gating;
        self
    }

    /// The check's name, as probes and metrics report it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a probe reports of one check right now.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Status {
    /// `None` until the first run; then whether the check counts as passing.
    reported: Option<Result<(), String>>,
    /// Failures in a row since the last pass.
    failures: u32,
    /// Whether this failure streak was logged as a warning (only once).
    warned: bool,
}

#[derive(Debug)]
pub(crate) struct CheckEntry {
    pub(crate) name: String,
    pub(crate) probe: Probe,
    pub(crate) gating: bool,
    failure_threshold: u32,
    status: Mutex<Status>,
}

impl CheckEntry {
    /// The check's current standing: `Err` while it counts as failed (or has not run yet).
    pub(crate) fn result(&self) -> Result<(), String> {
        match &self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reported
        {
            None => Err(String::from("not checked yet")),
            Some(r) => r.clone(),
        }
    }

    /// Takes one run's result into account, applying the failure threshold, and returns
    /// whether the check's standing (passing or not) changed. A check failing while the
    /// process starts or stops is expected (e.g. it waits for a warm-up): logged at INFO; a
    /// failing check is a WARN only while serving or draining, once per failure streak.
    fn observe(&self, run: Result<(), String>, phase: Phase) -> bool {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let was = s.reported.clone();
        match run {
            Ok(()) => {
                s.failures = 0;
                s.reported = Some(Ok(()));
            }
            Err(reason) => {
                s.failures = s.failures.saturating_add(1);
                let passing = matches!(s.reported, Some(Ok(())));
                if !passing || s.failures >= self.failure_threshold {
                    s.reported = Some(Err(reason));
                } else {
                    tracing::debug!(
                        check = %self.name,
                        probe = self.probe.as_str(),
                        %reason,
                        failures = s.failures,
                        failure_threshold = self.failure_threshold,
                        "check failed, still below its failure threshold"
                    );
                }
            }
        }
        let changed = s.reported.as_ref().map(Result::is_ok) != was.as_ref().map(Result::is_ok);
        let in_service = matches!(
            phase,
            Phase::Serving | Phase::Deregistering | Phase::Draining
        );
        match s.reported.clone() {
            Some(Ok(())) if changed => {
                s.warned = false;
                tracing::info!(
                    check = %self.name,
                    probe = self.probe.as_str(),
                    gating = self.gating,
                    "check passing"
                )
            }
            Some(Err(reason)) if in_service && !s.warned => {
                s.warned = true;
                tracing::warn!(
                    check = %self.name,
                    probe = self.probe.as_str(),
                    gating = self.gating,
                    %reason,
                    "check failing"
                )
            }
            Some(Err(reason)) if changed && !in_service => tracing::info!(
                check = %self.name,
                probe = self.probe.as_str(),
                gating = self.gating,
                %reason,
                phase = phase.as_str(),
                "check not passing yet"
            ),
            _ => {}
        }
        changed
    }
}

/// All user checks of one lifecycle.
#[derive(Debug)]
pub(crate) struct Checks {
    entries: RwLock<Vec<Arc<CheckEntry>>>,
    /// Bumped whenever a check starts or stops passing.
    changed: watch::Sender<u64>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            entries: RwLock::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Checks {
    /// A receiver that sees a change whenever a check starts or stops passing.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // the gRPC health service follows it
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn of(&self, probe: Probe) -> Vec<Arc<CheckEntry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.probe == probe)
            .cloned()
            .collect()
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // read by the check gauge
    pub(crate) fn all(&self) -> Vec<Arc<CheckEntry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers a check and runs it on the current runtime until `stop` is cancelled: every
    /// interval, and at every phase change (so readiness is current the moment warm-ups finish
    /// and serving starts, not one interval later).
    pub(crate) fn add(
        &self,
        check: Check,
        defaults: CheckDefaults,
        stop: CancellationToken,
        mut phase: watch::Receiver<Phase>,
    ) {
        let interval = check.interval.unwrap_or(defaults.interval);
        let timeout = check.timeout.unwrap_or(defaults.timeout);
        let entry = Arc::new(CheckEntry {
            name: check.name,
            probe: check.probe,
            gating: check.gating,
            failure_threshold: check
                .failure_threshold
                .unwrap_or(defaults.failure_threshold)
                .max(1),
            status: Mutex::new(Status {
                reported: None,
                failures: 0,
                warned: false,
            }),
        });
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        let run = check.run;
        let changed = self.changed.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                    changed = phase.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                let result = tokio::select! {
                    // Not reported: a check cut short by the lifecycle's end did not fail.
                    _ = stop.cancelled() => return,
                    r = run_once(&run, timeout) => r,
                };
                // `None`: the check's task was cancelled (the runtime is shutting down).
                let Some(result) = result else { return };
                let now = *phase.borrow();
                if entry.observe(result, now) {
                    changed.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        });
    }
}

/// Runs one check in its own task so that a panic is a failure, not a crash.
/// `None` when the task was cancelled from outside (the runtime shutting down): not a result.
async fn run_once(check: &CheckFn, timeout: Duration) -> Option<Result<(), String>> {
    let task = tokio::spawn(check());
    let abort = task.abort_handle();
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(join)) if join.is_panic() => Some(Err(format!(
            "panicked: {}",
            crate::panic::message(&*join.into_panic())
        ))),
        Ok(Err(_)) => None,
        Err(_) => {
            abort.abort();
            Some(Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    const DEFAULTS: CheckDefaults = CheckDefaults {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(100),
        failure_threshold: 1,
    };

    /// A phase channel whose sender lives as long as the test (a closed channel stops checks).
    fn phase() -> watch::Receiver<Phase> {
        static PHASE: std::sync::OnceLock<watch::Sender<Phase>> = std::sync::OnceLock::new();
        PHASE
            .get_or_init(|| watch::channel(Phase::Starting).0)
            .subscribe()
    }

    #[tokio::test(start_paused = true)]
    async fn panics_and_timeouts_are_failures_and_results_refresh() {
        let checks = Checks::default();
        let stop = CancellationToken::new();
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let flaky = Check::readiness("flaky", move || {
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("db down")
                }
            }
        });
        checks.add(flaky, DEFAULTS, stop.clone(), phase());
        let panics = Check::readiness("panics", || async { panic!("boom") as Result<(), String> });
        checks.add(panics, DEFAULTS, stop.clone(), phase());
        let slow = Check::liveness("slow", || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), String>(())
        });
        checks.add(slow, DEFAULTS, stop.clone(), phase());
        let all = checks.all();
        assert_eq!(all[0].result(), Err("not checked yet".into()));
        settle().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        settle().await;
        assert_eq!(all[0].result(), Ok(()));
        assert_eq!(all[1].result(), Err("panicked: boom".into()));
        assert_eq!(all[2].result(), Err("timed out after 100ms".into()));
        assert_eq!(checks.of(Probe::Liveness).len(), 1);

        healthy.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(all[0].result(), Err("db down".into()));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_failing_fewer_times_than_its_threshold_stays_passing() {
        let checks = Checks::default();
        let stop = CancellationToken::new();
        // Passes on run 1, then fails on runs 2..=3 (threshold - 1 = 2 failures), passes on
        // run 4, then fails for good from run 5.
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let check = Check::readiness("db", move || {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 || n == 4 {
                    Ok(())
                } else {
                    Err(format!("run {n} failed"))
                }
            }
        })
        .interval(Duration::from_secs(1))
        .failure_threshold(3);
        checks.add(check, DEFAULTS, stop.clone(), phase());
        let entry = checks.all().remove(0);
        let mut seen = Vec::new();
        for _ in 0..7 {
            settle().await;
            seen.push((runs.load(Ordering::SeqCst), entry.result().is_ok()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(
            seen,
            [
                (1, true),
                (2, true),  // 1 failure of 3
                (3, true),  // 2 failures of 3
                (4, true),  // passed again: the count starts over
                (5, true),  // 1 of 3
                (6, true),  // 2 of 3
                (7, false), // 3 of 3: failed
            ]
        );
        assert_eq!(entry.result(), Err("run 7 failed".into()));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_never_passed_fails_at_once_whatever_its_threshold() {
        let checks = Checks::default();
        let stop = CancellationToken::new();
        let check = Check::readiness("db", || async { Err("refused") }).failure_threshold(5);
        checks.add(check, DEFAULTS, stop.clone(), phase());
        settle().await;
        assert_eq!(checks.all()[0].result(), Err("refused".into()));
        stop.cancel();
    }
}
