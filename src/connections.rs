//! Connection accounting: which connections of the application listener are open and how many
//! requests each has in flight (the lifecycle's counters are in [`crate::counters`]).
//!
//! A request is counted by a [`RequestGuard`] (RAII): it is held by the response future and
//! then by the response body, so the count drops on completion, error or client abort alike.
//!
//! The number of open application connections is bounded ([`max_app_connections`]): by
//! default the process's file-descriptor limit less a reserve for the admin listener, so that
//! a flood of idle connections cannot take the descriptors the probes need. Upgraded
//! connections (WebSockets) have a cap of their own below it ([`UpgradeSlots`]), and a listener
//! with no free slot fails `/readyz` ([`AppSlots`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admission::Controller;

/// In-flight accounting of one connection: low 32 bits count requests in flight, high 32 bits
/// count requests started, so one atomic add both counts and marks activity; and how many
/// times the connection made write progress (a response's bytes reaching the socket).
#[derive(Debug)]
pub(crate) struct ConnState {
    activity: AtomicU64,
    writes: AtomicU64,
    /// Reads that returned bytes, and their count when the last request ended.
    reads: AtomicU64,
    reads_at_end: AtomicU64,
    /// Set by the sweep when the connection outlived a timeout; `wake` then wakes its task.
    timed_out: AtomicBool,
    /// Set by the sweep when the connection outlived its maximum age: its next HTTP/1 response
    /// carries `Connection: close`, an HTTP/2 connection gets a graceful GOAWAY.
    aged: AtomicBool,
    /// Set by the serving stack once the connection sent the HTTP/2 preface or carried an
    /// HTTP/2 request.
    http2: AtomicBool,
    /// Set by the drain once this HTTP/2 connection's GOAWAY grace is over: a stream its
    /// client opens after that is refused (`REFUSED_STREAM`) instead of served.
    refusing: AtomicBool,
    opened: Instant,
    /// The connection's number, in the order connections were opened.
    id: u64,
    /// This connection's share of the age jitter, in [0, 1); also its place in the shutdown
    /// delay's keep-alive close schedule.
    jitter: f64,
    /// Cancelled when the propagation delay is over (a child of that signal) or when the
    /// sweep times the connection out.
    pub(crate) wake: CancellationToken,
    /// The sweep's memory of this connection.
    sweep: Mutex<Sweep>,
    /// The socket, handed back when hyper drops it, for a lingering close.
    socket: Mutex<Option<TcpStream>>,
    /// Request body bytes received on this connection, and whether the application is
    /// waiting for more (set when its body read is pending, cleared when bytes arrive).
    body_bytes: AtomicU64,
    body_waiting: AtomicBool,
    /// The upgraded connection (HTTP/1 `101 Switching Protocols`), if any: see [`Upgrade`].
    upgrade: Upgrade,
    /// The listener's cap on upgraded connections, shared by all its connections.
    upgrade_slots: Arc<UpgradeSlots>,
    /// The listener's admission control, when it is on: each request of this connection
    /// admitted by it is released by its [`RequestGuard`].
    admission: Option<Arc<Controller>>,
    /// Set when this connection's upgraded request gave its admission slot back (at its `101`).
    admission_released: AtomicBool,
    /// The HTTP/2 request bodies of this connection that kept their handler waiting, for
    /// the minimum body rate (see [`StreamBody`]). Touched only when a body read waits.
    h2_bodies: Mutex<Vec<std::sync::Weak<StreamBody>>>,
}

/// What an upgraded connection (a WebSocket) holds while its upgraded I/O lives: the
/// request's in-flight guard (so the drain waits for it) and what records it when it ends.
/// The I/O's drop releases it; the drain deadline cuts it.
#[derive(Debug, Default)]
struct Upgrade {
    /// Set once, when the `101` response is produced: from then on the I/O checks `cut`.
    upgraded: AtomicBool,
    /// Set by the drain deadline: the I/O fails its reads and writes from then on.
    cut: AtomicBool,
    held: Mutex<Option<UpgradeHold>>,
    /// Notified when the hold is released or cut (the connection's task waits for it).
    ended: Notify,
    /// The tasks reading and writing the upgraded I/O, woken when it is cut.
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// The in-flight guard of an upgraded request, its slot and its measurement.
struct UpgradeHold {
    _guard: RequestGuard,
    _slot: UpgradeSlot,
    end: Option<Box<dyn UpgradeEnd>>,
}

/// The cap on upgraded connections (WebSockets) of the application listener, so that they
/// can never take the last connection slots from ordinary requests
/// (`PODCYCLE_MAX_UPGRADED_CONNECTIONS`). An upgrade beyond it is answered `503`.
#[derive(Debug)]
pub(crate) struct UpgradeSlots {
    open: AtomicUsize,
    max: AtomicUsize,
}

impl Default for UpgradeSlots {
    fn default() -> Self {
        UpgradeSlots {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(usize::MAX),
        }
    }
}

impl UpgradeSlots {
    /// Sets the cap (when the listener starts serving).
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// The cap in force.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Takes a slot if one is free.
    fn take(self: &Arc<Self>) -> Option<UpgradeSlot> {
        let max = self.max();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| UpgradeSlot(self.clone()))
    }
}

/// One upgraded connection's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct UpgradeSlot(Arc<UpgradeSlots>);

impl Drop for UpgradeSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The application listener's connection slots as `/readyz` sees them: the `connections`
/// line fails once the accept loop finds no free slot (a pod that cannot take a request
/// should not be ready), and passes again once [`AppSlots::recover_at`] slots are free, so
/// that a listener at its limit does not flap at every accept (hysteresis).
#[derive(Debug, Default)]
pub(crate) struct AppSlots {
    semaphore: std::sync::OnceLock<(Arc<tokio::sync::Semaphore>, usize)>,
    full: AtomicBool,
}

impl AppSlots {
    /// The listener serves with `limit` slots, the permits of `semaphore`.
    pub(crate) fn serve(&self, semaphore: Arc<tokio::sync::Semaphore>, limit: usize) {
        let _ = self.semaphore.set((semaphore, limit));
    }

    /// The accept loop found no free slot.
    pub(crate) fn mark_full(&self) {
        if !self.full.load(Ordering::Relaxed) {
            self.full.store(true, Ordering::Relaxed);
        }
    }

    /// Free slots needed to be ready again after the limit was reached: a sixteenth of the
    /// limit, at least 1 (besides the one the accept loop holds for its next connection).
    pub(crate) fn recover_at(limit: usize) -> usize {
        (limit / 16).max(1)
    }

    /// The `/readyz` line.
    pub(crate) fn line(&self) -> Result<(), String> {
        let Some((semaphore, limit)) = self.semaphore.get() else {
            return Ok(());
        };
        if !self.full.load(Ordering::Relaxed) {
            return Ok(());
        }
        let free = semaphore.available_permits();
        let recover_at = Self::recover_at(*limit);
        if free >= recover_at {
            self.full.store(false, Ordering::Relaxed);
            return Ok(());
        }
        Err(format!(
            "no free application connection slot: {limit} in use (PODCYCLE_MAX_CONNECTIONS or \
             the file-descriptor limit); ready again when {recover_at} are free"
        ))
    }
}

/// An HTTP/2 request body that kept its handler waiting, as the sweep sees it: the bytes
/// that arrived, whether the handler waits now, and the waker to wake when the sweep
/// resets it for arriving slower than the minimum body rate.
#[derive(Debug, Default)]
pub(crate) struct StreamBody {
    bytes: AtomicU64,
    waiting: AtomicBool,
    reset: AtomicBool,
    waker: AtomicWaker,
    /// How long the handler has waited, as the sweep counted it, and when it last looked.
    waited: Mutex<(Duration, Option<Instant>)>,
}

impl StreamBody {
    /// The handler waits for body bytes (`waker` wakes it): `false` if the sweep reset the
    /// body meanwhile.
    pub(crate) fn wait(&self, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        self.waiting.store(true, Ordering::Relaxed);
        !self.reset.load(Ordering::Acquire)
    }

    /// `bytes` of body arrived (or the body ended).
    pub(crate) fn arrived(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// Whether the sweep reset this body.
    pub(crate) fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    /// The sweep's look at `now`: resets (and wakes) the body if it has kept its handler
    /// waiting for [`BODY_RATE_GRACE`] and arrived slower than `min_rate` meanwhile.
    fn sweep(&self, now: Instant, min_rate: u64) -> bool {
        let mut w = self.waited.lock().unwrap_or_else(|e| e.into_inner());
        let since_last =
            w.1.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        w.1 = Some(now);
        if !self.waiting.load(Ordering::Relaxed) {
            return false;
        }
        w.0 += since_last;
        if w.0 < BODY_RATE_GRACE {
            return false;
        }
        let rate = self.bytes.load(Ordering::Relaxed) as f64 / w.0.as_secs_f64();
        if rate >= min_rate as f64 {
            return false;
        }
        self.reset.store(true, Ordering::Release);
        self.waker.wake();
        true
    }
}

impl std::fmt::Debug for UpgradeHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradeHold").finish_non_exhaustive()
    }
}

/// Told when an upgraded connection ends by itself; dropped without a call when the drain
/// deadline cuts it (a measurement records `drain_deadline` then).
pub(crate) trait UpgradeEnd: Send {
    /// The upgraded I/O was dropped: the connection ended normally.
    fn ended(self: Box<Self>);
}

/// What the sweep last saw of a connection.
#[derive(Debug)]
struct Sweep {
    started: u64,
    quiet_since: Instant,
    partial_since: Option<Instant>,
    /// When the sweep last looked.
    at: Instant,
    /// How long the request in flight has kept the application waiting for its body, and
    /// the body bytes counted when the request started.
    body_waited: Duration,
    body_bytes_at_start: u64,
}

/// The limits and timeouts the sweep applies (`Config`'s bundle of them, handed over as it is).
pub(crate) use crate::config::Timeouts;

/// How long the application may wait for a request body before its rate is checked
/// (Kestrel's grace period for its minimum request body data rate).
pub(crate) const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

impl Timeouts {
    /// How often the sweep looks: a quarter of the shorter timeout, between 100 ms and 1 s.
    pub(crate) fn tick(&self) -> Duration {
        let shortest = self.header_read.min(self.idle);
        (self.max_age.map_or(shortest, |age| shortest.min(age)) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

const STARTED_ONE: u64 = 1 << 32;
const IN_FLIGHT_MASK: u64 = STARTED_ONE - 1;

impl ConnState {
    fn new(
        wake: CancellationToken,
        id: u64,
        upgrade_slots: Arc<UpgradeSlots>,
        admission: Option<Arc<Controller>>,
    ) -> ConnState {
        // Fibonacci hashing of the id: a well-spread fraction, no random source needed.
        let jitter = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        ConnState {
            aged: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            opened: Instant::now(),
            id,
            jitter,
            activity: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            reads_at_end: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
            wake,
            sweep: Mutex::new(Sweep {
                started: 0,
                quiet_since: Instant::now(),
                partial_since: None,
                at: Instant::now(),
                body_waited: Duration::ZERO,
                body_bytes_at_start: 0,
            }),
            socket: Mutex::new(None),
            body_bytes: AtomicU64::new(0),
            body_waiting: AtomicBool::new(false),
            upgrade: Upgrade::default(),
            upgrade_slots,
            admission,
            admission_released: AtomicBool::new(false),
            h2_bodies: Mutex::new(Vec::new()),
        }
    }

    /// Notes that the application waits for request body bytes (`true`) or not.
    #[inline]
    pub(crate) fn body_waiting(&self, waiting: bool) {
        if self.body_waiting.load(Ordering::Relaxed) != waiting {
            self.body_waiting.store(waiting, Ordering::Relaxed);
        }
    }

    /// Notes that `bytes` of request body arrived (or the body ended).
    #[inline]
    pub(crate) fn body_arrived(&self, bytes: u64) {
        if bytes > 0 {
            self.body_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        self.body_waiting(false);
    }

    /// Keeps the socket hyper is done with, for [`ConnState::take_socket`].
    pub(crate) fn keep_socket(&self, socket: TcpStream) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket);
    }

    /// The socket hyper dropped, if it did (not after an upgrade: the upgraded I/O owns it).
    pub(crate) fn take_socket(&self) -> Option<TcpStream> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

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

    /// Records that bytes were written to the connection.
    #[inline]
    pub(crate) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that bytes were read from the connection; returns how many reads did before.
    #[inline]
    pub(crate) fn read(&self) -> u64 {
        self.reads.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops serving new streams of this HTTP/2 connection (the drain, once its GOAWAY's
    /// grace is over): see [`ConnState::is_refusing`].
    pub(crate) fn refuse_new_streams(&self) {
        self.refusing.store(true, Ordering::Relaxed);
    }

    /// Whether a new stream is refused (`REFUSED_STREAM`): its client ignored the GOAWAY.
    #[inline]
    pub(crate) fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Registers an HTTP/2 request body that keeps its handler waiting, for the sweep.
    pub(crate) fn watch_stream_body(&self) -> Arc<StreamBody> {
        let body = Arc::new(StreamBody::default());
        let mut bodies = self.h2_bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.retain(|b| b.strong_count() > 0);
        bodies.push(Arc::downgrade(&body));
        body
    }

    /// Whether the connection outlived its maximum age.
    #[inline]
    pub(crate) fn aged(&self) -> bool {
        self.aged.load(Ordering::Relaxed)
    }

    /// Whether the connection was opened after readiness turned off (`unready_mark` is
    /// [`Counters::unready_mark`](crate::counters::Counters::unready_mark)).
    #[inline]
    pub(crate) fn opened_after(&self, unready_mark: u64) -> bool {
        self.id.saturating_add(1) >= unready_mark
    }

    /// When, in the shutdown delay's close schedule spread over `spread`, this connection is
    /// due to be closed: its next response after that closes it (`Connection: close`, or a
    /// graceful GOAWAY). Spread evenly over the connections.
    #[inline]
    pub(crate) fn close_due(&self, spread: Duration) -> Duration {
        spread.mul_f64(self.jitter)
    }

    /// Closes the connection after the response in progress, as past its maximum age: an
    /// HTTP/1 response carries `Connection: close`, an HTTP/2 connection gets a graceful GOAWAY.
    #[inline]
    pub(crate) fn close_soon(&self) {
        self.aged.store(true, Ordering::Relaxed);
    }

    /// Notes that the connection speaks HTTP/2.
    #[inline]
    pub(crate) fn saw_http2(&self) {
        if !self.http2.load(Ordering::Relaxed) {
            self.http2.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the connection carried an HTTP/2 request.
    #[inline]
    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// Whether the sweep closed this connection for a timeout.
    #[inline]
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// The sweep's look at this connection at `now`: which timeout it outlived, if any. A
    /// connection with a request in flight is timed out only when the application waits for
    /// a request body that arrives slower than the minimum rate; otherwise its handler decides.
    ///
    /// HTTP/2 (a connection that sent the preface) has no partial request to time out: bytes
    /// read after its last stream ended are control frames (SETTINGS ACK, WINDOW_UPDATE,
    /// PING), and a request's headers are h2's to assemble. Its clock is the idle timeout,
    /// from its last request or, before any, from its opening: a gRPC channel connects ahead
    /// of its first call, as Go's HTTP/2 server lets it (`IdleTimeout` from the start).
    fn sweep(&self, now: Instant, timeouts: Timeouts) -> Option<&'static str> {
        let activity = self.activity();
        let (started, in_flight) = (activity >> 32, activity & IN_FLIGHT_MASK);
        let mut s = self.sweep.lock().unwrap_or_else(|e| e.into_inner());
        let since_last = now.saturating_duration_since(s.at);
        s.at = now;
        if started != s.started {
            s.started = started;
            s.quiet_since = now;
            s.partial_since = None;
            s.body_waited = Duration::ZERO;
            s.body_bytes_at_start = self.body_bytes.load(Ordering::Relaxed);
            return None;
        }
        if in_flight > 0 {
            let min_rate = timeouts.min_body_rate?;
            if !self.body_waiting.load(Ordering::Relaxed) {
                return None;
            }
            s.body_waited += since_last;
            if s.body_waited < BODY_RATE_GRACE {
                return None;
            }
            let arrived = self.body_bytes.load(Ordering::Relaxed) - s.body_bytes_at_start;
            let rate = arrived as f64 / s.body_waited.as_secs_f64();
            return (rate < min_rate as f64).then_some("body_rate");
        }
        let http2 = self.is_http2();
        let (since, limit, which) = if started == 0 && !http2 {
            (s.quiet_since, timeouts.header_read, "header_read")
        } else if !http2
            && self.reads.load(Ordering::Relaxed) > self.reads_at_end.load(Ordering::Relaxed)
        {
            let since = *s.partial_since.get_or_insert(now);
            (since, timeouts.header_read, "header_read")
        } else {
            (s.quiet_since, timeouts.idle, "idle")
        };
        (now.saturating_duration_since(since) > limit).then_some(which)
    }

    /// The request whose `guard` this is switched protocols (`101`): it stays in flight,
    /// and `end` is kept, until the upgraded I/O is dropped ([`ConnState::release_upgrade`])
    /// or cut ([`ConnState::cut_upgrade`]).
    pub(crate) fn hold_upgrade(
        &self,
        guard: RequestGuard,
        slot: UpgradeSlot,
        end: Option<Box<dyn UpgradeEnd>>,
    ) {
        if let Some(admission) = &self.admission {
            // An upgraded connection is no longer a request for admission control: its slot
            // goes back now (the drain still waits for it through `guard`).
            if !self.admission_released.swap(true, Ordering::Relaxed) {
                admission.release();
            }
        }
        let u = &self.upgrade;
        *u.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(UpgradeHold {
            _guard: guard,
            _slot: slot,
            end,
        });
        u.upgraded.store(true, Ordering::Release);
    }

    /// Whether a `101` response was produced on this connection.
    #[inline]
    pub(crate) fn is_upgraded(&self) -> bool {
        self.upgrade.upgraded.load(Ordering::Acquire)
    }

    /// Whether the upgraded connection is still open (neither released nor cut).
    pub(crate) fn upgrade_open(&self) -> bool {
        self.is_upgraded()
            && self
                .upgrade
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }

    /// The upgraded I/O was dropped: the request leaves flight and is recorded as completed.
    pub(crate) fn release_upgrade(&self) {
        if !self.is_upgraded() {
            return;
        }
        let held = self
            .upgrade
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(UpgradeHold { _guard, end, .. }) = held {
            if let Some(end) = end {
                end.ended();
            }
            drop(_guard);
            self.upgrade.ended.notify_one();
        }
    }

    /// The drain deadline: the upgraded I/O fails from now on (its tasks are woken so that
    /// they see it), the request leaves flight, its measurement is dropped unfinished.
    /// Returns whether it was still open.
    pub(crate) fn cut_upgrade(&self) -> bool {
        let u = &self.upgrade;
        u.cut.store(true, Ordering::Release);
        u.reader.wake();
        u.writer.wake();
        let held = u.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        u.ended.notify_one();
        held.is_some()
    }

    /// Waits until the upgraded connection is released or cut (returns at once if it is not
    /// open).
    pub(crate) async fn upgrade_ended(&self) {
        while self.upgrade_open() {
            self.upgrade.ended.notified().await;
        }
    }

    /// For the upgraded I/O's reads: `true` once cut; else registers `waker` to be woken by
    /// the cut. Never called before the upgrade.
    #[inline]
    pub(crate) fn upgraded_read_cut(&self, waker: &std::task::Waker) -> bool {
        self.upgrade.reader.register(waker);
        self.upgrade.cut.load(Ordering::Acquire)
    }

    /// As [`ConnState::upgraded_read_cut`], for writes.
    #[inline]
    pub(crate) fn upgraded_write_cut(&self, waker: &std::task::Waker) -> bool {
        self.upgrade.writer.register(waker);
        self.upgrade.cut.load(Ordering::Acquire)
    }

    /// A value that changes whenever a request starts or ends or bytes are written: equal
    /// snapshots some time apart mean the connection did nothing in between.
    pub(crate) fn progress(&self) -> (u64, u64) {
        (self.activity(), self.writes.load(Ordering::Relaxed))
    }
}

/// Counts one request in flight until dropped: when the response body ends, errors, or is
/// dropped by an aborted client.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ConnState>);

impl RequestGuard {
    /// A slot for this request's upgraded connection, if the cap leaves one.
    pub(crate) fn upgrade_slot(&self) -> Option<UpgradeSlot> {
        self.0.upgrade_slots.take()
    }

    /// Keeps this request in flight until its connection's upgraded I/O is dropped or cut
    /// (see [`ConnState::hold_upgrade`]).
    pub(crate) fn hold_upgrade(self, slot: UpgradeSlot, end: Option<Box<dyn UpgradeEnd>>) {
        let conn = self.0.clone();
        conn.hold_upgrade(self, slot, end);
    }
}

impl Drop for RequestGuard {
    #[inline]
    fn drop(&mut self) {
        let c = &self.0;
        c.reads_at_end
            .store(c.reads.load(Ordering::Relaxed), Ordering::Relaxed);
        c.activity.fetch_sub(1, Ordering::AcqRel);
        // Every request with a guard was admitted (the shed ones have none). Out of line: with
        // admission off, this drop (inlined into hyper's write path) grows by one branch only.
        if let Some(admission) = &c.admission {
            release_admission(c, admission);
        }
    }
}

/// Gives a request's admission slot back, unless its upgrade gave it back at its `101`.
#[inline(never)]
fn release_admission(c: &ConnState, admission: &Controller) {
    if !c.admission_released.load(Ordering::Relaxed) {
        admission.release();
    }
}

/// The live connections of the application listener: the registry, and what its
/// connections share (the cap on upgraded connections). What the lifecycle counts about them
/// (requests after readiness turned off, connections the drain closed) is in
/// [`Counters`](crate::counters::Counters).
#[derive(Debug, Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// The cap on upgraded connections.
    pub(crate) upgrade_slots: Arc<UpgradeSlots>,
    /// HTTP/2 streams reset by the sweep for a request body slower than the minimum rate.
    pub(crate) stream_bodies_reset: AtomicU64,
    /// Admission control (`PODCYCLE_ADMISSION`), when it is on.
    pub(crate) admission: Option<Arc<Controller>>,
}

/// Most admin connections open at once; further ones wait in the listener's backlog.
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The connection limit used where the file-descriptor limit cannot be read (not Linux, no
/// `/proc`) or is unlimited.
pub(crate) const FALLBACK_MAX_CONNECTIONS: usize = 10_000;

/// The soft "Max open files" limit in the text of `/proc/self/limits`; `None` when it is
/// missing, unreadable or `unlimited`.
pub(crate) fn open_files_soft_limit(limits: &str) -> Option<usize> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// The application connections a file-descriptor limit of `open_files` leaves room for: the
/// limit less the admin listener's connections and a reserve of max(64, limit/8) for the
/// runtime, the listeners and the application's own files; at least 1.
pub(crate) fn connections_for_fd_limit(open_files: usize) -> usize {
    let reserve = ADMIN_MAX_CONNECTIONS + (open_files / 8).max(64);
    open_files.saturating_sub(reserve).max(1)
}

/// The application connection limit in force: `configured` (`Config::max_connections`) or the
/// one derived from the file-descriptor limit; logged, with a warning when a configured value
/// exceeds what the descriptor limit leaves room for.
pub(crate) fn max_app_connections(configured: Option<usize>) -> usize {
    let open_files = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(open_files_soft_limit);
    let derived = open_files.map_or(FALLBACK_MAX_CONNECTIONS, connections_for_fd_limit);
    let limit = match configured {
        Some(n) => {
            if let Some(open_files) = open_files.filter(|_| n > derived) {
                tracing::warn!(
                    max_connections = n,
                    open_files,
                    room_for = derived,
                    "PODCYCLE_MAX_CONNECTIONS exceeds what the file-descriptor limit leaves room \
                     for: a connection flood can exhaust descriptors and starve the probes; \
                     raise `ulimit -n` or lower the limit"
                );
            }
            n
        }
        None => derived,
    };
    match open_files {
        Some(open_files) => tracing::info!(
            max_connections = limit,
            open_files,
            "application connection limit (further connections wait in the backlog)"
        ),
        None => tracing::info!(
            max_connections = limit,
            "application connection limit (further connections wait in the backlog; \
             file-descriptor limit unknown or unlimited)"
        ),
    }
    limit
}

impl Connections {
    /// The application listener's connections, under `admission` control if it is on.
    pub(crate) fn new(admission: Option<Arc<Controller>>) -> Connections {
        Connections {
            admission,
            ..Connections::default()
        }
    }

    /// Registers a connection; it stays registered until the guard is dropped.
    /// Registers a connection whose task `wake` wakes; it stays registered until the guard is
    /// dropped.
    pub(crate) fn open(
        self: &Arc<Self>,
        wake: CancellationToken,
    ) -> (Arc<ConnState>, ConnectionGuard) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(
            wake,
            id,
            self.upgrade_slots.clone(),
            self.admission.clone(),
        ));
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

    /// Connections opened so far: the shutdown delay watches it for new arrivals.
    pub(crate) fn opened(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Times out the connections that outlived `timeouts` (with nothing in flight, or with
    /// a request body arriving too slowly): marks them and wakes their tasks, which close
    /// them. Returns how many.
    pub(crate) fn sweep(&self, timeouts: Timeouts) -> usize {
        let now = Instant::now();
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        for c in live.values() {
            if c.timed_out() {
                continue;
            }
            if let Some(max_age) = timeouts.max_age {
                let limit = max_age.mul_f64(0.9 + 0.2 * c.jitter);
                if !c.aged() && now.saturating_duration_since(c.opened) > limit {
                    c.aged.store(true, Ordering::Relaxed);
                }
            }
            if let Some(min_rate) = timeouts.min_body_rate.filter(|_| c.is_http2()) {
                self.sweep_stream_bodies(c, now, min_rate);
            }
            if let Some(which) = c.sweep(now, timeouts) {
                tracing::debug!(timeout = which, "closing a connection that timed out");
                c.timed_out.store(true, Ordering::Release);
                c.wake.cancel();
                closed += 1;
            }
        }
        closed
    }

    /// Resets the HTTP/2 request bodies of `conn` that arrive slower than `min_rate`.
    fn sweep_stream_bodies(&self, conn: &ConnState, now: Instant, min_rate: u64) {
        let mut bodies = conn.h2_bodies.lock().unwrap_or_else(|e| e.into_inner());
        if bodies.is_empty() {
            return;
        }
        bodies.retain(|b| match b.upgrade() {
            Some(body) => {
                if body.sweep(now, min_rate) {
                    self.stream_bodies_reset.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("resetting an HTTP/2 stream whose body arrives too slowly");
                    return false;
                }
                true
            }
            None => false,
        });
    }

    /// Upgraded connections (WebSockets) open now.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // read by the upgraded gauge
    pub(crate) fn upgraded(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| c.upgrade_open())
            .count()
    }

    /// Requests in flight over every open connection.
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max processes             96365                96365                processes
Max open files            1024                 1048576              files
Max locked memory         8388608              8388608              bytes
";

    #[test]
    fn the_soft_open_files_limit_is_read_from_proc_self_limits() {
        assert_eq!(open_files_soft_limit(LIMITS), Some(1024));
        let unlimited = LIMITS.replace("1024                 1048576", "unlimited unlimited");
        assert_eq!(open_files_soft_limit(&unlimited), None);
        assert_eq!(
            open_files_soft_limit("Max processes 10 10 processes\n"),
            None
        );
        assert_eq!(open_files_soft_limit(""), None);
        assert_eq!(open_files_soft_limit("Max open files\n"), None);
    }

    #[test]
    fn the_derived_limit_leaves_room_for_the_admin_listener_and_the_runtime() {
        assert_eq!(connections_for_fd_limit(256), 256 - 64 - 64);
        assert_eq!(connections_for_fd_limit(1024), 1024 - 64 - 128);
        assert_eq!(
            connections_for_fd_limit(1_048_576),
            1_048_576 - 64 - 131_072
        );
        assert_eq!(connections_for_fd_limit(100), 1, "never zero");
        assert_eq!(connections_for_fd_limit(0), 1);
    }

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(1),
        idle: Duration::from_secs(4),
        max_age: None,
        min_body_rate: Some(240),
    };

    #[test]
    fn an_admitted_request_gives_its_slot_back_with_its_guard_and_an_upgrade_at_its_101() {
        let admission =
            Controller::new(crate::config::Admission::Fixed(2), Duration::ZERO).unwrap();
        let connections = Arc::new(Connections::new(Some(admission.clone())));
        let (conn, _registered) = connections.open(CancellationToken::new());
        assert!(admission.try_acquire());
        let guard = conn.start();
        assert_eq!(admission.in_flight(), 1);
        drop(guard);
        assert_eq!(admission.in_flight(), 0, "released with the guard");
        // An upgrade: its slot goes back at the `101`, the connection stays in flight.
        assert!(admission.try_acquire());
        let guard = conn.start();
        let slot = guard.upgrade_slot().unwrap();
        guard.hold_upgrade(slot, None);
        assert_eq!(admission.in_flight(), 0, "released at the 101");
        assert_eq!(
            conn.in_flight(),
            1,
            "the upgraded connection is still in flight"
        );
        conn.release_upgrade();
        assert_eq!(conn.in_flight(), 0);
        assert_eq!(admission.in_flight(), 0, "not released twice");
        assert!(admission.try_acquire() && admission.try_acquire());
        assert!(!admission.try_acquire(), "the limit of 2 still holds");
    }

    #[test]
    fn control_frames_after_the_last_http2_stream_leave_the_connection_idle() {
        let connections = Arc::new(Connections::default());
        let (conn, _registered) = connections.open(CancellationToken::new());
        let t0 = Instant::now();
        assert_eq!(conn.sweep(t0, TIMEOUTS), None);
        conn.saw_http2();
        drop(conn.start());
        assert_eq!(
            conn.sweep(t0, TIMEOUTS),
            None,
            "a request started: clocks reset"
        );
        conn.read(); // a PING, a SETTINGS ACK: bytes after the last stream ended
        let later = t0 + Duration::from_secs(2);
        assert_eq!(conn.sweep(later, TIMEOUTS), None, "not a partial request");
        assert_eq!(
            conn.sweep(t0 + Duration::from_secs(5), TIMEOUTS),
            Some("idle")
        );
        // The same bytes on HTTP/1 are a partial request.
        let (h1, _registered) = connections.open(CancellationToken::new());
        drop(h1.start());
        assert_eq!(h1.sweep(t0, TIMEOUTS), None);
        h1.read();
        assert_eq!(h1.sweep(t0 + Duration::from_millis(100), TIMEOUTS), None);
        assert_eq!(
            h1.sweep(t0 + Duration::from_secs(2), TIMEOUTS),
            Some("header_read")
        );
    }

    #[test]
    fn a_preface_only_http2_connection_gets_the_idle_timeout() {
        let connections = Arc::new(Connections::default());
        let (conn, _registered) = connections.open(CancellationToken::new());
        conn.saw_http2();
        let t0 = Instant::now();
        assert_eq!(conn.sweep(t0 + Duration::from_secs(2), TIMEOUTS), None);
        assert_eq!(
            conn.sweep(t0 + Duration::from_secs(5), TIMEOUTS),
            Some("idle")
        );
    }

    #[test]
    fn a_stream_body_waiting_slower_than_the_minimum_rate_is_reset_after_the_grace() {
        let connections = Arc::new(Connections::default());
        let (conn, _registered) = connections.open(CancellationToken::new());
        conn.saw_http2();
        let body = conn.watch_stream_body();
        let fast = conn.watch_stream_body();
        let waker = futures_util::task::noop_waker();
        assert!(body.wait(&waker) && fast.wait(&waker));
        let t0 = Instant::now();
        connections.sweep_stream_bodies(&conn, t0, 240);
        fast.arrived(10_000);
        assert!(fast.wait(&waker));
        connections.sweep_stream_bodies(&conn, t0 + Duration::from_secs(3), 240);
        assert!(!body.is_reset(), "within the grace");
        connections.sweep_stream_bodies(&conn, t0 + Duration::from_secs(6), 240);
        assert!(body.is_reset(), "no byte in 6 s");
        assert!(!fast.is_reset(), "10 kB in 6 s is above 240 B/s");
        assert!(!body.wait(&waker), "a reset body stops waiting");
        assert_eq!(connections.stream_bodies_reset.load(Ordering::Relaxed), 1);
        drop(fast);
        connections.sweep_stream_bodies(&conn, t0 + Duration::from_secs(7), 240);
        assert!(
            conn.h2_bodies.lock().unwrap().is_empty(),
            "dropped bodies forgotten"
        );
    }

    #[test]
    fn upgrades_beyond_the_cap_get_no_slot_until_one_is_given_back() {
        let slots = Arc::new(UpgradeSlots::default());
        slots.set_max(2);
        let a = slots.take().expect("first");
        let _b = slots.take().expect("second");
        assert!(slots.take().is_none(), "the cap is 2");
        drop(a);
        assert!(slots.take().is_some(), "a slot given back is free again");
    }

    #[test]
    fn a_full_listener_fails_readiness_until_a_sixteenth_of_its_slots_are_free() {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
        let slots = AppSlots::default();
        assert!(slots.line().is_ok(), "not serving yet");
        slots.serve(semaphore.clone(), 64);
        let held = semaphore.clone().try_acquire_many_owned(64).unwrap();
        assert!(
            slots.line().is_ok(),
            "full, but the accept loop has not met it yet"
        );
        slots.mark_full();
        let err = slots.line().unwrap_err();
        assert!(
            err.contains("64 in use") && err.contains("4 are free"),
            "{err}"
        );
        let mut held = held;
        drop(held.split(3).unwrap());
        assert!(slots.line().is_err(), "3 free: still failing (no flapping)");
        drop(held.split(1).unwrap());
        assert!(slots.line().is_ok(), "4 free: ready again");
        assert!(
            slots.line().is_ok(),
            "and stays so until the loop finds it full again"
        );
    }

    #[test]
    fn guards_count_requests_and_connections() {
        let connections = Arc::new(Connections::default());
        let (conn, registered) = connections.open(CancellationToken::new());
        let a = conn.start();
        let b = conn.start();
        assert_eq!((connections.len(), connections.in_flight()), (1, 2));
        drop(a);
        assert_eq!(conn.in_flight(), 1);
        assert_eq!(conn.activity() >> 32, 2, "two requests started");
        drop(b);
        drop(registered);
        assert_eq!((connections.len(), connections.in_flight()), (0, 0));
    }
}
