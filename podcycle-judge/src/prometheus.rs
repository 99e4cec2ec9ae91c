//! Reading both arms' counters from a Prometheus server's HTTP API.
//!
//! Each look runs four instant queries (`/api/v1/query`), all evaluated at
//! the same timestamp, against the raw series of podcycle's
//! `http_server_request_duration_seconds` histogram:
//!
//! ```text
//! http_server_request_duration_seconds_count{version="<arm>"[,http_route="<route>"][,<selector>]}
//! http_server_request_duration_seconds_bucket{version="<arm>",error_type=""[,...]}
//! ```
//!
//! Requests are the sum of `_count`, errors the `_count` series whose
//! `error_type` label is set, latency the `_bucket` series of successful
//! requests summed per `le`. Series are followed one by one: a series that
//! goes down was reset (its pod restarted) and its new value is the
//! increment; a series first seen after the first look started after it and
//! counts in full. So the snapshots are monotone counts since the first look.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use podcycle::metrics::schema;
use serde_json::Value;

use crate::run::SnapshotSource;
use crate::snapshot::{ArmCounts, Histogram, Snapshot};

/// podcycle's process metrics (Prometheus' standard names).
const PROCESS_CPU: &str = "process_cpu_seconds_total";
const PROCESS_RSS: &str = "process_resident_memory_bytes";

/// Largest response body accepted from Prometheus.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Where and what to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// Base URL of the server, `http://` or (with the `tls` feature)
    /// `https://`, with an optional path prefix, e.g.
    /// `https://thanos.example.com/prometheus`.
    pub url: String,
    /// Version label value of the stable arm.
    pub stable: String,
    /// Version label value of the canary arm.
    pub canary: String,
    /// Name of the version label. Default `version`.
    pub version_label: String,
    /// Histogram name. Default `http_server_request_duration_seconds`.
    pub metric: String,
    /// Only requests whose `http_route` is this route.
    pub route: Option<String>,
    /// Extra PromQL label matchers, e.g. `namespace="shop",job="chatbot"`.
    pub selector: Option<String>,
    /// Extra request headers, e.g. `("Authorization", "Bearer ...")`.
    pub headers: Vec<(String, String)>,
    /// Time allowed for one query. Default 10 s.
    pub timeout: Duration,
    /// Also read each arm's `process_cpu_seconds_total` and
    /// `process_resident_memory_bytes` (for the CPU comparison and the
    /// memory guardrail). Default off.
    pub resources: bool,
    /// PEM file of the certificate authorities trusted for `https://`
    /// instead of the system's roots (`tls` feature). Default none.
    pub ca_file: Option<std::path::PathBuf>,
}

impl PrometheusConfig {
    /// Reads `url` for the versions `stable` and `canary`, with defaults for
    /// the rest.
    pub fn new(
        url: impl Into<String>,
        stable: impl Into<String>,
        canary: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            stable: stable.into(),
            canary: canary.into(),
            version_label: schema::VERSION.to_owned(),
            metric: schema::HTTP_REQUEST_DURATION.to_owned(),
            route: None,
            selector: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            resources: false,
            ca_file: None,
        }
    }

    /// Checks a base URL: `http://` or `https://`, a host, an optional path prefix; no
    /// credentials (`user:password@`: they would not be sent, and an error message would
    /// show them; use an `Authorization` header, e.g. the command's `--bearer-token-file`
    /// or `--basic-auth-user` with `--basic-auth-password-file`), no query string and no
    /// fragment (the judge appends `/api/v1/query?...` itself). Returns whether it is
    /// `https`.
    ///
    /// Its messages never repeat the credentials or the query string of `url`, which
    /// may hold a secret.
    pub fn check_url(url: &str) -> Result<bool, PrometheusError> {
        let url = url.trim().trim_end_matches('/');
        let shown = redact_url(url);
        let refuse = |why: &str| {
            Err(PrometheusError::Config(format!(
                "invalid URL {shown:?}: {why}"
            )))
        };
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return refuse(
                "credentials in the URL are refused (they would not be sent, and errors would \
                 show them): put the secret in a file and pass --bearer-token-file, or \
                 --basic-auth-user with --basic-auth-password-file",
            );
        }
        if url.contains('?') || url.contains('#') {
            return refuse(
                "a query string or fragment on the base URL is refused: the judge appends \
                 /api/v1/query?... itself; give the base URL only (e.g. \
                 http://prometheus:9090 or https://thanos.example.com/prometheus)",
            );
        }
        let uri: Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => return refuse(&format!("{e}; expected http://host:port[/path]")),
        };
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return refuse("expected http://host:port[/path] or https://host[/path]"),
        };
        if uri.authority().is_none_or(|a| a.host().is_empty()) {
            return refuse("expected http://host:port[/path]");
        }
        Ok(https)
    }

    /// The PromQL of the resource queries of one look, when
    /// [`resources`](Self::resources) is on: stable CPU, stable resident
    /// memory, canary CPU, canary resident memory. Process metrics are per
    /// process, so `route` does not apply; `selector` does.
    pub fn resource_queries(&self) -> Result<[String; 4], PrometheusError> {
        Ok([
            self.process_query(&self.stable, PROCESS_CPU)?,
            self.process_query(&self.stable, PROCESS_RSS)?,
            self.process_query(&self.canary, PROCESS_CPU)?,
            self.process_query(&self.canary, PROCESS_RSS)?,
        ])
    }

    fn process_query(&self, version: &str, metric: &str) -> Result<String, PrometheusError> {
        if !is_label_name(&self.version_label) {
            return Err(PrometheusError::Config(format!(
                "{:?} is not a valid label name",
                self.version_label
            )));
        }
        let mut matchers = vec![format!("{}=\"{}\"", self.version_label, escape(version))];
        matchers.extend(self.selector_matchers()?);
        Ok(format!("{metric}{{{}}}", matchers.join(",")))
    }

    /// The selector's label matchers, checked: only `name op "value"` pairs separated by
    /// commas, so a selector (which `podcycle-judge serve` takes from its callers) cannot
    /// splice other PromQL into the queries.
    fn selector_matchers(&self) -> Result<Option<String>, PrometheusError> {
        let Some(selector) = self.selector.as_deref() else {
            return Ok(None);
        };
        let selector = selector
            .trim()
            .trim_matches(|c| c == '{' || c == '}')
            .trim();
        if selector.is_empty() {
            return Ok(None);
        }
        label_matchers(selector).map(Some).map_err(|why| {
            PrometheusError::Config(format!(
                "selector {selector:?} is not a list of label matchers such as \
                 namespace=\"shop\",pod=~\"chatbot-.*\": {why}"
            ))
        })
    }

    /// The PromQL of the four queries of one look: stable requests, stable
    /// buckets, canary requests, canary buckets.
    pub fn queries(&self) -> Result<[String; 4], PrometheusError> {
        Ok([
            self.query(&self.stable, false)?,
            self.query(&self.stable, true)?,
            self.query(&self.canary, false)?,
            self.query(&self.canary, true)?,
        ])
    }

    fn query(&self, version: &str, buckets: bool) -> Result<String, PrometheusError> {
        if !is_metric_name(&self.metric) {
            return Err(PrometheusError::Config(format!(
                "{:?} is not a valid metric name",
                self.metric
            )));
        }
        if !is_label_name(&self.version_label) {
            return Err(PrometheusError::Config(format!(
                "{:?} is not a valid label name",
                self.version_label
            )));
        }
        let mut matchers = vec![format!("{}=\"{}\"", self.version_label, escape(version))];
        if buckets {
            matchers.push(format!("{}=\"\"", schema::ERROR_TYPE));
        }
        if let Some(route) = &self.route {
            matchers.push(format!("{}=\"{}\"", schema::HTTP_ROUTE, escape(route)));
        }
        matchers.extend(self.selector_matchers()?);
        let suffix = if buckets { "_bucket" } else { "_count" };
        Ok(format!("{}{suffix}{{{}}}", self.metric, matchers.join(",")))
    }
}

/// Escapes a PromQL double-quoted string.
/// Parses `name op "value", ...` (op one of `=`, `!=`, `=~`, `!~`; values double-quoted
/// with backslash escapes) and returns the matchers joined by commas.
fn label_matchers(selector: &str) -> Result<String, &'static str> {
    let mut out = Vec::new();
    let mut rest = selector;
    loop {
        rest = rest.trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if !is_label_name(name) {
            return Err("expected a label name");
        }
        rest = rest[name_len..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or("expected =, !=, =~ or !~ after the label name")?;
        rest = rest[op.len()..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            return Err("expected a double-quoted value");
        };
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, '\n') => return Err("a value spans lines"),
                _ => {}
            }
        }
        let end = end.ok_or("a value's closing quote is missing")?;
        out.push(format!("{name}{op}\"{}\"", &body[..end]));
        rest = body[end + 1..].trim_start();
        if rest.is_empty() {
            return Ok(out.join(","));
        }
        rest = rest
            .strip_prefix(',')
            .ok_or("expected a comma between matchers")?;
        if rest.trim().is_empty() {
            return Ok(out.join(","));
        }
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The query string of an instant query: `query=<promql>&time=<unix seconds>`,
/// form-encoded as Prometheus' API (Go's `url.ParseQuery`) reads it.
fn query_string(promql: &str, time: f64) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("query", promql)
        .append_pair("time", &format!("{time:.3}"))
        .finish()
}

/// Why a look at Prometheus failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PrometheusError {
    /// The configuration cannot work (bad URL, label name, header).
    Config(String),
    /// The server could not be reached or the response not read.
    Transport(String),
    /// No response within the query timeout.
    Timeout(Duration),
    /// The server answered a status other than 200.
    Status {
        /// HTTP status code.
        status: u16,
        /// Prometheus' `error` field, or the start of the body.
        message: String,
    },
    /// The server answered `"status": "error"`.
    Api {
        /// Prometheus' `errorType` (`bad_data`, `timeout`, ...).
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// The body is not the JSON of an instant query.
    Decode(String),
    /// The query gave a result type other than `vector` or `scalar`.
    UnexpectedResultType(String),
}

impl fmt::Display for PrometheusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrometheusError::Config(m) => write!(f, "invalid Prometheus configuration: {m}"),
            PrometheusError::Transport(m) => write!(
                f,
                "cannot reach Prometheus: {m} (check --prometheus and the network path)"
            ),
            PrometheusError::Timeout(d) => write!(
                f,
                "Prometheus did not answer within {d:?} (raise --query-timeout or narrow --selector)"
            ),
            PrometheusError::Status { status, message } => {
                write!(f, "Prometheus answered HTTP {status}: {message}")
            }
            PrometheusError::Api {
                error_type,
                message,
            } => write!(f, "Prometheus query error ({error_type}): {message}"),
            PrometheusError::Decode(m) => write!(
                f,
                "unexpected response from Prometheus: {m} (is --prometheus a Prometheus API?)"
            ),
            PrometheusError::UnexpectedResultType(t) => write!(
                f,
                "Prometheus returned a {t} result where an instant vector was expected"
            ),
        }
    }
}

impl std::error::Error for PrometheusError {}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels (with `__name__` when Prometheus keeps it).
    pub labels: BTreeMap<String, String>,
    /// The value; may be NaN or infinite.
    pub value: f64,
}

/// The result of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// `resultType: vector`; empty when nothing matched.
    Vector(Vec<Sample>),
    /// `resultType: scalar`.
    Scalar(f64),
}

/// Parses the response of `/api/v1/query` with HTTP status `status`.
///
/// Non-200 statuses and `"status": "error"` bodies become errors carrying
/// Prometheus' own message. Sample values are strings in the API (`"1"`,
/// `"NaN"`, `"+Inf"`); they are parsed to `f64`, non-finite values kept.
/// Samples of native histograms (no `value`) are skipped.
pub fn parse_query_response(status: u16, body: &[u8]) -> Result<QueryResult, PrometheusError> {
    let json: Result<Value, _> = serde_json::from_slice(body);
    let api_error = |v: &Value| -> Option<(String, String)> {
        (v.get("status")?.as_str()? == "error").then(|| {
            let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (text("errorType"), text("error"))
        })
    };
    if status != 200 {
        let message = match &json {
            Ok(v) => api_error(v).map(|(t, m)| format!("{t}: {m}")),
            Err(_) => None,
        }
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            text.chars().take(200).collect()
        });
        return Err(PrometheusError::Status { status, message });
    }
    let json = json.map_err(|e| PrometheusError::Decode(format!("invalid JSON: {e}")))?;
    if let Some((error_type, message)) = api_error(&json) {
        return Err(PrometheusError::Api {
            error_type,
            message,
        });
    }
    if json.get("status").and_then(Value::as_str) != Some("success") {
        return Err(PrometheusError::Decode(
            "no \"status\": \"success\"".to_owned(),
        ));
    }
    let data = json
        .get("data")
        .ok_or_else(|| PrometheusError::Decode("no \"data\"".to_owned()))?;
    let kind = data
        .get("resultType")
        .and_then(Value::as_str)
        .ok_or_else(|| PrometheusError::Decode("no \"data.resultType\"".to_owned()))?;
    let result = data
        .get("result")
        .ok_or_else(|| PrometheusError::Decode("no \"data.result\"".to_owned()))?;
    match kind {
        "vector" => {
            let items = result
                .as_array()
                .ok_or_else(|| PrometheusError::Decode("\"result\" is not an array".to_owned()))?;
            let mut samples = Vec::with_capacity(items.len());
            for item in items {
                let Some(value) = item.get("value") else {
                    continue; // a native histogram sample
                };
                let labels = match item.get("metric") {
                    None | Some(Value::Null) => BTreeMap::new(),
                    Some(Value::Object(map)) => map
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect(),
                    Some(_) => {
                        return Err(PrometheusError::Decode(
                            "\"metric\" is not an object".to_owned(),
                        ))
                    }
                };
                samples.push(Sample {
                    labels,
                    value: parse_point(value)?,
                });
            }
            Ok(QueryResult::Vector(samples))
        }
        "scalar" => Ok(QueryResult::Scalar(parse_point(result)?)),
        other => Err(PrometheusError::UnexpectedResultType(other.to_owned())),
    }
}

/// `[<unix time>, "<value>"]` to the value.
fn parse_point(point: &Value) -> Result<f64, PrometheusError> {
    let text = point
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| a[1].as_str())
        .ok_or_else(|| PrometheusError::Decode(format!("bad sample {point}")))?;
    parse_value(text).ok_or_else(|| PrometheusError::Decode(format!("bad sample value {text:?}")))
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// Follows counter series one by one across looks (see the module docs).
#[derive(Debug, Default)]
struct CounterTracker {
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
struct ArmTracker {
    counts: CounterTracker,
    buckets: CounterTracker,
    errors: HashMap<String, bool>,
    les: HashMap<String, f64>,
}

impl ArmTracker {
    fn update(&mut self, counts: &[Sample], buckets: &[Sample]) -> ArmCounts {
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

/// CPU seconds since the first look, summed over series (pods), each
/// series reset-aware.
fn cpu_total(tracker: &mut CounterTracker, samples: &[Sample]) -> f64 {
    tracker.update(samples);
    tracker.started = true;
    tracker.all_totals().map(|(_, total)| total).sum()
}

/// Mean of the finite, non-negative values (per-pod resident memory).
fn mean(samples: &[Sample]) -> Option<f64> {
    let values: Vec<f64> = samples
        .iter()
        .map(|s| s.value)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn to_count(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Saturating float-to-int conversion.
        x.round() as u64
    } else {
        0
    }
}

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// The connector for `url`'s scheme: rustls with the system's roots (or
/// `ca_file`) for https.
#[cfg(feature = "tls")]
fn connector(https: bool, ca_file: Option<&std::path::Path>) -> Result<Connector, PrometheusError> {
    use hyper_rustls::ConfigBuilderExt;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let config_error = |m: String| PrometheusError::Config(m);
    // An explicit provider: the workspace may enable more than one.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS: {e}")))?;
    let tls = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                config_error(format!("cannot read --ca-file {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    config_error(format!(
                        "--ca-file {}: not a PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    config_error(format!(
                        "--ca-file {}: unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(config_error(format!(
                    "--ca-file {} holds no certificate",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        // Only an https URL needs the system's roots (a container may have none).
        None if https => builder
            .with_native_roots()
            .map_err(|e| {
                config_error(format!(
                    "no trusted root certificates for https ({e}); install the system's CA \
                     bundle or pass --ca-file"
                ))
            })?
            .with_no_client_auth(),
        None => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

#[cfg(not(feature = "tls"))]
fn connector(
    https: bool,
    _ca_file: Option<&std::path::Path>,
) -> Result<Connector, PrometheusError> {
    if https {
        return Err(PrometheusError::Config(
            "https needs podcycle-judge built with the `tls` feature (on by default)".to_owned(),
        ));
    }
    Ok(HttpConnector::new())
}

/// A [`SnapshotSource`] reading a Prometheus server over HTTP or HTTPS.
#[derive(Debug)]
pub struct PrometheusSource {
    client: Client<Connector, Empty<Bytes>>,
    endpoint: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    queries: [String; 4],
    resource_queries: Option<[String; 4]>,
    stable: ArmTracker,
    canary: ArmTracker,
    stable_cpu: CounterTracker,
    canary_cpu: CounterTracker,
}

impl PrometheusSource {
    /// Checks `config` and prepares the client; no request is sent yet.
    pub fn new(config: &PrometheusConfig) -> Result<Self, PrometheusError> {
        let https = PrometheusConfig::check_url(&config.url)?;
        let url = config.url.trim().trim_end_matches('/');
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| PrometheusError::Config(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| PrometheusError::Config(format!("invalid value for header {name}")))?;
            headers.push((name, value));
        }
        let client = Client::builder(TokioExecutor::new())
            .build(connector(https, config.ca_file.as_deref())?);
        Ok(Self {
            client,
            endpoint: format!("{url}/api/v1/query"),
            headers,
            timeout: config.timeout,
            queries: config.queries()?,
            resource_queries: if config.resources {
                Some(config.resource_queries()?)
            } else {
                None
            },
            stable: ArmTracker::default(),
            canary: ArmTracker::default(),
            stable_cpu: CounterTracker::default(),
            canary_cpu: CounterTracker::default(),
        })
    }

    /// The PromQL queries of one look (the request counters; then the
    /// resource queries when they are read).
    pub fn queries(&self) -> Vec<&String> {
        self.queries
            .iter()
            .chain(self.resource_queries.iter().flatten())
            .collect()
    }

    /// Runs one instant query evaluated at `time` (Unix seconds).
    pub async fn query(&self, promql: &str, time: f64) -> Result<QueryResult, PrometheusError> {
        let uri = format!("{}?{}", self.endpoint, query_string(promql, time));
        let mut request = Request::get(uri.as_str());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| PrometheusError::Config(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| PrometheusError::Transport(error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| PrometheusError::Transport(format!("reading the body: {e}")))?
                .to_bytes();
            Ok::<_, PrometheusError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PrometheusError::Timeout(self.timeout))??;
        parse_query_response(status, &body)
    }

    async fn vector(&self, promql: &str, time: f64) -> Result<Vec<Sample>, PrometheusError> {
        match self.query(promql, time).await? {
            QueryResult::Vector(samples) => Ok(samples),
            QueryResult::Scalar(_) => Err(PrometheusError::UnexpectedResultType("scalar".into())),
        }
    }
}

/// `url` with anything that may be a secret masked: the user information before `@` and
/// the query string or fragment.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    let tail = match tail.find(['?', '#']) {
        Some(i) => format!("{}{}***", &tail[..i], &tail[i..=i]),
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl SnapshotSource for PrometheusSource {
    type Error = PrometheusError;

    async fn snapshot(&mut self) -> Result<Snapshot, PrometheusError> {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // All four results first: a failed look leaves the trackers as they
        // were.
        let [q0, q1, q2, q3] = &self.queries;
        let stable_counts = self.vector(q0, time).await?;
        let stable_buckets = self.vector(q1, time).await?;
        let canary_counts = self.vector(q2, time).await?;
        let canary_buckets = self.vector(q3, time).await?;
        let resources = match &self.resource_queries {
            Some([r0, r1, r2, r3]) => Some((
                self.vector(r0, time).await?,
                self.vector(r1, time).await?,
                self.vector(r2, time).await?,
                self.vector(r3, time).await?,
            )),
            None => None,
        };
        let mut stable = self.stable.update(&stable_counts, &stable_buckets);
        let mut canary = self.canary.update(&canary_counts, &canary_buckets);
        if let Some((stable_cpu, stable_rss, canary_cpu, canary_rss)) = resources {
            stable.cpu_seconds = cpu_total(&mut self.stable_cpu, &stable_cpu);
            stable.resident_memory_bytes = mean(&stable_rss);
            canary.cpu_seconds = cpu_total(&mut self.canary_cpu, &canary_cpu);
            canary.resident_memory_bytes = mean(&canary_rss);
        }
        Ok(Snapshot { stable, canary })
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

    #[test]
    fn parses_a_vector() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"x_count","version":"v1","error_type":"500"},"value":[1700000000.5,"12"]},
            {"metric":{"version":"v1"},"value":[1700000000.5,"1e3"]}]}}"#;
        let QueryResult::Vector(samples) = parse_query_response(200, body).unwrap() else {
            panic!("not a vector");
        };
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[0].labels["error_type"], "500");
        assert_eq!(samples[1].value, 1000.0);
    }

    #[test]
    fn parses_an_empty_vector_and_a_scalar() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            parse_query_response(200, empty).unwrap(),
            QueryResult::Vector(vec![])
        );
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.25"]}}"#;
        assert_eq!(
            parse_query_response(200, scalar).unwrap(),
            QueryResult::Scalar(0.25)
        );
    }

    #[test]
    fn parses_nan_and_infinities() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"NaN"]},{"metric":{},"value":[1,"+Inf"]},{"metric":{},"value":[1,"-Inf"]}]}}"#;
        let QueryResult::Vector(s) = parse_query_response(200, body).unwrap() else {
            panic!("not a vector");
        };
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert!(
            matches!(parse_query_response(200, scalar), Ok(QueryResult::Scalar(v)) if v.is_nan())
        );
    }

    #[test]
    fn reports_api_errors_and_bad_statuses() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            parse_query_response(400, body).unwrap_err(),
            PrometheusError::Status {
                status: 400,
                message: "bad_data: parse error at char 5".to_owned()
            }
        );
        assert_eq!(
            parse_query_response(200, body).unwrap_err(),
            PrometheusError::Api {
                error_type: "bad_data".to_owned(),
                message: "parse error at char 5".to_owned()
            }
        );
        let err = parse_query_response(502, b"<html>Bad Gateway</html>").unwrap_err();
        assert_eq!(
            err,
            PrometheusError::Status {
                status: 502,
                message: "<html>Bad Gateway</html>".to_owned()
            }
        );
        assert!(err.to_string().contains("HTTP 502"));
    }

    #[test]
    fn refuses_malformed_bodies() {
        for body in [
            &b"not json"[..],
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#,
        ] {
            assert!(
                matches!(parse_query_response(200, body), Err(PrometheusError::Decode(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(
            parse_query_response(200, matrix).unwrap_err(),
            PrometheusError::UnexpectedResultType("matrix".to_owned())
        );
    }

    #[test]
    fn a_selector_is_label_matchers_only() {
        assert_eq!(
            label_matchers(r#"namespace="shop", pod=~"chatbot-.*",x!="a\"b""#).unwrap(),
            r#"namespace="shop",pod=~"chatbot-.*",x!="a\"b""#
        );
        for bad in [
            r#"namespace="shop"} or vector(1) #"#,
            r#"namespace="shop"}[5m]"#,
            r#"namespace=shop"#,
            r#"1a="b""#,
            r#"a="b" b="c""#,
            r#"a="unterminated"#,
            r#"a<"b""#,
        ] {
            assert!(label_matchers(bad).is_err(), "{bad}");
        }
        let mut config = PrometheusConfig::new("http://p", "1", "2");
        config.selector = Some(r#"a="b"} or vector(1)"#.into());
        assert!(config.queries().is_err());
        assert!(config.resource_queries().is_err());
    }

    #[test]
    fn builds_escaped_queries() {
        let mut config = PrometheusConfig::new("http://p:9090", "v1", "v2\"x");
        config.route = Some("/v1/chat".to_owned());
        config.selector = Some("{namespace=\"shop\"}".to_owned());
        let [a, b, c, _] = config.queries().unwrap();
        assert_eq!(
            a,
            "http_server_request_duration_seconds_count{version=\"v1\",http_route=\"/v1/chat\",namespace=\"shop\"}"
        );
        assert_eq!(
            b,
            "http_server_request_duration_seconds_bucket{version=\"v1\",error_type=\"\",http_route=\"/v1/chat\",namespace=\"shop\"}"
        );
        assert!(c.contains("version=\"v2\\\"x\""), "{c}");
        config.version_label = "bad label".to_owned();
        assert!(config.queries().is_err());
        let encoded = query_string("a b{c=\"/&?\"}", 1.5);
        assert_eq!(encoded, "query=a+b%7Bc%3D%22%2F%26%3F%22%7D&time=1.500");
        let decoded: Vec<_> = form_urlencoded::parse(encoded.as_bytes()).collect();
        assert_eq!(decoded[0].1, "a b{c=\"/&?\"}");
    }

    #[test]
    fn refuses_unusable_urls() {
        for url in [
            "ftp://p:9090",
            "p:9090",
            "http://",
            "http://p:9090/?x=1",
            "not a url",
            "http://user:hunter2@p:9090",
            "https://token@p/prefix",
            "http://p:9090?token=hunter2",
            "http://p:9090/#hunter2",
            "http://user:hunter2@p?x=1",
        ] {
            let config = PrometheusConfig::new(url, "a", "b");
            match PrometheusSource::new(&config) {
                Err(PrometheusError::Config(m)) => assert!(
                    !m.contains("hunter2") && !m.contains("token@") && !m.contains("user:"),
                    "{url}: the message repeats a hunter2: {m}"
                ),
                other => panic!("{url}: {other:?}"),
            }
        }
        let m = PrometheusConfig::check_url("http://user:hunter2@p?x=1")
            .unwrap_err()
            .to_string();
        assert!(m.contains("\"http://***@p?***\""), "{m}");
        assert!(m.contains("--bearer-token-file"), "{m}");
        assert_eq!(PrometheusConfig::check_url("https://p/prefix/"), Ok(true));
        assert_eq!(PrometheusConfig::check_url(" http://p:9090 "), Ok(false));
    }

    fn count(version: &str, error: Option<&str>, pod: &str, value: f64) -> Sample {
        let mut l = labels(&[(schema::VERSION, version), ("pod", pod)]);
        if let Some(e) = error {
            l.insert(schema::ERROR_TYPE.to_owned(), e.to_owned());
        }
        Sample { labels: l, value }
    }

    fn bucket(pod: &str, le: &str, value: f64) -> Sample {
        Sample {
            labels: labels(&[("pod", pod), (schema::LE, le)]),
            value,
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

    /// A loopback HTTP server answering instant queries from `answer(query,
    /// look)`, where a look is four consecutive requests.
    async fn mock(
        answer: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> std::net::SocketAddr {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(answer);
        let served = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let target = head.split_whitespace().nth(1).unwrap_or("");
                    let params = target.split_once('?').map_or("", |(_, q)| q);
                    let query = form_urlencoded::parse(params.as_bytes())
                        .find_map(|(k, v)| (k == "query").then(|| v.into_owned()))
                        .unwrap_or_default();
                    let look = served.fetch_add(1, Ordering::SeqCst) / 4;
                    let (status, body) = answer(&query, look);
                    if status == 0 {
                        // Never answer.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn vector(series: &[(&str, f64)]) -> String {
        let items: Vec<String> = series
            .iter()
            .map(|(labels, v)| format!(r#"{{"metric":{{{labels}}},"value":[1,"{v}"]}}"#))
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        )
    }

    #[tokio::test]
    async fn reads_increments_from_a_server() {
        let addr = mock(|query, look| {
            let look = look as f64;
            let canary = query.contains("version=\"v2\"");
            let errors = if canary { 20.0 } else { 2.0 };
            let body = if query.contains("_count{") {
                vector(&[
                    (r#""pod":"a""#, 500.0 + 1000.0 * look),
                    (r#""pod":"a","error_type":"500""#, 7.0 + errors * look),
                ])
            } else {
                assert!(query.contains("error_type=\"\""), "{query}");
                vector(&[
                    (r#""pod":"a","le":"0.1""#, 400.0 + 900.0 * look),
                    (r#""pod":"a","le":"+Inf""#, 480.0 + 1000.0 * look),
                ])
            };
            (200, body)
        })
        .await;
        let config = PrometheusConfig::new(format!("http://{addr}/"), "v1", "v2");
        let mut source = PrometheusSource::new(&config).unwrap();
        // The baseline: every counter at zero.
        let first = source.snapshot().await.unwrap();
        let zero = Histogram::from_cumulative([(0.1, 0), (f64::INFINITY, 0)]);
        assert_eq!((first.stable.requests, first.canary.errors), (0, 0));
        assert_eq!(
            (&first.stable.latency, &first.canary.latency),
            (&zero, &zero)
        );
        let second = source.snapshot().await.unwrap();
        assert_eq!(second.stable.requests, 1002);
        assert_eq!(second.stable.errors, 2);
        assert_eq!(second.canary.requests, 1020);
        assert_eq!(second.canary.errors, 20);
        assert_eq!(second.canary.latency.count_le(0.1), Some(900));
        assert_eq!(second.canary.latency.total(), 1000);
    }

    #[tokio::test]
    async fn server_errors_become_prometheus_errors() {
        let addr = mock(|_, _| {
            (
                503,
                r#"{"status":"error","errorType":"unavailable","error":"too many queries"}"#
                    .to_owned(),
            )
        })
        .await;
        let mut source =
            PrometheusSource::new(&PrometheusConfig::new(format!("http://{addr}"), "a", "b"))
                .unwrap();
        let err = source.snapshot().await.unwrap_err();
        assert_eq!(
            err,
            PrometheusError::Status {
                status: 503,
                message: "unavailable: too many queries".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn silent_servers_time_out_and_closed_ports_fail() {
        let addr = mock(|_, _| (0, String::new())).await;
        let mut config = PrometheusConfig::new(format!("http://{addr}"), "a", "b");
        config.timeout = Duration::from_millis(200);
        let mut source = PrometheusSource::new(&config).unwrap();
        assert_eq!(
            source.snapshot().await.unwrap_err(),
            PrometheusError::Timeout(Duration::from_millis(200))
        );

        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = PrometheusConfig::new(format!("http://127.0.0.1:{port}"), "a", "b");
        let mut source = PrometheusSource::new(&config).unwrap();
        let err = source.snapshot().await.unwrap_err();
        assert!(matches!(err, PrometheusError::Transport(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("cannot reach Prometheus"),
            "{err}"
        );
    }

    /// An https server with a fresh self-signed certificate for
    /// `localhost`, answering every query with one sample; returns its
    /// port and the certificate's PEM.
    #[cfg(feature = "tls")]
    async fn https_mock() -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;

        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let auth = String::from_utf8_lossy(&head).contains("x-scope-orgid: t1");
                    let body = vector(&[(r#""pod":"a""#, if auth { 7.0 } else { 0.0 })]);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, key.cert.pem())
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn speaks_https_with_a_trusted_ca_and_refuses_an_unknown_one() {
        let (port, pem) = https_mock().await;
        let dir = std::env::temp_dir().join(format!("judge-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, pem).unwrap();

        let mut config = PrometheusConfig::new(format!("https://localhost:{port}"), "a", "b");
        config.headers = vec![("X-Scope-OrgID".to_owned(), "t1".to_owned())];
        config.ca_file = Some(ca.clone());
        let source = PrometheusSource::new(&config).unwrap();
        let QueryResult::Vector(samples) = source.query("up", 1.0).await.unwrap() else {
            panic!("not a vector");
        };
        // The header reached the server over TLS.
        assert_eq!(samples[0].value, 7.0);

        // The system's roots do not know a fresh self-signed certificate.
        config.ca_file = None;
        match PrometheusSource::new(&config) {
            Ok(source) => {
                let err = source.query("up", 1.0).await.unwrap_err();
                assert!(matches!(err, PrometheusError::Transport(_)), "{err:?}");
            }
            // A machine without any CA bundle.
            Err(e) => assert!(e.to_string().contains("--ca-file"), "{e}"),
        }

        // A CA file that is not PEM is a configuration error naming it.
        std::fs::write(&ca, "not a certificate").unwrap();
        config.ca_file = Some(ca);
        let err = PrometheusSource::new(&config).unwrap_err();
        assert!(err.to_string().contains("--ca-file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
