//! Admission control: how many of the application's requests may be in flight at once, fixed
//! or found from the latency the service shows.
//!
//! The serving stack asks [`Controller::try_acquire`] before a request reaches the
//! application; the request's in-flight guard (the connection registry's `RequestGuard`)
//! gives the slot back when the response ends. Per admitted request that is one atomic add
//! (the in-flight count and the count of admitted requests share one word), a load of the
//! limit, and one atomic subtract (whose result is tested for waiting requests): no clock
//! read, and nothing in the request's future but an empty slot for a wait.
//!
//! The adaptive limit is a gradient controller in the manner of Envoy's adaptive concurrency
//! filter and Netflix's concurrency-limits `Gradient2Limit`, measured off the request path by
//! a sampler task ([`Controller::run`]): every [`SAMPLE`] it reads the count in flight, and
//! over a window (at least [`WINDOW`] and [`MIN_SAMPLES`] completed requests) Little's law
//! gives the requests' mean latency, the time-integral of the count in flight over the
//! requests completed. That latency is compared with a **no-load baseline** (Envoy's
//! `minRTT`): the lowest window latency seen, measured afresh with the limit pinned at
//! [`PROBE_LIMIT`] for one window when the limit sheds and the last measurement is older
//! than [`PROBE_EVERY`] (or there is none yet); the limit then goes at once to where the
//! gradient settles for the throughput it saw ([`Gradient::settle`]). Requests are shed
//! during that window only if more than [`PROBE_LIMIT`] arrive at once, and only when the
//! service was shedding already: a service under its limit never probes, so never sheds.
//!
//! The gradient is `TOLERANCE × baseline / latency`, clamped to `0.5..=1.0`: `1` while latency
//! stays within [`TOLERANCE`] of the baseline (the limit grows by its square root, smoothed
//! by [`SMOOTHING`]), below `1` when a queue makes latency rise (the limit shrinks at once in
//! proportion, by at most half a window, and without the headroom, so it settles where latency
//! is within the tolerance). A window whose requests never filled half the limit leaves it as
//! it is (the load, not the service, bounded the latency). The limit stays within
//! [`MIN_LIMIT`]..=[`MAX_LIMIT`], or under a lower cap (`adaptive:N`).
//!
//! **The queue** (`PODCYCLE_ADMISSION_QUEUE`, off by default): a request beyond the limit may
//! wait up to a bound for a slot ([`Controller::enqueue`], a [`Ticket`]). While anyone waits,
//! a flag in the controller's word makes every new request fail [`Controller::try_acquire`]
//! and queue behind them (first come, first served), and makes [`Controller::release`] hand
//! the freed slot to the first waiter. The admitted path is unchanged: the flag is a bit of
//! the word it already adds to and compares, and release tests it in the value its subtract
//! returns. A waiting request is not in flight; the drain sheds every waiter when it begins
//! ([`Controller::close_queue`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::Admission;

/// How often the sampler reads the count in flight.
pub(crate) const SAMPLE: Duration = Duration::from_millis(10);
/// The least time a window covers.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// The fewest completed requests a window needs before it updates the limit.
pub(crate) const MIN_SAMPLES: u64 = 10;
/// How far above its no-load baseline latency may rise before the limit shrinks (Envoy's
/// `buffer` of 25%).
pub(crate) const TOLERANCE: f64 = 1.25;
/// The weight of each window's new limit when it grows (Gradient2's `smoothing`).
pub(crate) const SMOOTHING: f64 = 0.2;
/// The adaptive limit to start with.
pub(crate) const INITIAL_LIMIT: u32 = 20;
/// The least the adaptive limit goes to.
pub(crate) const MIN_LIMIT: u32 = 4;
/// The most the adaptive limit goes to.
pub(crate) const MAX_LIMIT: u32 = 1000;
/// The limit while the no-load baseline is measured (Envoy's `min_concurrency` is 3; two
/// requests at once see no queue in any service worth limiting).
pub(crate) const PROBE_LIMIT: u32 = 2;
/// The least time between two measurements of the baseline (Envoy re-measures every 60 s).
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(30);
/// The longest a measurement of the baseline waits for the requests in flight to go down to
/// [`PROBE_LIMIT`] and for its window to fill, before it gives up.
pub(crate) const PROBE_MAX: Duration = Duration::from_secs(2);

/// What the limit grows by while latency is flat: the square root of the limit (Envoy's and
/// Gradient's headroom; Gradient2's fixed 4 would hold the limit at 8 or more under any
/// latency, too many for a service whose capacity is a handful of requests).
fn headroom(limit: f64) -> f64 {
    limit.sqrt()
}

/// One admitted request in the controller's word: `+1` in flight (low 31 bits) and `+1`
/// admitted so far (high 32 bits, wrapping).
const ONE: u64 = (1 << 32) + 1;
const IN_FLIGHT: u64 = (1 << 31) - 1;
/// Bit 31 of the controller's word: requests are waiting for a slot. Above any limit, so
/// that [`Controller::try_acquire`] fails while it is set (new requests queue behind the
/// waiting ones).
const QUEUED: u64 = 1 << 31;

/// The admission controller of the application listener: its limit, its requests in flight
/// and the requests it shed.
#[derive(Debug)]
pub(crate) struct Controller {
    /// Bits 0 to 30: admitted requests in flight; bit 31: [`QUEUED`]; high 32 bits: requests
    /// admitted so far.
    state: AtomicU64,
    limit: AtomicU32,
    shed: AtomicU64,
    adaptive: bool,
    /// The adaptive limit's ceiling (`adaptive:N`; [`MAX_LIMIT`] without a cap).
    max: u32,
    /// How long a request beyond the limit may wait for a slot (zero: shed at once).
    queue: Duration,
    /// The requests waiting for a slot, first come first; the [`QUEUED`] bit is set while it
    /// is not empty (changed under its lock only).
    waiters: Mutex<VecDeque<Arc<Waiter>>>,
    /// The drain began: nobody waits any more.
    closed: AtomicBool,
}

impl Controller {
    /// The controller for `admission`, whose requests beyond the limit may wait up to `queue`
    /// for a slot; `None` when it is off (the serving path then never looks further).
    pub(crate) fn new(admission: Admission, queue: Duration) -> Option<Arc<Controller>> {
        let (limit, adaptive, max) = match admission {
            Admission::Off => return None,
            Admission::Fixed(n) => (n.max(1), false, n.max(1)),
            Admission::Adaptive => (INITIAL_LIMIT, true, MAX_LIMIT),
            Admission::AdaptiveUpTo(cap) => {
                let cap = cap.clamp(MIN_LIMIT, MAX_LIMIT);
                (INITIAL_LIMIT.min(cap), true, cap)
            }
        };
        Some(Arc::new(Controller {
            state: AtomicU64::new(0),
            limit: AtomicU32::new(limit),
            shed: AtomicU64::new(0),
            adaptive,
            max,
            queue,
            waiters: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
        }))
    }

    /// Admits one request if the limit allows and nobody waits: `true`, and
    /// [`Controller::release`] must follow when it ends; `false` (nothing to release) at the
    /// limit, or while requests wait for a slot (the [`QUEUED`] bit is above any limit).
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let before = self.state.fetch_add(ONE, Ordering::AcqRel);
        if (before as u32) < self.limit.load(Ordering::Relaxed) {
            return true;
        }
        self.refuse();
        false
    }

    #[cold]
    #[inline(never)]
    fn refuse(&self) {
        self.state.fetch_sub(ONE, Ordering::AcqRel);
    }

    /// Admits one request whatever the limit (a WebSocket upgrade, never shed).
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire_anyway(&self) {
        self.state.fetch_add(ONE, Ordering::AcqRel);
    }

    /// Counts one request shed.
    #[cold]
    #[inline(never)]
    pub(crate) fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted request has ended: its slot goes to the first waiting request, if any.
    #[inline]
    pub(crate) fn release(&self) {
        let before = self.state.fetch_sub(1, Ordering::AcqRel);
        if before & QUEUED != 0 {
            self.hand_over();
        }
    }

    /// A request beyond the limit: its place in the queue, or `None` when it must be shed at
    /// once (no queue, or the drain began). The ticket may be admitted already.
    #[cold]
    #[inline(never)]
    pub(crate) fn enqueue(self: &Arc<Self>) -> Option<Ticket> {
        if self.queue.is_zero() || self.closed.load(Ordering::Acquire) {
            return None;
        }
        let waiter = Arc::new(Waiter::default());
        {
            let mut waiters = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            waiters.push_back(waiter.clone());
            self.state.fetch_or(QUEUED, Ordering::AcqRel);
            // A slot may have freed up since `try_acquire` failed (its release saw no waiter),
            // or this request's own attempt may have hidden one from a hand-over.
            self.admit_waiting(&mut waiters);
        }
        Some(Ticket {
            controller: self.clone(),
            waiter,
            deadline: Box::pin(tokio::time::sleep(self.queue)),
        })
    }

    /// The drain began: every waiting request is shed now, and none waits from now on.
    #[cold]
    pub(crate) fn close_queue(&self) {
        let mut waiters = self.lock();
        self.closed.store(true, Ordering::Release);
        for w in waiters.drain(..) {
            if w.settle(WAITING, GONE) {
                w.wake();
            }
        }
        self.state.fetch_and(!QUEUED, Ordering::AcqRel);
    }

    /// A slot was freed (or the limit rose) while requests wait: admit the first ones.
    #[cold]
    #[inline(never)]
    fn hand_over(&self) {
        let mut waiters = self.lock();
        self.admit_waiting(&mut waiters);
    }

    /// Admits waiting requests from the front of the queue while the limit allows; clears the
    /// [`QUEUED`] bit when nobody is left. Under the queue's lock.
    fn admit_waiting(&self, waiters: &mut VecDeque<Arc<Waiter>>) {
        while let Some(first) = waiters.front() {
            if first.state.load(Ordering::Acquire) == WAITING {
                if self.in_flight() >= self.limit() {
                    break;
                }
                // The slot first, then the ticket: its request may end (and release) at once.
                self.state.fetch_add(ONE, Ordering::AcqRel);
                if first.settle(WAITING, ADMITTED) {
                    first.wake();
                } else {
                    // Gone meanwhile (its bound passed, or it was dropped).
                    self.refuse();
                }
            }
            waiters.pop_front();
        }
        if waiters.is_empty() {
            self.state.fetch_and(!QUEUED, Ordering::AcqRel);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Waiter>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the limit; admits waiting requests if it rose.
    fn set_limit(&self, limit: u32) {
        let before = self.limit.swap(limit, Ordering::Relaxed);
        if limit > before && self.state.load(Ordering::Acquire) & QUEUED != 0 {
            self.hand_over();
        }
    }

    /// The limit in force.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// The admitted requests in flight.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn in_flight(&self) -> u32 {
        (self.state.load(Ordering::Relaxed) & IN_FLIGHT) as u32
    }

    /// The requests admitted so far (wrapping at 2³²).
    fn admitted(&self) -> u32 {
        (self.state.load(Ordering::Relaxed) >> 32) as u32
    }

    /// The requests shed so far.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// The adaptive controller's sampler: runs until dropped (the serving stack holds it
    /// while the listener serves). Returns at once for a fixed limit.
    pub(crate) async fn run(self: Arc<Self>) {
        if !self.adaptive {
            return;
        }
        let mut sampler = Sampler::new(&self, Instant::now());
        let mut tick = tokio::time::interval(SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sampler.sample(&self, Instant::now());
        }
    }
}

/// A waiting request's state: [`WAITING`], then [`ADMITTED`] (a slot is its) or [`GONE`]
/// (its bound passed, the drain shed it, or it was dropped), then [`TAKEN`] once admitted
/// and served.
const WAITING: u8 = 0;
const ADMITTED: u8 = 1;
const GONE: u8 = 2;
const TAKEN: u8 = 3;

/// A request waiting for a slot, as the queue holds it.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    fn settle(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn wake(&self) {
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A request's place in the queue ([`Controller::enqueue`]): [`Ticket::poll_admit`] says
/// when it is admitted or shed. Dropped while waiting, it leaves the queue; dropped once
/// admitted but before it was told, it gives the slot back.
#[derive(Debug)]
pub(crate) struct Ticket {
    controller: Arc<Controller>,
    waiter: Arc<Waiter>,
    deadline: Pin<Box<Sleep>>,
}

impl Ticket {
    /// `Ready(true)`: admitted, and the slot is the caller's ([`Controller::release`] must
    /// follow, as for [`Controller::try_acquire`]); `Ready(false)`: shed (counted), at the
    /// queue's bound or by the drain.
    pub(crate) fn poll_admit(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        {
            let mut waker = self
                .waiter
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match &mut *waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
        }
        loop {
            match self.waiter.state.load(Ordering::Acquire) {
                ADMITTED => {
                    self.waiter.state.store(TAKEN, Ordering::Release);
                    return Poll::Ready(true);
                }
                WAITING => {
                    if self.deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if self.waiter.settle(WAITING, GONE) {
                        self.controller.count_shed();
                        return Poll::Ready(false);
                    }
                    // Admitted (or shed by the drain) just now: look again.
                }
                GONE => {
                    self.controller.count_shed();
                    return Poll::Ready(false);
                }
                _ => return Poll::Ready(false),
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.waiter.state.swap(GONE, Ordering::AcqRel) == ADMITTED {
            // Admitted, never told: the slot goes back (to the next waiter, if any).
            self.controller.release();
        }
    }
}

/// The adaptive controller's state, kept by its sampler task.
#[derive(Debug)]
struct Sampler {
    gradient: Gradient,
    /// The previous sample: when, and the requests in flight and admitted then.
    at: Instant,
    in_flight: u32,
    admitted: u32,
    /// The window: when it began, the requests in flight and admitted then, the integral of
    /// the count in flight over its time (request-seconds), the most in flight at once.
    window_at: Instant,
    window_in_flight: u32,
    window_admitted: u32,
    area: f64,
    max_in_flight: u32,
    /// Requests shed when the window began.
    window_shed: u64,
    /// When the baseline was last measured, and whether a measurement is under way (with the
    /// limit to go back to, and when it began).
    probed_at: Option<Instant>,
    probe: Option<Probe>,
}

/// A measurement of the baseline under way.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// When it began.
    began: Instant,
    /// The limit before it, and the throughput (requests per second) of the window before it.
    limit: f64,
    throughput: f64,
}

impl Sampler {
    fn new(c: &Controller, now: Instant) -> Sampler {
        let (in_flight, admitted) = (c.in_flight(), c.admitted());
        Sampler {
            gradient: Gradient {
                limit: f64::from(c.limit()),
                baseline_s: 0.0,
                max: f64::from(c.max),
            },
            at: now,
            in_flight,
            admitted,
            window_at: now,
            window_in_flight: in_flight,
            window_admitted: admitted,
            area: 0.0,
            max_in_flight: in_flight,
            window_shed: c.shed(),
            probed_at: None,
            probe: None,
        }
    }

    fn restart_window(&mut self, c: &Controller, now: Instant) {
        self.window_at = now;
        self.window_in_flight = self.in_flight;
        self.window_admitted = self.admitted;
        self.area = 0.0;
        self.max_in_flight = self.in_flight;
        self.window_shed = c.shed();
    }

    fn sample(&mut self, c: &Controller, now: Instant) {
        let (in_flight, admitted) = (c.in_flight(), c.admitted());
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        // Trapezoid: the count in flight moved from the last sample's to this one's.
        self.area += dt * (f64::from(self.in_flight) + f64::from(in_flight)) / 2.0;
        self.max_in_flight = self.max_in_flight.max(in_flight);
        (self.at, self.in_flight, self.admitted) = (now, in_flight, admitted);
        if let Some(probe) = self.probe {
            if now.saturating_duration_since(probe.began) >= PROBE_MAX {
                // The requests in flight never went down (or too few came): give up.
                self.end_probe(c, now, None);
                return;
            }
            if self.max_in_flight > PROBE_LIMIT {
                // Still draining to the probe's limit: the window has not begun.
                self.restart_window(c, now);
                return;
            }
        }
        let elapsed = now.saturating_duration_since(self.window_at);
        let admitted = u64::from(admitted.wrapping_sub(self.window_admitted));
        let completed =
            (admitted + u64::from(self.window_in_flight)).saturating_sub(u64::from(in_flight));
        if elapsed < WINDOW || completed < MIN_SAMPLES {
            return;
        }
        // Little's law: the mean latency is the integral of the count in flight over the
        // requests completed.
        let latency_s = self.area / completed as f64;
        if self.probe.is_some() {
            self.end_probe(c, now, Some(latency_s));
            return;
        }
        let shed = c.shed() > self.window_shed;
        let limit = self.gradient.update(latency_s, self.max_in_flight);
        c.set_limit(limit.round() as u32);
        self.restart_window(c, now);
        if shed
            && self
                .probed_at
                .is_none_or(|at| now.saturating_duration_since(at) >= PROBE_EVERY)
        {
            // Shedding: is the baseline a no-load one? Measure it at a limit that cannot queue.
            self.probe = Some(Probe {
                began: now,
                limit: self.gradient.limit,
                throughput: completed as f64 / elapsed.as_secs_f64(),
            });
            self.probed_at = Some(now);
            c.set_limit(PROBE_LIMIT);
        }
    }

    fn end_probe(&mut self, c: &Controller, now: Instant, latency_s: Option<f64>) {
        if let Some(probe) = self.probe.take() {
            self.gradient.limit = probe.limit;
            if let Some(latency_s) = latency_s {
                self.gradient.baseline_s = latency_s;
                self.gradient.settle(probe.throughput);
            }
            c.set_limit(self.gradient.limit.round() as u32);
        }
        self.restart_window(c, now);
    }
}

/// The limit's arithmetic, apart from the sampling (unit-tested on its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Gradient {
    /// The limit, unrounded.
    pub(crate) limit: f64,
    /// The no-load baseline latency in seconds (`0` before the first window).
    pub(crate) baseline_s: f64,
    /// The most the limit goes to ([`MAX_LIMIT`], or the cap of `adaptive:N`).
    pub(crate) max: f64,
}

impl Gradient {
    /// The limit after a window of mean latency `latency_s` in which at most
    /// `max_in_flight` requests were in flight at once.
    pub(crate) fn update(&mut self, latency_s: f64, max_in_flight: u32) -> f64 {
        let latency_s = latency_s.max(1e-6);
        if self.baseline_s == 0.0 || latency_s < self.baseline_s {
            self.baseline_s = latency_s;
        }
        if f64::from(max_in_flight) < self.limit / 2.0 {
            return self.limit;
        }
        let gradient = (TOLERANCE * self.baseline_s / latency_s).clamp(0.5, 1.0);
        // No queue: the limit probes upward by the headroom, smoothed. A queue: the limit goes
        // down in proportion at once, without the headroom, so that it settles where latency
        // is within the tolerance (Envoy adds the headroom here too, and settles at
        // `TOLERANCE × capacity + √limit`: 4.6 for a service serving 2 at a time, three
        // service times deep).
        let next = if gradient < 1.0 {
            self.limit * gradient
        } else {
            self.limit + headroom(self.limit) * SMOOTHING
        };
        self.limit = next.clamp(f64::from(MIN_LIMIT), self.max);
        self.limit
    }

    /// After a measurement of the baseline: no higher than the limit the gradient settles at
    /// for `throughput` (requests per second) served at the baseline latency, the requests
    /// that need no queue by Little's law, within the tolerance. Jumps there at once instead
    /// of halving window after window.
    pub(crate) fn settle(&mut self, throughput: f64) {
        let unqueued = throughput * self.baseline_s;
        let settled = TOLERANCE * unqueued;
        if settled.is_finite() && settled < self.limit {
            self.limit = settled.clamp(f64::from(MIN_LIMIT), self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that serves `capacity` requests at once in `service` each and queues the
    /// rest, under `clients` clients in a closed loop, for `time` (paused clock): the
    /// controller's sampler runs meanwhile. Returns the requests served and shed, and the
    /// mean latency of the served ones.
    async fn drive(
        c: &Arc<Controller>,
        capacity: usize,
        service: Duration,
        clients: usize,
        time: Duration,
    ) -> (u64, u64, Duration) {
        let queue = Arc::new(tokio::sync::Semaphore::new(capacity));
        let until = Instant::now() + time;
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (c, queue) = (c.clone(), queue.clone());
                tokio::spawn(async move {
                    let (mut served, mut shed, mut total) = (0, 0, Duration::ZERO);
                    while Instant::now() < until {
                        if !c.try_acquire() {
                            c.count_shed();
                            shed += 1;
                            // A client that waits a moment before trying again.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        let start = Instant::now();
                        let turn = queue.acquire().await.unwrap();
                        tokio::time::sleep(service).await;
                        drop(turn);
                        c.release();
                        served += 1;
                        total += start.elapsed();
                    }
                    (served, shed, total)
                })
            })
            .collect();
        let (mut served, mut shed, mut total) = (0, 0, Duration::ZERO);
        for t in tasks {
            let (a, b, d) = t.await.unwrap();
            (served, shed, total) = (served + a, shed + b, total + d);
        }
        (served, shed, total / u32::try_from(served.max(1)).unwrap())
    }

    fn adaptive() -> (Arc<Controller>, tokio::task::JoinHandle<()>) {
        let c = Controller::new(Admission::Adaptive, Duration::ZERO).unwrap();
        let sampler = tokio::spawn(c.clone().run());
        (c, sampler)
    }

    #[tokio::test(start_paused = true)]
    async fn under_capacity_nothing_is_shed_and_the_limit_grows() {
        let (c, sampler) = adaptive();
        // 100 at once, 20 ms each; 16 clients: never a queue.
        let (served, shed, _) = drive(
            &c,
            100,
            Duration::from_millis(20),
            16,
            Duration::from_secs(10),
        )
        .await;
        sampler.abort();
        assert!(served > 1000, "{served}");
        assert_eq!(shed, 0);
        assert!(c.limit() > INITIAL_LIMIT, "limit {}", c.limit());
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_overloaded_from_the_start_finds_its_no_load_latency_and_sheds_the_queue() {
        let (c, sampler) = adaptive();
        // Two at once, 20 ms each (100 requests/s), 48 clients from the first moment: with
        // only a long-term average the controller would take the queued latency as normal.
        let service = Duration::from_millis(20);
        let (_, _, first) = drive(&c, 2, service, 48, Duration::from_secs(1)).await;
        // Within the first second: once the baseline is measured the limit goes straight to
        // where the gradient settles (without that jump, the mean is about 116 ms).
        assert!(
            first <= service * 4,
            "mean latency {first:?} in the first second"
        );
        // Settled: the mean latency of what it admits is within three times the unloaded one.
        let (served, shed, mean) = drive(&c, 2, service, 48, Duration::from_secs(5)).await;
        sampler.abort();
        assert!(shed > 0);
        assert!(
            mean <= service * 3,
            "mean latency {mean:?}, limit {}",
            c.limit()
        );
        // And it still serves at capacity (100/s) or near it.
        assert!(served >= 400, "{served} served in 5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_shrinks_when_latency_rises_and_grows_back_when_it_falls() {
        let (c, sampler) = adaptive();
        // Learns its baseline with room to spare (50 at once).
        let _ = drive(
            &c,
            50,
            Duration::from_millis(20),
            30,
            Duration::from_secs(3),
        )
        .await;
        let before = c.limit();
        // The capacity falls to 4 (a slow dependency): the limit follows it down.
        let _ = drive(&c, 4, Duration::from_millis(20), 60, Duration::from_secs(3)).await;
        let low = c.limit();
        assert!(low < before && low <= 12, "{before} -> {low}");
        // The capacity comes back: the limit grows again.
        let _ = drive(
            &c,
            50,
            Duration::from_millis(20),
            60,
            Duration::from_secs(10),
        )
        .await;
        sampler.abort();
        assert!(c.limit() > low + 10, "{low} -> {}", c.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_that_never_filled_half_the_limit_leaves_it_alone() {
        let (c, sampler) = adaptive();
        let _ = drive(
            &c,
            100,
            Duration::from_millis(10),
            2,
            Duration::from_secs(5),
        )
        .await;
        sampler.abort();
        assert_eq!(c.limit(), INITIAL_LIMIT);
    }

    #[test]
    fn a_fixed_limit_sheds_beyond_it_and_a_shed_request_is_not_in_flight() {
        let c = Controller::new(Admission::Fixed(2), Duration::ZERO).unwrap();
        assert!(c.try_acquire());
        assert!(c.try_acquire());
        assert!(!c.try_acquire());
        assert_eq!(c.in_flight(), 2);
        c.release();
        assert_eq!(c.in_flight(), 1);
        assert!(c.try_acquire());
        c.acquire_anyway();
        assert_eq!((c.in_flight(), c.admitted()), (3, 4));
        assert_eq!(c.limit(), 2);
        assert!(Controller::new(Admission::Off, Duration::ZERO).is_none());
    }

    /// One poll of `ticket`, as its request's future would.
    fn poll(ticket: &mut Ticket) -> Poll<bool> {
        ticket.poll_admit(&mut Context::from_waker(Waker::noop()))
    }

    fn queued(limit: u32, bound_ms: u64) -> Arc<Controller> {
        Controller::new(Admission::Fixed(limit), Duration::from_millis(bound_ms)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_limit_wait_for_a_slot_first_come_first_served() {
        let c = queued(1, 50);
        assert!(c.try_acquire());
        let mut first = c.enqueue().unwrap();
        let mut second = c.enqueue().unwrap();
        // Waiting is not in flight; and nobody overtakes a waiting request.
        assert_eq!(c.in_flight(), 1);
        assert_eq!(poll(&mut first), Poll::Pending);
        tokio::time::advance(Duration::from_millis(20)).await;
        c.release();
        assert!(!c.try_acquire(), "a newcomer overtook the queue");
        assert_eq!(poll(&mut second), Poll::Pending);
        assert_eq!(poll(&mut first), Poll::Ready(true));
        assert_eq!(c.in_flight(), 1);
        // The first one's slot goes to the second when it ends.
        c.release();
        assert_eq!(poll(&mut second), Poll::Ready(true));
        c.release();
        // Nobody waits: the fast path admits again, and nothing was shed.
        assert!(c.try_acquire());
        assert_eq!((c.in_flight(), c.shed()), (1, 0));
        drop((first, second));
        assert_eq!(c.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_a_slot_within_the_bound_is_shed_at_the_bound() {
        let c = queued(1, 50);
        assert!(c.try_acquire());
        let mut ticket = c.enqueue().unwrap();
        tokio::time::advance(Duration::from_millis(49)).await;
        assert_eq!(poll(&mut ticket), Poll::Pending);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(poll(&mut ticket), Poll::Ready(false));
        assert_eq!((c.in_flight(), c.shed()), (1, 1));
        drop(ticket);
        // The slot freed later goes to nobody, and the next request takes it at once.
        c.release();
        assert_eq!(c.in_flight(), 0);
        assert!(c.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_sheds_the_waiting_requests_at_once_and_queues_no_more() {
        let c = queued(1, 5_000);
        assert!(c.try_acquire());
        let mut waiting = c.enqueue().unwrap();
        assert_eq!(poll(&mut waiting), Poll::Pending);
        c.close_queue();
        assert_eq!(poll(&mut waiting), Poll::Ready(false));
        assert!(c.enqueue().is_none());
        assert_eq!((c.in_flight(), c.shed()), (1, 1));
        // The limit still holds, and a freed slot is taken by the next request.
        assert!(!c.try_acquire());
        c.release();
        assert!(c.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_while_waiting_or_once_admitted_holds_no_slot() {
        let c = queued(1, 50);
        assert!(c.try_acquire());
        let gone = c.enqueue().unwrap();
        let admitted = c.enqueue().unwrap();
        // The client of the first went away: the slot goes to the second...
        drop(gone);
        c.release();
        assert_eq!(c.in_flight(), 1);
        // ...which is dropped before its future saw it: the slot comes back.
        drop(admitted);
        assert_eq!(c.in_flight(), 0);
        assert!(c.try_acquire());
        assert_eq!(c.shed(), 0);
        // Without a queue, nothing waits.
        assert!(Controller::new(Admission::Fixed(1), Duration::ZERO)
            .unwrap()
            .enqueue()
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_adaptive_limit_with_a_cap_never_goes_above_it() {
        let c = Controller::new(Admission::AdaptiveUpTo(12), Duration::ZERO).unwrap();
        assert_eq!(c.limit(), 12);
        let sampler = tokio::spawn(c.clone().run());
        // As `under_capacity_nothing_is_shed_and_the_limit_grows`, where it passes 20.
        let _ = drive(
            &c,
            100,
            Duration::from_millis(20),
            16,
            Duration::from_secs(10),
        )
        .await;
        sampler.abort();
        assert_eq!(c.limit(), 12);
        let c = Controller::new(Admission::AdaptiveUpTo(1000), Duration::ZERO).unwrap();
        assert_eq!(c.limit(), INITIAL_LIMIT);
    }

    #[test]
    fn under_a_queue_the_limit_settles_where_latency_is_within_the_tolerance() {
        // A service that serves 10 at a time in 20 ms, the rest queued: a window at a limit
        // of L (always full) has a mean latency of max(1, L / 10) × 20 ms.
        let latency = |limit: f64| 0.020 * (limit / 10.0).max(1.0);
        let mut g = Gradient {
            limit: 40.0,
            baseline_s: 0.020,
            max: f64::from(MAX_LIMIT),
        };
        let mut highest_late = 0.0f64;
        for window in 0..300 {
            let l = g.update(latency(g.limit), 1000);
            if window >= 200 {
                highest_late = highest_late.max(l);
            }
        }
        // Latency within the tolerance is a limit of 12.5 at most; the growth by the
        // headroom's fifth overshoots that by under one. With the headroom added under a
        // queue too, it settles at 12.5 + √limit, about 16.4.
        assert!(highest_late < 13.5, "{highest_late}");
        assert!(g.limit >= 12.0, "{}", g.limit);
    }

    #[test]
    fn the_gradient_is_bounded() {
        let mut g = Gradient {
            limit: f64::from(MIN_LIMIT),
            baseline_s: 0.001,
            max: f64::from(MAX_LIMIT),
        };
        // Latency a thousand times over: never under the floor.
        for _ in 0..30 {
            assert!(g.update(1.0, 1000) >= f64::from(MIN_LIMIT));
        }
        assert!(g.limit < f64::from(MIN_LIMIT) + 0.1, "{}", g.limit);
        let mut g = Gradient {
            limit: 100.0,
            baseline_s: 0.001,
            max: f64::from(MAX_LIMIT),
        };
        // At most halved in a window.
        let l = g.update(1000.0, 1000);
        assert!((l - 50.0).abs() < 1e-9, "{l}");
        // Flat: grows by a fifth of its square root.
        let mut g = Gradient {
            limit: 100.0,
            baseline_s: 0.001,
            max: f64::from(MAX_LIMIT),
        };
        let l = g.update(0.001, 100);
        assert!((l - 102.0).abs() < 1e-9, "{l}");
    }
}
