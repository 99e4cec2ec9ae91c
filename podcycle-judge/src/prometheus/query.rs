//! Where and what to read: [`PrometheusConfig`], its checks (URL, label and metric names,
//! selectors) and the PromQL of one look.

use std::time::Duration;

use hyper::Uri;
use podcycle::metrics::schema;

use super::PrometheusError;

/// podcycle's process metrics (Prometheus' standard names).
const PROCESS_CPU: &str = "process_cpu_seconds_total";
const PROCESS_RSS: &str = "process_resident_memory_bytes";

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
            self.arm_query(&self.stable, PROCESS_CPU)?,
            self.arm_query(&self.stable, PROCESS_RSS)?,
            self.arm_query(&self.canary, PROCESS_CPU)?,
            self.arm_query(&self.canary, PROCESS_RSS)?,
        ])
    }

    /// The PromQL of the shed-counter queries of one look: stable, canary
    /// ([`podcycle_requests_shed_total`](schema::REQUESTS_SHED), the requests podcycle's
    /// admission control answered at once without reaching the application). Admission
    /// control sheds a request before it is routed, so the counter has no `http_route` and
    /// `route` does not apply; `selector` does. A service without admission control has no
    /// such series, and a look reads `0` shed requests for it.
    pub fn shed_queries(&self) -> Result<[String; 2], PrometheusError> {
        Ok([
            self.arm_query(&self.stable, schema::REQUESTS_SHED)?,
            self.arm_query(&self.canary, schema::REQUESTS_SHED)?,
        ])
    }

    /// `metric{<version label>="<version>"[,<selector>]}`: a per-process series of one arm.
    fn arm_query(&self, version: &str, metric: &str) -> Result<String, PrometheusError> {
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
        // `or` the native histogram series of the same labels: Prometheus
        // scraping native histograms (`--enable-feature=native-histograms`)
        // keeps no `_count` or `_bucket` series for them.
        let matchers = matchers.join(",");
        Ok(format!(
            "{m}{suffix}{{{matchers}}} or {m}{{{matchers}}}",
            m = self.metric
        ))
    }
}
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
/// Escapes a PromQL double-quoted string.
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
pub(super) fn query_string(promql: &str, time: f64) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("query", promql)
        .append_pair("time", &format!("{time:.3}"))
        .finish()
}
/// `url` with anything that may be a secret masked: the user information before `@` and
/// the query string or fragment.
pub(super) fn redact_url(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::PrometheusSource;
    use super::*;

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
            "http_server_request_duration_seconds_count{version=\"v1\",http_route=\"/v1/chat\",namespace=\"shop\"} \
             or http_server_request_duration_seconds{version=\"v1\",http_route=\"/v1/chat\",namespace=\"shop\"}"
        );
        assert_eq!(
            b,
            "http_server_request_duration_seconds_bucket{version=\"v1\",error_type=\"\",http_route=\"/v1/chat\",namespace=\"shop\"} \
             or http_server_request_duration_seconds{version=\"v1\",error_type=\"\",http_route=\"/v1/chat\",namespace=\"shop\"}"
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
}
