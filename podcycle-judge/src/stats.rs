//! Anytime-valid tests for comparing two proportions from count increments.
//!
//! Everything the judge decides goes through [`BettingTest`]: a test
//! supermartingale (an *e-process*) for a composite linear null hypothesis
//! about the proportions `p_c` (canary) and `p_s` (stable),
//!
//! ```text
//! side Worse:     H0: p_c - κ·p_s ≤ δ      (rejecting it is evidence the canary is worse)
//! side NotWorse:  H0: p_c - κ·p_s ≥ δ      (rejecting it is evidence the canary is not worse)
//! ```
//!
//! # The construction
//!
//! Every request of an interval is a bet. With a sign `s` (+1 for `Worse`,
//! -1 for `NotWorse`), a centring `q`, a stake `λ ≥ 0` and the ratio
//! `r = n_c / n_s` of the interval's request counts, a canary request with
//! outcome `x ∈ {0, 1}` multiplies the capital by `1 + s·λ·(x - κ·q - δ)` and a
//! stable request with outcome `y` by `1 - s·λ·r·κ·(y - q)`. Requests are
//! independent given the past and the interval's counts, so the expected
//! factor of the interval is
//!
//! ```text
//! (1 + sλ(p_c - κq - δ))^n_c · (1 - sλrκ(p_s - q))^n_s
//!     ≤ exp(sλ·n_c·(p_c - κq - δ) - sλ·n_c·κ·(p_s - q))     (log(1+z) ≤ z)
//!     = exp(sλ·n_c·(p_c - κ·p_s - δ)) ≤ 1                   under H0.
//! ```
//!
//! The nuisance parameter `p_s` cancels, so the product over intervals is a
//! nonnegative supermartingale under *every* point of the composite null, for
//! any `λ` and `q` chosen from the past only (predictably). By Ville's
//! inequality the probability that it ever reaches `1/α` is at most `α`, at
//! whatever times it is looked at. The same holds if the proportions drift
//! from interval to interval (both arms hit by the same incident), as long as
//! each interval satisfies the null: only the within-interval difference
//! matters.
//!
//! `λ` and `q` only affect power. `q` minimises the second-order (variance)
//! term; `λ` maximises the expected log-growth under the plug-in estimates of
//! the previous intervals (the GRAPA rule of Waudby-Smith & Ramdas), capped at
//! half the largest stake that keeps every factor positive, so that no single
//! request can take more than half of the capital. Without earlier data in
//! both arms there is nothing to size a bet with: the first interval only
//! calibrates.
//!
//! References: J. Ville (1939), *Étude critique de la notion de collectif*;
//! S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021), *Time-uniform,
//! nonparametric, nonasymptotic confidence sequences*, Ann. Statist.;
//! I. Waudby-Smith, A. Ramdas (2024), *Estimating means of bounded random
//! variables by betting*, JRSS-B; R. Turner, A. Ly, P. Grünwald (2024),
//! *Generic e-variables for exact sequential k-sample tests that allow for
//! optional stopping*; R. Johari, P. Koomen, L. Pekelis, D. Walsh (2022),
//! *Always valid inference: continuous monitoring of A/B tests*, Oper. Res.

/// Fraction of the positivity bound used as the largest stake.
const STAKE_CAP: f64 = 0.5;
/// Pseudo-counts of the plug-in estimates (Krichevsky–Trofimov).
const PRIOR_SUCCESSES: f64 = 0.5;
const PRIOR_TRIALS: f64 = 1.0;

/// Which null hypothesis a [`BettingTest`] tries to reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// `H0: p_c - κ·p_s ≤ δ`; rejecting it shows the canary is worse.
    Worse,
    /// `H0: p_c - κ·p_s ≥ δ`; rejecting it shows the canary is not worse.
    NotWorse,
}

impl Side {
    fn sign(self) -> f64 {
        match self {
            Side::Worse => 1.0,
            Side::NotWorse => -1.0,
        }
    }
}

/// Trials and successes ("errors", "slow requests") of both arms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PairCounts {
    pub(crate) canary_n: u64,
    pub(crate) canary_x: u64,
    pub(crate) stable_n: u64,
    pub(crate) stable_x: u64,
}

impl PairCounts {
    /// Sanitises counts: successes never exceed trials.
    pub(crate) fn new(canary_n: u64, canary_x: u64, stable_n: u64, stable_x: u64) -> Self {
        Self {
            canary_n,
            canary_x: canary_x.min(canary_n),
            stable_n,
            stable_x: stable_x.min(stable_n),
        }
    }

    pub(crate) fn add(&mut self, other: PairCounts) {
        self.canary_n = self.canary_n.saturating_add(other.canary_n);
        self.canary_x = self.canary_x.saturating_add(other.canary_x);
        self.stable_n = self.stable_n.saturating_add(other.stable_n);
        self.stable_x = self.stable_x.saturating_add(other.stable_x);
    }

    /// Smoothed estimates used to size the next bet.
    fn plug_in(&self) -> (f64, f64) {
        let est = |x: u64, n: u64| (x as f64 + PRIOR_SUCCESSES) / (n as f64 + PRIOR_TRIALS);
        (
            est(self.canary_x, self.canary_n),
            est(self.stable_x, self.stable_n),
        )
    }

    pub(crate) fn canary_rate(&self) -> Option<f64> {
        ratio(self.canary_x, self.canary_n)
    }

    pub(crate) fn stable_rate(&self) -> Option<f64> {
        ratio(self.stable_x, self.stable_n)
    }
}

pub(crate) fn ratio(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| x as f64 / n as f64)
}

/// A betting e-process for `p_c - κ·p_s` against `δ` on one side.
#[derive(Debug, Clone)]
pub(crate) struct BettingTest {
    side: Side,
    kappa: f64,
    delta: f64,
    log_e: f64,
    max_log_e: f64,
}

impl BettingTest {
    /// `kappa` must be finite and `>= 0`, `delta` finite.
    pub(crate) fn new(side: Side, kappa: f64, delta: f64) -> Self {
        Self {
            side,
            kappa,
            delta,
            log_e: 0.0,
            max_log_e: 0.0,
        }
    }

    /// Current e-value.
    pub(crate) fn e_value(&self) -> f64 {
        self.log_e.exp()
    }

    /// Largest e-value so far; Ville's inequality bounds the chance that this
    /// ever reaches `1/α` under the null by `α`.
    pub(crate) fn max_e_value(&self) -> f64 {
        self.max_log_e.exp()
    }

    /// Whether the e-value has ever reached `threshold`.
    pub(crate) fn crossed(&self, threshold: f64) -> bool {
        self.max_log_e >= threshold.ln()
    }

    /// Bets on one interval's `counts`, sized from `past` (the sum of all
    /// earlier intervals, never including `counts`).
    pub(crate) fn update(&mut self, counts: PairCounts, past: PairCounts) {
        // No bet without data in both arms now, nor without past data in
        // both arms to size it (the first interval only calibrates).
        if counts.canary_n == 0 || counts.stable_n == 0 || past.canary_n == 0 || past.stable_n == 0
        {
            return;
        }
        let Some(bet) = self.bet(counts, past) else {
            return;
        };
        let outcomes = [
            counts.canary_x as f64,
            (counts.canary_n - counts.canary_x) as f64,
            counts.stable_x as f64,
            (counts.stable_n - counts.stable_x) as f64,
        ];
        let mut delta_log = 0.0;
        for (count, coef) in outcomes.iter().zip(bet.coefs) {
            if *count > 0.0 {
                delta_log += count * (bet.lambda * coef).ln_1p();
            }
        }
        if delta_log.is_finite() {
            self.log_e += delta_log;
            self.max_log_e = self.max_log_e.max(self.log_e);
        }
    }

    /// Chooses the centring and the stake, or `None` for no bet.
    fn bet(&self, counts: PairCounts, past: PairCounts) -> Option<Bet> {
        let s = self.side.sign();
        let (k, d) = (self.kappa, self.delta);
        let nc = counts.canary_n as f64;
        let ns = counts.stable_n as f64;
        let r = nc / ns;
        let (pc, ps) = past.plug_in();
        // Centring that minimises the variance term; any q in [0, 1] is valid.
        let q = if k > 0.0 {
            ((pc - d + r * k * ps) / (k * (1.0 + r))).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Per-outcome coefficients: canary error, canary success, stable
        // error, stable success.
        let coefs = [
            s * (1.0 - k * q - d),
            s * (-k * q - d),
            -s * r * k * (1.0 - q),
            s * r * k * q,
        ];
        let weights = [nc * pc, nc * (1.0 - pc), ns * ps, ns * (1.0 - ps)];
        if !coefs.iter().chain(&weights).all(|v| v.is_finite()) {
            return None;
        }
        // Largest stake keeping every factor positive, then the cap.
        let bound = coefs
            .iter()
            .filter(|c| **c < 0.0)
            .map(|c| -1.0 / c)
            .fold(f64::INFINITY, f64::min);
        let cap = (STAKE_CAP * bound).min(1e9);
        let slope = |lambda: f64| -> f64 {
            weights
                .iter()
                .zip(coefs)
                .map(|(w, c)| w * c / (1.0 + lambda * c))
                .sum()
        };
        let curvature = |lambda: f64| -> f64 {
            weights
                .iter()
                .zip(coefs)
                .map(|(w, c)| {
                    let z = 1.0 + lambda * c;
                    -w * c * c / (z * z)
                })
                .sum()
        };
        // The plug-in growth is concave in λ; bet only when it rises at 0.
        let rises = slope(0.0) > 0.0 && cap > 0.0; // false for NaN too
        if !rises {
            return None;
        }
        let lambda = if slope(cap) >= 0.0 {
            cap
        } else {
            // Safeguarded Newton on the derivative within [lo, hi].
            let (mut lo, mut hi) = (0.0_f64, cap);
            let mut lambda = (-slope(0.0) / curvature(0.0)).clamp(0.0, cap);
            if !(lambda > lo && lambda < hi) {
                lambda = 0.5 * (lo + hi);
            }
            for _ in 0..12 {
                let g1 = slope(lambda);
                if g1 > 0.0 {
                    lo = lambda;
                } else {
                    hi = lambda;
                }
                let g2 = curvature(lambda);
                let mut next = lambda - g1 / g2;
                if !(next > lo && next < hi) {
                    next = 0.5 * (lo + hi);
                }
                let done = (next - lambda).abs() <= 1e-9 * lambda.abs().max(1e-12);
                lambda = next;
                if done {
                    break;
                }
            }
            lambda
        };
        (lambda.is_finite() && lambda > 0.0).then_some(Bet { lambda, coefs })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bet {
    lambda: f64,
    coefs: [f64; 4],
}

/// What a grid of tests inverts into a confidence sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Parameter {
    /// `p_c - κ·p_s`, with `κ` fixed and `δ` on the grid.
    Difference { kappa: f64 },
    /// `p_c / p_s`, with `κ` on the grid and `δ = 0`.
    Ratio,
}

/// One compared proportion: the decision tests at the margin, plus grids of
/// the same tests whose non-rejected values form a confidence sequence.
#[derive(Debug, Clone)]
pub(crate) struct Comparison {
    parameter: Parameter,
    margin: f64,
    fail: BettingTest,
    pass: BettingTest,
    grid: Vec<GridPoint>,
    fail_threshold: f64,
    pass_threshold: f64,
    /// Data from before the comparison started, used only to size bets.
    prior: PairCounts,
    /// Intervals compared.
    total: PairCounts,
}

#[derive(Debug, Clone)]
struct GridPoint {
    value: f64,
    worse: BettingTest,
    not_worse: BettingTest,
}

impl Comparison {
    /// `margin` is the value of the parameter the canary may reach: `δ` for a
    /// difference, `κ` for a ratio. The fail test runs at `alpha_fail`, the
    /// pass test at `alpha_pass`.
    pub(crate) fn new(parameter: Parameter, margin: f64, alpha_fail: f64, alpha_pass: f64) -> Self {
        let test = |side, value| match parameter {
            Parameter::Difference { kappa } => BettingTest::new(side, kappa, value),
            Parameter::Ratio => BettingTest::new(side, value, 0.0),
        };
        let mut values: Vec<f64> = match parameter {
            // 0 and ±10^(k/6) from 1e-5 to 1: about 47% apart.
            Parameter::Difference { .. } => {
                let mut v = vec![0.0];
                for k in -30..=0 {
                    let x = 10f64.powf(f64::from(k) / 6.0);
                    v.push(x);
                    v.push(-x);
                }
                v.sort_by(f64::total_cmp);
                v
            }
            // 10^(k/12) from 0.01 to 100: about 21% apart.
            Parameter::Ratio => (-24..=24)
                .map(|k| 10f64.powf(f64::from(k) / 12.0))
                .collect(),
        };
        // The margin itself is a grid point, so the reported bounds agree
        // with the decisions: FAIL means cs_lower >= margin, PASS cs_upper <= margin.
        if !values.contains(&margin) {
            values.push(margin);
            values.sort_by(f64::total_cmp);
        }
        Self {
            parameter,
            margin,
            fail: test(Side::Worse, margin),
            pass: test(Side::NotWorse, margin),
            grid: values
                .into_iter()
                .map(|value| GridPoint {
                    value,
                    worse: test(Side::Worse, value),
                    not_worse: test(Side::NotWorse, value),
                })
                .collect(),
            fail_threshold: 1.0 / alpha_fail,
            pass_threshold: 1.0 / alpha_pass,
            prior: PairCounts::default(),
            total: PairCounts::default(),
        }
    }

    /// Data seen before the first compared interval (the latency bound is
    /// chosen from it). It sizes the first bets and is never bet on, so
    /// using it keeps every bet predictable.
    pub(crate) fn set_prior(&mut self, prior: PairCounts) {
        self.prior = prior;
    }

    /// Adds one interval.
    pub(crate) fn observe(&mut self, counts: PairCounts) {
        let mut past = self.prior;
        past.add(self.total);
        self.fail.update(counts, past);
        self.pass.update(counts, past);
        for point in &mut self.grid {
            point.worse.update(counts, past);
            point.not_worse.update(counts, past);
        }
        self.total.add(counts);
    }

    pub(crate) fn failed(&self) -> bool {
        self.fail.crossed(self.fail_threshold)
    }

    pub(crate) fn passed(&self) -> bool {
        self.pass.crossed(self.pass_threshold)
    }

    pub(crate) fn fail_test(&self) -> &BettingTest {
        &self.fail
    }

    pub(crate) fn pass_test(&self) -> &BettingTest {
        &self.pass
    }

    pub(crate) fn fail_threshold(&self) -> f64 {
        self.fail_threshold
    }

    pub(crate) fn pass_threshold(&self) -> f64 {
        self.pass_threshold
    }

    pub(crate) fn total(&self) -> PairCounts {
        self.total
    }

    pub(crate) fn margin(&self) -> f64 {
        self.margin
    }

    /// Point estimate of the parameter from all intervals.
    pub(crate) fn estimate(&self) -> Option<f64> {
        let pc = self.total.canary_rate()?;
        let ps = self.total.stable_rate()?;
        match self.parameter {
            Parameter::Difference { kappa } => Some(pc - kappa * ps),
            Parameter::Ratio => (ps > 0.0).then(|| pc / ps),
        }
    }

    /// Confidence sequence `(lower, upper)` at grid resolution: the lower
    /// bound is the largest grid value whose `Worse` test has rejected (at
    /// the fail level), the upper bound the smallest whose `NotWorse` test
    /// has (at the pass level). `None` means no bound yet.
    pub(crate) fn confidence_sequence(&self) -> (Option<f64>, Option<f64>) {
        let lower = self
            .grid
            .iter()
            .filter(|p| p.worse.crossed(self.fail_threshold))
            .map(|p| p.value)
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            });
        let upper = self
            .grid
            .iter()
            .filter(|p| p.not_worse.crossed(self.pass_threshold))
            .map(|p| p.value)
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.min(v)))
            });
        (lower, upper)
    }
}

/// A betting e-process on the sign of one comparison per interval.
///
/// Each interval gives one bit `y`: was the canary's value above the margin
/// times the stable's? The null of side `Worse` is `P(y = 1 | past) ≤ 1/2`
/// at every interval (the per-interval ratio's median is at most the
/// margin); `NotWorse` is `P(y = 1 | past) ≥ 1/2`. A bit multiplies the
/// capital by `1 + λ(2y - 1)` (`Worse`) or `1 - λ(2y - 1)` (`NotWorse`), so
/// its expected factor is `1 ± λ(2P(y = 1) - 1) ≤ 1` under the null, for any
/// `λ ∈ [0, 1)` chosen from the past: a test supermartingale, and Ville's
/// inequality applies as for [`BettingTest`]. `λ = 2p̂ - 1` with the
/// Krichevsky–Trofimov estimate `p̂` of the bits seen so far (the Kelly bet
/// against a fair coin), so the first interval only calibrates and no
/// single interval can take the whole capital. Ties (`y` undefined) are not
/// bet on.
#[derive(Debug, Clone)]
pub(crate) struct SignTest {
    side: Side,
    above: u64,
    below: u64,
    log_e: f64,
    max_log_e: f64,
}

impl SignTest {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            above: 0,
            below: 0,
            log_e: 0.0,
            max_log_e: 0.0,
        }
    }

    /// Bets on one interval's bit: `true` when the canary was above the
    /// margin.
    pub(crate) fn update(&mut self, above: bool) {
        let (hits, misses) = match self.side {
            Side::Worse => (self.above, self.below),
            Side::NotWorse => (self.below, self.above),
        };
        let n = (hits + misses) as f64;
        let p = (hits as f64 + PRIOR_SUCCESSES) / (n + PRIOR_TRIALS);
        let lambda = (2.0 * p - 1.0).clamp(0.0, 1.0 - 1e-9);
        let won = match self.side {
            Side::Worse => above,
            Side::NotWorse => !above,
        };
        let factor = if won { 1.0 + lambda } else { 1.0 - lambda };
        self.log_e += factor.ln();
        self.max_log_e = self.max_log_e.max(self.log_e);
        if above {
            self.above += 1;
        } else {
            self.below += 1;
        }
    }

    /// Current e-value.
    pub(crate) fn e_value(&self) -> f64 {
        self.log_e.exp()
    }

    /// Largest e-value so far.
    pub(crate) fn max_e_value(&self) -> f64 {
        self.max_log_e.exp()
    }

    /// Whether the e-value has ever reached `threshold`.
    pub(crate) fn crossed(&self, threshold: f64) -> bool {
        self.max_log_e >= threshold.ln()
    }
}

/// A ratio of two per-interval quantities (CPU seconds per request),
/// compared interval by interval: the decision sign tests at the margin `κ`,
/// plus a grid of them whose non-rejected values form a confidence sequence
/// for the median of the per-interval ratio.
#[derive(Debug, Clone)]
pub(crate) struct SignComparison {
    margin: f64,
    fail: SignTest,
    pass: SignTest,
    grid: Vec<(f64, SignTest, SignTest)>,
    fail_threshold: f64,
    pass_threshold: f64,
    /// Intervals with the canary above the margin, and not.
    above: u64,
    below: u64,
}

impl SignComparison {
    /// `margin` is the largest ratio the canary may reach; the fail test
    /// runs at `alpha_fail`, the pass test at `alpha_pass`.
    pub(crate) fn new(margin: f64, alpha_fail: f64, alpha_pass: f64) -> Self {
        // 10^(k/24) from 0.25 to 4: about 10% apart, plus the margin.
        let mut values: Vec<f64> = (-14..=14)
            .map(|k| 10f64.powf(f64::from(k) / 24.0))
            .collect();
        if !values.contains(&margin) {
            values.push(margin);
            values.sort_by(f64::total_cmp);
        }
        Self {
            margin,
            fail: SignTest::new(Side::Worse),
            pass: SignTest::new(Side::NotWorse),
            grid: values
                .into_iter()
                .map(|v| (v, SignTest::new(Side::Worse), SignTest::new(Side::NotWorse)))
                .collect(),
            fail_threshold: 1.0 / alpha_fail,
            pass_threshold: 1.0 / alpha_pass,
            above: 0,
            below: 0,
        }
    }

    /// Adds one interval whose ratio (canary over stable) is `ratio`; a
    /// ratio that is not a positive finite number is not bet on.
    pub(crate) fn observe(&mut self, ratio: f64) {
        if !(ratio.is_finite() && ratio >= 0.0) {
            return;
        }
        let bet = |test: &mut SignTest, value: f64| {
            // A tie says nothing either way.
            if ratio != value {
                test.update(ratio > value);
            }
        };
        bet(&mut self.fail, self.margin);
        bet(&mut self.pass, self.margin);
        for (value, worse, not_worse) in &mut self.grid {
            bet(worse, *value);
            bet(not_worse, *value);
        }
        if ratio > self.margin {
            self.above += 1;
        } else {
            self.below += 1;
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.fail.crossed(self.fail_threshold)
    }

    pub(crate) fn passed(&self) -> bool {
        self.pass.crossed(self.pass_threshold)
    }

    pub(crate) fn fail_test(&self) -> &SignTest {
        &self.fail
    }

    pub(crate) fn pass_test(&self) -> &SignTest {
        &self.pass
    }

    pub(crate) fn fail_threshold(&self) -> f64 {
        self.fail_threshold
    }

    pub(crate) fn pass_threshold(&self) -> f64 {
        self.pass_threshold
    }

    pub(crate) fn margin(&self) -> f64 {
        self.margin
    }

    /// Intervals with the canary above the margin, and at or below it.
    pub(crate) fn intervals(&self) -> (u64, u64) {
        (self.above, self.below)
    }

    /// `(lower, upper)` bounds on the median per-interval ratio, at grid
    /// resolution, as [`Comparison::confidence_sequence`].
    pub(crate) fn confidence_sequence(&self) -> (Option<f64>, Option<f64>) {
        let lower = self
            .grid
            .iter()
            .filter(|(_, worse, _)| worse.crossed(self.fail_threshold))
            .map(|(v, _, _)| *v)
            .reduce(f64::max);
        let upper = self
            .grid
            .iter()
            .filter(|(_, _, not_worse)| not_worse.crossed(self.pass_threshold))
            .map(|(v, _, _)| *v)
            .reduce(f64::min);
        (lower, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic outcomes at exactly the expected counts.
    fn interval(nc: u64, pc: f64, ns: u64, ps: f64) -> PairCounts {
        PairCounts::new(
            nc,
            (nc as f64 * pc).round() as u64,
            ns,
            (ns as f64 * ps).round() as u64,
        )
    }

    #[test]
    fn no_bet_without_both_arms() {
        let mut t = BettingTest::new(Side::Worse, 1.0, 0.0);
        t.update(
            PairCounts::new(100, 50, 0, 0),
            PairCounts::new(100, 50, 100, 0),
        );
        t.update(
            PairCounts::new(0, 0, 100, 0),
            PairCounts::new(100, 50, 100, 0),
        );
        assert_eq!(t.e_value(), 1.0);
    }

    #[test]
    fn first_interval_only_calibrates() {
        let mut t = BettingTest::new(Side::Worse, 1.0, 0.0);
        t.update(interval(1000, 0.5, 1000, 0.0), PairCounts::default());
        // Priors give equal plug-in estimates: no bet.
        assert_eq!(t.e_value(), 1.0);
    }

    #[test]
    fn clear_regression_is_detected_and_not_passed() {
        let mut c = Comparison::new(Parameter::Difference { kappa: 1.0 }, 0.002, 0.025, 0.05);
        for _ in 0..4 {
            c.observe(interval(1500, 0.01, 1500, 0.002));
        }
        assert!(c.failed(), "e_fail = {}", c.fail_test().e_value());
        assert!(!c.passed());
        let (lo, hi) = c.confidence_sequence();
        assert!(lo.unwrap() > 0.002 && lo.unwrap() < 0.008, "{lo:?}");
        assert!(hi.is_none_or(|h| h > 0.008), "{hi:?}");
    }

    #[test]
    fn equal_arms_pass_and_do_not_fail() {
        let mut c = Comparison::new(Parameter::Difference { kappa: 1.0 }, 0.002, 0.025, 0.05);
        for _ in 0..10 {
            c.observe(interval(1500, 0.002, 1500, 0.002));
        }
        assert!(c.passed(), "e_pass = {}", c.pass_test().e_value());
        assert!(!c.failed());
        assert!(c.fail_test().max_e_value() <= 1.0 + 1e-12);
        let (lo, hi) = c.confidence_sequence();
        assert!(hi.unwrap() <= 0.002 && lo.is_none_or(|l| l < 0.0));
    }

    #[test]
    fn ratio_test_detects_shift_and_passes_equal_tails() {
        let mut worse = Comparison::new(Parameter::Ratio, 1.5, 0.025, 0.05);
        let mut same = Comparison::new(Parameter::Ratio, 1.5, 0.025, 0.05);
        for _ in 0..6 {
            worse.observe(interval(1500, 0.10, 1500, 0.035));
            same.observe(interval(1500, 0.035, 1500, 0.035));
        }
        assert!(worse.failed() && !worse.passed());
        assert!(
            same.passed() && !same.failed(),
            "{} {}",
            same.pass_test().e_value(),
            same.fail_test().e_value()
        );
        let est = worse.estimate().unwrap();
        assert!((est - 0.10 / 0.035).abs() < 0.1, "{est}");
    }

    #[test]
    fn unequal_arm_sizes_are_fine() {
        let mut c = Comparison::new(Parameter::Difference { kappa: 1.0 }, 0.002, 0.025, 0.05);
        for _ in 0..20 {
            c.observe(interval(150, 0.03, 1350, 0.002));
        }
        assert!(c.failed());
    }

    #[test]
    fn zero_errors_everywhere_passes() {
        let mut c = Comparison::new(Parameter::Difference { kappa: 1.0 }, 0.002, 0.025, 0.05);
        for _ in 0..10 {
            c.observe(interval(1500, 0.0, 1500, 0.0));
        }
        assert!(c.passed() && !c.failed());
    }

    #[test]
    fn stakes_never_zero_the_capital() {
        // A pass test hit by an all-error canary: the capital shrinks but
        // stays positive and finite.
        let mut t = BettingTest::new(Side::NotWorse, 1.0, 0.002);
        let past = interval(10_000, 0.0, 10_000, 0.0);
        t.update(interval(1000, 1.0, 1000, 0.0), past);
        assert!(t.e_value() >= 0.0 && t.e_value() < 1.0);
        assert_eq!(t.max_e_value(), 1.0);
    }

    #[test]
    fn sign_test_fails_a_steady_excess_and_passes_equal_arms() {
        let mut worse = SignComparison::new(1.2, 0.05 / 3.0, 0.05);
        let mut same = SignComparison::new(1.2, 0.05 / 3.0, 0.05);
        let mut failed_at = None;
        for i in 1..=20 {
            worse.observe(1.5);
            same.observe(if i % 2 == 0 { 1.05 } else { 0.95 });
            if worse.failed() && failed_at.is_none() {
                failed_at = Some(i);
            }
        }
        // KT capital after n straight bits: 1, 1.5, 2.5, 4.4, 7.9, 14, 27, 50, 95 (>= 60 at 9).
        assert_eq!(failed_at, Some(9));
        assert!(!worse.passed());
        assert!(same.passed() && !same.failed());
        let (lo, hi) = worse.confidence_sequence();
        assert!(lo.unwrap() >= 1.2 && lo.unwrap() < 1.5, "{lo:?}");
        assert!(hi.is_none_or(|h| h >= 1.5), "{hi:?}");
        let (lo, hi) = same.confidence_sequence();
        assert!(
            hi.unwrap() <= 1.2 && lo.is_none_or(|l| l < 1.0),
            "{lo:?} {hi:?}"
        );
    }

    #[test]
    fn sign_test_ignores_ties_and_garbage() {
        let mut c = SignComparison::new(1.2, 0.01, 0.05);
        for r in [f64::NAN, f64::INFINITY, -1.0] {
            c.observe(r);
        }
        assert_eq!(c.intervals(), (0, 0));
        c.observe(1.2);
        assert_eq!(c.fail_test().e_value(), 1.0);
        assert_eq!(c.pass_test().e_value(), 1.0);
    }
}
