//! The state one lifecycle shares between the application runtime, the admin thread and
//! every connection: phase, tokens, counters. Nothing here is global.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checks::Checks;
use crate::config::Config;
use crate::phase::Phase;
use crate::warmup::Warmups;

/// Why shutdown started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// A signal (its number, e.g. 15 for SIGTERM).
    Signal(i32),
    /// [`Lifecycle::shutdown`](crate::Lifecycle::shutdown) was called.
    Requested,
    /// A warm-up failed or missed its deadline.
    WarmupFailed,
}

pub(crate) type Hook = (
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

/// The shutdown steps whose durations are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Delay = 0,
    Drain = 1,
    Hooks = 2,
}

impl Step {
    pub(crate) const ALL: [Step; 3] = [Step::Delay, Step::Drain, Step::Hooks];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Step::Delay => "delay",
            Step::Drain => "drain",
            Step::Hooks => "hooks",
        }
    }
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) started: Instant,
    phase: AtomicU8,
    phase_tx: watch::Sender<Phase>,
    /// Cancelled when shutdown is requested (readiness off).
    pub(crate) shutdown_requested: CancellationToken,
    /// Cancelled when the propagation delay is over: stop accepting, close connections politely.
    pub(crate) stop_accepting: CancellationToken,
    /// Cancelled at the drain deadline: drop every remaining connection.
    pub(crate) force_close: CancellationToken,
    /// The application's background work; cancelled when hooks start.
    pub(crate) background: CancellationToken,
    /// Cancelled when the last `Lifecycle` handle is dropped: stops the admin thread and checks.
    pub(crate) halt: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) hooks: Mutex<Vec<Hook>>,
    pub(crate) warmups: Arc<Warmups>,
    pub(crate) checks: Checks,
    pub(crate) connections: Arc<Connections>,
    pub(crate) requests_after_unready: AtomicU64,
    pub(crate) connections_force_closed: AtomicU64,
    step_nanos: [AtomicU64; 3],
    reason: Mutex<Option<ShutdownReason>>,
    /// Milliseconds since `started` at the runtime watchdog's last heartbeat.
    pub(crate) heartbeat_ms: AtomicU64,
    pub(crate) app_addr: OnceLock<SocketAddr>,
    pub(crate) admin_addr: OnceLock<SocketAddr>,
    pub(crate) metrics: OnceLock<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("phase", &self.phase())
            .field("version", &self.config.version)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            config,
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            phase_tx: watch::channel(Phase::Starting).0,
            shutdown_requested: CancellationToken::new(),
            stop_accepting: CancellationToken::new(),
            force_close: CancellationToken::new(),
            background: CancellationToken::new(),
            halt: CancellationToken::new(),
            tasks: TaskTracker::new(),
            hooks: Mutex::new(Vec::new()),
            warmups: Arc::new(Warmups::default()),
            checks: Checks::default(),
            connections: Arc::new(Connections::default()),
            requests_after_unready: AtomicU64::new(0),
            connections_force_closed: AtomicU64::new(0),
            step_nanos: Default::default(),
            reason: Mutex::new(None),
            heartbeat_ms: AtomicU64::new(0),
            app_addr: OnceLock::new(),
            admin_addr: OnceLock::new(),
            metrics: OnceLock::new(),
        }
    }

    /// The current phase, from one relaxed atomic load (this is on the request path).
    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase_tx.subscribe()
    }

    /// Moves forward to `to` (never backwards) and logs the transition.
    pub(crate) fn set_phase(&self, to: Phase) {
        let from = Phase::from_u8(self.phase.fetch_max(to as u8, Ordering::AcqRel));
        if from >= to {
            return;
        }
        self.phase_tx.send_replace(to);
        tracing::info!(
            phase = to.as_str(),
            from = from.as_str(),
            elapsed = ?self.started.elapsed(),
            in_flight = self.connections.in_flight(),
            connections = self.connections.len(),
            "podcycle phase"
        );
    }

    /// Records why shutdown started and flips readiness. Returns `false` if shutdown had
    /// already been requested.
    pub(crate) fn request_shutdown(&self, reason: ShutdownReason) -> bool {
        {
            let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
        }
        // The atomic store inside flips /readyz before anything else happens.
        self.set_phase(Phase::Deregistering);
        tracing::info!(?reason, "shutdown requested: readiness is now failing");
        self.shutdown_requested.cancel();
        true
    }

    /// Whether `/readyz` passes (ignoring exclusions): serving, warmed up, every readiness
    /// check passing.
    pub(crate) fn is_ready(&self) -> bool {
        self.phase() == Phase::Serving
            && self.warmups.all_done()
            && self
                .checks
                .of(crate::checks::Probe::Readiness)
                .iter()
                .all(|c| c.result().is_ok())
    }

    pub(crate) fn shutdown_reason(&self) -> Option<ShutdownReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record_step(&self, step: Step, took: Duration) {
        self.step_nanos[step as usize].store(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn step_duration(&self, step: Step) -> Duration {
        Duration::from_nanos(self.step_nanos[step as usize].load(Ordering::Relaxed))
    }

    pub(crate) fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the application runtime last showed it makes progress.
    pub(crate) fn stalled_for(&self) -> Duration {
        let now = self.started.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.heartbeat_ms.load(Ordering::Relaxed),
        ))
    }
}

/// In-flight accounting of one connection: low 32 bits count requests in flight, high 32 bits
/// count requests started, so one atomic add both counts and marks activity.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    activity: AtomicU64,
}

const STARTED_ONE: u64 = 1 << 32;
const IN_FLIGHT_MASK: u64 = STARTED_ONE - 1;

impl ConnState {
    #[inline]
    pub(crate) fn start(self: &Arc<Self>) -> RequestGuard {
        self.activity.fetch_add(STARTED_ONE + 1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    pub(crate) fn activity(&self) -> u64 {
        self.activity.load(Ordering::Acquire)
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.activity() & IN_FLIGHT_MASK
    }
}

/// Counts one request in flight until dropped: when the response body ends, errors, or is
/// dropped by an aborted client.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    #[inline]
    fn drop(&mut self) {
        self.0.activity.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The live connections of the application listener.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Connections {
    pub(crate) fn open(self: &Arc<Self>) -> (Arc<ConnState>, ConnectionGuard) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, state.clone());
        (
            state,
            ConnectionGuard {
                id,
                connections: self.clone(),
            },
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.in_flight())
            .sum()
    }
}

/// Removes a connection from the registry when its task ends.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connections
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}
