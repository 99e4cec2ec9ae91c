//! `/metrics` in the OpenMetrics text format (`application/openmetrics-text; version=1.0.0`)
//! for a scraper that asks for it in `Accept` (Prometheus does by default), with the
//! request-duration histogram's exemplars; the Prometheus text format (0.0.4) otherwise,
//! byte for byte as before.
//!
//! ```text
//! if wants_openmetrics(req.headers().get(ACCEPT)) {   // in `Metrics::respond`
//!     (metrics.render_openmetrics(), OPENMETRICS)
//! }
//! ```
//!
//! The OpenMetrics text is the Prometheus text rewritten line by line: a counter family is
//! named without its `_total` (its samples keep it; a counter whose name lacks it becomes
//! `unknown`, so that no sample is renamed), `untyped` becomes `unknown`, `"` in help texts is
//! escaped, each bucket of the request-duration histogram carries its exemplar
//! (`# {trace_id="…"} 0.012 1700000000.123`), and the exposition ends with `# EOF`.

use std::collections::HashMap;
use std::fmt::Write as _;

use http::HeaderValue;
use memchr::memmem;

use super::exemplars::Exemplar;
use super::schema::HTTP_REQUEST_DURATION;
use super::Metrics;

/// The OpenMetrics text format's content type.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    /// Renders every metric in the OpenMetrics text format, with the request-duration
    /// histogram's exemplars (the latest sampled request of each bucket).
    pub fn render_openmetrics(&self) -> String {
        let text = self.render();
        let exemplars = self.core.exemplars();
        let mut out = String::with_capacity(text.len() + 64 * exemplars.len() + 8);
        convert(&text, &exemplars, &mut out);
        out
    }
}

/// Whether `accept` prefers OpenMetrics text to the Prometheus text format.
pub(crate) fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let (mut openmetrics, mut text) = (None::<f32>, None::<f32>);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut openmetrics,
            "text/plain" | "text/*" | "*/*" => &mut text,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |s: f32| s.max(q)));
    }
    matches!(openmetrics, Some(q) if q > 0.0 && q >= text.unwrap_or(0.0))
}

/// Rewrites the Prometheus text `text` as OpenMetrics text into `out`, with `exemplars` (by
/// the series' label text, then bucket index) on the request-duration buckets.
pub(crate) fn convert(
    text: &str,
    exemplars: &HashMap<String, Vec<(usize, Exemplar)>>,
    out: &mut String,
) {
    let bucket_prefix = format!("{HTTP_REQUEST_DURATION}_bucket{{");
    // A `# HELP` waits for its family's `# TYPE`, which may rename the family.
    let mut help: Option<(&str, &str)> = None;
    // The bucket lines of the current series: its label text and the next bucket's index.
    let mut series: (&str, usize) = ("", 0);
    let mut rest = text;
    while !rest.is_empty() {
        // The sample lines up to the next comment line are copied as they are, in one piece
        // (a scrape is ~20 lines per series: copying line by line tripled the render time, and
        // `str::find` over megabytes was slower still; `memchr`'s search is SIMD),
        // unless they hold the duration buckets and there are exemplars to add.
        let samples = if rest.starts_with('#') {
            0
        } else {
            memmem::find(rest.as_bytes(), b"\n#").map_or(rest.len(), |i| i + 1)
        };
        if samples > 0 {
            let block = &rest[..samples];
            rest = &rest[samples..];
            flush_help(&mut help, None, out);
            let per_line = block.starts_with('\n')
                || memmem::find(block.as_bytes(), b"\n\n").is_some()
                || (!exemplars.is_empty()
                    && memmem::find(block.as_bytes(), bucket_prefix.as_bytes()).is_some());
            if !per_line {
                out.push_str(block);
                if !block.ends_with('\n') {
                    out.push('\n');
                }
                continue;
            }
            for line in block.lines().filter(|l| !l.is_empty()) {
                out.push_str(line);
                if !exemplars.is_empty() && line.starts_with(&bucket_prefix) {
                    exemplar(line, exemplars, &mut series, out);
                }
                out.push('\n');
            }
            continue;
        }
        let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let line = rest[..end].trim_end_matches('\n');
        rest = &rest[end..];
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut help, None, out);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (family, kind) = match kind {
                "counter" => match name.strip_suffix("_total") {
                    Some(family) => (family, "counter"),
                    None => (name, "unknown"),
                },
                "untyped" => (name, "unknown"),
                other => (name, other),
            };
            flush_help(&mut help, Some((name, family)), out);
            let _ = writeln!(out, "# TYPE {family} {kind}");
        }
    }
    flush_help(&mut help, None, out);
    out.push_str("# EOF\n");
}

/// Appends to the bucket `line` of the series `series` tracks (its label text, the next
/// bucket's index) that bucket's exemplar, if any.
fn exemplar<'a>(
    line: &'a str,
    exemplars: &HashMap<String, Vec<(usize, Exemplar)>>,
    series: &mut (&'a str, usize),
    out: &mut String,
) {
    let Some(labels_end) = line.find(",le=\"") else {
        return;
    };
    let labels = &line[HTTP_REQUEST_DURATION.len() + "_bucket".len()..labels_end];
    if series.0 != labels {
        *series = (labels, 0);
    }
    let found = exemplars
        .get(labels)
        .and_then(|e| e.iter().find(|(b, _)| *b == series.1));
    if let Some((_, e)) = found {
        let _ = write!(
            out,
            " # {{trace_id=\"{}\"}} {} {:.3}",
            e.trace_id, e.value, e.timestamp
        );
    }
    series.1 += 1;
}

/// Writes a waiting `# HELP`, under the family name `rename` gives it (`(name, family)`) if
/// it is that family's, with `"` escaped.
fn flush_help<'a>(
    help: &mut Option<(&'a str, &'a str)>,
    rename: Option<(&str, &str)>,
    out: &mut String,
) {
    let Some((name, text)) = help.take() else {
        return;
    };
    let name = match rename {
        Some((n, family)) if n == name => family,
        _ => name,
    };
    let _ = writeln!(out, "# HELP {name} {}", text.replace('"', "\\\""));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceId;

    #[test]
    fn accept_headers_choose_the_format() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        // Prometheus 2.x's default scrape Accept header.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, om) in [
            (prometheus, true),
            ("application/openmetrics-text", true),
            (
                "application/openmetrics-text; version=1.0.0; q=0.9, text/plain; q=0.5",
                true,
            ),
            ("text/plain;version=0.0.4", false),
            ("*/*", false),
            ("text/plain, application/openmetrics-text;q=0.5", false),
            ("application/openmetrics-text;q=0", false),
            ("application/json", false),
        ] {
            assert_eq!(wants_openmetrics(Some(&h(accept))), om, "{accept}");
        }
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn text_becomes_openmetrics_with_exemplars() {
        let text = "\
# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{m=\"GET\",version=\"1\",le=\"0.005\"} 1
http_server_request_duration_seconds_bucket{m=\"GET\",version=\"1\",le=\"+Inf\"} 2
http_server_request_duration_seconds_sum{m=\"GET\",version=\"1\"} 0.1
http_server_request_duration_seconds_count{m=\"GET\",version=\"1\"} 2
http_server_request_duration_seconds_bucket{m=\"PUT\",version=\"1\",le=\"0.005\"} 0
http_server_request_duration_seconds_bucket{m=\"PUT\",version=\"1\",le=\"+Inf\"} 1
# HELP podcycle_things_total Things \"quoted\".
# TYPE podcycle_things_total counter
podcycle_things_total 3
# HELP odd A counter without _total.
# TYPE odd counter
odd 1
# HELP u Untyped.
# TYPE u untyped
u 1
";
        let trace = TraceId::from_bytes([0xab; 16]).unwrap();
        let mut exemplars = HashMap::new();
        exemplars.insert(
            "{m=\"GET\",version=\"1\"".to_owned(),
            vec![(
                1,
                Exemplar {
                    trace_id: trace,
                    value: 0.095,
                    timestamp: 1700000000.5,
                },
            )],
        );
        let mut out = String::new();
        convert(text, &exemplars, &mut out);
        let want = format!("\
# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{{m=\"GET\",version=\"1\",le=\"0.005\"}} 1
http_server_request_duration_seconds_bucket{{m=\"GET\",version=\"1\",le=\"+Inf\"}} 2 # {{trace_id=\"{trace}\"}} 0.095 1700000000.500
http_server_request_duration_seconds_sum{{m=\"GET\",version=\"1\"}} 0.1
http_server_request_duration_seconds_count{{m=\"GET\",version=\"1\"}} 2
http_server_request_duration_seconds_bucket{{m=\"PUT\",version=\"1\",le=\"0.005\"}} 0
http_server_request_duration_seconds_bucket{{m=\"PUT\",version=\"1\",le=\"+Inf\"}} 1
# HELP podcycle_things Things \\\"quoted\\\".
# TYPE podcycle_things counter
podcycle_things_total 3
# HELP odd A counter without _total.
# TYPE odd unknown
odd 1
# HELP u Untyped.
# TYPE u unknown
u 1
# EOF
");
        assert_eq!(out, want);
    }
}
