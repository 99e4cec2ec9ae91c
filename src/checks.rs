//! Readiness and liveness checks: run in the background on an interval, each bounded by a
//! timeout; probes answer from the last result and never wait on a dependency.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Which probe a check belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// `/readyz`: failing takes the pod out of load balancing.
    Readiness,
    /// `/livez`: failing gets the container restarted.
    Liveness,
}

impl Probe {
    /// `readyz` or `livez`.
    pub fn as_str(self) -> &'static str {
        match self {
            Probe::Readiness => "readyz",
            Probe::Liveness => "livez",
        }
    }
}

/// The outcome of one run of a check.
pub type CheckResult = Result<(), String>;

type CheckFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync>;

/// The last known state of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CheckStatus {
    /// Not run yet: counts as failing.
    Pending,
    Ok,
    Failed(String),
}

#[derive(Debug)]
pub(crate) struct CheckEntry {
    pub(crate) name: String,
    pub(crate) probe: Probe,
    pub(crate) status: Mutex<CheckStatus>,
}

impl CheckEntry {
    pub(crate) fn result(&self) -> CheckResult {
        match &*self.status.lock().unwrap_or_else(|e| e.into_inner()) {
            CheckStatus::Ok => Ok(()),
            CheckStatus::Pending => Err(String::from("not checked yet")),
            CheckStatus::Failed(reason) => Err(reason.clone()),
        }
    }

    fn set(&self, status: CheckStatus) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if *s != status {
            match &status {
                CheckStatus::Ok => {
                    tracing::info!(check = %self.name, probe = self.probe.as_str(), "check passing")
                }
                CheckStatus::Failed(reason) => {
                    tracing::warn!(check = %self.name, probe = self.probe.as_str(), %reason, "check failing")
                }
                CheckStatus::Pending => {}
            }
        }
        *s = status;
    }
}

/// All user checks of one lifecycle.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    entries: RwLock<Vec<Arc<CheckEntry>>>,
}

impl Checks {
    pub(crate) fn of(&self, probe: Probe) -> Vec<Arc<CheckEntry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.probe == probe)
            .cloned()
            .collect()
    }

    pub(crate) fn all(&self) -> Vec<Arc<CheckEntry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers a check and starts running it on the current runtime until `stop` is cancelled.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add<F, Fut, E>(
        &self,
        probe: Probe,
        name: &str,
        check: F,
        interval: Duration,
        timeout: Duration,
        stop: CancellationToken,
        mut phase: tokio::sync::watch::Receiver<crate::phase::Phase>,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        let entry = Arc::new(CheckEntry {
            name: name.to_owned(),
            probe,
            status: Mutex::new(CheckStatus::Pending),
        });
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        let check: CheckFn = Arc::new(move || {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Also run at every phase change, so that readiness is current the moment
                // warm-ups finish and serving starts, not one interval later.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                    changed = phase.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                let status = run_once(&check, timeout).await;
                entry.set(status);
            }
        });
    }
}

/// Runs one check in its own task so that a panic is a failure, not a crash.
async fn run_once(check: &CheckFn, timeout: Duration) -> CheckStatus {
    let task = tokio::spawn(check());
    let abort = task.abort_handle();
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(()))) => CheckStatus::Ok,
        Ok(Ok(Err(reason))) => CheckStatus::Failed(reason),
        Ok(Err(join)) if join.is_panic() => {
            CheckStatus::Failed(format!("panicked: {}", panic_message(join.into_panic())))
        }
        Ok(Err(_)) => CheckStatus::Failed(String::from("cancelled")),
        Err(_) => {
            abort.abort();
            CheckStatus::Failed(format!(
                "timed out after {}",
                crate::config::fmt_duration(timeout)
            ))
        }
    }
}

pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(non-string panic payload)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn panics_and_timeouts_are_failures_and_results_refresh() {
        let checks = Checks::default();
        let stop = CancellationToken::new();
        let phase = tokio::sync::watch::channel(crate::phase::Phase::Starting).0;
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        checks.add(
            Probe::Readiness,
            "flaky",
            move || {
                let ok = h.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("db down")
                    }
                }
            },
            Duration::from_secs(1),
            Duration::from_millis(100),
            stop.clone(),
            phase.subscribe(),
        );
        checks.add(
            Probe::Readiness,
            "panics",
            || async { panic!("boom") as Result<(), String> },
            Duration::from_secs(1),
            Duration::from_millis(100),
            stop.clone(),
            phase.subscribe(),
        );
        checks.add(
            Probe::Liveness,
            "slow",
            || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<(), String>(())
            },
            Duration::from_secs(1),
            Duration::from_millis(100),
            stop.clone(),
            phase.subscribe(),
        );
        let all = checks.all();
        assert_eq!(all[0].result(), Err("not checked yet".into()));
        settle().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        settle().await;
        assert_eq!(all[0].result(), Ok(()));
        assert_eq!(all[1].result(), Err("panicked: boom".into()));
        assert_eq!(all[2].result(), Err("timed out after 100ms".into()));
        assert_eq!(checks.of(Probe::Liveness).len(), 1);

        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(all[0].result(), Err("db down".into()));
        stop.cancel();
    }
}
