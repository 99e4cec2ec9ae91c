//! Staggered drain signals for long-lived work (SSE streams, WebSockets, long HTTP/2
//! streams): each one is told to end at its own moment within a spread after the listener
//! closes, so that its clients reconnect to the remaining replicas at a bounded rate instead
//! of all at once (kube-apiserver ends long-running watches the same way).
//!
//! ```
//! # use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), podcycle::Error> {
//! let config = podcycle::Config::default()
//!     .admin_addr(None)
//!     .handle_signals(false)
//!     .stream_close_spread(Duration::from_secs(10));
//! let lifecycle = podcycle::Lifecycle::new(config)?;
//! // In a stream's task: end politely (a last event, a close frame) when told.
//! let told = lifecycle.stream_drain();
//! tokio::spawn(async move {
//!     told.await;
//!     // send `event: reconnect` / close 1001, then end
//! });
//! # Ok(()) }
//! ```
//!
//! Slots: the n-th signal to wait once draining started gets the offset
//! `spread × frac(n × 0.618…)` (the golden-ratio sequence): any run of consecutive slots is
//! spread evenly over the window, so N streams end at most about N/10 per tenth of it, the
//! first at once and the last near its end. No random source, no timer per stream before
//! draining.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// The offset of slot `slot` within `spread`: `spread × frac(slot / φ)`.
pub(crate) fn slot_offset(slot: u64, spread: Duration) -> Duration {
    // Fibonacci hashing: the top 53 bits of slot × 2^64/φ, as a fraction in [0, 1).
    let fraction = (slot.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    spread.mul_f64(fraction)
}

/// Resolves at this caller's slot within `spread` after the propagation delay is over (the
/// listener closes), and counts it as signalled.
pub(crate) async fn signal(state: Arc<State>, spread: Duration) {
    state.signals.delay_over.cancelled().await;
    let since = state
        .draining_since
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now);
    if !spread.is_zero() {
        let slot = state.counters.stream_slots.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(since + slot_offset(slot, spread)).await;
    }
    state
        .counters
        .streams_signalled
        .fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_slots_spread_evenly_over_the_window() {
        let spread = Duration::from_secs(10);
        for n in [10u64, 50, 250, 1000] {
            for start in [0u64, 7, 1234] {
                let mut per_tenth = [0u64; 10];
                let (mut first, mut last) = (spread, Duration::ZERO);
                for slot in start..start + n {
                    let at = slot_offset(slot, spread);
                    assert!(at < spread);
                    per_tenth[(at.as_millis() / 1000) as usize] += 1;
                    first = first.min(at);
                    last = last.max(at);
                }
                let most = *per_tenth.iter().max().unwrap();
                assert!(most <= n / 10 + 2, "{n} slots from {start}: {per_tenth:?}");
                assert!(
                    last - first >= spread / 2,
                    "{n} from {start}: {first:?}..{last:?}"
                );
            }
        }
        assert_eq!(slot_offset(0, spread), Duration::ZERO, "the first at once");
        assert_eq!(slot_offset(5, Duration::ZERO), Duration::ZERO);
    }
}
