//! Options of the judge: what to compare, with which margins, how sure to be.

use std::fmt;
use std::time::Duration;

/// Options of a [`Judge`](crate::Judge).
///
/// The defaults compare both errors and latency at `alpha = 0.05`:
///
/// ```
/// use podcycle_judge::{JudgeConfig, LatencyConfig};
///
/// let config = JudgeConfig {
///     latency: Some(LatencyConfig { quantile: 0.99, ..LatencyConfig::default() }),
///     max_error_ratio: Some(0.05),
///     ..JudgeConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeConfig {
    /// Largest probability of a wrong FAIL (split evenly across the enabled
    /// comparisons) and of a wrong PASS. Default `0.05`.
    pub alpha: f64,
    /// Each arm needs at least this many requests before the judge may say
    /// PASS, and the canary before a guardrail may fail it; an arm below it
    /// at the deadline makes the verdict inconclusive. Default `200`.
    pub min_requests: u64,
    /// Compare error ratios; `None` to skip. Default on.
    pub errors: Option<ErrorsConfig>,
    /// Compare latency; `None` to skip. Default on.
    pub latency: Option<LatencyConfig>,
    /// Guardrail: FAIL when the canary's error ratio since the start exceeds
    /// this, once it has `min_requests` requests. Default off.
    pub max_error_ratio: Option<f64>,
    /// Guardrail: FAIL when the canary's p99 latency since the start
    /// (interpolated from its buckets like `histogram_quantile`) exceeds
    /// this, once it has `min_requests` requests. Default off.
    pub max_p99: Option<Duration>,
    /// Compare CPU seconds per successful request; `None` to skip. Default
    /// off: it needs podcycle's process metrics
    /// (`process_cpu_seconds_total` with the version label).
    pub cpu: Option<CpuConfig>,
    /// Guardrail: FAIL when the canary's resident memory per pod exceeds
    /// this many times the stable's, once it has `min_requests` requests.
    /// Default off.
    pub max_memory_ratio: Option<f64>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            min_requests: 200,
            errors: Some(ErrorsConfig::default()),
            latency: Some(LatencyConfig::default()),
            max_error_ratio: None,
            max_p99: None,
            cpu: None,
            max_memory_ratio: None,
        }
    }
}

/// The CPU comparison: the canary is *no worse* while, in at least half of
/// the intervals, its CPU seconds per successful request are at most
/// `1 + margin` times the stable's (the median per-interval ratio is at most
/// `1 + margin`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuConfig {
    /// Relative margin: `0.2` lets the canary use 20% more CPU per request.
    /// Default `0.2`.
    pub margin: f64,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self { margin: 0.2 }
    }
}

/// The error-ratio comparison: the canary is *no worse* while
/// `p_canary <= (1 + relative_margin) * p_stable + margin`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorsConfig {
    /// Absolute margin in error ratio: `0.002` lets the canary fail 0.2
    /// percentage points more requests than the stable. Default `0.002`.
    pub margin: f64,
    /// Relative margin: `0.5` lets the canary's error ratio be 1.5 times the
    /// stable's (plus `margin`). Default `0`.
    pub relative_margin: f64,
}

impl Default for ErrorsConfig {
    fn default() -> Self {
        Self {
            margin: 0.002,
            relative_margin: 0.0,
        }
    }
}

/// The latency comparison, at histogram-bucket resolution.
///
/// Once the stable arm has enough requests, the judge fixes the bucket bound
/// `b` whose share of slower stable requests is nearest `1 - quantile` (the
/// stable's p95 at bucket resolution, by default). The canary is *no worse*
/// while its share of requests slower than `b` is at most `1 + margin` times
/// the stable's share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyConfig {
    /// Which quantile of the stable picks the bound. Default `0.95`.
    pub quantile: f64,
    /// Relative margin on the share of slow requests. Default `0.5`.
    pub margin: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            quantile: 0.95,
            margin: 0.5,
        }
    }
}

/// Options of [`run`](crate::run): the judge plus its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// What and how to judge.
    pub judge: JudgeConfig,
    /// Time between two looks at the counters. Default 30 s.
    pub interval: Duration,
    /// Deadline after the first look; undecided by then means inconclusive.
    /// Default 10 min.
    pub max_duration: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            judge: JudgeConfig::default(),
            interval: Duration::from_secs(30),
            max_duration: Duration::from_secs(600),
        }
    }
}

impl RunConfig {
    /// Checks the judge options and the schedule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.judge.validate()?;
        if self.interval.is_zero() {
            return Err(ConfigError::new("the interval must be longer than zero"));
        }
        if self.max_duration < self.interval {
            return Err(ConfigError::new(
                "the maximum duration must be at least one interval",
            ));
        }
        Ok(())
    }
}

impl JudgeConfig {
    /// Checks that every option is in range and that something is compared.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(ConfigError::new(format!(
                "alpha must be between 0 and 1 (exclusive), got {}",
                self.alpha
            )));
        }
        if self.errors.is_none() && self.latency.is_none() && self.cpu.is_none() {
            return Err(ConfigError::new(
                "nothing to compare: enable the error, latency or CPU comparison",
            ));
        }
        if let Some(c) = &self.cpu {
            if !(c.margin >= 0.0 && c.margin <= 50.0) {
                return Err(ConfigError::new(format!(
                    "the CPU margin must be in [0, 50], got {}",
                    c.margin
                )));
            }
        }
        if let Some(r) = self.max_memory_ratio {
            if !(r > 0.0 && r.is_finite()) {
                return Err(ConfigError::new(format!(
                    "the maximum memory ratio must be a number above 0, got {r}"
                )));
            }
        }
        if let Some(e) = &self.errors {
            if !(e.margin >= 0.0 && e.margin < 1.0) {
                return Err(ConfigError::new(format!(
                    "the error margin must be in [0, 1), got {}",
                    e.margin
                )));
            }
            if !(e.relative_margin >= 0.0 && e.relative_margin.is_finite()) {
                return Err(ConfigError::new(format!(
                    "the relative error margin must be finite and >= 0, got {}",
                    e.relative_margin
                )));
            }
        }
        if let Some(l) = &self.latency {
            if !(l.quantile > 0.0 && l.quantile < 1.0) {
                return Err(ConfigError::new(format!(
                    "the latency quantile must be between 0 and 1 (exclusive), got {}",
                    l.quantile
                )));
            }
            if !(l.margin >= 0.0 && l.margin <= 50.0) {
                return Err(ConfigError::new(format!(
                    "the latency margin must be in [0, 50], got {}",
                    l.margin
                )));
            }
        }
        if let Some(x) = self.max_error_ratio {
            if !(0.0..=1.0).contains(&x) {
                return Err(ConfigError::new(format!(
                    "the maximum error ratio must be in [0, 1], got {x}"
                )));
            }
        }
        if self.max_p99.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("the maximum p99 must be longer than zero"));
        }
        Ok(())
    }

    /// Number of comparisons the fail level is split across.
    pub(crate) fn comparisons(&self) -> u32 {
        u32::from(self.errors.is_some())
            + u32::from(self.latency.is_some())
            + u32::from(self.cpu.is_some())
    }
}

/// An option out of range; the message says which and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(JudgeConfig::default().validate().is_ok());
        assert!(RunConfig::default().validate().is_ok());
    }

    #[test]
    fn out_of_range_options_are_refused() {
        let bad = [
            JudgeConfig {
                alpha: 0.0,
                ..JudgeConfig::default()
            },
            JudgeConfig {
                alpha: f64::NAN,
                ..JudgeConfig::default()
            },
            JudgeConfig {
                errors: None,
                latency: None,
                ..JudgeConfig::default()
            },
            JudgeConfig {
                errors: Some(ErrorsConfig {
                    margin: -0.1,
                    relative_margin: 0.0,
                }),
                ..JudgeConfig::default()
            },
            JudgeConfig {
                latency: Some(LatencyConfig {
                    quantile: 1.0,
                    margin: 0.5,
                }),
                ..JudgeConfig::default()
            },
            JudgeConfig {
                max_error_ratio: Some(2.0),
                ..JudgeConfig::default()
            },
            JudgeConfig {
                max_p99: Some(Duration::ZERO),
                ..JudgeConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let run = RunConfig {
            max_duration: Duration::from_secs(1),
            ..RunConfig::default()
        };
        assert!(run.validate().is_err());
    }
}
