//! Admission control: how many of the application's requests may be in flight at once, fixed
//! or found from the latency the service shows, and the permits that count them.
//!
//! The adaptive limit is a gradient controller in the manner of Netflix's concurrency-limits
//! `Gradient2Limit` and Envoy's adaptive concurrency filter. Each window (at least
//! [`WINDOW`] and [`MIN_SAMPLES`] requests) gives a short-term latency, the mean of its
//! requests; an exponential average over [`LONG_WINDOWS`] windows gives the long-term one.
//! Their ratio, times a tolerance of [`TOLERANCE`], clamped to `0.5..=1.0`, is the gradient:
//! `1` while latency stays within the tolerance of its long-term level (the limit grows by
//! its square root), below `1` when a queue makes latency rise (the limit shrinks, by at most half).
//! The new limit is smoothed ([`SMOOTHING`]) and held within [`MIN_LIMIT`]..=[`MAX_LIMIT`].
//! A window whose requests never filled half the limit leaves it as it is (the load, not the
//! service, bounded the latency).
//!
//! Per admitted request: an increment and a decrement of the in-flight count, a load of the
//! limit and (adaptive only) two clock reads and two additions to the window; the update
//! takes a lock once per window, tried by whichever request ends it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Admission;

/// The least time a window of samples covers.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// The fewest requests a window needs before it updates the limit.
pub(crate) const MIN_SAMPLES: u32 = 10;
/// Windows the long-term latency averages over (Gradient2's `longWindow`).
pub(crate) const LONG_WINDOWS: f64 = 600.0;
/// How far above its long-term level latency may rise before the limit shrinks.
pub(crate) const TOLERANCE: f64 = 1.5;
/// The weight of each window's new limit (Gradient2's `smoothing`).
pub(crate) const SMOOTHING: f64 = 0.2;
/// What the limit grows by while latency is flat: the square root of the limit (Gradient's
/// `queueSize` function; Gradient2's fixed 4 would hold the limit at 8 or more under any
/// latency, too many for a service whose capacity is a handful of requests).
fn queue(limit: f64) -> f64 {
    limit.sqrt()
}
/// The adaptive limit to start with.
pub(crate) const INITIAL_LIMIT: u32 = 20;
/// The least the adaptive limit goes to.
pub(crate) const MIN_LIMIT: u32 = 4;
/// The most the adaptive limit goes to.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// The admission controller of one application listener: its limit, its requests in flight
/// and the requests it shed.
#[derive(Debug)]
pub(crate) struct Controller {
    limit: AtomicU32,
    in_flight: AtomicU32,
    shed: AtomicU64,
    adaptive: Option<Adaptive>,
}

/// The adaptive controller's window and state.
#[derive(Debug)]
struct Adaptive {
    epoch: Instant,
    /// When the current window may end, in nanoseconds since `epoch`.
    window_end: AtomicU64,
    /// The window's summed latency in microseconds, and its count of requests.
    sum_us: AtomicU64,
    count: AtomicU32,
    /// The most requests in flight at once during the window.
    max_in_flight: AtomicU32,
    gradient: Mutex<Gradient>,
}

/// The limit's arithmetic, apart from the atomics (unit-tested on its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Gradient {
    /// The limit, unrounded.
    pub(crate) limit: f64,
    /// The long-term latency in microseconds (`0` before the first window).
    pub(crate) long_us: f64,
}

impl Gradient {
    /// The limit after a window of mean latency `short_us` in which at most `max_in_flight`
    /// requests were in flight at once.
    pub(crate) fn update(&mut self, short_us: f64, max_in_flight: u32) -> f64 {
        let short_us = short_us.max(1.0);
        if self.long_us == 0.0 {
            self.long_us = short_us;
        } else {
            let weight = 2.0 / (LONG_WINDOWS + 1.0);
            self.long_us += (short_us - self.long_us) * weight;
        }
        // After a spell of overload the long-term latency is high: bring it back faster than
        // its average would, so that the limit grows again.
        if self.long_us / short_us > 2.0 {
            self.long_us *= 0.95;
        }
        if f64::from(max_in_flight) < self.limit / 2.0 {
            return self.limit;
        }
        let gradient = (TOLERANCE * self.long_us / short_us).clamp(0.5, 1.0);
        let next = self.limit * gradient + queue(self.limit);
        let next = self.limit * (1.0 - SMOOTHING) + next * SMOOTHING;
        self.limit = next.clamp(f64::from(MIN_LIMIT), f64::from(MAX_LIMIT));
        self.limit
    }
}

impl Controller {
    /// The controller for `admission`; `None` when it is off (the serving path then never
    /// looks further).
    pub(crate) fn new(admission: Admission) -> Option<Arc<Controller>> {
        let (limit, adaptive) = match admission {
            Admission::Off => return None,
            Admission::Fixed(n) => (n.max(1), None),
            Admission::Adaptive => (
                INITIAL_LIMIT,
                Some(Adaptive {
                    epoch: Instant::now(),
                    window_end: AtomicU64::new(nanos(WINDOW)),
                    sum_us: AtomicU64::new(0),
                    count: AtomicU32::new(0),
                    max_in_flight: AtomicU32::new(0),
                    gradient: Mutex::new(Gradient {
                        limit: f64::from(INITIAL_LIMIT),
                        long_us: 0.0,
                    }),
                }),
            ),
        };
        Some(Arc::new(Controller {
            limit: AtomicU32::new(limit),
            in_flight: AtomicU32::new(0),
            shed: AtomicU64::new(0),
            adaptive,
        }))
    }

    /// A permit for one request, or `None` (counted as shed) when the limit is reached.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Controller>) -> Option<Permit> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.limit.load(Ordering::Relaxed) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.shed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let start = self.adaptive.as_ref().map(|a| {
            if a.max_in_flight.load(Ordering::Relaxed) <= before {
                a.max_in_flight.fetch_max(before + 1, Ordering::Relaxed);
            }
            Instant::now()
        });
        Some(Permit {
            controller: self.clone(),
            start,
        })
    }

    /// The limit in force.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// The admitted requests in flight.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The requests shed so far.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// A request admitted at `start` (adaptive) has ended.
    #[inline]
    fn release(&self, start: Option<Instant>) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let (Some(a), Some(start)) = (&self.adaptive, start) else {
            return;
        };
        let now = Instant::now();
        let rtt = now.saturating_duration_since(start);
        a.sum_us.fetch_add(
            u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let count = a.count.fetch_add(1, Ordering::Relaxed) + 1;
        if count >= MIN_SAMPLES
            && nanos(now.saturating_duration_since(a.epoch)) >= a.window_end.load(Ordering::Relaxed)
        {
            self.end_window(a, now);
        }
    }

    /// Ends the window (unless another request is ending it) and publishes the new limit.
    #[cold]
    #[inline(never)]
    fn end_window(&self, a: &Adaptive, now: Instant) {
        let Ok(mut gradient) = a.gradient.try_lock() else {
            return;
        };
        let since = nanos(now.saturating_duration_since(a.epoch));
        if since < a.window_end.load(Ordering::Relaxed) {
            return;
        }
        a.window_end.store(since + nanos(WINDOW), Ordering::Relaxed);
        let count = a.count.swap(0, Ordering::Relaxed);
        let sum = a.sum_us.swap(0, Ordering::Relaxed);
        let max_in_flight = a
            .max_in_flight
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        if count == 0 {
            return;
        }
        let short_us = sum as f64 / f64::from(count);
        let limit = gradient.update(short_us, max_in_flight);
        // `as` saturates; the limit is within MIN_LIMIT..=MAX_LIMIT anyway.
        self.limit.store(limit as u32, Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One admitted request: in flight (for the limit) until dropped, with the response body.
#[derive(Debug)]
pub(crate) struct Permit {
    controller: Arc<Controller>,
    start: Option<Instant>,
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.controller.release(self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` requests in flight at once, each taking `rtt`, for `windows` windows.
    async fn run(c: &Arc<Controller>, n: u32, rtt: Duration, windows: u32) {
        for _ in 0..windows {
            let mut elapsed = Duration::ZERO;
            while elapsed < WINDOW || elapsed.is_zero() {
                let permits: Vec<_> = (0..n).filter_map(|_| c.try_acquire()).collect();
                tokio::time::advance(rtt).await;
                drop(permits);
                elapsed += rtt;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_grows_while_latency_stays_flat_and_stops_at_the_maximum() {
        let c = Controller::new(Admission::Adaptive).unwrap();
        assert_eq!(c.limit(), INITIAL_LIMIT);
        // Always at the limit, latency flat: the limit grows.
        for _ in 0..20 {
            let n = c.limit();
            run(&c, n, Duration::from_millis(10), 1).await;
        }
        let grown = c.limit();
        assert!(grown > INITIAL_LIMIT + 10, "limit {grown}");
        for _ in 0..400 {
            let n = c.limit();
            run(&c, n, Duration::from_millis(10), 1).await;
        }
        assert_eq!(c.limit(), MAX_LIMIT);
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_shrinks_when_latency_rises_and_stops_at_the_minimum() {
        let c = Controller::new(Admission::Adaptive).unwrap();
        run(&c, INITIAL_LIMIT, Duration::from_millis(10), 20).await;
        let before = c.limit();
        // Latency five times its long-term level: a queue. The limit shrinks.
        run(&c, before, Duration::from_millis(50), 1).await;
        let after = c.limit();
        assert!(after < before, "{before} -> {after}");
        // The latency keeps rising with the load: the limit goes down to its floor.
        let mut rtt = Duration::from_millis(50);
        for _ in 0..300 {
            rtt *= 2;
            rtt = rtt.min(Duration::from_secs(1));
            run(&c, c.limit(), rtt, 1).await;
        }
        assert_eq!(c.limit(), MIN_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_that_never_filled_half_the_limit_leaves_it_alone() {
        let c = Controller::new(Admission::Adaptive).unwrap();
        run(&c, 2, Duration::from_millis(10), 50).await;
        assert_eq!(c.limit(), INITIAL_LIMIT);
    }

    #[test]
    fn a_fixed_limit_sheds_beyond_it_and_a_shed_request_is_not_in_flight() {
        let c = Controller::new(Admission::Fixed(2)).unwrap();
        let a = c.try_acquire().unwrap();
        let _b = c.try_acquire().unwrap();
        assert!(c.try_acquire().is_none());
        assert_eq!((c.in_flight(), c.shed()), (2, 1));
        drop(a);
        assert_eq!(c.in_flight(), 1);
        assert!(c.try_acquire().is_some());
        assert_eq!(c.limit(), 2);
        assert!(Controller::new(Admission::Off).is_none());
    }

    #[test]
    fn the_gradient_is_bounded() {
        let mut g = Gradient {
            limit: f64::from(MIN_LIMIT),
            long_us: 1000.0,
        };
        // Latency a thousand times over: never under the floor.
        for _ in 0..30 {
            assert!(g.update(1e6, 1000) >= f64::from(MIN_LIMIT));
        }
        assert!(g.limit < f64::from(MIN_LIMIT) + 0.1, "{}", g.limit);
        let mut g = Gradient {
            limit: 100.0,
            long_us: 1000.0,
        };
        // At most halved in a window (smoothed: 10%).
        let l = g.update(1e9, 1000);
        assert!(l >= 100.0 * (1.0 - SMOOTHING / 2.0) - 1e-9, "{l}");
        assert!(l < 100.0, "{l}");
    }
}
