//! The Prometheus protobuf exposition: length-delimited `io.prometheus.client.MetricFamily`
//! messages, what `/metrics` answers a scraper whose `Accept` asks for
//! [`CONTENT_TYPE`] (Prometheus with `--enable-feature=native-histograms`). The only format
//! that carries native histograms to Prometheus 2.x.
//!
//! ```text
//! if protobuf::accepts(req.headers().get(ACCEPT)) {
//!     let mut out = Vec::new();
//!     core.render_protobuf(&mut out);                // the HTTP families, from the shards
//!     protobuf::families(&mut out, &registry.gather());   // everything else
//! }
//! ```
//!
//! Written by hand (a few varint and fixed64 writers) rather than with a protobuf crate: the
//! HTTP families are encoded straight from the series' totals and pre-built label pairs, and
//! the registry's from the `prometheus` crate's plain models, with no intermediate message
//! structs, no build script and no new dependency. The field numbers are those of
//! `io/prometheus/client/metrics.proto` (proto2; repeated scalars unpacked, as declared). The
//! tests decode the output with `prost`-derived structs of the same schema.

use prometheus::proto::{MetricFamily, MetricType};

use super::native::{self, Native};
use super::render::Renderer;
use super::schema::{HTTP_ACTIVE_REQUESTS, HTTP_REQUEST_DURATION, HTTP_REQUEST_METHOD, VERSION};
use super::series::CommonLabels;
use super::shard::Store;

/// The content type of the exposition, as Prometheus asks for it and as `/metrics` answers.
pub(crate) const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Whether an `Accept` header asks for the delimited protobuf exposition (with a non-zero
/// `q`). Prometheus sends it first when its native histograms are on.
pub(crate) fn accepts(accept: Option<&http::HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|t| t.eq_ignore_ascii_case("application/vnd.google.protobuf"))
        {
            return false;
        }
        let (mut proto, mut delimited, mut q) = (false, false, true);
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.trim() {
                "proto" => proto = v.trim() == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = v.trim() == "delimited",
                "q" => q = v.trim().parse::<f32>().map_or(true, |q| q > 0.0),
                _ => {}
            }
        }
        proto && delimited && q
    })
}

// ---- wire format ----

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
    tag(out, field, VARINT);
    varint(out, v);
}

fn sint(out: &mut Vec<u8>, field: u64, v: i64) {
    tag(out, field, VARINT);
    varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn double(out: &mut Vec<u8>, field: u64, v: f64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn string(out: &mut Vec<u8>, field: u64, s: &str) {
    tag(out, field, LEN);
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A length-prefixed body written by `body`: one byte is kept for the length, and the body
/// moved only in the rare case its length needs more.
fn delimited(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        varint(&mut prefix, len as u64);
        out.splice(at..at + 1, prefix);
    }
}

/// An embedded message in field `field`.
fn message(out: &mut Vec<u8>, field: u64, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    delimited(out, body);
}

fn label(out: &mut Vec<u8>, name: &str, value: &str) {
    message(out, 1, |out| {
        string(out, 1, name);
        string(out, 2, value);
    });
}

/// `MetricType` numbers.
fn type_number(t: MetricType) -> u64 {
    match t {
        MetricType::COUNTER => 0,
        MetricType::GAUGE => 1,
        MetricType::SUMMARY => 2,
        MetricType::UNTYPED => 3,
        MetricType::HISTOGRAM => 4,
    }
}

// ---- the HTTP families ----

/// Appends the HTTP families (request durations with classic buckets and, when recorded,
/// native histogram fields; active requests) as delimited `MetricFamily` messages.
pub(super) fn http_families(
    out: &mut Vec<u8>,
    renderer: &Renderer,
    store: &Store,
    common: &CommonLabels,
) {
    let consts = |out: &mut Vec<u8>| {
        for (k, v) in &common.constant {
            label(out, k, v);
        }
    };
    let start = out.len();
    let mut series = 0;
    delimited(out, |out| {
        string(out, 1, HTTP_REQUEST_DURATION);
        string(out, 2, super::render::DURATION_HELP);
        uint(out, 3, type_number(MetricType::HISTOGRAM));
        renderer.each_series(store, true, |labels, t| {
            series += 1;
            message(out, 4, |out| {
                for (k, v) in &labels.pairs {
                    label(out, k, v);
                }
                consts(out);
                message(out, 7, |out| {
                    uint(out, 1, t.count);
                    double(out, 2, t.sum_nanos as f64 / 1e9);
                    let mut cumulative = 0;
                    // The `+Inf` bucket is implied by the sample count.
                    for (bound, b) in renderer.bounds_secs().iter().zip(t.buckets) {
                        cumulative += b;
                        message(out, 3, |out| {
                            uint(out, 1, cumulative);
                            double(out, 2, *bound);
                        });
                    }
                    if let Some(cells) = t.native {
                        native_fields(out, &Native::from_cells(cells));
                    }
                });
            });
        });
    });
    if series == 0 {
        // No request yet: no family, as client libraries do (a family without metrics is
        // not valid in the exposition).
        out.truncate(start);
    }
    delimited(out, |out| {
        string(out, 1, HTTP_ACTIVE_REQUESTS);
        string(out, 2, super::render::ACTIVE_HELP);
        uint(out, 3, type_number(MetricType::GAUGE));
        for (method, total) in Renderer::active_rows(store) {
            message(out, 4, |out| {
                label(out, HTTP_REQUEST_METHOD, method);
                label(out, VERSION, &common.version);
                consts(out);
                message(out, 2, |out| double(out, 1, total as f64));
            });
        }
    });
}

/// The native fields of a `Histogram`: schema, zero bucket, positive spans and deltas.
fn native_fields(out: &mut Vec<u8>, h: &Native) {
    sint(out, 5, i64::from(h.schema));
    double(out, 6, native::ZERO_THRESHOLD);
    uint(out, 7, h.zero_count);
    for span in &h.spans {
        message(out, 12, |out| {
            sint(out, 1, i64::from(span.offset));
            uint(out, 2, u64::from(span.length));
        });
    }
    for d in &h.deltas {
        sint(out, 13, *d);
    }
}

// ---- the registry's families ----

/// Appends `families` (from [`prometheus::Registry::gather`]) as delimited `MetricFamily`
/// messages.
pub(crate) fn families(out: &mut Vec<u8>, families: &[MetricFamily]) {
    for f in families {
        delimited(out, |out| {
            string(out, 1, f.name());
            string(out, 2, f.help());
            let kind = f.get_field_type();
            uint(out, 3, type_number(kind));
            for m in f.get_metric() {
                message(out, 4, |out| {
                    for l in m.get_label() {
                        label(out, l.name(), l.value());
                    }
                    match kind {
                        MetricType::COUNTER => {
                            message(out, 3, |out| double(out, 1, m.get_counter().get_value()))
                        }
                        MetricType::GAUGE => {
                            message(out, 2, |out| double(out, 1, m.get_gauge().get_value()))
                        }
                        // Deprecated in the plain model, but still what an untyped metric holds.
                        #[allow(deprecated)]
                        MetricType::UNTYPED => {
                            message(out, 5, |out| double(out, 1, m.get_untyped().get_value()))
                        }
                        MetricType::SUMMARY => message(out, 4, |out| {
                            let s = m.get_summary();
                            uint(out, 1, s.sample_count());
                            double(out, 2, s.sample_sum());
                            for q in s.get_quantile() {
                                message(out, 3, |out| {
                                    double(out, 1, q.quantile());
                                    double(out, 2, q.value());
                                });
                            }
                        }),
                        MetricType::HISTOGRAM => message(out, 7, |out| {
                            let h = m.get_histogram();
                            uint(out, 1, h.get_sample_count());
                            double(out, 2, h.get_sample_sum());
                            for b in h.get_bucket() {
                                message(out, 3, |out| {
                                    uint(out, 1, b.cumulative_count());
                                    double(out, 2, b.upper_bound());
                                });
                            }
                        }),
                    }
                    if m.timestamp_ms() != 0 {
                        tag(out, 6, VARINT);
                        varint(out, m.timestamp_ms() as u64);
                    }
                });
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod decode {
    //! `prost`-derived structs of `io.prometheus.client`'s schema, to read the exposition
    //! back in tests.
    #![allow(missing_docs, unreachable_pub)]

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, optional, tag = "1")]
        pub cumulative_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub upper_bound: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, optional, tag = "1")]
        pub offset: Option<i32>,
        #[prost(uint32, optional, tag = "2")]
        pub length: Option<u32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(sint32, optional, tag = "5")]
        pub schema: Option<i32>,
        #[prost(double, optional, tag = "6")]
        pub zero_threshold: Option<f64>,
        #[prost(uint64, optional, tag = "7")]
        pub zero_count: Option<u64>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, packed = "false", tag = "13")]
        pub positive_delta: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Value>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Value>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }

    /// Every delimited family in `bytes`.
    pub fn all(mut bytes: &[u8]) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            out.push(prost::Message::decode_length_delimited(&mut bytes).expect("a family"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::routes::RouteName;
    use crate::metrics::series::{Incomplete, SeriesKey};
    use crate::metrics::{HttpMetrics, DEFAULT_BUCKETS};

    #[test]
    fn accept_headers_that_ask_for_the_delimited_protobuf() {
        let yes = |a: &str| accepts(Some(&http::HeaderValue::from_str(a).unwrap()));
        // What Prometheus 2.42 sends with native histograms on.
        assert!(yes("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"));
        assert!(yes(CONTENT_TYPE));
        assert!(!yes(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!yes(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        ));
        assert!(!yes("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"));
        assert!(!accepts(None));
    }

    #[test]
    fn varints_and_long_messages_round_trip() {
        let mut out = Vec::new();
        delimited(&mut out, |out| string(out, 1, &"x".repeat(300)));
        let mut bytes = &out[..];
        let len = prost::encoding::decode_varint(&mut bytes).unwrap();
        assert_eq!(len as usize, bytes.len());
        assert_eq!(len, 303, "tag, a 2-byte length, 300 bytes");
    }

    fn core(native: bool) -> &'static HttpMetrics {
        HttpMetrics::leak(
            "1.2.3",
            &[("track".into(), "canary".into())],
            DEFAULT_BUCKETS,
            native,
            tokio_util::sync::CancellationToken::new(),
        )
    }

    fn record(m: &'static HttpMetrics, nanos: &[u64]) {
        for n in nanos {
            let r = m.start(0, RouteName::Static("/hello/{name}"), true);
            let key = SeriesKey {
                method: 0,
                route: r,
                status: 200,
                error: Incomplete::No,
            };
            m.observe(key, *n);
        }
    }

    #[test]
    fn the_http_families_decode_with_classic_and_native_buckets() {
        let m = core(true);
        record(m, &[2_800_000, 2_900_000, 30_000_000, 0]);
        let mut out = Vec::new();
        m.render_protobuf(&mut out);
        let families = decode::all(&out);
        assert_eq!(families.len(), 2);
        let d = &families[0];
        assert_eq!(d.name.as_deref(), Some(HTTP_REQUEST_DURATION));
        assert_eq!(d.r#type, Some(4));
        let metric = &d.metric[0];
        let labels: Vec<(&str, &str)> =
            metric.label.iter().map(|l| (l.name(), l.value())).collect();
        assert!(labels.contains(&("http_route", "/hello/{name}")));
        assert!(labels.contains(&("version", "1.2.3")));
        assert!(labels.contains(&("track", "canary")));
        let h = metric.histogram.as_ref().unwrap();
        assert_eq!(h.sample_count, Some(4));
        assert!((h.sample_sum.unwrap() - 0.0357).abs() < 1e-12);
        assert_eq!(h.bucket.len(), DEFAULT_BUCKETS.len());
        assert_eq!(h.bucket[0].upper_bound, Some(0.005));
        assert_eq!(h.bucket[0].cumulative_count, Some(3));
        assert_eq!(h.schema, Some(3));
        assert_eq!(h.zero_threshold, Some(native::ZERO_THRESHOLD));
        assert_eq!(h.zero_count, Some(1));
        // 2.8 ms and 2.9 ms share a bucket (bounds 9% apart); 30 ms is 20+ buckets on.
        assert_eq!(h.positive_span.len(), 2);
        assert_eq!(h.positive_delta, [2, -1]);
        let first = h.positive_span[0].offset();
        assert!(
            native::upper_bound(3, first - 1) < 0.0028 && 0.0029 <= native::upper_bound(3, first)
        );
        let active = &families[1];
        assert_eq!(active.name.as_deref(), Some(HTTP_ACTIVE_REQUESTS));
        assert_eq!(active.metric.len(), 10, "one per method");
        assert_eq!(active.metric[0].gauge.as_ref().unwrap().value, Some(0.0));
    }

    #[test]
    fn before_the_first_request_the_duration_family_is_left_out() {
        let m = core(true);
        let mut out = Vec::new();
        m.render_protobuf(&mut out);
        let families = decode::all(&out);
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].name(), HTTP_ACTIVE_REQUESTS);
    }

    #[test]
    fn without_native_histograms_only_the_classic_buckets_are_sent() {
        let m = core(false);
        record(m, &[3_000_000]);
        let mut out = Vec::new();
        m.render_protobuf(&mut out);
        let h = decode::all(&out)[0].metric[0].histogram.clone().unwrap();
        assert_eq!(h.schema, None);
        assert!(h.positive_span.is_empty());
        assert_eq!(h.bucket[0].cumulative_count, Some(1));
    }

    #[test]
    fn registry_families_round_trip() {
        let registry = prometheus::Registry::new();
        let c =
            prometheus::IntCounterVec::new(prometheus::Opts::new("c_total", "C."), &["k"]).unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.with_label_values(&["v"]).inc_by(7);
        let g = prometheus::Gauge::new("g", "G.").unwrap();
        registry.register(Box::new(g.clone())).unwrap();
        g.set(2.5);
        let mut out = Vec::new();
        families(&mut out, &registry.gather());
        let f = decode::all(&out);
        assert_eq!(f[0].name(), "c_total");
        assert_eq!(f[0].r#type, Some(0));
        assert_eq!(f[0].metric[0].label[0].value(), "v");
        assert_eq!(f[0].metric[0].counter.as_ref().unwrap().value, Some(7.0));
        assert_eq!(f[1].metric[0].gauge.as_ref().unwrap().value, Some(2.5));
    }
}
