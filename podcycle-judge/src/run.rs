//! The loop that looks at a [`SnapshotSource`] every interval until a verdict
//! or the deadline.

use std::fmt;
use std::future::Future;

use tokio::time::Instant;

use crate::config::{ConfigError, RunConfig};
use crate::engine::Judge;
use crate::report::Report;
use crate::snapshot::Snapshot;

/// Where snapshots come from: a Prometheus server
/// ([`PrometheusSource`](crate::PrometheusSource)) or, in tests,
/// synthetic counters.
pub trait SnapshotSource {
    /// Why a read failed.
    type Error: fmt::Display;

    /// Reads the cumulative counters of both arms now.
    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, Self::Error>> + Send;
}

/// What happened at one look, for progress output.
#[derive(Debug)]
pub enum Event<'a, E> {
    /// The counters were read and judged; `report.verdict` is set once
    /// decided.
    Observed(&'a Report),
    /// The counters could not be read; the run goes on until the deadline.
    ReadFailed {
        /// Time since the first look.
        elapsed: std::time::Duration,
        /// What went wrong.
        error: &'a E,
    },
}

/// Looks at `source` at once (the baseline), then every `config.interval`
/// until a verdict or `config.max_duration`; calls `on_event` at each look
/// and returns the final report, whose `verdict` is always set.
///
/// A failed read is reported and skipped: the next successful read covers
/// the missed interval. With no successful read at all the verdict is
/// inconclusive.
///
/// # Errors
///
/// Only for an invalid `config`.
///
/// # Cancellation safety
///
/// Dropping the future abandons the judgement; nothing is left behind.
///
/// # Example
///
/// ```
/// use podcycle_judge::{run, ArmCounts, RunConfig, Snapshot, SnapshotSource, Verdict};
/// use std::convert::Infallible;
///
/// /// Two identical arms: 1500 requests per look, no errors, no latency data.
/// struct Quiet(u64);
///
/// impl SnapshotSource for Quiet {
///     type Error = Infallible;
///     async fn snapshot(&mut self) -> Result<Snapshot, Infallible> {
///         self.0 += 1500;
///         let arm = ArmCounts { requests: self.0, ..ArmCounts::default() };
///         Ok(Snapshot { stable: arm.clone(), canary: arm })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut config = RunConfig::default();
/// config.judge.latency = None;
/// let report = run(&config, &mut Quiet(0), |_| {}).await.unwrap();
/// assert_eq!(report.verdict, Some(Verdict::Pass));
/// # }
/// ```
pub async fn run<S, F>(
    config: &RunConfig,
    source: &mut S,
    mut on_event: F,
) -> Result<Report, ConfigError>
where
    S: SnapshotSource,
    F: FnMut(Event<'_, S::Error>),
{
    config.validate()?;
    let mut judge = Judge::new(config.judge.clone())?;
    let start = Instant::now();
    let deadline = start
        .checked_add(config.max_duration)
        .ok_or_else(|| ConfigError::new("the maximum duration is too long"))?;
    let mut failed_reads = 0;
    let mut look: u32 = 0;
    loop {
        let at = start
            .checked_add(config.interval.saturating_mul(look))
            .map_or(deadline, |at| at.min(deadline));
        tokio::time::sleep_until(at).await;
        look = look.saturating_add(1);
        match source.snapshot().await {
            Ok(snapshot) => {
                let verdict = judge.observe(snapshot);
                let mut report = judge.report();
                report.elapsed_seconds = Some(start.elapsed().as_secs_f64());
                report.failed_reads = failed_reads;
                on_event(Event::Observed(&report));
                if verdict.is_some() {
                    return Ok(report);
                }
            }
            Err(error) => {
                failed_reads += 1;
                on_event(Event::ReadFailed {
                    elapsed: start.elapsed(),
                    error: &error,
                });
            }
        }
        if at >= deadline || Instant::now() >= deadline {
            break;
        }
    }
    judge.finish();
    let mut report = judge.report();
    report.elapsed_seconds = Some(start.elapsed().as_secs_f64());
    report.failed_reads = failed_reads;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JudgeConfig;
    use crate::snapshot::ArmCounts;
    use crate::verdict::Verdict;
    use std::time::Duration;

    /// Counters growing by fixed amounts, failing on chosen looks.
    struct Synthetic {
        looks: u64,
        per_look: (u64, u64, u64, u64),
        fail_on: Vec<u64>,
    }

    impl SnapshotSource for Synthetic {
        type Error = String;
        async fn snapshot(&mut self) -> Result<Snapshot, String> {
            let look = self.looks;
            self.looks += 1;
            if self.fail_on.contains(&look) {
                return Err(format!("look {look} failed"));
            }
            let (sn, se, cn, ce) = self.per_look;
            let arm = |n: u64, e: u64| ArmCounts {
                requests: n * look,
                errors: e * look,
                ..ArmCounts::default()
            };
            Ok(Snapshot {
                stable: arm(sn, se),
                canary: arm(cn, ce),
            })
        }
    }

    fn config() -> RunConfig {
        RunConfig {
            judge: JudgeConfig {
                latency: None,
                ..JudgeConfig::default()
            },
            ..RunConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fails_a_bad_canary_early_and_reports_progress() {
        let mut source = Synthetic {
            looks: 0,
            per_look: (1500, 3, 1500, 30),
            fail_on: vec![2],
        };
        let mut lines = Vec::new();
        let mut failures = 0;
        let report = run(&config(), &mut source, |event| match event {
            Event::Observed(r) => lines.push(r.progress_line()),
            Event::ReadFailed { error, .. } => {
                assert_eq!(error, "look 2 failed");
                failures += 1;
            }
        })
        .await
        .unwrap();
        assert_eq!(report.verdict, Some(Verdict::Fail));
        assert_eq!(report.failed_reads, 1);
        assert_eq!(failures, 1);
        let elapsed = report.elapsed_seconds.unwrap();
        assert!(elapsed < 200.0 && elapsed % 30.0 == 0.0, "{elapsed}");
        assert!(lines.last().unwrap().ends_with("=> FAIL"), "{lines:?}");
        assert!(lines[0].starts_with("[0s] stable 0 req"), "{lines:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_source_is_inconclusive_at_the_deadline() {
        let mut source = Synthetic {
            looks: 0,
            per_look: (0, 0, 0, 0),
            fail_on: (0..100).collect(),
        };
        let mut events = 0;
        let report = run(&config(), &mut source, |_| events += 1).await.unwrap();
        assert_eq!(report.verdict, Some(Verdict::Inconclusive));
        // Looks at 0s, 30s, ..., 600s.
        assert_eq!(events, 21);
        assert_eq!(report.failed_reads, 21);
        assert_eq!(report.elapsed_seconds, Some(600.0));
        assert_eq!(report.reasons, vec!["no counters could be read".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_looked_at_even_between_intervals() {
        let mut source = Synthetic {
            looks: 0,
            per_look: (10, 0, 10, 0),
            fail_on: vec![],
        };
        let config = RunConfig {
            max_duration: Duration::from_secs(75),
            ..config()
        };
        let report = run(&config, &mut source, |_| {}).await.unwrap();
        // Looks at 0, 30, 60 and 75 s; too little traffic to pass.
        assert_eq!(report.intervals, 3);
        assert_eq!(report.elapsed_seconds, Some(75.0));
        assert_eq!(report.verdict, Some(Verdict::Inconclusive));
    }

    #[tokio::test]
    async fn invalid_config_is_an_error() {
        let mut source = Synthetic {
            looks: 0,
            per_look: (0, 0, 0, 0),
            fail_on: vec![],
        };
        let bad = RunConfig {
            interval: Duration::ZERO,
            ..config()
        };
        assert!(run(&bad, &mut source, |_| {}).await.is_err());
        let endless = RunConfig {
            max_duration: Duration::MAX,
            ..config()
        };
        assert!(run(&endless, &mut source, |_| {}).await.is_err());
    }
}
