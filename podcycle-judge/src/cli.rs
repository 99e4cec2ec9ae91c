//! Command-line arguments of `podcycle-judge`.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use podcycle_judge::{ErrorsConfig, LatencyConfig, PrometheusConfig, RunConfig};

/// The `--help` text.
pub(crate) const USAGE: &str = "\
podcycle-judge: compare a canary with the stable version from Prometheus and decide
as soon as the evidence allows (anytime-valid sequential tests).

USAGE:
    podcycle-judge --prometheus URL --stable VERSION --canary VERSION [OPTIONS]

WHAT TO READ:
    --prometheus URL           Prometheus base URL, plain http (e.g. http://prometheus:9090)
    --stable VERSION           version label value of the stable arm
    --canary VERSION           version label value of the canary arm
    --route ROUTE              only requests whose http_route is ROUTE (e.g. /v1/chat)
    --selector MATCHERS        extra PromQL label matchers, e.g. 'namespace=\"shop\"'
    --version-label NAME       label carrying the version [default: version]
    --metric NAME              histogram name [default: http_server_request_duration_seconds]
    --header 'NAME: VALUE'     extra HTTP header for Prometheus (repeatable)
    --query-timeout DURATION   time allowed for one query [default: 10s]

WHEN TO DECIDE:
    --interval DURATION        time between looks [default: 30s]
    --max-duration DURATION    deadline; undecided by then is inconclusive [default: 10m]
    --min-requests N           requests each arm needs before a pass [default: 200]
    --alpha A                  chance of a wrong fail, and of a wrong pass [default: 0.05]

COMPARISONS (canary against stable):
    --error-margin X           canary error ratio may exceed stable's by X [default: 0.002]
    --error-margin-relative R  ... and be (1+R) times stable's [default: 0]
    --latency-quantile Q       stable quantile that picks the bucket bound [default: 0.95]
    --latency-margin R         canary share of requests slower than that bound may be
                               (1+R) times stable's share [default: 0.5]
    --no-errors                skip the error comparison
    --no-latency               skip the latency comparison

GUARDRAILS (canary alone, once it has --min-requests):
    --max-error-ratio X        fail when the canary's error ratio exceeds X
    --max-p99 DURATION         fail when the canary's p99 latency exceeds DURATION

OUTPUT:
    --json PATH                write the full report as JSON to PATH
    --quiet                    no progress lines on stderr
    -h, --help                 print this help
    -V, --version              print the version

Durations: 500ms, 30s, 1.5s, 10m, 1h, 1m30s.
Exit status: 0 pass, 1 fail, 2 inconclusive (or unable to judge: bad arguments,
unreachable Prometheus, no traffic). No data is never a pass.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Judge with these options.
    Run(Box<CliOptions>),
    /// Print [`USAGE`].
    Help,
    /// Print the version.
    Version,
}

/// Options of a judging run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CliOptions {
    /// Where and what to read.
    pub prometheus: PrometheusConfig,
    /// The judge and its schedule.
    pub run: RunConfig,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
}

/// A command-line mistake; the message says which argument and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArgError {
    message: String,
}

impl ArgError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see --help)", self.message)
    }
}

impl std::error::Error for ArgError {}

/// Parses the arguments after the program name.
///
/// Accepts `--name value` and `--name=value`. Every error names the
/// argument at fault.
///
/// ```
/// use podcycle_judge::cli::{parse_args, Command};
///
/// let args = ["--prometheus", "http://prom:9090", "--stable", "v1", "--canary=v2", "--alpha", "0.01"];
/// let Ok(Command::Run(options)) = parse_args(args) else { panic!() };
/// assert_eq!(options.run.judge.alpha, 0.01);
/// assert!(parse_args(["--stable", "v1"]).is_err());
/// ```
pub(crate) fn parse_args<I, T>(args: I) -> Result<Command, ArgError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut args = args.into_iter().map(Into::into);
    let mut url = None;
    let mut stable = None;
    let mut canary = None;
    let mut prometheus = PrometheusConfig::new("", "", "");
    let mut run = RunConfig::default();
    let mut errors = ErrorsConfig::default();
    let mut latency = LatencyConfig::default();
    let (mut no_errors, mut no_latency) = (false, false);
    let mut json = None;
    let mut quiet = false;

    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| ArgError::new(format!("argument {a:?} is not valid UTF-8")))?;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let flag = |inline: &Option<String>| -> Result<(), ArgError> {
            match inline {
                Some(_) => Err(ArgError::new(format!("{name} takes no value"))),
                None => Ok(()),
            }
        };
        let mut value = || -> Result<String, ArgError> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            match args.next() {
                Some(v) => v
                    .into_string()
                    .map_err(|_| ArgError::new(format!("the value of {name} is not valid UTF-8"))),
                None => Err(ArgError::new(format!("{name} needs a value"))),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--prometheus" => url = Some(non_empty(&name, value()?)?),
            "--stable" => stable = Some(non_empty(&name, value()?)?),
            "--canary" => canary = Some(non_empty(&name, value()?)?),
            "--route" => prometheus.route = Some(non_empty(&name, value()?)?),
            "--selector" => prometheus.selector = Some(non_empty(&name, value()?)?),
            "--version-label" => prometheus.version_label = non_empty(&name, value()?)?,
            "--metric" => prometheus.metric = non_empty(&name, value()?)?,
            "--header" => {
                let v = value()?;
                let (k, val) = v
                    .split_once(':')
                    .filter(|(k, _)| !k.trim().is_empty())
                    .ok_or_else(|| {
                        ArgError::new(format!("{name} expects 'NAME: VALUE', got {v:?}"))
                    })?;
                prometheus
                    .headers
                    .push((k.trim().to_owned(), val.trim().to_owned()));
            }
            "--query-timeout" => prometheus.timeout = positive_duration(&name, &value()?)?,
            "--interval" => run.interval = positive_duration(&name, &value()?)?,
            "--max-duration" => run.max_duration = positive_duration(&name, &value()?)?,
            "--min-requests" => {
                let v = value()?;
                run.judge.min_requests = v.trim().parse().map_err(|_| {
                    ArgError::new(format!("{name} expects a whole number, got {v:?}"))
                })?;
            }
            "--alpha" => run.judge.alpha = number(&name, &value()?, 0.0, 1.0, false)?,
            "--error-margin" => errors.margin = number(&name, &value()?, 0.0, 1.0, true)?,
            "--error-margin-relative" => {
                errors.relative_margin = number(&name, &value()?, 0.0, 1e6, true)?;
            }
            "--latency-quantile" => latency.quantile = number(&name, &value()?, 0.0, 1.0, false)?,
            "--latency-margin" => latency.margin = number(&name, &value()?, 0.0, 50.0, true)?,
            "--no-errors" => {
                flag(&inline)?;
                no_errors = true;
            }
            "--no-latency" => {
                flag(&inline)?;
                no_latency = true;
            }
            "--max-error-ratio" => {
                run.judge.max_error_ratio = Some(number(&name, &value()?, 0.0, 1.0, true)?);
            }
            "--max-p99" => run.judge.max_p99 = Some(positive_duration(&name, &value()?)?),
            "--json" => json = Some(PathBuf::from(non_empty(&name, value()?)?)),
            "--quiet" | "-q" => {
                flag(&inline)?;
                quiet = true;
            }
            other if other.starts_with('-') => {
                return Err(ArgError::new(format!("unknown option {other}")));
            }
            other => return Err(ArgError::new(format!("unexpected argument {other:?}"))),
        }
    }

    let missing: Vec<&str> = [
        ("--prometheus", url.is_none()),
        ("--stable", stable.is_none()),
        ("--canary", canary.is_none()),
    ]
    .into_iter()
    .filter_map(|(n, m)| m.then_some(n))
    .collect();
    if !missing.is_empty() {
        return Err(ArgError::new(format!("missing {}", missing.join(", "))));
    }
    prometheus.url = url.unwrap_or_default();
    prometheus.stable = stable.unwrap_or_default();
    prometheus.canary = canary.unwrap_or_default();
    if prometheus.stable == prometheus.canary {
        return Err(ArgError::new(format!(
            "--stable and --canary are both {:?}; they must differ",
            prometheus.stable
        )));
    }
    run.judge.errors = (!no_errors).then_some(errors);
    run.judge.latency = (!no_latency).then_some(latency);
    run.validate().map_err(|e| ArgError::new(e.to_string()))?;
    Ok(Command::Run(Box::new(CliOptions {
        prometheus,
        run,
        json,
        quiet,
    })))
}

fn non_empty(name: &str, v: String) -> Result<String, ArgError> {
    if v.trim().is_empty() {
        Err(ArgError::new(format!("{name} needs a non-empty value")))
    } else {
        Ok(v)
    }
}

/// A number in `[lo, hi]` (or `(lo, hi)` when not `inclusive`).
fn number(name: &str, v: &str, lo: f64, hi: f64, inclusive: bool) -> Result<f64, ArgError> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| ArgError::new(format!("{name} expects a number, got {v:?}")))?;
    let ok = if inclusive {
        x >= lo && x <= hi
    } else {
        x > lo && x < hi
    };
    if ok {
        Ok(x)
    } else if inclusive {
        Err(ArgError::new(format!(
            "{name} must be in [{lo}, {hi}], got {v}"
        )))
    } else {
        Err(ArgError::new(format!(
            "{name} must be between {lo} and {hi} (exclusive), got {v}"
        )))
    }
}

fn positive_duration(name: &str, v: &str) -> Result<Duration, ArgError> {
    match parse_duration(v) {
        Ok(d) if d.is_zero() => Err(ArgError::new(format!("{name} must be longer than zero"))),
        Ok(d) => Ok(d),
        Err(e) => Err(ArgError::new(format!("{name}: {e}"))),
    }
}

/// Parses `500ms`, `30s`, `1.5s`, `10m`, `1h`, `1m30s`, `1m 30s` (`humantime`'s
/// syntax, the same as podcycle's `PODCYCLE_*` durations).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [&str; 6] = [
        "--prometheus",
        "http://prom:9090",
        "--stable",
        "v1",
        "--canary",
        "v2",
    ];

    fn parse(extra: &[&str]) -> Result<CliOptions, ArgError> {
        match parse_args(BASE.iter().chain(extra).copied())? {
            Command::Run(o) => Ok(*o),
            other => panic!("{other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        parse_args(args.iter().copied()).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.prometheus.url, "http://prom:9090");
        assert_eq!(o.prometheus.stable, "v1");
        assert_eq!(o.prometheus.canary, "v2");
        assert_eq!(o.run, RunConfig::default());
        assert_eq!(o.json, None);
        assert!(!o.quiet);
    }

    #[test]
    fn every_option() {
        let o = parse(&[
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
        let o = parse(&["--no-latency"]).unwrap();
        assert_eq!(o.run.judge.latency, None);
        assert!(o.run.judge.errors.is_some());
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(parse_args(["--help"]), Ok(Command::Help));
        assert_eq!(parse_args(["--stable", "x", "-h"]), Ok(Command::Help));
        assert_eq!(parse_args(["-V"]), Ok(Command::Version));
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "missing --prometheus, --stable, --canary"),
            (&["--prometheus", "http://p"], "missing --stable, --canary"),
            (&["--stable"], "--stable needs a value"),
            (&["--bogus"], "unknown option --bogus"),
            (&["stray"], "unexpected argument \"stray\""),
            (
                &["--prometheus", "http://p", "--stable", "v", "--canary", "v"],
                "must differ",
            ),
            (&["--stable", ""], "--stable needs a non-empty value"),
            (&["--quiet=yes"], "--quiet takes no value"),
            (&["--header", "no-colon"], "--header expects 'NAME: VALUE'"),
        ];
        for (args, expected) in cases {
            let e = err(args);
            assert!(e.contains(expected), "{args:?}: {e}");
            assert!(e.ends_with("(see --help)"), "{e}");
        }
    }

    #[test]
    fn value_errors_name_the_argument() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--alpha", "1"],
                "--alpha must be between 0 and 1 (exclusive), got 1",
            ),
            (&["--alpha", "x"], "--alpha expects a number, got \"x\""),
            (
                &["--min-requests", "-3"],
                "--min-requests expects a whole number",
            ),
            (
                &["--interval", "30"],
                "--interval: invalid duration \"30\": time unit needed",
            ),
            (&["--interval", "0s"], "--interval must be longer than zero"),
            (&["--max-p99", "fast"], "--max-p99: invalid duration"),
            (&["--error-margin", "2"], "--error-margin must be in [0, 1]"),
            (
                &["--latency-quantile", "95"],
                "--latency-quantile must be between 0 and 1",
            ),
            (&["--no-errors", "--no-latency"], "nothing to compare"),
            (
                &["--interval", "1m", "--max-duration", "30s"],
                "at least one interval",
            ),
        ];
        for (args, expected) in cases {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_are_errors() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'-', b'-', 0xff]);
        assert!(parse_args([bad]).unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "s", "10x", "1..5s", "-1s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
