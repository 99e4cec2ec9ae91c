//! The pure decision engine: snapshots in, verdict out. No I/O, no clock.

use crate::config::{ConfigError, JudgeConfig, LatencyConfig};
use crate::format::{fmt_e, format_seconds, trim};
use crate::report::{
    ArmReport, ComparisonReport, CountsReport, GuardrailReport, GuardrailStatus, MetricStatus,
    Report,
};
use crate::snapshot::{ArmCounts, Histogram, Snapshot};
use crate::stats::{ratio, Comparison, PairCounts, Parameter, SignComparison};
use crate::verdict::Verdict;

/// Compares a canary with the stable from successive [`Snapshot`]s.
///
/// Feed it one snapshot per interval with [`observe`](Judge::observe); the
/// first is the baseline. It returns `Some(verdict)` as soon as the evidence
/// allows (and the same verdict for any later snapshot); call
/// [`finish`](Judge::finish) at the deadline to get an inconclusive verdict
/// when nothing was decided. [`report`](Judge::report) gives every statistic.
///
/// ```
/// use podcycle_judge::{ArmCounts, Judge, JudgeConfig, Snapshot, Verdict};
///
/// let config = JudgeConfig { latency: None, ..JudgeConfig::default() };
/// let mut judge = Judge::new(config)?;
/// let arm = |requests, errors| ArmCounts { requests, errors, ..ArmCounts::default() };
/// let mut verdict = None;
/// for i in 0..=10 {
///     // 1500 requests per interval; the canary fails 3%, the stable 0.2%.
///     let snapshot = Snapshot { stable: arm(1500 * i, 3 * i), canary: arm(1500 * i, 45 * i) };
///     verdict = judge.observe(snapshot);
///     if verdict.is_some() {
///         break;
///     }
/// }
/// assert_eq!(verdict, Some(Verdict::Fail));
/// # Ok::<(), podcycle_judge::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Judge {
    config: JudgeConfig,
    last: Option<Snapshot>,
    intervals: u64,
    stable: ArmCounts,
    canary: ArmCounts,
    errors: Option<Comparison>,
    latency: Option<LatencyState>,
    cpu: Option<SignComparison>,
    verdict: Option<Verdict>,
    reasons: Vec<String>,
}

#[derive(Debug, Clone)]
struct LatencyState {
    config: LatencyConfig,
    boundary: Option<f64>,
    comparison: Comparison,
}

impl Judge {
    /// A judge with `config`, after checking it.
    pub fn new(config: JudgeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // FAIL: Bonferroni over the comparisons. PASS needs every comparison
        // to pass, an intersection-union test, so each runs at alpha.
        let alpha_fail = config.alpha / f64::from(config.comparisons());
        let alpha_pass = config.alpha;
        let errors = config.errors.map(|e| {
            Comparison::new(
                Parameter::Difference {
                    kappa: 1.0 + e.relative_margin,
                },
                e.margin,
                alpha_fail,
                alpha_pass,
            )
        });
        let latency = config.latency.map(|l| LatencyState {
            config: l,
            boundary: None,
            comparison: Comparison::new(Parameter::Ratio, 1.0 + l.margin, alpha_fail, alpha_pass),
        });
        let cpu = config
            .cpu
            .map(|c| SignComparison::new(1.0 + c.margin, alpha_fail, alpha_pass));
        Ok(Self {
            config,
            last: None,
            intervals: 0,
            stable: ArmCounts::default(),
            canary: ArmCounts::default(),
            errors,
            latency,
            cpu,
            verdict: None,
            reasons: Vec::new(),
        })
    }

    /// The options this judge runs with.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// The verdict, once reached.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Adds the counters read at the end of an interval. The first snapshot
    /// is the baseline. Returns the verdict once the evidence is enough.
    pub fn observe(&mut self, snapshot: Snapshot) -> Option<Verdict> {
        if self.verdict.is_some() {
            return self.verdict;
        }
        let previous = self.last.replace(snapshot)?;
        let current = self.last.as_ref()?;
        let stable = current.stable.since(&previous.stable);
        let canary = current.canary.since(&previous.canary);
        self.intervals += 1;

        if let Some(errors) = &mut self.errors {
            // A shed request failed its client as an error does: counted as one, relative to
            // the other arm (a burst shed on both arms alike moves neither verdict).
            errors.observe(PairCounts::new(
                canary.requests.saturating_add(canary.shed),
                canary.errors.saturating_add(canary.shed),
                stable.requests.saturating_add(stable.shed),
                stable.errors.saturating_add(stable.shed),
            ));
        }
        if let Some(latency) = &mut self.latency {
            if let Some(b) = latency.boundary {
                if let (Some((cn, cx)), Some((sn, sx))) =
                    (slow(&canary.latency, b), slow(&stable.latency, b))
                {
                    latency.comparison.observe(PairCounts::new(cn, cx, sn, sx));
                }
            }
        }

        if let Some(cpu) = &mut self.cpu {
            if let Some(r) = cpu_ratio(&canary, &stable) {
                cpu.observe(r);
            }
        }

        accumulate(&mut self.stable, &stable);
        accumulate(&mut self.canary, &canary);
        if let Some(latency) = &mut self.latency {
            if latency.boundary.is_none() {
                // Chosen from past data only, so the bets stay predictable;
                // fixed from then on. The data so far sizes the first bets.
                latency.boundary = choose_boundary(&self.stable.latency, latency.config.quantile);
                if let Some(b) = latency.boundary {
                    if let (Some((cn, cx)), Some((sn, sx))) =
                        (slow(&self.canary.latency, b), slow(&self.stable.latency, b))
                    {
                        latency
                            .comparison
                            .set_prior(PairCounts::new(cn, cx, sn, sx));
                    }
                }
            }
        }
        self.decide()
    }

    /// Ends the judgement at the deadline: the verdict if one was reached,
    /// otherwise [`Verdict::Inconclusive`] with the reasons in the report.
    pub fn finish(&mut self) -> Verdict {
        if let Some(v) = self.verdict {
            return v;
        }
        let mut reasons = Vec::new();
        let min = self.config.min_requests;
        if self.last.is_none() {
            reasons.push("no counters could be read".to_owned());
        } else if self.intervals == 0 {
            reasons.push("only the baseline was read: no interval to judge".to_owned());
        } else {
            for (name, arm) in [("stable", &self.stable), ("canary", &self.canary)] {
                if arm.requests == 0 {
                    reasons.push(format!("the {name} received no requests"));
                } else if arm.requests < min {
                    reasons.push(format!(
                        "the {name} received {} requests, fewer than the minimum of {min}",
                        arm.requests
                    ));
                }
            }
            if let Some(c) = &self.errors {
                reasons.extend(undecided("errors", c));
            }
            if let Some(l) = &self.latency {
                if l.boundary.is_none() {
                    reasons.push(
                        "latency: the stable arm never had enough measured requests to fix a \
                         bucket bound"
                            .to_owned(),
                    );
                } else {
                    reasons.extend(undecided("latency", &l.comparison));
                }
            }
            if let Some(c) = &self.cpu {
                if c.intervals() == (0, 0) {
                    reasons.push(
                        "cpu: no interval had CPU time and successful requests in both arms \
                         (does /metrics export process_cpu_seconds_total with the version label?)"
                            .to_owned(),
                    );
                } else if !c.passed() {
                    reasons.push(format!(
                        "cpu: not enough evidence either way (fail e-value {} of {} needed, pass \
                         e-value {} of {})",
                        fmt_e(c.fail_test().max_e_value()),
                        fmt_e(c.fail_threshold()),
                        fmt_e(c.pass_test().max_e_value()),
                        fmt_e(c.pass_threshold())
                    ));
                }
            }
            if let Some(max) = self.config.max_p99 {
                if self.canary.latency.total() < min {
                    reasons.push(format!(
                        "guardrail max p99 {}: the canary has {} measured requests, fewer than \
                         {min}",
                        format_seconds(max.as_secs_f64()),
                        self.canary.latency.total()
                    ));
                }
            }
        }
        if reasons.is_empty() {
            reasons.push("the deadline came before the evidence was enough".to_owned());
        }
        self.reasons = reasons;
        self.verdict = Some(Verdict::Inconclusive);
        Verdict::Inconclusive
    }

    fn decide(&mut self) -> Option<Verdict> {
        let min = self.config.min_requests;
        let mut fail = Vec::new();
        if let Some(c) = &self.errors {
            if c.failed() {
                fail.push(format!(
                    "errors: the canary's error ratio is worse than {} (e-value {} >= {})",
                    self.errors_hypothesis(),
                    fmt_e(c.fail_test().max_e_value()),
                    fmt_e(c.fail_threshold())
                ));
            }
        }
        if let Some(l) = &self.latency {
            if l.comparison.failed() {
                fail.push(format!(
                    "latency: the canary's share of requests slower than {} is more than {} \
                     times the stable's (e-value {} >= {})",
                    l.boundary.map_or_else(|| "?".to_owned(), format_seconds),
                    trim(1.0 + l.config.margin),
                    fmt_e(l.comparison.fail_test().max_e_value()),
                    fmt_e(l.comparison.fail_threshold())
                ));
            }
        }
        if let Some(c) = &self.cpu {
            if c.failed() {
                fail.push(format!(
                    "cpu: the canary's CPU seconds per successful request are above {} times \
                     the stable's in most intervals (e-value {} >= {})",
                    trim(c.margin()),
                    fmt_e(c.fail_test().max_e_value()),
                    fmt_e(c.fail_threshold())
                ));
            }
        }
        let guardrails = self.guardrails();
        for g in &guardrails {
            if g.status == GuardrailStatus::Violated {
                fail.push(g.describe());
            }
        }
        if !fail.is_empty() {
            self.reasons = fail;
            self.verdict = Some(Verdict::Fail);
            return self.verdict;
        }

        let compared_ok = self.errors.as_ref().is_none_or(Comparison::passed)
            && self.latency.as_ref().is_none_or(|l| l.comparison.passed())
            && self.cpu.as_ref().is_none_or(SignComparison::passed);
        let enough = self.stable.requests >= min && self.canary.requests >= min;
        let guarded = guardrails.iter().all(|g| g.status == GuardrailStatus::Ok);
        if compared_ok && enough && guarded {
            let mut pass = Vec::new();
            if let Some(c) = &self.errors {
                pass.push(format!(
                    "errors: the canary's error ratio is within {} (e-value {} >= {})",
                    self.errors_hypothesis(),
                    fmt_e(c.pass_test().max_e_value()),
                    fmt_e(c.pass_threshold())
                ));
            }
            if let Some(l) = &self.latency {
                pass.push(format!(
                    "latency: the canary's share of requests slower than {} is within {} times \
                     the stable's (e-value {} >= {})",
                    l.boundary.map_or_else(|| "?".to_owned(), format_seconds),
                    trim(1.0 + l.config.margin),
                    fmt_e(l.comparison.pass_test().max_e_value()),
                    fmt_e(l.comparison.pass_threshold())
                ));
            }
            if let Some(c) = &self.cpu {
                pass.push(format!(
                    "cpu: the canary's CPU seconds per successful request are within {} times \
                     the stable's in most intervals (e-value {} >= {})",
                    trim(c.margin()),
                    fmt_e(c.pass_test().max_e_value()),
                    fmt_e(c.pass_threshold())
                ));
            }
            pass.extend(guardrails.iter().map(GuardrailReport::describe));
            self.reasons = pass;
            self.verdict = Some(Verdict::Pass);
        }
        self.verdict
    }

    fn errors_hypothesis(&self) -> String {
        match self.config.errors {
            Some(e) if e.relative_margin > 0.0 => format!(
                "{} x stable + {}",
                trim(1.0 + e.relative_margin),
                trim(e.margin)
            ),
            Some(e) => format!("stable + {}", trim(e.margin)),
            None => String::new(),
        }
    }

    fn guardrails(&self) -> Vec<GuardrailReport> {
        let min = self.config.min_requests;
        let mut out = Vec::new();
        if let Some(limit) = self.config.max_error_ratio {
            let observed = ratio(self.canary.errors, self.canary.requests);
            let status = match observed {
                _ if self.canary.requests < min => GuardrailStatus::NotEnoughData,
                Some(r) if r > limit => GuardrailStatus::Violated,
                _ => GuardrailStatus::Ok,
            };
            out.push(GuardrailReport {
                name: "max_error_ratio".to_owned(),
                limit,
                observed,
                requests: self.canary.requests,
                status,
            });
        }
        if let Some(limit) = self.config.max_p99 {
            let limit = limit.as_secs_f64();
            let measured = self.canary.latency.total();
            let observed = self.canary.latency.quantile(0.99);
            let status = match observed {
                _ if measured < min => GuardrailStatus::NotEnoughData,
                Some(p) if p > limit => GuardrailStatus::Violated,
                Some(_) => GuardrailStatus::Ok,
                None => GuardrailStatus::NotEnoughData,
            };
            out.push(GuardrailReport {
                name: "max_p99".to_owned(),
                limit,
                observed,
                requests: measured,
                status,
            });
        }
        if let Some(limit) = self.config.max_memory_ratio {
            let observed = match (
                self.canary.resident_memory_bytes,
                self.stable.resident_memory_bytes,
            ) {
                (Some(c), Some(s)) if s > 0.0 && c.is_finite() && c >= 0.0 => Some(c / s),
                _ => None,
            };
            let status = match observed {
                _ if self.canary.requests < min => GuardrailStatus::NotEnoughData,
                Some(r) if r > limit => GuardrailStatus::Violated,
                Some(_) => GuardrailStatus::Ok,
                None => GuardrailStatus::NotEnoughData,
            };
            out.push(GuardrailReport {
                name: "max_memory_ratio".to_owned(),
                limit,
                observed,
                requests: self.canary.requests,
                status,
            });
        }
        out
    }

    /// Every statistic so far. `elapsed_seconds`, `failed_reads` and the arm
    /// versions are left for the caller (see [`run`](crate::run)).
    pub fn report(&self) -> Report {
        let mut comparisons = Vec::new();
        if let Some(c) = &self.errors {
            let kappa = 1.0 + self.config.errors.map_or(0.0, |e| e.relative_margin);
            let parameter = if kappa == 1.0 {
                "p_canary - p_stable".to_owned()
            } else {
                format!("p_canary - {} * p_stable", trim(kappa))
            };
            comparisons.push(comparison_report(
                "errors",
                format!("canary error ratio <= {}", self.errors_hypothesis()),
                parameter,
                c,
                None,
                None,
            ));
        }
        if let Some(l) = &self.latency {
            let bound = l.boundary.map_or_else(
                || {
                    format!(
                        "the stable's p{} bucket bound",
                        trim(100.0 * l.config.quantile)
                    )
                },
                format_seconds,
            );
            comparisons.push(comparison_report(
                "latency",
                format!(
                    "canary share slower than {bound} <= {} x stable share",
                    trim(1.0 + l.config.margin)
                ),
                "p_canary / p_stable".to_owned(),
                &l.comparison,
                l.boundary,
                Some(l.config.quantile),
            ));
        }
        if let Some(c) = &self.cpu {
            comparisons.push(cpu_report(c, &self.stable, &self.canary));
        }
        Report {
            verdict: self.verdict,
            reasons: self.reasons.clone(),
            intervals: self.intervals,
            elapsed_seconds: None,
            failed_reads: 0,
            alpha: self.config.alpha,
            min_requests: self.config.min_requests,
            stable: arm_report(&self.stable),
            canary: arm_report(&self.canary),
            comparisons,
            guardrails: self.guardrails(),
        }
    }
}

fn undecided(name: &str, c: &Comparison) -> Option<String> {
    if c.passed() {
        return None;
    }
    Some(format!(
        "{name}: not enough evidence either way (fail e-value {} of {} needed, pass e-value {} \
         of {})",
        fmt_e(c.fail_test().max_e_value()),
        fmt_e(c.fail_threshold()),
        fmt_e(c.pass_test().max_e_value()),
        fmt_e(c.pass_threshold())
    ))
}

fn comparison_report(
    metric: &str,
    hypothesis: String,
    parameter: String,
    c: &Comparison,
    boundary_seconds: Option<f64>,
    quantile: Option<f64>,
) -> ComparisonReport {
    let total = c.total();
    let (cs_lower, cs_upper) = c.confidence_sequence();
    let status = if c.failed() {
        MetricStatus::Fail
    } else if c.passed() {
        MetricStatus::Pass
    } else {
        MetricStatus::Pending
    };
    ComparisonReport {
        metric: metric.to_owned(),
        status,
        hypothesis,
        parameter,
        margin: c.margin(),
        estimate: c.estimate(),
        cs_lower,
        cs_upper,
        stable: CountsReport {
            n: total.stable_n,
            x: total.stable_x,
            rate: total.stable_rate(),
        },
        canary: CountsReport {
            n: total.canary_n,
            x: total.canary_x,
            rate: total.canary_rate(),
        },
        e_fail: c.fail_test().e_value(),
        e_fail_max: c.fail_test().max_e_value(),
        e_fail_threshold: c.fail_threshold(),
        e_pass: c.pass_test().e_value(),
        e_pass_max: c.pass_test().max_e_value(),
        e_pass_threshold: c.pass_threshold(),
        boundary_seconds,
        quantile,
    }
}

/// CPU seconds per successful request of an increment or a total.
fn cpu_per_request(arm: &ArmCounts) -> Option<f64> {
    let ok = arm.requests.saturating_sub(arm.errors);
    (ok > 0 && arm.cpu_seconds.is_finite() && arm.cpu_seconds > 0.0)
        .then(|| arm.cpu_seconds / ok as f64)
}

/// One interval's canary-over-stable ratio of CPU seconds per successful
/// request; `None` unless both arms used CPU and answered requests.
fn cpu_ratio(canary: &ArmCounts, stable: &ArmCounts) -> Option<f64> {
    Some(cpu_per_request(canary)? / cpu_per_request(stable)?)
}

fn cpu_report(c: &SignComparison, stable: &ArmCounts, canary: &ArmCounts) -> ComparisonReport {
    let (cs_lower, cs_upper) = c.confidence_sequence();
    let (above, below) = c.intervals();
    let status = if c.failed() {
        MetricStatus::Fail
    } else if c.passed() {
        MetricStatus::Pass
    } else {
        MetricStatus::Pending
    };
    let counts = |arm: &ArmCounts, x: u64| CountsReport {
        n: arm.requests.saturating_sub(arm.errors),
        x,
        rate: cpu_per_request(arm),
    };
    ComparisonReport {
        metric: "cpu".to_owned(),
        status,
        hypothesis: format!(
            "canary CPU per successful request <= {} x stable's in most intervals",
            trim(c.margin())
        ),
        parameter: "median of cpu_per_request_canary / cpu_per_request_stable".to_owned(),
        margin: c.margin(),
        estimate: cpu_ratio(canary, stable),
        cs_lower,
        cs_upper,
        stable: counts(stable, below),
        canary: counts(canary, above),
        e_fail: c.fail_test().e_value(),
        e_fail_max: c.fail_test().max_e_value(),
        e_fail_threshold: c.fail_threshold(),
        e_pass: c.pass_test().e_value(),
        e_pass_max: c.pass_test().max_e_value(),
        e_pass_threshold: c.pass_threshold(),
        boundary_seconds: None,
        quantile: None,
    }
}

fn arm_report(arm: &ArmCounts) -> ArmReport {
    ArmReport {
        version: None,
        requests: arm.requests,
        errors: arm.errors,
        error_ratio: ratio(arm.errors, arm.requests),
        latency_requests: arm.latency.total(),
        p50_seconds: arm.latency.quantile(0.5),
        p95_seconds: arm.latency.quantile(0.95),
        p99_seconds: arm.latency.quantile(0.99),
    }
}

fn accumulate(total: &mut ArmCounts, inc: &ArmCounts) {
    total.requests = total.requests.saturating_add(inc.requests);
    total.errors = total.errors.saturating_add(inc.errors);
    total.shed = total.shed.saturating_add(inc.shed);
    total.latency.add(&inc.latency);
    if inc.cpu_seconds.is_finite() && inc.cpu_seconds > 0.0 {
        total.cpu_seconds += inc.cpu_seconds;
    }
    total.resident_memory_bytes = inc.resident_memory_bytes;
}

/// `(measured, slower than b)` in one interval's histogram increment.
fn slow(h: &Histogram, b: f64) -> Option<(u64, u64)> {
    let total = h.total();
    if total == 0 {
        return Some((0, 0));
    }
    let at_most = h.count_le(b)?;
    Some((total, total.saturating_sub(at_most)))
}

/// The finite bound whose share of slower stable requests is nearest
/// `1 - quantile` (in ratio), once about 10 slow requests are expected.
fn choose_boundary(stable: &Histogram, quantile: f64) -> Option<f64> {
    let total = stable.total();
    let target = 1.0 - quantile;
    if total == 0 || (total as f64) * target < 10.0 {
        return None;
    }
    let finite = stable.buckets().iter().filter(|b| b.le.is_finite());
    let scored = finite.clone().filter_map(|b| {
        let tail = total.saturating_sub(b.count) as f64 / total as f64;
        (tail > 0.0).then(|| ((tail / target).ln().abs(), b.le))
    });
    scored
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, le)| le)
        // Every stable request at or below the smallest bound.
        .or_else(|| finite.map(|b| b.le).next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CpuConfig;
    use std::time::Duration;

    const BOUNDS: [f64; 6] = [0.05, 0.1, 0.25, 0.5, 1.0, f64::INFINITY];

    /// An arm after `i` intervals of `n` requests with `e` errors, half of
    /// the successes at or below 0.05 s and `slow_share` of them above 0.1 s.
    fn arm(i: u64, n: u64, e: u64, slow_share: f64) -> ArmCounts {
        let ok = (n - e) * i;
        let slow = (ok as f64 * slow_share).round() as u64;
        let counts = [ok / 2, ok - slow, ok - slow / 2, ok, ok, ok];
        ArmCounts {
            requests: n * i,
            errors: e * i,
            latency: Histogram::from_cumulative(BOUNDS.iter().copied().zip(counts)),
            ..ArmCounts::default()
        }
    }

    fn run(
        judge: &mut Judge,
        intervals: u64,
        stable: (u64, u64, f64),
        canary: (u64, u64, f64),
    ) -> Option<Verdict> {
        for i in 0..=intervals {
            let snapshot = Snapshot {
                stable: arm(i, stable.0, stable.1, stable.2),
                canary: arm(i, canary.0, canary.1, canary.2),
            };
            if let Some(v) = judge.observe(snapshot) {
                return Some(v);
            }
        }
        None
    }

    #[test]
    fn identical_arms_pass() {
        let mut judge = Judge::new(JudgeConfig::default()).unwrap();
        let v = run(&mut judge, 20, (1500, 3, 0.05), (1500, 3, 0.05));
        assert_eq!(v, Some(Verdict::Pass), "{}", judge.report());
        let report = judge.report();
        for c in &report.comparisons {
            assert_eq!(c.status, MetricStatus::Pass);
            // The reported confidence sequence agrees with the decision.
            assert!(c.cs_upper.unwrap() <= c.margin, "{c:?}");
        }
        assert_eq!(report.comparisons[1].boundary_seconds, Some(0.1));
    }

    #[test]
    fn error_regression_fails() {
        let mut judge = Judge::new(JudgeConfig::default()).unwrap();
        let v = run(&mut judge, 20, (1500, 3, 0.05), (1500, 15, 0.05));
        assert_eq!(v, Some(Verdict::Fail));
        let report = judge.report();
        assert_eq!(report.comparisons[0].status, MetricStatus::Fail);
        assert!(report.comparisons[0].cs_lower.unwrap() >= 0.002);
        assert!(
            report.reasons[0].starts_with("errors:"),
            "{:?}",
            report.reasons
        );
        assert!(report.intervals <= 6, "{}", report.intervals);
        // Later snapshots keep the verdict.
        assert_eq!(judge.observe(Snapshot::default()), Some(Verdict::Fail));
        assert_eq!(judge.finish(), Verdict::Fail);
    }

    #[test]
    fn latency_regression_fails() {
        let mut judge = Judge::new(JudgeConfig::default()).unwrap();
        let v = run(&mut judge, 20, (1500, 3, 0.04), (1500, 3, 0.12));
        assert_eq!(v, Some(Verdict::Fail));
        assert!(judge.report().reasons[0].starts_with("latency:"));
    }

    #[test]
    fn no_canary_traffic_is_inconclusive() {
        let mut judge = Judge::new(JudgeConfig::default()).unwrap();
        assert_eq!(run(&mut judge, 20, (1500, 3, 0.05), (0, 0, 0.0)), None);
        assert_eq!(judge.finish(), Verdict::Inconclusive);
        let report = judge.report();
        assert!(report
            .reasons
            .iter()
            .any(|r| r.contains("canary received no requests")));
    }

    #[test]
    fn too_few_requests_never_pass() {
        let config = JudgeConfig {
            min_requests: 10_000,
            ..JudgeConfig::default()
        };
        let mut judge = Judge::new(config).unwrap();
        assert_eq!(run(&mut judge, 5, (1000, 0, 0.05), (1000, 0, 0.05)), None);
        assert_eq!(judge.finish(), Verdict::Inconclusive);
        assert!(judge.report().reasons[0].contains("fewer than the minimum"));
    }

    #[test]
    fn no_data_is_inconclusive() {
        let mut judge = Judge::new(JudgeConfig::default()).unwrap();
        assert_eq!(judge.finish(), Verdict::Inconclusive);
        let mut judge = Judge::new(JudgeConfig::default()).unwrap();
        for _ in 0..30 {
            assert_eq!(judge.observe(Snapshot::default()), None);
        }
        assert_eq!(judge.finish(), Verdict::Inconclusive);
    }

    #[test]
    fn guardrails_fail_a_canary_that_matches_a_bad_stable() {
        let config = JudgeConfig {
            max_error_ratio: Some(0.01),
            ..JudgeConfig::default()
        };
        let mut judge = Judge::new(config).unwrap();
        assert_eq!(
            run(&mut judge, 3, (1500, 60, 0.05), (1500, 60, 0.05)),
            Some(Verdict::Fail)
        );
        assert!(judge.report().reasons[0].contains("max_error_ratio"));

        let config = JudgeConfig {
            max_p99: Some(Duration::from_millis(200)),
            ..JudgeConfig::default()
        };
        let mut judge = Judge::new(config).unwrap();
        assert_eq!(
            run(&mut judge, 3, (1500, 0, 0.05), (1500, 0, 0.05)),
            Some(Verdict::Fail)
        );
        let report = judge.report();
        assert!(
            report.reasons[0].contains("max_p99"),
            "{:?}",
            report.reasons
        );
        assert_eq!(report.guardrails[0].status, GuardrailStatus::Violated);
    }

    #[test]
    fn guardrails_wait_for_min_requests() {
        let config = JudgeConfig {
            max_error_ratio: Some(0.01),
            min_requests: 1000,
            ..JudgeConfig::default()
        };
        let mut judge = Judge::new(config).unwrap();
        // 300 requests per interval at 5% errors: the guardrail may only
        // fail after the canary has 1000 requests, i.e. at interval 4.
        let mut failed_at = None;
        for i in 0..=10 {
            let snapshot = Snapshot {
                stable: arm(i, 300, 15, 0.05),
                canary: arm(i, 300, 15, 0.05),
            };
            if judge.observe(snapshot).is_some() {
                failed_at = Some(i);
                break;
            }
        }
        assert_eq!(failed_at, Some(4));
    }

    #[test]
    fn counter_resets_do_not_look_like_errors() {
        let mut judge = Judge::new(JudgeConfig {
            latency: None,
            ..JudgeConfig::default()
        })
        .unwrap();
        let mut verdict = None;
        for i in 0..=20 {
            // The canary restarts after interval 5: its counters start over.
            let c = if i > 5 { i - 5 } else { i };
            let snapshot = Snapshot {
                stable: arm(i, 1500, 3, 0.05),
                canary: arm(c, 1500, 3, 0.05),
            };
            verdict = judge.observe(snapshot).or(verdict);
        }
        assert_ne!(verdict, Some(Verdict::Fail));
    }

    /// Arms with `n` requests per interval and `cpu` CPU seconds per
    /// request (plus a jitter of +-2% alternating between intervals), RSS
    /// growing by `leak` bytes per interval.
    fn cpu_run(
        judge: &mut Judge,
        intervals: u64,
        stable: (f64, f64),
        canary: (f64, f64),
    ) -> Option<Verdict> {
        let arm = |i: u64, (cpu, leak): (f64, f64), phase: u64| {
            // Increments alternate between 1.02 and 0.98 times the mean.
            let jitter = 0.02 * ((i + phase) % 2) as f64;
            ArmCounts {
                requests: 1500 * i,
                cpu_seconds: 1500.0 * cpu * (i as f64 + jitter),
                resident_memory_bytes: Some(50e6 + leak * i as f64),
                ..ArmCounts::default()
            }
        };
        for i in 0..=intervals {
            let snapshot = Snapshot {
                stable: arm(i, stable, 0),
                canary: arm(i, canary, 1),
            };
            if let Some(v) = judge.observe(snapshot) {
                return Some(v);
            }
        }
        None
    }

    fn cpu_only() -> JudgeConfig {
        JudgeConfig {
            errors: None,
            latency: None,
            cpu: Some(CpuConfig::default()),
            ..JudgeConfig::default()
        }
    }

    #[test]
    fn cpu_regression_fails_and_equal_cpu_passes() {
        let mut judge = Judge::new(cpu_only()).unwrap();
        assert_eq!(
            cpu_run(&mut judge, 30, (0.002, 0.0), (0.003, 0.0)),
            Some(Verdict::Fail)
        );
        let report = judge.report();
        assert!(
            report.reasons[0].starts_with("cpu:"),
            "{:?}",
            report.reasons
        );
        assert_eq!(report.comparisons[0].metric, "cpu");
        let est = report.comparisons[0].estimate.unwrap();
        assert!((est - 1.5).abs() < 0.05, "{est}");
        assert!(report.to_string().contains("CPU per request"), "{report}");

        let mut judge = Judge::new(cpu_only()).unwrap();
        assert_eq!(
            cpu_run(&mut judge, 30, (0.002, 0.0), (0.002, 0.0)),
            Some(Verdict::Pass)
        );
    }

    #[test]
    fn no_cpu_data_is_inconclusive() {
        let mut judge = Judge::new(cpu_only()).unwrap();
        assert_eq!(cpu_run(&mut judge, 30, (0.0, 0.0), (0.0, 0.0)), None);
        assert_eq!(judge.finish(), Verdict::Inconclusive);
        assert!(judge.report().reasons[0].contains("process_cpu_seconds_total"));
    }

    #[test]
    fn memory_guardrail_fails_a_leaking_canary() {
        let config = JudgeConfig {
            max_memory_ratio: Some(1.5),
            ..cpu_only()
        };
        let mut judge = Judge::new(config).unwrap();
        // 5 MB more per interval: above 1.5 x 50 MB after 6 intervals.
        assert_eq!(
            cpu_run(&mut judge, 30, (0.002, 0.0), (0.002, 5e6)),
            Some(Verdict::Fail)
        );
        let report = judge.report();
        assert_eq!(report.intervals, 6, "{report}");
        assert!(
            report.reasons[0].contains("max_memory_ratio"),
            "{:?}",
            report.reasons
        );
    }

    #[test]
    fn fast_stable_service_still_gets_a_bound() {
        // Every stable request at or below the smallest bound.
        let h = Histogram::from_cumulative([(0.005, 1000), (0.01, 1000), (f64::INFINITY, 1000)]);
        assert_eq!(choose_boundary(&h, 0.95), Some(0.005));
        let h = Histogram::from_cumulative([(0.005, 10), (f64::INFINITY, 10)]);
        assert_eq!(choose_boundary(&h, 0.95), None);
    }

    #[test]
    fn garbage_counters_never_panic() {
        // Counters that jump, reset, exceed each other, carry odd buckets.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let config = JudgeConfig {
            max_error_ratio: Some(0.5),
            max_p99: Some(Duration::from_millis(100)),
            cpu: Some(CpuConfig::default()),
            max_memory_ratio: Some(1.5),
            min_requests: 0,
            ..JudgeConfig::default()
        };
        for _ in 0..200 {
            let mut judge = Judge::new(config.clone()).unwrap();
            for _ in 0..20 {
                let mut arm = || {
                    let scale = [10, 1_000, u64::MAX / 2, u64::MAX][(next() % 4) as usize];
                    let les = [0.0, 0.1, 1.0, f64::INFINITY, f64::NAN, -1.0];
                    ArmCounts {
                        requests: next() % scale,
                        errors: next() % scale,
                        shed: next() % scale,
                        latency: Histogram::from_cumulative(
                            (0..(next() % 5)).map(|_| (les[(next() % 6) as usize], next() % scale)),
                        ),
                        cpu_seconds: [0.0, 1.0, f64::NAN, -1.0, 1e300][(next() % 5) as usize]
                            * (next() % 1000) as f64,
                        resident_memory_bytes: [None, Some(0.0), Some(1e6), Some(f64::NAN)]
                            [(next() % 4) as usize],
                    }
                };
                let snapshot = Snapshot {
                    stable: arm(),
                    canary: arm(),
                };
                judge.observe(snapshot);
            }
            judge.finish();
            let report = judge.report();
            assert!(report.verdict.is_some());
            let _ = (report.to_json(), report.to_string(), report.progress_line());
        }
    }

    #[test]
    fn small_formatters() {
        assert_eq!(fmt_e(41.3), "41");
        assert_eq!(fmt_e(3.21), "3.21");
        assert_eq!(fmt_e(2.0e6), "2.0e6");
        assert_eq!(trim(1.5), "1.5");
        assert_eq!(trim(0.002), "0.002");
        assert_eq!(trim(2.0), "2");
    }
}
