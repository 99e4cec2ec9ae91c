//! What the judge tells: a JSON report, a human summary, progress lines.

use std::fmt;

use serde::Serialize;

use crate::format::{fmt_e, format_seconds, humanize, trim};
use crate::verdict::Verdict;

/// Every statistic of a judgement, as [`Judge::report`](crate::Judge::report)
/// and [`run`](crate::run) give it.
///
/// Serialises to the JSON written by `podcycle-judge --json`; `Display`
/// gives the human summary. Numbers that do not exist yet (a ratio without
/// requests, a bound the evidence has not reached) are `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The verdict; `None` while undecided.
    pub verdict: Option<Verdict>,
    /// Why: one line per failing check, or per passing check, or per missing
    /// piece of evidence.
    pub reasons: Vec<String>,
    /// Intervals judged (snapshots after the baseline).
    pub intervals: u64,
    /// Time since the first look, when the run loop made the report.
    pub elapsed_seconds: Option<f64>,
    /// Looks at the counters that failed (the run goes on after them).
    pub failed_reads: u64,
    /// The configured alpha.
    pub alpha: f64,
    /// The configured minimum of requests per arm.
    pub min_requests: u64,
    /// Totals of the stable arm since the baseline.
    pub stable: ArmReport,
    /// Totals of the canary arm since the baseline.
    pub canary: ArmReport,
    /// The sequential comparisons of canary against stable.
    pub comparisons: Vec<ComparisonReport>,
    /// The absolute guardrails on the canary alone.
    pub guardrails: Vec<GuardrailReport>,
}

/// Totals of one arm since the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmReport {
    /// The arm's version label, when the caller knows it.
    pub version: Option<String>,
    /// Requests counted.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_ratio: Option<f64>,
    /// Requests in the latency histogram.
    pub latency_requests: u64,
    /// Median latency (interpolated in buckets); `null` above the largest
    /// finite bucket.
    pub p50_seconds: Option<f64>,
    /// 95th percentile latency.
    pub p95_seconds: Option<f64>,
    /// 99th percentile latency.
    pub p99_seconds: Option<f64>,
}

/// State of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricStatus {
    /// Neither test has rejected yet.
    Pending,
    /// The canary is shown no worse than the margin.
    Pass,
    /// The canary is shown worse than the margin.
    Fail,
}

/// Trials and "successes" (errors, slow requests) of one arm.
///
/// For the `cpu` comparison: `n` is the arm's successful requests, `rate`
/// its CPU seconds per successful request, and `x` the intervals in which
/// the canary was above the margin (canary) or at or below it (stable).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CountsReport {
    /// Requests compared.
    pub n: u64,
    /// Of which errors (or slow requests).
    pub x: u64,
    /// `x / n`.
    pub rate: Option<f64>,
}

/// One sequential comparison of canary against stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonReport {
    /// `errors` or `latency`.
    pub metric: String,
    /// Pending, pass or fail.
    pub status: MetricStatus,
    /// What "no worse" means, in words.
    pub hypothesis: String,
    /// The compared quantity: `p_canary - p_stable` or `p_canary / p_stable`.
    pub parameter: String,
    /// The value of the parameter the canary may reach.
    pub margin: f64,
    /// The parameter estimated from all compared requests.
    pub estimate: Option<f64>,
    /// Lower bound of the anytime-valid confidence sequence (at the fail
    /// level, grid resolution); `null` while unbounded.
    pub cs_lower: Option<f64>,
    /// Upper bound (at the pass level, grid resolution); `null` while
    /// unbounded.
    pub cs_upper: Option<f64>,
    /// The stable's counts.
    pub stable: CountsReport,
    /// The canary's counts.
    pub canary: CountsReport,
    /// Current e-value against "the canary is no worse than the margin".
    pub e_fail: f64,
    /// Largest `e_fail` so far; FAIL when it reaches `e_fail_threshold`.
    pub e_fail_max: f64,
    /// `1 / alpha_fail`.
    pub e_fail_threshold: f64,
    /// Current e-value against "the canary is worse than the margin".
    pub e_pass: f64,
    /// Largest `e_pass` so far; this comparison passes when it reaches
    /// `e_pass_threshold`.
    pub e_pass_max: f64,
    /// `1 / alpha_pass`.
    pub e_pass_threshold: f64,
    /// Latency: the bucket bound compared, once fixed.
    pub boundary_seconds: Option<f64>,
    /// Latency: the stable quantile that picked the bound.
    pub quantile: Option<f64>,
}

/// State of one guardrail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailStatus {
    /// Within the limit.
    Ok,
    /// Beyond the limit: the verdict is FAIL.
    Violated,
    /// The canary has fewer requests than the minimum.
    NotEnoughData,
}

/// One absolute guardrail on the canary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardrailReport {
    /// `max_error_ratio` or `max_p99`.
    pub name: String,
    /// The limit (a ratio, or seconds).
    pub limit: f64,
    /// The canary's value since the start.
    pub observed: Option<f64>,
    /// Requests the value is computed from.
    pub requests: u64,
    /// Ok, violated or not enough data.
    pub status: GuardrailStatus,
}

impl GuardrailReport {
    /// One line, e.g. `guardrail max_p99 500ms: canary 730ms (violated)`.
    pub(crate) fn describe(&self) -> String {
        let is_time = self.name == "max_p99";
        let is_ratio = self.name == "max_memory_ratio";
        let show = |v: f64| {
            if is_time {
                format_seconds(v)
            } else if is_ratio {
                format!("{v:.2}x stable")
            } else {
                percent(v)
            }
        };
        let observed = self.observed.map_or_else(|| "-".to_owned(), show);
        let status = match self.status {
            GuardrailStatus::Ok => "ok".to_owned(),
            GuardrailStatus::Violated => "violated".to_owned(),
            GuardrailStatus::NotEnoughData => format!("{} requests, not enough", self.requests),
        };
        format!(
            "guardrail {} {}: canary {observed} ({status})",
            self.name,
            show(self.limit)
        )
    }
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data into a String cannot fail; keep a fallback
        // anyway rather than panic.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialise the report: {e}\"}}"))
    }

    /// One progress line, e.g.
    /// `[1m 30s] stable 4500 req 0.20% err | canary 4490 req 1.02% err | errors e_fail 52/40 e_pass 0.01/20 FAIL | ...`.
    pub fn progress_line(&self) -> String {
        let elapsed = self
            .elapsed_seconds
            .map(human_seconds)
            .unwrap_or_else(|| format!("#{}", self.intervals));
        let arm = |name: &str, a: &ArmReport| {
            format!(
                "{name} {} req {} err",
                a.requests,
                a.error_ratio.map_or_else(|| "-".to_owned(), percent)
            )
        };
        let mut parts = vec![arm("stable", &self.stable), arm("canary", &self.canary)];
        for c in &self.comparisons {
            parts.push(format!(
                "{} e_fail {}/{} e_pass {}/{} {}",
                c.metric,
                fmt_e(c.e_fail_max),
                fmt_e(c.e_fail_threshold),
                fmt_e(c.e_pass_max),
                fmt_e(c.e_pass_threshold),
                status_word(c.status)
            ));
        }
        for g in &self.guardrails {
            if g.status == GuardrailStatus::Violated {
                parts.push(format!("{} violated", g.name));
            }
        }
        let verdict = self
            .verdict
            .map_or_else(String::new, |v| format!(" => {v}"));
        format!("[{elapsed}] {}{verdict}", parts.join(" | "))
    }
}

/// Elapsed seconds for people; never panics on odd values.
fn human_seconds(s: f64) -> String {
    std::time::Duration::try_from_secs_f64(s.max(0.0)).map_or_else(|_| format!("{s}s"), humanize)
}

fn status_word(s: MetricStatus) -> &'static str {
    match s {
        MetricStatus::Pending => "pending",
        MetricStatus::Pass => "pass",
        MetricStatus::Fail => "FAIL",
    }
}

fn percent(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.0001 {
        format!("{:.4}%", x * 100.0)
    } else {
        format!("{:.2}%", x * 100.0)
    }
}

fn signed(x: f64, as_percent: bool) -> String {
    if as_percent {
        let s = percent(x.abs());
        if x < 0.0 {
            format!("-{s}")
        } else {
            format!("+{s}")
        }
    } else {
        format!("{x:.2}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = self
            .verdict
            .map_or_else(|| "UNDECIDED".to_owned(), |v| v.to_string());
        write!(f, "{verdict} after {} interval", self.intervals)?;
        if self.intervals != 1 {
            f.write_str("s")?;
        }
        if let Some(s) = self.elapsed_seconds {
            write!(f, " ({})", human_seconds(s))?;
        }
        if self.failed_reads > 0 {
            write!(f, ", {} failed reads", self.failed_reads)?;
        }
        writeln!(f)?;
        for reason in &self.reasons {
            writeln!(f, "  - {reason}")?;
        }
        for (name, a) in [("stable", &self.stable), ("canary", &self.canary)] {
            let version = a
                .version
                .as_deref()
                .map_or_else(String::new, |v| format!(" {v}"));
            let q = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), format_seconds);
            writeln!(
                f,
                "  {name}{version}: {} requests, {} errors ({}), p50 {} p95 {} p99 {}",
                a.requests,
                a.errors,
                a.error_ratio.map_or_else(|| "-".to_owned(), percent),
                q(a.p50_seconds),
                q(a.p95_seconds),
                q(a.p99_seconds),
            )?;
        }
        for c in &self.comparisons {
            let is_diff = c.metric == "errors";
            let bound = |v: Option<f64>, missing: &str| {
                v.map_or_else(|| missing.to_owned(), |v| signed(v, is_diff))
            };
            writeln!(
                f,
                "  {} {}: {} = {} (confidence sequence [{}, {}]); {}",
                c.metric,
                status_word(c.status),
                c.parameter,
                bound(c.estimate, "-"),
                bound(c.cs_lower, if is_diff { "-inf" } else { "0" }),
                bound(c.cs_upper, "+inf"),
                c.hypothesis
            )?;
            if c.metric == "cpu" {
                let per = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), format_seconds);
                writeln!(
                    f,
                    "    canary {} CPU per request ({} requests), stable {} ({} requests); \
                     intervals above the margin {}, at or below {}; e_fail {} of {}, e_pass {} \
                     of {}",
                    per(c.canary.rate),
                    c.canary.n,
                    per(c.stable.rate),
                    c.stable.n,
                    c.canary.x,
                    c.stable.x,
                    fmt_e(c.e_fail_max),
                    fmt_e(c.e_fail_threshold),
                    fmt_e(c.e_pass_max),
                    fmt_e(c.e_pass_threshold),
                )?;
                continue;
            }
            writeln!(
                f,
                "    canary {}/{} ({}), stable {}/{} ({}); e_fail {} of {}, e_pass {} of {}",
                c.canary.x,
                c.canary.n,
                c.canary.rate.map_or_else(|| "-".to_owned(), percent),
                c.stable.x,
                c.stable.n,
                c.stable.rate.map_or_else(|| "-".to_owned(), percent),
                fmt_e(c.e_fail_max),
                fmt_e(c.e_fail_threshold),
                fmt_e(c.e_pass_max),
                fmt_e(c.e_pass_threshold),
            )?;
        }
        for g in &self.guardrails {
            writeln!(f, "  {}", g.describe())?;
        }
        write!(
            f,
            "  alpha {}, min requests {}",
            trim(self.alpha),
            self.min_requests
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            verdict: Some(Verdict::Fail),
            reasons: vec!["errors: worse".to_owned()],
            intervals: 3,
            elapsed_seconds: Some(90.0),
            failed_reads: 1,
            alpha: 0.05,
            min_requests: 200,
            stable: ArmReport {
                version: Some("v1".to_owned()),
                requests: 4500,
                errors: 9,
                error_ratio: Some(0.002),
                latency_requests: 4491,
                p50_seconds: Some(0.1),
                p95_seconds: Some(0.25),
                p99_seconds: None,
            },
            canary: ArmReport {
                version: Some("v2".to_owned()),
                requests: 4500,
                errors: 45,
                error_ratio: Some(0.01),
                latency_requests: 4455,
                p50_seconds: Some(0.1),
                p95_seconds: Some(0.25),
                p99_seconds: Some(f64::INFINITY),
            },
            comparisons: vec![ComparisonReport {
                metric: "errors".to_owned(),
                status: MetricStatus::Fail,
                hypothesis: "canary error ratio <= stable + 0.002".to_owned(),
                parameter: "p_canary - p_stable".to_owned(),
                margin: 0.002,
                estimate: Some(0.008),
                cs_lower: Some(0.0031),
                cs_upper: None,
                stable: CountsReport {
                    n: 4500,
                    x: 9,
                    rate: Some(0.002),
                },
                canary: CountsReport {
                    n: 4500,
                    x: 45,
                    rate: Some(0.01),
                },
                e_fail: 52.0,
                e_fail_max: 52.0,
                e_fail_threshold: 40.0,
                e_pass: 0.0,
                e_pass_max: 1.0,
                e_pass_threshold: 20.0,
                boundary_seconds: None,
                quantile: None,
            }],
            guardrails: vec![GuardrailReport {
                name: "max_p99".to_owned(),
                limit: 0.5,
                observed: Some(0.73),
                requests: 4455,
                status: GuardrailStatus::Violated,
            }],
        }
    }

    #[test]
    fn json_has_the_statistics_and_nulls_for_missing_numbers() {
        let json: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        assert_eq!(json["verdict"], "fail");
        assert_eq!(json["comparisons"][0]["status"], "fail");
        assert_eq!(json["comparisons"][0]["cs_upper"], serde_json::Value::Null);
        assert_eq!(json["comparisons"][0]["e_fail_threshold"], 40.0);
        assert_eq!(json["canary"]["p99_seconds"], serde_json::Value::Null);
        assert_eq!(json["guardrails"][0]["status"], "violated");
        assert_eq!(json["stable"]["version"], "v1");
    }

    #[test]
    fn summary_and_progress_read_well() {
        let text = report().to_string();
        assert!(
            text.starts_with("FAIL after 3 intervals (1m 30s), 1 failed reads\n"),
            "{text}"
        );
        assert!(
            text.contains("errors FAIL: p_canary - p_stable = +0.80%"),
            "{text}"
        );
        assert!(text.contains("[+0.31%, +inf]"), "{text}");
        assert!(
            text.contains("guardrail max_p99 500ms: canary 730ms (violated)"),
            "{text}"
        );
        let line = report().progress_line();
        assert_eq!(
            line,
            "[1m 30s] stable 4500 req 0.20% err | canary 4500 req 1.00% err | errors e_fail 52/40 \
             e_pass 1.00/20 FAIL | max_p99 violated => FAIL"
        );
    }
}
