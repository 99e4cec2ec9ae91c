//! What the lifecycle counts about its shutdown and its listeners: requests after readiness
//! turned off, connections the drain closed idle or cut, streams told to end or cut, failed
//! accepts, the last new connection the shutdown delay saw. Part of the lifecycle's
//! [`State`](crate::state::State) (`state.counters`); the metrics read them at scrape time,
//! the shutdown sequence logs them. The per-connection state is the connection registry's
//! ([`crate::connections`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lifecycle's counters. Each is written where the event happens (the serving stack, the
/// drain, the admin thread) with a relaxed atomic add: nothing on the per-request path before
/// readiness turns off.
///
/// On cache lines of their own: after readiness turns off every request adds to a counter
/// here, and the phase every request reads sits beside them in [`State`](crate::state::State).
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Counters {
    /// Requests received after readiness turned off on connections opened before it
    /// (`connection="reused"`): keep-alive clients.
    pub(crate) requests_after_unready: AtomicU64,
    /// Requests received after readiness turned off on connections opened after it
    /// (`connection="new"`): the load balancer still routes new connections here.
    pub(crate) requests_after_unready_new: AtomicU64,
    /// Connections opened before readiness turned off, plus one (0: not turned off yet).
    unready_mark: AtomicU64,
    /// Connections with nothing in flight when the shutdown delay ended, closed then.
    pub(crate) closed_idle: AtomicU64,
    /// Connections the drain deadline closed with requests in flight.
    pub(crate) force_closed: AtomicU64,
    /// Long-lived streams and upgraded connections told to end by their
    /// [`stream_drain`](crate::Lifecycle::stream_drain) signal.
    pub(crate) streams_signalled: AtomicU64,
    /// Requests (streams, upgraded connections) cut by the drain deadline.
    pub(crate) streams_cut: AtomicU64,
    /// Slots handed out by `stream_drain` once draining started.
    pub(crate) stream_slots: AtomicU64,
    /// Failed accepts on the application listener (out of file descriptors and the like).
    pub(crate) app_accept_errors: AcceptErrors,
    /// Failed accepts on the admin listener.
    pub(crate) admin_accept_errors: AcceptErrors,
    /// Nanoseconds from the shutdown request to the last new connection the delay saw, plus
    /// one (0: none yet).
    last_arrival: AtomicU64,
}

impl Counters {
    /// Marks the `opened` connections opened so far (the registry's count) as opened before
    /// readiness turned off (once).
    pub(crate) fn mark_unready(&self, opened: u64) {
        let mark = opened.saturating_add(1);
        let _ = self
            .unready_mark
            .compare_exchange(0, mark, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The mark [`ConnState::opened_after`](crate::connections::ConnState::opened_after)
    /// compares with (0 before readiness turned off).
    #[inline]
    pub(crate) fn unready_mark(&self) -> u64 {
        self.unready_mark.load(Ordering::Relaxed)
    }

    /// Requests received after readiness turned off, on new and reused connections.
    pub(crate) fn requests_after_unready(&self) -> u64 {
        self.requests_after_unready
            .load(Ordering::Relaxed)
            .saturating_add(self.requests_after_unready_new.load(Ordering::Relaxed))
    }

    /// Notes that the delay saw a new connection `since` the shutdown request.
    pub(crate) fn record_last_arrival(&self, since: Duration) {
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_arrival.store(nanos + 1, Ordering::Relaxed);
    }

    /// Time from the shutdown request to the last new connection the delay saw, if any.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // read by its gauge
    pub(crate) fn last_arrival(&self) -> Option<Duration> {
        match self.last_arrival.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }
}

/// Failed accepts of one listener: counted, and logged at most once a second with how many
/// failed since the last line, so that a flood cannot turn into a log flood.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    total: AtomicU64,
    /// When the last line was logged, and failures since.
    log: Mutex<(Option<Instant>, u64)>,
}

impl AcceptErrors {
    /// How often at most a failing listener logs.
    const LOG_EVERY: Duration = Duration::from_secs(1);

    /// Counts one failed accept on `listener` and logs it, at most once a second.
    pub(crate) fn record(&self, listener: &'static str, error: &std::io::Error) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.1 += 1;
        if log.0.is_none_or(|at| at.elapsed() >= Self::LOG_EVERY) {
            tracing::error!(
                listener,
                %error,
                failures = log.1,
                "accept failed (logged at most once a second; failures counts them since the last line)"
            );
            *log = (Some(Instant::now()), 0);
        }
    }

    /// Failed accepts so far.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // read by the accept-error counter
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_all_counted() {
        let errors = AcceptErrors::default();
        for _ in 0..1000 {
            errors.record("app", &std::io::Error::other("too many open files"));
        }
        assert_eq!(errors.total(), 1000);
        let log = errors.log.lock().unwrap();
        assert!(log.0.is_some(), "the first one was logged");
        assert_eq!(log.1, 999, "the others wait for the next second's line");
    }

    #[test]
    fn readiness_turns_off_once_for_the_unready_mark() {
        let counters = Counters::default();
        assert_eq!(counters.unready_mark(), 0);
        counters.mark_unready(7);
        counters.mark_unready(9);
        assert_eq!(counters.unready_mark(), 8, "the first mark stays");
        assert_eq!(counters.last_arrival(), None);
        counters.record_last_arrival(Duration::from_millis(1500));
        assert_eq!(counters.last_arrival(), Some(Duration::from_millis(1500)));
    }
}
