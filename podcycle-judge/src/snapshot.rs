//! What the judge reads: cumulative counters of both arms at one moment.

/// Cumulative counters of both arms at one moment, as a
/// [`SnapshotSource`](crate::SnapshotSource) reads them.
///
/// The judge works on the increments between consecutive snapshots; the
/// first snapshot is only the baseline. A counter that goes down is taken as
/// a reset (a restarted process), and its current value as the increment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The version everyone trusts.
    pub stable: ArmCounts,
    /// The version being judged.
    pub canary: ArmCounts,
}

/// Cumulative counters of one arm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmCounts {
    /// Requests counted, whatever their outcome.
    pub requests: u64,
    /// Of those, failed requests (5xx responses and requests that never
    /// completed: podcycle's `error_type` label is set).
    pub errors: u64,
    /// Requests shed by podcycle's admission control (`podcycle_requests_shed_total`):
    /// answered `503`/`429` at once without reaching the application, so not in
    /// `requests`. The error comparison counts them as failed requests of their arm (a canary
    /// that sheds more than stable is worse); the error guardrail does not (a fleet-wide
    /// burst shed on both arms is the fleet protecting itself, not the canary failing).
    /// `0` when unknown.
    pub shed: u64,
    /// Latency histogram of the requests judged for latency (the Prometheus
    /// source uses successful requests only, so that fast failures cannot
    /// make a broken canary look quick).
    pub latency: Histogram,
    /// CPU seconds used by the arm's processes (podcycle's
    /// `process_cpu_seconds_total`, summed over pods); `0` when unknown.
    pub cpu_seconds: f64,
    /// Resident memory of the arm's processes at this moment, the mean per
    /// pod (`process_resident_memory_bytes`, a gauge); `None` when unknown.
    pub resident_memory_bytes: Option<f64>,
}

/// One cumulative histogram bucket: `count` observations were `<= le`
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Upper bound in seconds; `f64::INFINITY` for the `+Inf` bucket.
    pub le: f64,
    /// Observations at or below `le`.
    pub count: u64,
}

/// A cumulative latency histogram (Prometheus `_bucket{le}` counters).
///
/// Buckets are kept sorted by `le`, with non-decreasing counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<Bucket>,
}

impl Histogram {
    /// Builds a histogram from `(le, cumulative count)` pairs in any order.
    ///
    /// Bounds that are NaN, negative or `-inf` are dropped, duplicate bounds
    /// are summed, and counts are made non-decreasing (a bucket never counts
    /// fewer observations than a smaller one).
    pub fn from_cumulative(pairs: impl IntoIterator<Item = (f64, u64)>) -> Self {
        let mut buckets: Vec<Bucket> = pairs
            .into_iter()
            .filter(|(le, _)| *le >= 0.0)
            .map(|(le, count)| Bucket { le, count })
            .collect();
        buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
        let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
        for b in buckets {
            match merged.last_mut() {
                Some(last) if last.le == b.le => last.count = last.count.saturating_add(b.count),
                _ => merged.push(b),
            }
        }
        let mut running = 0;
        for b in &mut merged {
            running = running.max(b.count);
            b.count = running;
        }
        Self { buckets: merged }
    }

    /// A histogram from the buckets of a native (exponential) histogram:
    /// `(upper bound, count)` of each bucket, not cumulative, in any order
    /// (the zero bucket included, its upper bound the zero threshold).
    ///
    /// The counts are accumulated at fixed bounds, [`Histogram::native_bounds`],
    /// whatever buckets the series has populated so far, so that the
    /// cumulative count at each bound is a counter like a classic `_bucket`
    /// series (a bucket first populated later does not look like a new series
    /// counting from zero) and the judge compares at native resolution.
    pub fn from_native(buckets: impl IntoIterator<Item = (f64, u64)>) -> Self {
        let bounds = Self::native_bounds();
        let mut counts = vec![0u64; bounds.len()];
        for (upper, count) in buckets {
            if upper.is_nan() {
                continue;
            }
            // Bounds are 2^(k/8) as Prometheus computes them; allow for rounding.
            let upper = upper * (1.0 - 1e-9);
            let first = bounds.partition_point(|b| *b < upper);
            if let Some(c) = counts.get_mut(first) {
                *c = c.saturating_add(count);
            }
        }
        let mut running = 0u64;
        Self::from_cumulative(bounds.into_iter().zip(counts).map(|(le, c)| {
            running = running.saturating_add(c);
            (le, running)
        }))
    }

    /// The bounds [`Histogram::from_native`] counts at: every bound of a
    /// schema-3 native histogram (`2^(k/8)`, 9% apart) from about 1 µs to
    /// 68 minutes (podcycle's native window), podcycle's classic bounds
    /// (so that an arm read from classic buckets and one read from native
    /// buckets share bounds), and `+Inf`.
    pub fn native_bounds() -> Vec<f64> {
        let mut bounds: Vec<f64> = (-159..=96).map(|k| (f64::from(k) / 8.0).exp2()).collect();
        bounds.extend_from_slice(podcycle::metrics::DEFAULT_BUCKETS);
        bounds.push(f64::INFINITY);
        bounds.sort_by(|a, b| a.total_cmp(b));
        bounds.dedup();
        bounds
    }

    /// The buckets, sorted by `le`.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// `true` when the histogram has no buckets.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Number of observations: the `+Inf` bucket, or the largest bucket.
    pub fn total(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.count)
    }

    /// Observations `<= le`, if the histogram has that exact bound.
    pub fn count_le(&self, le: f64) -> Option<u64> {
        self.buckets.iter().find(|b| b.le == le).map(|b| b.count)
    }

    /// The `q`-quantile in seconds, interpolated linearly inside its bucket
    /// as PromQL's `histogram_quantile` does. `None` without observations or
    /// for `q` outside `[0, 1]`; `Some(f64::INFINITY)` when the quantile lies
    /// above the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut lower_le = 0.0;
        let mut lower_count = 0u64;
        for b in &self.buckets {
            if b.count as f64 >= rank && b.count > lower_count {
                if b.le.is_infinite() {
                    return Some(f64::INFINITY);
                }
                let within = (rank - lower_count as f64) / (b.count - lower_count) as f64;
                return Some(lower_le + (b.le - lower_le) * within.clamp(0.0, 1.0));
            }
            if b.le.is_finite() {
                lower_le = b.le;
            }
            lower_count = b.count;
        }
        Some(f64::INFINITY)
    }

    /// Increment since `earlier`, or `None` if any bucket went down (a reset).
    /// Buckets missing from `earlier` count from zero.
    pub(crate) fn since(&self, earlier: &Histogram) -> Option<Histogram> {
        let mut pairs = Vec::with_capacity(self.buckets.len());
        for b in &self.buckets {
            let before = earlier.count_le(b.le).unwrap_or(0);
            pairs.push((b.le, b.count.checked_sub(before)?));
        }
        Some(Histogram::from_cumulative(pairs))
    }

    /// Adds `other` bucket by bucket (bounds present in either).
    pub(crate) fn add(&mut self, other: &Histogram) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return;
        }
        // Cumulative counts at a bound missing from one side are that side's
        // count at its largest bound below it.
        let at = |h: &Histogram, le: f64| -> u64 {
            h.buckets
                .iter()
                .take_while(|b| b.le <= le)
                .last()
                .map_or(0, |b| b.count)
        };
        let mut bounds: Vec<f64> = self
            .buckets
            .iter()
            .chain(&other.buckets)
            .map(|b| b.le)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let pairs: Vec<(f64, u64)> = bounds
            .into_iter()
            .map(|le| (le, at(self, le).saturating_add(at(other, le))))
            .collect();
        *self = Histogram::from_cumulative(pairs);
    }
}

impl ArmCounts {
    /// Increment since `earlier`, each counter reset-aware on its own.
    pub(crate) fn since(&self, earlier: &ArmCounts) -> ArmCounts {
        let requests = self
            .requests
            .checked_sub(earlier.requests)
            .unwrap_or(self.requests);
        let errors = self
            .errors
            .checked_sub(earlier.errors)
            .unwrap_or(self.errors)
            .min(requests);
        let shed = self.shed.checked_sub(earlier.shed).unwrap_or(self.shed);
        let latency = self
            .latency
            .since(&earlier.latency)
            .unwrap_or_else(|| self.latency.clone());
        let cpu_seconds = if self.cpu_seconds >= earlier.cpu_seconds {
            self.cpu_seconds - earlier.cpu_seconds
        } else {
            self.cpu_seconds
        };
        ArmCounts {
            requests,
            errors,
            shed,
            latency,
            cpu_seconds,
            resident_memory_bytes: self.resident_memory_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(f64, u64)]) -> Histogram {
        Histogram::from_cumulative(pairs.iter().copied())
    }

    #[test]
    fn histogram_is_sorted_merged_and_monotone() {
        let h = hist(&[
            (f64::INFINITY, 10),
            (0.1, 4),
            (0.5, 3),
            (0.1, 1),
            (f64::NAN, 9),
        ]);
        let les: Vec<f64> = h.buckets().iter().map(|b| b.le).collect();
        assert_eq!(les, vec![0.1, 0.5, f64::INFINITY]);
        let counts: Vec<u64> = h.buckets().iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![5, 5, 10]);
        assert_eq!(h.total(), 10);
    }

    #[test]
    fn quantile_interpolates_like_promql() {
        let h = hist(&[(0.1, 50), (0.2, 90), (0.4, 100), (f64::INFINITY, 100)]);
        assert!((h.quantile(0.5).unwrap() - 0.1).abs() < 1e-12);
        assert!((h.quantile(0.7).unwrap() - 0.15).abs() < 1e-12);
        assert!((h.quantile(0.95).unwrap() - 0.3).abs() < 1e-12);
        let tail = hist(&[(0.1, 50), (f64::INFINITY, 100)]);
        assert_eq!(tail.quantile(0.99), Some(f64::INFINITY));
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert_eq!(h.quantile(1.5), None);
    }

    #[test]
    fn increments_handle_resets_per_counter() {
        let before = ArmCounts {
            requests: 100,
            errors: 10,
            shed: 7,
            latency: hist(&[(0.1, 80), (f64::INFINITY, 90)]),
            cpu_seconds: 2.0,
            ..ArmCounts::default()
        };
        let after = ArmCounts {
            requests: 150,
            errors: 4, // reset
            shed: 3,   // reset
            latency: hist(&[(0.1, 120), (f64::INFINITY, 135)]),
            cpu_seconds: 0.5, // reset
            resident_memory_bytes: Some(1e6),
        };
        let inc = after.since(&before);
        assert_eq!(inc.requests, 50);
        assert_eq!(inc.errors, 4);
        assert_eq!(inc.shed, 3);
        assert_eq!(inc.latency, hist(&[(0.1, 40), (f64::INFINITY, 45)]));
        assert_eq!(inc.cpu_seconds, 0.5);
        assert_eq!(inc.resident_memory_bytes, Some(1e6));
        // Errors never exceed requests.
        let odd = ArmCounts {
            requests: 101,
            errors: 50,
            latency: Histogram::default(),
            ..ArmCounts::default()
        };
        assert_eq!(odd.since(&before).errors, 1);
    }

    #[test]
    fn histograms_add_across_different_bounds() {
        let mut a = hist(&[(0.1, 1), (f64::INFINITY, 2)]);
        a.add(&hist(&[(0.2, 3), (f64::INFINITY, 3)]));
        assert_eq!(a, hist(&[(0.1, 1), (0.2, 4), (f64::INFINITY, 5)]));
    }
}
