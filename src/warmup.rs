//! Warm-ups: named start-up tasks (load a model, index a knowledge base) that hold readiness
//! back until every one of them has succeeded.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::AbortHandle;

/// The state of one warm-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WarmupStatus {
    Running,
    Done(Duration),
    Failed(String),
}

#[derive(Debug)]
pub(crate) struct WarmupEntry {
    pub(crate) name: String,
    pub(crate) status: Mutex<WarmupStatus>,
    abort: Mutex<Option<AbortHandle>>,
}

impl WarmupEntry {
    pub(crate) fn status(&self) -> WarmupStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Every warm-up of one lifecycle; `changed` ticks whenever one finishes.
#[derive(Debug)]
pub(crate) struct Warmups {
    entries: Mutex<Vec<Arc<WarmupEntry>>>,
    changed: watch::Sender<u64>,
}

impl Default for Warmups {
    fn default() -> Self {
        Warmups {
            entries: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        }
    }
}

/// Where all warm-ups stand.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    Running,
    AllDone,
    Failed { name: String, error: String },
}

impl Warmups {
    pub(crate) fn entries(&self) -> Vec<Arc<WarmupEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn progress(&self) -> Progress {
        let mut running = false;
        for e in self.entries() {
            match e.status() {
                WarmupStatus::Running => running = true,
                WarmupStatus::Done(_) => {}
                WarmupStatus::Failed(error) => {
                    return Progress::Failed {
                        name: e.name.clone(),
                        error,
                    }
                }
            }
        }
        if running {
            Progress::Running
        } else {
            Progress::AllDone
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Fails every warm-up still running with `reason` and stops it.
    pub(crate) fn abort_running(&self, reason: &str) {
        for e in self.entries() {
            let mut status = e.status.lock().unwrap_or_else(|e| e.into_inner());
            if *status == WarmupStatus::Running {
                *status = WarmupStatus::Failed(reason.to_owned());
                if let Some(a) = e.abort.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    a.abort();
                }
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Spawns `fut` as the warm-up `name` on the current runtime.
    pub(crate) fn start<T, E, F>(self: &Arc<Self>, name: &str, fut: F) -> Warmup<T>
    where
        T: Send + Sync + 'static,
        E: fmt::Display + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let entry = Arc::new(WarmupEntry {
            name: name.to_owned(),
            status: Mutex::new(WarmupStatus::Running),
            abort: Mutex::new(None),
        });
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        let cell = Arc::new(OnceLock::new());
        let warmup = Warmup {
            entry: entry.clone(),
            value: cell.clone(),
            done: self.changed.subscribe(),
        };
        tracing::info!(warmup = %name, "warm-up started");
        let started = Instant::now();
        let task = tokio::spawn(fut);
        *entry.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        let warmups = self.clone();
        tokio::spawn(async move {
            let status = match task.await {
                Ok(Ok(value)) => {
                    let _ = cell.set(value);
                    WarmupStatus::Done(started.elapsed())
                }
                Ok(Err(e)) => WarmupStatus::Failed(e.to_string()),
                Err(j) if j.is_panic() => WarmupStatus::Failed(format!(
                    "panicked: {}",
                    crate::panic::message(&*j.into_panic())
                )),
                Err(_) => return, // aborted: abort_running already set the status.
            };
            {
                let mut s = entry.status.lock().unwrap_or_else(|e| e.into_inner());
                if *s != WarmupStatus::Running {
                    return;
                }
                *s = status.clone();
            }
            match status {
                WarmupStatus::Done(took) => {
                    tracing::info!(warmup = %entry.name, elapsed = ?took, "warm-up done");
                }
                WarmupStatus::Failed(ref error) => {
                    tracing::error!(warmup = %entry.name, %error, "warm-up failed")
                }
                WarmupStatus::Running => {}
            }
            warmups.changed.send_modify(|v| *v += 1);
        });
        warmup
    }
}

/// A handle to the value a warm-up produces. Cheap to clone; put it in your application state.
///
/// [`Lifecycle::serve`](crate::Lifecycle::serve) starts accepting requests only after every
/// warm-up has succeeded, so inside request handlers [`Warmup::get`] returns `Some`.
pub struct Warmup<T> {
    entry: Arc<WarmupEntry>,
    value: Arc<OnceLock<T>>,
    done: watch::Receiver<u64>,
}

impl<T> Clone for Warmup<T> {
    fn clone(&self) -> Self {
        Warmup {
            entry: self.entry.clone(),
            value: self.value.clone(),
            done: self.done.clone(),
        }
    }
}

impl<T> fmt::Debug for Warmup<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Warmup")
            .field("name", &self.entry.name)
            .field("done", &self.value.get().is_some())
            .finish()
    }
}

impl<T> Warmup<T> {
    /// The warm-up's name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The value, once the warm-up has succeeded.
    pub fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// Waits for this warm-up to finish; `None` if it failed or was cancelled by a shutdown.
    ///
    /// # Cancellation safety
    /// Cancel safe: dropping the future only stops the waiting, never the warm-up.
    pub async fn wait(&self) -> Option<&T> {
        let mut done = self.done.clone();
        loop {
            if let Some(v) = self.value.get() {
                return Some(v);
            }
            if let WarmupStatus::Failed(_) = self.entry.status() {
                return None;
            }
            if done.changed().await.is_err() {
                return self.value.get();
            }
        }
    }
}
