//! The application runtime's scheduling lag, as the runtime watchdog measures it: how late each
//! of its timer ticks ran. Kept as a fixed-bucket histogram of atomics, written by the watchdog
//! task and read at scrape time.
//!
//! ```text
//! let lag = SchedulingLag::default();
//! lag.record(Duration::from_millis(3));   // one tick ran 3 ms late
//! lag.snapshot().buckets                  // per-bucket counts, +Inf last
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds in seconds: from the timer's 1 ms resolution to a 10 s stall.
pub(crate) const LAG_BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of scheduling lags (one writer, any number of readers).
#[derive(Debug, Default)]
pub(crate) struct SchedulingLag {
    /// Each bucket's own (not cumulative) count, `+Inf` last.
    buckets: [AtomicU64; LAG_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// The lag histogram at one scrape.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct LagSnapshot {
    /// Each bucket's own (not cumulative) count, `+Inf` last.
    pub(crate) buckets: [u64; LAG_BOUNDS.len() + 1],
    /// The sum of all lags, in seconds.
    pub(crate) sum_secs: f64,
}

impl SchedulingLag {
    /// Records one tick that ran `lag` late.
    pub(crate) fn record(&self, lag: Duration) {
        let secs = lag.as_secs_f64();
        let bucket = LAG_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LAG_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts so far (the total count is the buckets' sum, so it always matches them).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> LagSnapshot {
        LagSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_in_the_first_bucket_that_holds_them() {
        let lag = SchedulingLag::default();
        for ms in [0, 1, 2, 30, 20_000] {
            lag.record(Duration::from_millis(ms));
        }
        let s = lag.snapshot();
        assert_eq!(s.buckets[0], 2, "0 and 1 ms: le=0.001");
        assert_eq!(s.buckets[1], 1, "2 ms: le=0.0025");
        assert_eq!(s.buckets[5], 1, "30 ms: le=0.05");
        assert_eq!(s.buckets[LAG_BOUNDS.len()], 1, "20 s: +Inf");
        assert_eq!(s.buckets.iter().sum::<u64>(), 5);
        assert!((s.sum_secs - 20.033).abs() < 1e-9, "{}", s.sum_secs);
    }
}
