//! The scrape: both HTTP metric families in the Prometheus text format (what `/metrics`
//! serves) and as `prometheus` protobuf models (for [`prometheus::core::Collector`]), from one
//! walk over the series.
//!
//! ```text
//! let renderer = Renderer::new(&[0.005, 0.01], &[5_000_000, 10_000_000]);
//! renderer.text(&mut out, &store, &common_labels);   // http_server_request_duration_seconds_bucket{...} 3
//! renderer.families(&store, &common_labels);         // the same numbers as MetricFamily values
//! ```
//!
//! Label sets are escaped once, when a series is created; the text renderer copies them
//! and writes numbers with `itoa`, and remembers the series' label order and its output's
//! length between scrapes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::series::{CommonLabels, LabelSet, SeriesKey, METHODS};
use super::shard::Store;

use super::schema::{HTTP_ACTIVE_REQUESTS as ACTIVE_NAME, HTTP_REQUEST_DURATION as DURATION_NAME};

pub(super) const DURATION_HELP: &str = "Duration of HTTP server requests.";
pub(super) const ACTIVE_HELP: &str = "Number of active HTTP server requests.";

/// One series' totals at the scrape.
pub(super) struct Totals<'a> {
    pub(super) count: u64,
    pub(super) sum_nanos: u64,
    /// Each bucket's own (not cumulative) count, `+Inf` last.
    pub(super) buckets: &'a [u64],
    /// The native zero bucket and buckets (see [`super::native`]), when asked for and
    /// recorded.
    pub(super) native: Option<&'a [u64]>,
}

/// What the renderers of one metrics core keep: the buckets' labels and bounds, and what the
/// last scrape learned.
#[derive(Debug)]
pub(crate) struct Renderer {
    /// `,le="0.005"} ` for each bucket, `+Inf` last.
    le_labels: Box<[String]>,
    /// Bucket upper bounds in seconds, without `+Inf`.
    bounds_secs: Box<[f64]>,
    /// Series keys in label order as of the last scrape (series are never removed, so an
    /// unchanged count means an unchanged order).
    order: Mutex<Vec<SeriesKey>>,
    /// The length of the last text render, to size the next one's buffer at once.
    last_len: AtomicUsize,
}

impl Renderer {
    /// A renderer for the bucket bounds `bounds` (seconds, sorted, finite), which the
    /// recorder keeps as `bounds_nanos`.
    pub(crate) fn new(bounds: &[f64], bounds_nanos: &[u64]) -> Renderer {
        let mut le_labels: Vec<String> = bounds
            .iter()
            .map(|b| format!(",le=\"{}\"}} ", format_float(*b)))
            .collect();
        le_labels.push(",le=\"+Inf\"} ".into());
        Renderer {
            le_labels: le_labels.into_boxed_slice(),
            bounds_secs: bounds_nanos.iter().map(|b| *b as f64 / 1e9).collect(),
            order: Mutex::new(Vec::new()),
            last_len: AtomicUsize::new(0),
        }
    }

    /// Bucket upper bounds in seconds, without `+Inf`.
    pub(super) fn bounds_secs(&self) -> &[f64] {
        &self.bounds_secs
    }

    /// Calls `row` for every series, in label order, with its totals over all shards (the
    /// native buckets too with `native`, if recorded): the walk the renderers share. Holds the
    /// series lock meanwhile (recording goes on).
    pub(super) fn each_series(
        &self,
        store: &Store,
        native: bool,
        mut row: impl FnMut(&LabelSet, Totals<'_>),
    ) {
        let series = store.series();
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        if order.len() != series.len() {
            order.clear();
            order.extend(series.keys().copied());
            order.sort_unstable_by(|a, b| series[a].labels.text.cmp(&series[b].labels.text));
        }
        let mut totals = store.totals_buffer(native);
        let native_at = store.native_at().filter(|_| native);
        let buckets = self.le_labels.len();
        for s in order.iter().filter_map(|k| series.get(k)) {
            s.totals(&mut totals);
            row(
                &s.labels,
                Totals {
                    count: totals[0],
                    sum_nanos: totals[1],
                    buckets: &totals[2..2 + buckets],
                    native: native_at.map(|at| &totals[at..at + super::native::CELLS]),
                },
            );
        }
    }

    /// `(method, active requests)` for every method, `_OTHER` included, from the first scrape
    /// on: a series that exists at 0 does not pop in and out (`rate`, `absent` and dashboards
    /// see a steady set). Ten short lines per scrape.
    pub(super) fn active_rows(store: &Store) -> impl Iterator<Item = (&'static str, i64)> {
        let totals = store.active_totals();
        METHODS
            .iter()
            .zip(totals)
            .map(|(name, total)| (*name, total.max(0)))
    }

    /// Appends both HTTP metric families to `out` in the Prometheus text format.
    pub(crate) fn text(&self, out: &mut String, store: &Store, common: &CommonLabels) {
        out.reserve(self.last_len.load(Ordering::Relaxed) * 9 / 8);
        let started_at = out.len();
        let _ = write!(
            out,
            "# HELP {DURATION_NAME} {DURATION_HELP}\n# TYPE {DURATION_NAME} histogram\n"
        );
        let mut num = itoa::Buffer::new();
        let mut prefix = String::with_capacity(256);
        self.each_series(store, false, |labels, t| {
            let mut cumulative = 0u64;
            prefix.clear();
            prefix.push_str(DURATION_NAME);
            prefix.push_str("_bucket");
            prefix.push_str(&labels.text);
            for (label, b) in self.le_labels.iter().zip(t.buckets) {
                cumulative += b;
                out.push_str(&prefix);
                out.push_str(label);
                out.push_str(num.format(cumulative));
                out.push('\n');
            }
            out.push_str(DURATION_NAME);
            out.push_str("_sum");
            out.push_str(&labels.text);
            out.push_str("} ");
            push_seconds(out, t.sum_nanos, &mut num);
            out.push('\n');
            out.push_str(DURATION_NAME);
            out.push_str("_count");
            out.push_str(&labels.text);
            out.push_str("} ");
            out.push_str(num.format(t.count));
            out.push('\n');
        });
        let _ = write!(
            out,
            "# HELP {ACTIVE_NAME} {ACTIVE_HELP}\n# TYPE {ACTIVE_NAME} gauge\n"
        );
        for (name, total) in Self::active_rows(store) {
            let _ = writeln!(
                out,
                "{ACTIVE_NAME}{{http_request_method=\"{name}\",version=\"{}\"{}}} {total}",
                common.version_escaped, common.constant_escaped,
            );
        }
        self.last_len
            .store(out.len() - started_at, Ordering::Relaxed);
    }

    /// Both HTTP metric families as `prometheus` protobuf models.
    pub(crate) fn families(
        &self,
        store: &Store,
        common: &CommonLabels,
    ) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{
            Bucket, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
        };
        let label = |k: &str, v: &str| {
            let mut l = LabelPair::default();
            l.set_name(k.to_owned());
            l.set_value(v.to_owned());
            l
        };
        let consts = |pairs: &mut Vec<LabelPair>| {
            for (k, v) in &common.constant {
                pairs.push(label(k, v));
            }
        };
        let mut metrics = Vec::new();
        self.each_series(store, false, |labels, t| {
            let mut cumulative = 0u64;
            let mut buckets = Vec::with_capacity(self.bounds_secs.len());
            // The `+Inf` bucket is implied by the sample count.
            for (bound, b) in self.bounds_secs.iter().zip(t.buckets) {
                cumulative += b;
                let mut bucket = Bucket::default();
                bucket.set_cumulative_count(cumulative);
                bucket.set_upper_bound(*bound);
                buckets.push(bucket);
            }
            let mut h = Histogram::default();
            h.set_sample_count(t.count);
            h.set_sample_sum(t.sum_nanos as f64 / 1e9);
            h.set_bucket(buckets);
            let mut pairs: Vec<LabelPair> = labels.pairs.iter().map(|(k, v)| label(k, v)).collect();
            consts(&mut pairs);
            let mut m = Metric::default();
            m.set_label(pairs);
            m.set_histogram(h);
            metrics.push(m);
        });
        let mut duration = MetricFamily::default();
        duration.set_name(DURATION_NAME.into());
        duration.set_help(DURATION_HELP.into());
        duration.set_field_type(MetricType::HISTOGRAM);
        duration.set_metric(metrics);

        let mut gauges = Vec::new();
        for (name, total) in Self::active_rows(store) {
            let mut pairs = vec![
                label("http_request_method", name),
                label("version", &common.version),
            ];
            consts(&mut pairs);
            let mut g = Gauge::default();
            g.set_value(total as f64);
            let mut m = Metric::default();
            m.set_label(pairs);
            m.set_gauge(g);
            gauges.push(m);
        }
        let mut active = MetricFamily::default();
        active.set_name(ACTIVE_NAME.into());
        active.set_help(ACTIVE_HELP.into());
        active.set_field_type(MetricType::GAUGE);
        active.set_metric(gauges);
        vec![duration, active]
    }
}

/// Writes `nanos` as seconds in exact decimal (`0.033`, `12`, `1.000000001`): two integers,
/// where formatting the `f64` quotient took as long as the rest of a series' lines.
fn push_seconds(out: &mut String, nanos: u64, num: &mut itoa::Buffer) {
    const NANOS_PER_SEC: u64 = 1_000_000_000;
    out.push_str(num.format(nanos / NANOS_PER_SEC));
    let mut frac = nanos % NANOS_PER_SEC;
    if frac != 0 {
        let mut digits = 9;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        let frac = num.format(frac);
        out.push('.');
        out.push_str(&"00000000"[..digits - frac.len()]);
        out.push_str(frac);
    }
}

/// A bucket bound as Prometheus clients write `le`: the shortest form that round-trips, with
/// a decimal point for integers.
fn format_float(f: f64) -> String {
    if f == f64::INFINITY {
        "+Inf".into()
    } else {
        let s = format!("{f}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::series::Incomplete;

    #[test]
    fn seconds_are_written_as_exact_decimals() {
        let mut num = itoa::Buffer::new();
        for (nanos, text) in [
            (0, "0"),
            (33_000_000, "0.033"),
            (1, "0.000000001"),
            (1_000_000_000, "1"),
            (12_500_000_000, "12.5"),
            (1_000_000_001, "1.000000001"),
            (120_000_000_100, "120.0000001"),
            (u64::MAX, "18446744073.709551615"),
        ] {
            let mut out = String::new();
            push_seconds(&mut out, nanos, &mut num);
            assert_eq!(out, text);
            assert_eq!(out.parse::<f64>().ok(), Some(nanos as f64 / 1e9), "{text}");
        }
    }

    #[test]
    fn both_renderers_see_the_same_series_in_label_order() {
        let store = Store::new(3, false);
        let common = CommonLabels::new("1", &[]);
        let renderer = Renderer::new(&[0.01, 1.0], &[10_000_000, 1_000_000_000]);
        let bounds = [10_000_000, 1_000_000_000];
        for (route, name) in [(2, "/b"), (1, "/a")] {
            let key = SeriesKey {
                method: 0,
                route,
                status: 200,
                error: Incomplete::No,
            };
            store
                .new_cells(key, || LabelSet::new(key, name, &common))
                .observe(&bounds, 20_000_000);
        }
        let mut out = String::new();
        renderer.text(&mut out, &store, &common);
        let a = out.find("http_route=\"/a\"").expect("rendered");
        let b = out.find("http_route=\"/b\"").expect("rendered");
        assert!(a < b, "sorted by labels: {out}");
        assert!(
            out.contains(
                "http_route=\"/a\",http_response_status_code=\"200\",version=\"1\",le=\"1.0\"} 1\n"
            ),
            "{out}"
        );
        let families = renderer.families(&store, &common);
        let series = families[0].get_metric();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].get_label()[1].value(), "/a");
        let h = series[0].get_histogram();
        assert_eq!(h.get_sample_count(), 1);
        let counts: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(counts, [0, 1]);
        assert_eq!(h.get_bucket()[1].upper_bound(), 1.0);
    }
}
