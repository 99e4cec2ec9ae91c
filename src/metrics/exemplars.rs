//! Exemplars of the request-duration histogram: for each series and bucket, the latest
//! sampled request that fell in it (its trace id, duration and time), rendered in the
//! OpenMetrics text format ([`super::openmetrics`]).
//!
//! ```text
//! exemplars.record(key, bounds_nanos, nanos, trace_id);   // a sampled request (cold path)
//! exemplars.by_series()                                   // at the scrape: key -> [(bucket, exemplar)]
//! ```
//!
//! Only sampled requests are recorded here, under a lock; the unsampled pay nothing (their
//! timer carries no trace id). Memory is bounded: at most one exemplar per series and
//! bucket, and at most [`MAX_EXEMPLARS`] in all (series are bounded already; this is a
//! second fence).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rustc_hash::FxBuildHasher;

use super::series::SeriesKey;
use crate::trace::TraceId;

/// The most exemplars kept: past it, a new series-and-bucket gets none (the others still
/// update).
pub(crate) const MAX_EXEMPLARS: usize = 16_384;

/// One exemplar: a sampled request's trace, duration and end time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Exemplar {
    pub(crate) trace_id: TraceId,
    /// The request's duration, seconds.
    pub(crate) value: f64,
    /// When it was recorded, seconds since the Unix epoch.
    pub(crate) timestamp: f64,
}

/// The latest exemplar of each series and bucket.
#[derive(Debug, Default)]
pub(crate) struct Exemplars {
    latest: Mutex<HashMap<(SeriesKey, usize), Exemplar, FxBuildHasher>>,
}

impl Exemplars {
    /// Records the sampled request `trace_id` of `nanos` in the series `key` as the exemplar
    /// of its bucket (of `bounds_nanos`, `+Inf` last), replacing the one before.
    pub(crate) fn record(
        &self,
        key: SeriesKey,
        bounds_nanos: &[u64],
        nanos: u64,
        trace_id: TraceId,
    ) {
        let bucket = bounds_nanos
            .iter()
            .position(|b| nanos <= *b)
            .unwrap_or(bounds_nanos.len());
        let exemplar = Exemplar {
            trace_id,
            value: nanos as f64 / 1e9,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if latest.len() >= MAX_EXEMPLARS && !latest.contains_key(&(key, bucket)) {
            return;
        }
        latest.insert((key, bucket), exemplar);
    }

    /// Every exemplar, by series: `(bucket index, exemplar)`.
    pub(crate) fn by_series(&self) -> HashMap<SeriesKey, Vec<(usize, Exemplar)>> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: HashMap<SeriesKey, Vec<(usize, Exemplar)>> = HashMap::new();
        for ((key, bucket), e) in latest.iter() {
            out.entry(*key).or_default().push((*bucket, *e));
        }
        out
    }

    /// How many exemplars are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.latest.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::series::Incomplete;

    fn key(route: u32) -> SeriesKey {
        SeriesKey {
            method: 0,
            route,
            status: 200,
            error: Incomplete::No,
        }
    }

    fn id(n: u8) -> TraceId {
        TraceId::from_bytes([n; 16]).unwrap()
    }

    #[test]
    fn the_latest_request_of_a_bucket_wins() {
        let e = Exemplars::default();
        let bounds = [5_000_000, 10_000_000];
        e.record(key(1), &bounds, 1_000_000, id(1));
        e.record(key(1), &bounds, 2_000_000, id(2));
        e.record(key(1), &bounds, 7_000_000, id(3));
        e.record(key(1), &bounds, 70_000_000, id(4));
        let all = e.by_series();
        let mut got = all[&key(1)].clone();
        got.sort_by_key(|(b, _)| *b);
        let got: Vec<(usize, TraceId)> = got.iter().map(|(b, e)| (*b, e.trace_id)).collect();
        assert_eq!(got, vec![(0, id(2)), (1, id(3)), (2, id(4))]);
        assert_eq!(
            all[&key(1)].iter().find(|(b, _)| *b == 0).unwrap().1.value,
            0.002
        );
    }

    #[test]
    fn memory_is_bounded() {
        let e = Exemplars::default();
        for route in 0..(MAX_EXEMPLARS as u32 + 10) {
            e.record(key(route), &[1], 0, id(1));
        }
        assert_eq!(e.len(), MAX_EXEMPLARS);
        // An existing one still updates.
        e.record(key(0), &[1], 0, id(9));
        assert_eq!(e.by_series()[&key(0)][0].1.trace_id, id(9));
    }
}
