//! A canary judge: compares a canary with the stable version from the
//! metrics podcycle exports, and decides as soon as the evidence allows,
//! with error rates that hold however often it looks.
//!
//! The same logic ships as the `podcycle-judge` command (an Argo Rollouts
//! Job-based analysis, a CI step), as `podcycle-judge serve` (an Argo
//! Rollouts Web metric provider and a Flagger webhook) and as this library: a pure, synchronous
//! [`Judge`] fed with [`Snapshot`]s, and [`run`], the loop that reads a
//! [`SnapshotSource`] such as [`PrometheusSource`] every interval.
//!
//! # Example
//!
//! ```
//! use podcycle_judge::{ArmCounts, Judge, JudgeConfig, Snapshot, Verdict};
//!
//! let mut judge = Judge::new(JudgeConfig { latency: None, ..JudgeConfig::default() })?;
//! let arm = |requests, errors| ArmCounts { requests, errors, ..ArmCounts::default() };
//! // Baseline, then one snapshot per interval: 1500 requests each, 0.2% errors.
//! let mut verdict = None;
//! for i in 0..20 {
//!     verdict = judge.observe(Snapshot { stable: arm(1500 * i, 3 * i), canary: arm(1500 * i, 3 * i) });
//!     if verdict.is_some() {
//!         break;
//!     }
//! }
//! let verdict = verdict.unwrap_or_else(|| judge.finish());
//! assert_eq!(verdict, Verdict::Pass);
//! println!("{}", judge.report());
//! # Ok::<(), podcycle_judge::ConfigError>(())
//! ```
//!
//! # What is compared
//!
//! From `http_server_request_duration_seconds` for `version="<stable>"` and
//! `version="<canary>"` (optionally one `http_route`), the judge uses the
//! increments since its first look, never a time series of ratios or
//! percentiles:
//!
//! * **Errors.** `p` is the proportion of requests with `error_type` set (5xx
//!   and requests that never completed). The canary is *no worse* while
//!   `p_canary <= (1 + r)·p_stable + m` (margins `--error-margin m`, default
//!   0.002, and `--error-margin-relative r`, default 0).
//! * **Latency, at bucket resolution.** Once the stable arm has enough
//!   successful requests, the judge fixes the bucket bound `b` whose share of
//!   slower stable requests is nearest `1 - q` (the stable's p95 at bucket
//!   resolution for `q = 0.95`). `p` is then the share of an arm's successful
//!   requests slower than `b`, read from the `le="b"` and `le="+Inf"` bucket
//!   increments. The canary is *no worse* while
//!   `p_canary <= (1 + m)·p_stable` (`--latency-margin m`, default 0.5: with
//!   the stable at 5% slower than `b`, the canary may reach 7.5%). For
//!   log-normal latencies (shape 0.3 to 0.7) the default margin sits at a
//!   canary about 6 to 15% slower across the board, while a 30% slower
//!   canary nearly triples its share (shape 0.5). With native histograms
//!   (podcycle's `PODCYCLE_NATIVE_HISTOGRAMS`, scraped by a Prometheus with
//!   native histograms on) [`PrometheusSource`] reads the native series and
//!   their buckets at [`Histogram::native_bounds`], 9% apart: `b` is then the
//!   stable's p95 within 9%, and a regression that stays inside one classic
//!   bucket is seen.
//! * **CPU per successful request** (opt-in, [`CpuConfig`]), from
//!   `process_cpu_seconds_total`: each interval gives one ratio `r` of the
//!   canary's CPU seconds per successful request to the stable's, and a
//!   betting e-process on the sign of `r - κ` (`κ = 1 + margin`, default
//!   1.2) tests whether the median per-interval ratio exceeds `κ`. Under the
//!   null each sign is positive with probability at most 1/2 given the
//!   past, so the capital is a test supermartingale with no model of CPU
//!   noise; one bit per interval makes it slower than the count-based tests
//!   (7 intervals at least, at `α = 0.05`).
//!
//! # The method: betting e-processes
//!
//! Each comparison runs two sequential tests of the linear hypothesis
//! `p_canary - κ·p_stable` versus the margin `δ`:
//!
//! * the **fail test** rejects `H0: p_c - κ·p_s <= δ` (the canary is no
//!   worse), i.e. it gathers evidence that the canary is worse;
//! * the **pass test** rejects `H0: p_c - κ·p_s >= δ` (the canary is worse),
//!   i.e. it gathers evidence that it is not.
//!
//! Each test is a *test supermartingale* built by betting: every request of
//! an interval multiplies a capital by a factor whose expectation is at
//! most 1 under every point of the null, whatever the unknown stable
//! proportion (the nuisance parameter cancels exactly because the canary and
//! stable stakes are balanced by the interval's request counts; the
//! derivation is in the source of the private `stats` module). Stakes are
//! chosen from earlier intervals only (a predictable plug-in of the
//! growth-optimal bet, after Waudby-Smith & Ramdas), so the first interval
//! only calibrates. The capital is an *e-value*; by **Ville's
//! inequality** (Ville 1939), the probability that it *ever* reaches `1/α`
//! under the null is at most `α`, so the judge may look after every interval
//! (or every second) and stop at the first crossing without inflating its
//! error rates. This is the "always-valid" property of Johari et al. (2022);
//! the tests are exact and non-asymptotic, in the family of Howard et al.
//! (2021) confidence sequences and the safe 2x2 tests of Turner, Ly &
//! Grünwald (2024).
//!
//! Inverting the same tests over a grid of margins gives a **confidence
//! sequence** for `p_c - κ·p_s` (errors) or `p_c / p_s` (latency), reported
//! as `cs_lower`/`cs_upper`: FAIL happens when the whole sequence lies above
//! the margin, a comparison passes when it lies below. The decisions use the
//! tests at the margin itself, so the grid's resolution never affects them.
//!
//! # Verdicts and guarantees
//!
//! * **FAIL** as soon as any comparison's fail test reaches `1/α_fail`, with
//!   `α_fail = α / k` for `k` enabled comparisons (Bonferroni), or an
//!   absolute guardrail is violated (below). If the canary is no worse than
//!   every margin, `P(FAIL from a comparison, ever) <= α`.
//! * **PASS** once every comparison's pass test has reached `1/α` and both
//!   arms have `--min-requests` requests, and every guardrail is met with
//!   enough requests. Requiring all comparisons is an intersection-union
//!   test, so each runs at the full `α`: if the canary is worse than some
//!   margin, `P(PASS, ever) <= α`.
//! * **INCONCLUSIVE** at the deadline otherwise: not enough evidence either
//!   way, an arm without traffic or below `--min-requests`, or no readable
//!   counters. No data is never a pass.
//!
//! The guarantees assume that, given the past and the interval's request
//! counts, requests fail (or are slow) independently, each arm at its own
//! rate within the interval. Rates may drift from interval to interval (a
//! shared incident hits both arms); the fail guarantee then holds when the
//! canary is within the margin at every interval, and the pass guarantee
//! when it is beyond the margin at every interval. Bursts of correlated
//! failures confined to one arm (one canary pod crash-looping) are, rightly,
//! evidence against that arm. The latency bound is chosen from the stable's
//! past only, so the bets stay predictable.
//!
//! # Guardrails
//!
//! Like Flagger and Argo Rollouts, absolute limits on the canary alone:
//! `--max-error-ratio` on its error ratio since the start and `--max-p99`
//! on its p99 latency since the start (interpolated within buckets like
//! PromQL's `histogram_quantile`). They fail the canary once it has
//! `--min-requests` requests, whatever the stable does. They are policy
//! checks, outside the `α` budget. `--max-memory-ratio` fails a canary whose
//! resident memory per pod exceeds that many times the stable's.
//!
//! # How it compares
//!
//! `tests/judge_simulation.rs` replays 2000 synthetic 10-minute canaries per
//! scenario (50 req/s per arm, a look every 30 s) through the judge, a
//! Flagger-style threshold check (canary error ratio <= 1% and p99 <= 500 ms
//! at every interval) and a Kayenta-style Mann-Whitney test on per-interval
//! points. With identical arms the judge never failed (0.0%) and passed 99%
//! of canaries after a median 3.5 minutes; the Mann-Whitney test re-run at
//! every interval failed 17% of them. With both arms at 1.2% errors the
//! threshold check failed every canary; the judge failed 0.1%. A canary
//! going from 0.2% to 1% errors, or 30% slower, failed in every run after a
//! median 1.5 minutes (errors) and 1 minute (latency), where the fixed
//! Mann-Whitney test needs its full 10 minutes and the threshold check never
//! sees the slowdown. Run it with
//! `cargo test --release -p podcycle-judge --test judge_simulation -- --ignored --nocapture`.
//!
//! # Counters
//!
//! The first snapshot is the baseline. A counter that goes down was reset
//! and its current value is the increment; [`PrometheusSource`] does this
//! per series (pod), so a restarted pod neither loses nor invents requests.

#![forbid(unsafe_code)]

mod config;
mod engine;
mod format;
mod prometheus;
mod report;
mod run;
mod snapshot;
mod stats;
mod verdict;

pub use config::{ConfigError, CpuConfig, ErrorsConfig, JudgeConfig, LatencyConfig, RunConfig};
pub use engine::Judge;
pub use prometheus::{
    parse_query_response, PrometheusConfig, PrometheusError, PrometheusSource, QueryResult, Sample,
};
pub use report::{
    ArmReport, ComparisonReport, CountsReport, GuardrailReport, GuardrailStatus, MetricStatus,
    Report,
};
pub use run::{run, Event, SnapshotSource};
pub use snapshot::{ArmCounts, Bucket, Histogram, Snapshot};
pub use verdict::Verdict;
