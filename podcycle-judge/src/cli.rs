//! Command-line arguments of `podcycle-judge`, parsed by clap.
//!
//! Every mistake is a [`clap::Error`] that names the argument at fault (also as its
//! [`ContextKind::InvalidArg`], which `serve` turns into the `field` of a 400); the binary
//! prints it and exits [`USAGE_ERROR`], never 0 and never a verdict's code.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use podcycle::metrics::schema;
use podcycle_judge::{CpuConfig, ErrorsConfig, LatencyConfig, PrometheusConfig, RunConfig};

const READ: &str = "What to read";
const DECIDE: &str = "When to decide";
const COMPARE: &str = "Comparisons (canary against stable)";
const GUARD: &str = "Guardrails (canary alone, once it has --min-requests)";
const OUTPUT: &str = "Output";

/// Exit code of a usage error (bad arguments or configuration): `EX_USAGE` of BSD's
/// `sysexits.h`, outside the verdicts' 0, 1 and 2, so that a typo in an AnalysisTemplate or a
/// CI script never reads as a verdict, and outside podcycle's own exit codes (0 to 5) for
/// `serve`.
pub(crate) const USAGE_ERROR: u8 = 64;

/// The shortest `--interval`. Prometheus rarely scrapes more often than every few seconds
/// (15 s to 1 min is usual), and a look between two scrapes reads the same counters: looking
/// more often adds queries, not evidence. Each look is 4 instant queries (8 with `--cpu` or
/// `--max-memory-ratio`), so one judgement sends at most 8 queries a second.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The most looks one judgement may take (`--max-duration` / `--interval`, plus the first
/// look and a last one at the deadline): 1,000 looks are about 8 hours at 30 s, or 16m39s at the
/// 1 s floor, and at most 8,000 instant queries. The sequential tests' evidence grows with the
/// requests seen, not with the number of looks, so more looks buy nothing but load.
pub(crate) const MAX_LOOKS: u64 = 1000;

/// What a duration looks like, in podcycle's words (its `ConfigError` messages).
const DURATION: &str = "expected a duration such as 5s, 500ms or 1m30s";

/// The command line as clap sees it; [`parse`] turns it into [`CliOptions`].
#[derive(Debug, Parser)]
#[command(
    name = "podcycle-judge",
    version,
    // A later value wins: `serve` appends each request's options to its defaults.
    args_override_self = true,
    about = "Compare a canary with the stable version from Prometheus and decide as soon as the \
             evidence allows (anytime-valid sequential tests).",
    override_usage = "podcycle-judge [OPTIONS] --prometheus <URL> --stable <VERSION> --canary <VERSION>\n       \
                      podcycle-judge serve [OPTIONS] -- --prometheus <URL> [JUDGE OPTIONS]\n       \
                      podcycle-judge help [serve]",
    after_help = "Durations: 500ms, 30s, 1.5s, 10m, 1h, 1m30s; --interval at least 1s, and at most \
                  1000 looks\n(--max-duration / --interval) per judgement.\n\
                  Exit status: 0 pass, 1 fail, 2 inconclusive (deadline without enough evidence,\n\
                  unreachable Prometheus, no traffic; no data is never a pass), 64 usage error (bad\n\
                  arguments or configuration: nothing was judged).\n\
                  As a web service (Argo Rollouts Web provider, Flagger webhook): \
                  podcycle-judge serve --help"
)]
struct Args {
    /// Prometheus base URL, http or https (e.g. http://prometheus:9090)
    #[arg(long, value_name = "URL", value_parser = PrometheusUrl, help_heading = READ)]
    prometheus: String,
    /// Version label value of the stable arm
    #[arg(long, value_name = "VERSION", value_parser = non_empty, help_heading = READ)]
    stable: String,
    /// Version label value of the canary arm
    #[arg(long, value_name = "VERSION", value_parser = non_empty, help_heading = READ)]
    canary: String,
    /// Only requests whose http_route is ROUTE (e.g. /v1/chat)
    #[arg(long, value_name = "ROUTE", value_parser = non_empty, help_heading = READ)]
    route: Option<String>,
    /// Extra PromQL label matchers, e.g. 'namespace="shop"'
    #[arg(long, value_name = "MATCHERS", value_parser = selector, help_heading = READ)]
    selector: Option<String>,
    /// Label carrying the version
    #[arg(long, value_name = "NAME", default_value = schema::VERSION, value_parser = non_empty,
          help_heading = READ)]
    version_label: String,
    /// Histogram name
    #[arg(long, value_name = "NAME", default_value = schema::HTTP_REQUEST_DURATION,
          value_parser = non_empty, help_heading = READ)]
    metric: String,
    /// Extra HTTP header for Prometheus (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header, help_heading = READ)]
    headers: Vec<(String, String)>,
    /// Time allowed for one query
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration,
          help_heading = READ)]
    query_timeout: Duration,
    /// Trust the certificate authorities in this PEM file for https, instead of the system's
    #[arg(long, value_name = "PATH", env = "PODCYCLE_JUDGE_CA_FILE", value_parser = non_empty,
          help_heading = READ)]
    ca_file: Option<String>,
    /// Send 'Authorization: Bearer <token>' with the token read from PATH (e.g. a service
    /// account token)
    #[arg(long, value_name = "PATH", env = "PODCYCLE_JUDGE_BEARER_TOKEN_FILE",
          value_parser = non_empty, help_heading = READ)]
    bearer_token_file: Option<String>,
    /// Basic auth user; the password is read from --basic-auth-password-file
    #[arg(long, value_name = "USER", env = "PODCYCLE_JUDGE_BASIC_AUTH_USER",
          value_parser = non_empty, requires = "basic_auth_password_file", help_heading = READ)]
    basic_auth_user: Option<String>,
    /// File holding the basic auth password
    #[arg(long, value_name = "PATH", env = "PODCYCLE_JUDGE_BASIC_AUTH_PASSWORD_FILE",
          value_parser = non_empty, requires = "basic_auth_user", help_heading = READ)]
    basic_auth_password_file: Option<String>,

    /// Time between looks (at least 1s)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = interval,
          help_heading = DECIDE)]
    interval: Duration,
    /// Deadline; undecided by then is inconclusive
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = positive_duration,
          help_heading = DECIDE)]
    max_duration: Duration,
    /// Requests each arm needs before a pass
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = whole,
          allow_negative_numbers = true, help_heading = DECIDE)]
    min_requests: u64,
    /// Chance of a wrong fail, and of a wrong pass
    #[arg(long, value_name = "A", default_value_t = 0.05, value_parser = number(0.0, 1.0, OPEN),
          allow_negative_numbers = true, help_heading = DECIDE)]
    alpha: f64,

    /// Canary error ratio may exceed stable's by X
    #[arg(long, value_name = "X", default_value_t = 0.002, value_parser = number(0.0, 1.0, CLOSED),
          allow_negative_numbers = true, help_heading = COMPARE)]
    error_margin: f64,
    /// ... and be (1+R) times stable's
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = number(0.0, 1e6, CLOSED),
          allow_negative_numbers = true, help_heading = COMPARE)]
    error_margin_relative: f64,
    /// Stable quantile that picks the bucket bound
    #[arg(long, value_name = "Q", default_value_t = 0.95, value_parser = number(0.0, 1.0, OPEN),
          allow_negative_numbers = true, help_heading = COMPARE)]
    latency_quantile: f64,
    /// Canary share of requests slower than that bound may be (1+R) times stable's share
    #[arg(long, value_name = "R", default_value_t = 0.5, value_parser = number(0.0, 50.0, CLOSED),
          allow_negative_numbers = true, help_heading = COMPARE)]
    latency_margin: f64,
    /// Skip the error comparison
    #[arg(long, help_heading = COMPARE)]
    no_errors: bool,
    /// Skip the latency comparison
    #[arg(long, help_heading = COMPARE)]
    no_latency: bool,
    /// Compare CPU seconds per successful request (needs process_cpu_seconds_total with the
    /// version label)
    #[arg(long, help_heading = COMPARE)]
    cpu: bool,
    /// Canary CPU per request may be (1+R) times stable's
    #[arg(long, value_name = "R", default_value_t = 0.2, value_parser = number(0.0, 50.0, CLOSED),
          allow_negative_numbers = true, help_heading = COMPARE)]
    cpu_margin: f64,

    /// Fail when the canary's error ratio exceeds X
    #[arg(long, value_name = "X", value_parser = number(0.0, 1.0, CLOSED),
          allow_negative_numbers = true, help_heading = GUARD)]
    max_error_ratio: Option<f64>,
    /// Fail when the canary's p99 latency exceeds DURATION
    #[arg(long, value_name = "DURATION", value_parser = positive_duration, help_heading = GUARD)]
    max_p99: Option<Duration>,
    /// Fail when the canary's resident memory per pod exceeds R times stable's
    #[arg(long, value_name = "R", value_parser = number(0.0, 1e6, OPEN),
          allow_negative_numbers = true, help_heading = GUARD)]
    max_memory_ratio: Option<f64>,

    /// Write the full report as JSON to PATH
    #[arg(long, value_name = "PATH", value_parser = non_empty, help_heading = OUTPUT)]
    json: Option<String>,
    /// No progress lines on stderr
    #[arg(short, long, help_heading = OUTPUT)]
    quiet: bool,
}

/// Options of a judging run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CliOptions {
    /// Where and what to read.
    pub(crate) prometheus: PrometheusConfig,
    /// The judge and its schedule.
    pub(crate) run: RunConfig,
    /// Where to write the JSON report.
    pub(crate) json: Option<PathBuf>,
    /// No progress lines.
    pub(crate) quiet: bool,
}

/// Parses the command line, program name first.
///
/// `--help` and `--version` come back as errors of kind
/// [`ErrorKind::DisplayHelp`] and [`ErrorKind::DisplayVersion`] (for
/// stdout, [`clap::Error::use_stderr`] false); every other error names the
/// argument at fault.
pub(crate) fn parse<I, T>(args: I) -> Result<CliOptions, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::try_parse_from(args)?;
    let invalid = |message: String| Args::command().error(ErrorKind::ValueValidation, message);
    if args.stable == args.canary {
        return Err(naming(
            Args::command().error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--stable and --canary are both {:?}; they must differ",
                    args.stable
                ),
            ),
            &["--canary", "--stable"],
        ));
    }
    let looks = looks(args.max_duration, args.interval);
    if looks > MAX_LOOKS {
        return Err(naming(
            invalid(format!(
                "--max-duration {} at --interval {} makes {looks} looks; at most {MAX_LOOKS} per \
                 judgement: lengthen the interval or shorten the maximum duration",
                humantime::format_duration(args.max_duration),
                humantime::format_duration(args.interval),
            )),
            &["--max-duration", "--interval"],
        ));
    }
    let mut prometheus = PrometheusConfig::new(args.prometheus, args.stable, args.canary);
    prometheus.route = args.route;
    prometheus.selector = args.selector;
    prometheus.version_label = args.version_label;
    prometheus.metric = args.metric;
    prometheus.headers = args.headers;
    prometheus.timeout = args.query_timeout;
    prometheus.resources = args.cpu || args.max_memory_ratio.is_some();
    prometheus.ca_file = args.ca_file.map(PathBuf::from);
    let read = |flag: &str, path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| invalid(format!("{flag}: cannot read {path}: {e}")))
    };
    let has_authorization = prometheus
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
    let auth = match (&args.bearer_token_file, &args.basic_auth_user) {
        (Some(_), Some(_)) => {
            return Err(Args::command().error(
                ErrorKind::ArgumentConflict,
                "--bearer-token-file and --basic-auth-user both set the Authorization header; \
                 choose one",
            ))
        }
        (Some(path), None) => Some(bearer(&read("--bearer-token-file", path)?)),
        (None, Some(user)) => {
            let path = args.basic_auth_password_file.as_deref().unwrap_or_default();
            Some(basic(user, &read("--basic-auth-password-file", path)?))
        }
        (None, None) => None,
    };
    if let Some(value) = auth {
        let value = value.map_err(invalid)?;
        if has_authorization {
            return Err(Args::command().error(
                ErrorKind::ArgumentConflict,
                "an Authorization --header and a credential option both set the header; choose \
                 one",
            ));
        }
        prometheus.headers.push(("Authorization".to_owned(), value));
    }
    let mut run = RunConfig {
        interval: args.interval,
        max_duration: args.max_duration,
        ..RunConfig::default()
    };
    run.judge.min_requests = args.min_requests;
    run.judge.alpha = args.alpha;
    run.judge.errors = (!args.no_errors).then_some(ErrorsConfig {
        margin: args.error_margin,
        relative_margin: args.error_margin_relative,
    });
    run.judge.latency = (!args.no_latency).then_some(LatencyConfig {
        quantile: args.latency_quantile,
        margin: args.latency_margin,
    });
    run.judge.max_error_ratio = args.max_error_ratio;
    run.judge.max_p99 = args.max_p99;
    run.judge.cpu = args.cpu.then_some(CpuConfig {
        margin: args.cpu_margin,
    });
    run.judge.max_memory_ratio = args.max_memory_ratio;
    run.validate().map_err(|e| {
        // The options a request can change that make these checks fail.
        let args: &[&str] = if run.max_duration < run.interval {
            &["--max-duration", "--interval"]
        } else if run.judge.errors.is_none() && run.judge.latency.is_none() {
            &["--no-errors", "--no-latency", "--cpu"]
        } else {
            &[]
        };
        naming(invalid(e.to_string()), args)
    })?;
    Ok(CliOptions {
        prometheus,
        run,
        json: args.json.map(PathBuf::from),
        quiet: args.quiet,
    })
}

/// `error` naming `args` as its [`ContextKind::InvalidArg`] (the first is the one at fault
/// unless the caller knows which of them it set).
fn naming(mut error: clap::Error, args: &[&str]) -> clap::Error {
    if !args.is_empty() {
        error.insert(
            ContextKind::InvalidArg,
            ContextValue::Strings(args.iter().map(|a| (*a).to_owned()).collect()),
        );
    }
    error
}

/// Looks of a judgement: the first, one per whole interval, and a last one at the deadline
/// when it falls between two intervals.
fn looks(max_duration: Duration, interval: Duration) -> u64 {
    let (max, every) = (max_duration.as_nanos(), interval.as_nanos().max(1));
    let n = 1 + max / every + u128::from(max % every != 0);
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The `--prometheus` URL, checked by [`PrometheusConfig::check_url`]. A value parser of its
/// own, because clap's message for a refused value repeats the value, and this one may hold a
/// password.
#[derive(Debug, Clone, Copy)]
struct PrometheusUrl;

impl clap::builder::TypedValueParser for PrometheusUrl {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let refuse = |message: String| {
            naming(
                clap::Error::raw(
                    ErrorKind::ValueValidation,
                    format!("--prometheus: {message}\n"),
                )
                .with_cmd(cmd),
                &["--prometheus"],
            )
        };
        let Some(url) = value.to_str() else {
            return Err(refuse("the URL is not valid UTF-8".to_owned()));
        };
        if url.trim().is_empty() {
            return Err(refuse("needs a non-empty value".to_owned()));
        }
        match PrometheusConfig::check_url(url) {
            Ok(_) => Ok(url.to_owned()),
            Err(podcycle_judge::PrometheusError::Config(m)) => Err(refuse(m)),
            Err(e) => Err(refuse(e.to_string())),
        }
    }
}

/// PromQL label matchers, checked as the queries will use them.
fn selector(v: &str) -> Result<String, String> {
    let mut config = PrometheusConfig::new("http://prometheus", "a", "b");
    config.selector = Some(non_empty(v)?);
    match config.queries() {
        Ok(_) => Ok(v.to_owned()),
        Err(podcycle_judge::PrometheusError::Config(m)) => Err(m),
        Err(e) => Err(e.to_string()),
    }
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        Err("needs a non-empty value".to_owned())
    } else {
        Ok(v.to_owned())
    }
}

fn header(v: &str) -> Result<(String, String), String> {
    match v.split_once(':') {
        Some((k, val)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), val.trim().to_owned())),
        _ => Err("expects 'NAME: VALUE'".to_owned()),
    }
}

/// `Bearer <token>`; the token must be a single non-empty line.
fn bearer(token: &str) -> Result<String, String> {
    if token.is_empty() || token.contains(['\r', '\n']) {
        return Err("--bearer-token-file: the file must hold one non-empty token".to_owned());
    }
    Ok(format!("Bearer {token}"))
}

/// `Basic base64(user:password)` (RFC 7617).
fn basic(user: &str, password: &str) -> Result<String, String> {
    if user.contains(':') {
        return Err("--basic-auth-user: a user name cannot contain ':'".to_owned());
    }
    Ok(format!(
        "Basic {}",
        base64(format!("{user}:{password}").as_bytes())
    ))
}

/// Standard base64 with padding (RFC 4648), for one short header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn whole(v: &str) -> Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| "expects a whole number".to_owned())
}

const OPEN: bool = false;
const CLOSED: bool = true;

/// A parser of numbers in `[lo, hi]` (`CLOSED`) or `(lo, hi)` (`OPEN`).
fn number(lo: f64, hi: f64, closed: bool) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |v| {
        let x: f64 = v
            .trim()
            .parse()
            .map_err(|_| "expects a number".to_owned())?;
        match (closed, x >= lo && x <= hi, x > lo && x < hi) {
            (true, true, _) | (false, _, true) => Ok(x),
            (true, false, _) => Err(format!("must be in [{lo}, {hi}]")),
            (false, _, false) => Err(format!("must be between {lo} and {hi} (exclusive)")),
        }
    }
}

/// A duration longer than zero, in humantime's syntax (`500ms`, `1.5s`,
/// `1m30s`, `1m 30s`), as podcycle reads its `PODCYCLE_*` durations, with podcycle's
/// wording when it is not one.
pub(crate) fn positive_duration(v: &str) -> Result<Duration, String> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) if d.is_zero() => {
            Err("expected a duration longer than zero, such as 5s, 500ms or 1m30s".to_owned())
        }
        Ok(d) if d > podcycle::MAX_DURATION => {
            Err("expected a duration of at most 365 days, such as 5s, 500ms or 1m30s".to_owned())
        }
        Ok(d) => Ok(d),
        Err(_) => Err(DURATION.to_owned()),
    }
}

/// The time between looks: a duration of at least [`MIN_INTERVAL`].
fn interval(v: &str) -> Result<Duration, String> {
    let d = positive_duration(v)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "expected at least {}: Prometheus rarely scrapes more often, and a look between two \
             scrapes reads the same counters",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [&str; 7] = [
        "podcycle-judge",
        "--prometheus",
        "http://prom:9090",
        "--stable",
        "v1",
        "--canary",
        "v2",
    ];

    fn parse_extra(extra: &[&str]) -> Result<CliOptions, clap::Error> {
        parse(BASE.iter().chain(extra).copied())
    }

    fn err(args: &[&str]) -> clap::Error {
        parse(["podcycle-judge"].iter().chain(args).copied()).unwrap_err()
    }

    #[test]
    fn defaults() {
        let o = parse_extra(&[]).unwrap();
        assert_eq!(
            o.prometheus,
            PrometheusConfig::new("http://prom:9090", "v1", "v2")
        );
        assert_eq!(o.run, RunConfig::default());
        assert_eq!(o.json, None);
        assert!(!o.quiet);
    }

    #[test]
    fn every_option() {
        let o = parse_extra(&[
            "--route=/v1/chat",
            "--selector",
            "namespace=\"shop\"",
            "--version-label",
            "track",
            "--metric",
            "my_seconds",
            "--header",
            "Authorization: Bearer abc:def",
            "--query-timeout",
            "2s",
            "--interval",
            "15s",
            "--max-duration",
            "1h",
            "--min-requests",
            "1000",
            "--alpha",
            "0.01",
            "--error-margin",
            "0.005",
            "--error-margin-relative",
            "0.5",
            "--latency-quantile",
            "0.99",
            "--latency-margin",
            "0.25",
            "--max-error-ratio",
            "0.05",
            "--max-p99",
            "750ms",
            "--json",
            "out.json",
            "--quiet",
        ])
        .unwrap();
        assert_eq!(o.prometheus.route.as_deref(), Some("/v1/chat"));
        assert_eq!(o.prometheus.selector.as_deref(), Some("namespace=\"shop\""));
        assert_eq!(o.prometheus.version_label, "track");
        assert_eq!(o.prometheus.metric, "my_seconds");
        assert_eq!(
            o.prometheus.headers,
            vec![("Authorization".to_owned(), "Bearer abc:def".to_owned())]
        );
        assert_eq!(o.prometheus.timeout, Duration::from_secs(2));
        assert_eq!(o.run.interval, Duration::from_secs(15));
        assert_eq!(o.run.max_duration, Duration::from_secs(3600));
        let j = &o.run.judge;
        assert_eq!(j.min_requests, 1000);
        assert_eq!(j.alpha, 0.01);
        assert_eq!(
            j.errors,
            Some(ErrorsConfig {
                margin: 0.005,
                relative_margin: 0.5
            })
        );
        assert_eq!(
            j.latency,
            Some(LatencyConfig {
                quantile: 0.99,
                margin: 0.25
            })
        );
        assert_eq!(j.max_error_ratio, Some(0.05));
        assert_eq!(j.max_p99, Some(Duration::from_millis(750)));
        assert_eq!(o.json, Some(PathBuf::from("out.json")));
        assert!(o.quiet);
        let o = parse_extra(&["--no-latency", "-q"]).unwrap();
        assert_eq!(o.run.judge.latency, None);
        assert!(o.run.judge.errors.is_some());
        assert!(o.quiet);
    }

    #[test]
    fn help_and_version_win() {
        for (args, kind) in [
            (&["--help"][..], ErrorKind::DisplayHelp),
            (&["--stable", "x", "-h"], ErrorKind::DisplayHelp),
            (&["-V"], ErrorKind::DisplayVersion),
            (&["--version"], ErrorKind::DisplayVersion),
        ] {
            let e = err(args);
            assert_eq!(e.kind(), kind, "{args:?}");
            // To stdout, exit 0: not a mistake.
            assert!(!e.use_stderr(), "{args:?}");
        }
        let help = err(&["--help"]).to_string();
        for flag in [
            "--prometheus <URL>",
            "--header <NAME: VALUE>",
            "--max-p99 <DURATION>",
            "[default: http_server_request_duration_seconds]",
            "[default: 30s]",
            "[default: 0.002]",
            "Exit status: 0 pass, 1 fail, 2 inconclusive",
        ] {
            assert!(help.contains(flag), "{flag}: {help}");
        }
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[],
                "--prometheus <URL>\n  --stable <VERSION>\n  --canary <VERSION>",
            ),
            (
                &["--prometheus", "http://p"],
                "not provided:\n  --stable <VERSION>\n  --canary <VERSION>",
            ),
            (
                &["--stable"],
                "a value is required for '--stable <VERSION>'",
            ),
            (&["--bogus"], "unexpected argument '--bogus'"),
            (&["stray"], "unexpected argument 'stray'"),
            (
                &["--prometheus", "http://p", "--stable", "v", "--canary", "v"],
                "--stable and --canary are both \"v\"; they must differ",
            ),
            (
                &["--stable", ""],
                "for '--stable <VERSION>': needs a non-empty value",
            ),
            (&["--quiet=yes"], "unexpected value 'yes' for '--quiet'"),
            (
                &["--header", "no-colon"],
                "for '--header <NAME: VALUE>': expects 'NAME: VALUE'",
            ),
        ];
        for (args, expected) in cases {
            let e = err(args);
            assert!(e.use_stderr(), "{args:?}");
            let e = e.to_string();
            assert!(e.contains(expected), "{args:?}: {e}");
            assert!(e.contains("--help"), "{e}");
        }
    }

    #[test]
    fn value_errors_name_the_argument() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--alpha", "1"],
                "'1' for '--alpha <A>': must be between 0 and 1 (exclusive)",
            ),
            (&["--alpha", "x"], "'x' for '--alpha <A>': expects a number"),
            (
                &["--min-requests", "-3"],
                "'-3' for '--min-requests <N>': expects a whole number",
            ),
            (
                &["--interval", "30"],
                "'30' for '--interval <DURATION>': expected a duration such as 5s, 500ms or 1m30s",
            ),
            (
                &["--interval", "0s"],
                "'0s' for '--interval <DURATION>': expected a duration longer than zero",
            ),
            (
                &["--max-p99", "fast"],
                "'fast' for '--max-p99 <DURATION>': expected a duration such as 5s, 500ms or 1m30s",
            ),
            (
                &["--max-duration", "400d"],
                "'400d' for '--max-duration <DURATION>': expected a duration of at most 365 days",
            ),
            (
                &["--error-margin", "2"],
                "'2' for '--error-margin <X>': must be in [0, 1]",
            ),
            (
                &["--latency-quantile", "95"],
                "for '--latency-quantile <Q>': must be between 0 and 1",
            ),
            (&["--no-errors", "--no-latency"], "nothing to compare"),
            (
                &["--interval", "1m", "--max-duration", "30s"],
                "at least one interval",
            ),
        ];
        for (args, expected) in cases {
            let e = parse_extra(args).unwrap_err();
            assert!(e.use_stderr(), "{args:?}");
            let e = e.to_string();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
    }

    /// The argument an error names (`serve` turns it into a 400's `field`).
    fn named(e: &clap::Error) -> Vec<String> {
        match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::Strings(v)) => v.clone(),
            Some(other) => vec![other.to_string()],
            None => Vec::new(),
        }
    }

    /// Issue 23 row 7: `--interval 1ms` made 40,000 Prometheus queries in 10 s.
    #[test]
    fn looks_are_bounded_in_rate_and_number() {
        let e = parse_extra(&["--interval", "1ms"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("'1ms' for '--interval <DURATION>': expected at least 1s"),
            "{e}"
        );
        assert_eq!(named(&e), ["--interval <DURATION>"]);
        assert!(parse_extra(&["--interval", "999ms"]).is_err());
        // 1 s for 16m39s: 1,000 looks, the most; one more second is too many.
        let o = parse_extra(&["--interval", "1s", "--max-duration", "16m39s"]).unwrap();
        assert_eq!(looks(o.run.max_duration, o.run.interval), MAX_LOOKS);
        let e = parse_extra(&["--interval", "1s", "--max-duration", "16m40s"]).unwrap_err();
        assert!(
            e.to_string().contains(
                "--max-duration 16m 40s at --interval 1s makes 1001 looks; at most 1000 per \
                 judgement"
            ),
            "{e}"
        );
        assert_eq!(named(&e), ["--max-duration", "--interval"]);
        assert!(parse_extra(&["--interval", "30s", "--max-duration", "8h19m30s"]).is_ok());
        assert_eq!(looks(Duration::from_secs(75), Duration::from_secs(30)), 4);
        assert_eq!(looks(Duration::from_secs(60), Duration::from_secs(30)), 3);
    }

    /// Issue 23 row 9: credentials in `--prometheus` are refused and never echoed.
    #[test]
    fn credentials_in_the_url_are_refused_without_echo() {
        for url in [
            "http://user:hunter2@prom:9090",
            "http://user:hunter2@prom:9090?x=1",
            "https://hunter2@prom/prefix",
            "http://prom:9090?token=hunter2",
            "http://prom:9090/#hunter2",
        ] {
            let e = parse([
                "podcycle-judge",
                "--prometheus",
                url,
                "--stable",
                "a",
                "--canary",
                "b",
            ])
            .unwrap_err();
            let text = e.to_string();
            assert!(!text.contains("hunter2"), "{url}: {text}");
            assert!(text.contains("--prometheus"), "{url}: {text}");
            assert_eq!(named(&e), ["--prometheus"]);
            assert!(e.use_stderr());
        }
        let text = parse_extra(&[])
            .and_then(|_| {
                parse([
                    "podcycle-judge",
                    "--prometheus",
                    "http://u:hunter2@prom",
                    "--stable",
                    "a",
                    "--canary",
                    "b",
                ])
            })
            .unwrap_err()
            .to_string();
        assert!(text.contains("--bearer-token-file"), "{text}");
        assert!(text.contains("--basic-auth-password-file"), "{text}");
    }

    /// Issue 23 row 10: a malformed selector is an error naming `--selector`.
    #[test]
    fn selectors_are_checked_when_parsed() {
        let o = parse_extra(&["--selector", "namespace=\"shop\",pod=~\"chatbot-.*\""]).unwrap();
        assert!(o.prometheus.selector.is_some());
        for bad in ["namespace=shop", "x\"}) or vector(1", "=\"a\"", "a=\"b\" c"] {
            let e = parse_extra(&["--selector", bad]).unwrap_err();
            assert!(
                e.to_string().contains("--selector <MATCHERS>"),
                "{bad}: {e}"
            );
            assert_eq!(named(&e), ["--selector <MATCHERS>"], "{bad}");
        }
    }

    #[test]
    fn the_usage_shows_every_form() {
        let help = err(&["--help"]).to_string();
        for line in [
            "Usage: podcycle-judge [OPTIONS] --prometheus <URL>",
            "podcycle-judge serve [OPTIONS] -- --prometheus <URL>",
            "podcycle-judge help [serve]",
            "64 usage error",
        ] {
            assert!(help.contains(line), "{line}: {help}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_are_errors() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![
            b'-', b'-', b's', b't', b'a', b'b', b'l', b'e', b'=', 0xff,
        ]);
        let e = parse(["podcycle-judge".into(), bad]).unwrap_err();
        assert!(e.use_stderr());
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn resources_and_credentials() {
        let o = parse_extra(&["--cpu", "--cpu-margin", "0.3", "--max-memory-ratio", "2"]).unwrap();
        assert_eq!(o.run.judge.cpu, Some(CpuConfig { margin: 0.3 }));
        assert_eq!(o.run.judge.max_memory_ratio, Some(2.0));
        assert!(o.prometheus.resources);
        assert!(!parse_extra(&[]).unwrap().prometheus.resources);

        let dir = std::env::temp_dir().join(format!("judge-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "abc.def\n").unwrap();
        let password = dir.join("password");
        std::fs::write(&password, "open sesame").unwrap();
        let token = token.to_str().unwrap();
        let password = password.to_str().unwrap();
        let o = parse_extra(&[
            "--bearer-token-file",
            token,
            "--header",
            "X-Scope-OrgID: t1",
        ])
        .unwrap();
        assert_eq!(
            o.prometheus.headers,
            vec![
                ("X-Scope-OrgID".to_owned(), "t1".to_owned()),
                ("Authorization".to_owned(), "Bearer abc.def".to_owned())
            ]
        );
        let o = parse_extra(&[
            "--basic-auth-user",
            "Aladdin",
            "--basic-auth-password-file",
            password,
        ])
        .unwrap();
        // RFC 7617's example.
        assert_eq!(
            o.prometheus.headers,
            vec![(
                "Authorization".to_owned(),
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".to_owned()
            )]
        );
        for (args, expected) in [
            (
                &["--basic-auth-user", "a"][..],
                "--basic-auth-password-file",
            ),
            (
                &["--bearer-token-file", "/nonexistent/token"],
                "cannot read /nonexistent/token",
            ),
            (
                &[
                    "--bearer-token-file",
                    token,
                    "--basic-auth-user",
                    "a",
                    "--basic-auth-password-file",
                    password,
                ],
                "choose one",
            ),
            (
                &["--bearer-token-file", token, "--header", "authorization: x"],
                "choose one",
            ),
            (&["--max-memory-ratio", "0"], "--max-memory-ratio"),
        ] {
            let e = parse_extra(args).unwrap_err().to_string();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn durations() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("10m", Duration::from_secs(600)),
            (" 1h ", Duration::from_secs(3600)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1m 30s", Duration::from_secs(90)),
        ];
        for (text, d) in ok {
            assert_eq!(positive_duration(text), Ok(d), "{text}");
        }
        for bad in ["", "s", "10x", "1..5s", "-1s", "1e3s", "0s"] {
            assert!(positive_duration(bad).is_err(), "{bad}");
        }
    }
}
