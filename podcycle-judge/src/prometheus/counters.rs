//! Following counter series one by one across looks: a series that goes down was reset
//! (its pod restarted) and its new value is the increment; a series first seen after the
//! first look started after it and counts in full; series that disappeared keep counting.

use std::collections::{BTreeMap, HashMap};

use podcycle::metrics::schema;

use super::response::{parse_value, Sample};
use crate::snapshot::{ArmCounts, Histogram};

/// Follows counter series one by one across looks (see the module docs).
#[derive(Debug, Default)]
pub(super) struct CounterTracker {
    /// Last raw value and total since the first look, per series.
    series: HashMap<String, (f64, f64)>,
    started: bool,
}

impl CounterTracker {
    /// Records one look's samples; returns each series' total since the
    /// first look, with its labels. NaN, infinite and negative values are
    /// ignored (the series keeps its last good value).
    fn update<'s>(&mut self, samples: &'s [Sample]) -> Vec<(&'s BTreeMap<String, String>, f64)> {
        let mut out = Vec::with_capacity(samples.len());
        for sample in samples {
            let key = series_key(&sample.labels);
            let value = sample.value;
            let good = value.is_finite() && value >= 0.0;
            let entry = self.series.get(&key).copied();
            let (last, total) = match (entry, good) {
                (None, false) => continue,
                (None, true) if self.started => (value, value),
                (None, true) => (value, 0.0),
                (Some(prev), false) => prev,
                (Some((last, total)), true) if value >= last => (value, total + value - last),
                (Some((_, total)), true) => (value, total + value), // a reset
            };
            self.series.insert(key, (last, total));
            out.push((&sample.labels, total));
        }
        out
    }

    /// Totals of series not in this look (gone pods still count).
    fn all_totals(&self) -> impl Iterator<Item = (&String, f64)> {
        self.series.iter().map(|(k, (_, total))| (k, *total))
    }
}

/// A native histogram sample as classic `_bucket` samples: its cumulative
/// counts at [`Histogram::native_bounds`], each with an `le` label; a classic
/// sample as itself.
fn native_as_buckets(sample: &Sample) -> Vec<Sample> {
    let Some(buckets) = &sample.native else {
        return vec![sample.clone()];
    };
    let h = Histogram::from_native(
        buckets
            .iter()
            .filter(|(_, n)| n.is_finite() && *n >= 0.0)
            .map(|(upper, n)| (*upper, n.round() as u64)),
    );
    h.buckets()
        .iter()
        .map(|b| {
            let mut labels = sample.labels.clone();
            let le = if b.le.is_infinite() {
                "+Inf".to_owned()
            } else {
                b.le.to_string()
            };
            labels.insert(schema::LE.to_owned(), le);
            Sample {
                labels,
                value: b.count as f64,
                native: None,
            }
        })
        .collect()
}

fn series_key(labels: &BTreeMap<String, String>) -> String {
    let mut key = String::new();
    for (k, v) in labels {
        if k == "__name__" {
            continue;
        }
        key.push_str(k);
        key.push('\u{1}');
        key.push_str(v);
        key.push('\u{2}');
    }
    key
}

/// Per arm: one tracker for `_count`, one for `_bucket`, plus the labels of
/// every series seen so that series that disappeared keep counting.
#[derive(Debug, Default)]
pub(super) struct ArmTracker {
    counts: CounterTracker,
    buckets: CounterTracker,
    errors: HashMap<String, bool>,
    les: HashMap<String, f64>,
}

impl ArmTracker {
    /// One look: the request counts (a native histogram sample counts its
    /// count) and the buckets of successful requests (a native histogram
    /// sample is read as cumulative buckets at [`Histogram::native_bounds`]).
    pub(super) fn update(&mut self, counts: &[Sample], buckets: &[Sample]) -> ArmCounts {
        let native: Vec<Sample>;
        let buckets = if buckets.iter().any(|s| s.native.is_some()) {
            native = buckets.iter().flat_map(native_as_buckets).collect();
            &native[..]
        } else {
            buckets
        };
        for (labels, _) in self.counts.update(counts) {
            let is_error = labels
                .get(schema::ERROR_TYPE)
                .is_some_and(|v| !v.is_empty());
            self.errors.insert(series_key(labels), is_error);
        }
        for (labels, _) in self.buckets.update(buckets) {
            if let Some(le) = labels.get(schema::LE).and_then(|v| parse_value(v)) {
                self.les.insert(series_key(labels), le);
            }
        }
        self.counts.started = true;
        self.buckets.started = true;

        let (mut requests, mut errors) = (0.0, 0.0);
        for (key, total) in self.counts.all_totals() {
            requests += total;
            if self.errors.get(key).copied().unwrap_or(false) {
                errors += total;
            }
        }
        let mut per_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (key, total) in self.buckets.all_totals() {
            if let Some(le) = self.les.get(key) {
                let slot = per_le.entry(le.to_bits()).or_insert((*le, 0.0));
                slot.1 += total;
            }
        }
        ArmCounts {
            requests: to_count(requests),
            errors: to_count(errors),
            latency: Histogram::from_cumulative(
                per_le
                    .into_values()
                    .map(|(le, total)| (le, to_count(total))),
            ),
            ..ArmCounts::default()
        }
    }
}

/// A counter's increase since the first look (CPU seconds, requests shed), summed over
/// series (pods), each series reset-aware.
pub(super) fn counter_total(tracker: &mut CounterTracker, samples: &[Sample]) -> f64 {
    tracker.update(samples);
    tracker.started = true;
    tracker.all_totals().map(|(_, total)| total).sum()
}

/// Mean of the finite, non-negative values (per-pod resident memory).
pub(super) fn mean(samples: &[Sample]) -> Option<f64> {
    let values: Vec<f64> = samples
        .iter()
        .map(|s| s.value)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

pub(super) fn to_count(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Saturating float-to-int conversion.
        x.round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
    fn count(version: &str, error: Option<&str>, pod: &str, value: f64) -> Sample {
        let mut l = labels(&[(schema::VERSION, version), ("pod", pod)]);
        if let Some(e) = error {
            l.insert(schema::ERROR_TYPE.to_owned(), e.to_owned());
        }
        Sample {
            labels: l,
            value,
            native: None,
        }
    }

    fn bucket(pod: &str, le: &str, value: f64) -> Sample {
        Sample {
            labels: labels(&[("pod", pod), (schema::LE, le)]),
            value,
            native: None,
        }
    }

    #[test]
    fn tracks_series_resets_new_series_and_bad_values() {
        let mut arm = ArmTracker::default();
        // Baseline: everything before the first look is ignored.
        let first = arm.update(
            &[
                count("v1", None, "a", 100.0),
                count("v1", Some("500"), "a", 5.0),
            ],
            &[bucket("a", "0.1", 90.0), bucket("a", "+Inf", 95.0)],
        );
        assert_eq!(
            (first.requests, first.errors, first.latency.total()),
            (0, 0, 0)
        );
        // Pod a restarts (counters start over), pod b appears, a NaN.
        let second = arm.update(
            &[
                count("v1", None, "a", 10.0),
                count("v1", Some("500"), "a", f64::NAN),
                count("v1", None, "b", 20.0),
                count("v1", Some("client_aborted"), "b", 2.0),
            ],
            &[
                bucket("a", "0.1", 8.0),
                bucket("a", "+Inf", 10.0),
                bucket("b", "0.1", 20.0),
                bucket("b", "+Inf", 20.0),
            ],
        );
        assert_eq!(second.requests, 32);
        assert_eq!(second.errors, 2);
        assert_eq!(second.latency.count_le(0.1), Some(28));
        assert_eq!(second.latency.total(), 30);
        // Pod b disappears: its counts stay.
        let third = arm.update(&[count("v1", None, "a", 15.0)], &[]);
        assert_eq!(third.requests, 37);
        assert_eq!(third.errors, 2);
        assert_eq!(third.latency.total(), 30);
    }
}
