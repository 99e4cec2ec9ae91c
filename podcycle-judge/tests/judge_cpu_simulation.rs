//! Simulation study of the judge's CPU comparison (CPU seconds per
//! successful request, canary against stable) on synthetic counters.
//!
//! Traffic per arm and interval: Poisson arrivals (normal approximation,
//! fine at hundreds of requests per interval), CPU per request with mean
//! `cpu` and coefficient of variation 1 (summed by the central limit
//! theorem), idle CPU of 0.01 s per second, a per-interval noisy-neighbour
//! factor (log-normal, sigma 0.05, independent per arm), and the cumulative
//! counter rounded to Linux clock ticks (10 ms) as `/proc` reports it.
//! Everything comes from a seeded PRNG (xoshiro256** by SplitMix64).
//!
//! * `cpu_comparison_keeps_its_error_rates` (every `cargo test`): 1000 runs
//!   per scenario; identical arms false-fail at most alpha, a canary at +50%
//!   CPU per request is failed.
//! * `cpu_simulation_study` (ignored; prints the table):
//!   `cargo test --release -p podcycle-judge --test judge_cpu_simulation -- --ignored --nocapture`

use podcycle_judge::{ArmCounts, CpuConfig, Judge, JudgeConfig, Snapshot, Verdict};

mod common {
    pub(crate) mod rng;
}
use common::rng::Rng;

const ALPHA: f64 = 0.05;
const RATE: f64 = 50.0; // requests per second per arm
const IDLE_CPU: f64 = 0.01; // CPU seconds per second with no requests
const NEIGHBOUR_SIGMA: f64 = 0.05;
const DEADLINE_SECONDS: f64 = 600.0;

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    /// Mean CPU seconds per request of each arm.
    stable_cpu: f64,
    canary_cpu: f64,
    /// Idle CPU seconds per second (both arms).
    idle: f64,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "A/A: identical arms, 2 ms CPU per request",
        stable_cpu: 0.002,
        canary_cpu: 0.002,
        idle: IDLE_CPU,
    },
    Scenario {
        name: "canary +10% CPU per request (within the 20% margin)",
        stable_cpu: 0.002,
        canary_cpu: 0.0022,
        idle: IDLE_CPU,
    },
    Scenario {
        name: "canary exactly at the margin (+20%, no idle CPU)",
        stable_cpu: 0.002,
        canary_cpu: 0.0024,
        idle: 0.0,
    },
    Scenario {
        name: "canary +50% CPU per request",
        stable_cpu: 0.002,
        canary_cpu: 0.003,
        idle: IDLE_CPU,
    },
];

/// One arm's cumulative counters.
#[derive(Default)]
struct ArmState {
    requests: u64,
    cpu_exact: f64,
}

impl ArmState {
    fn step(&mut self, rng: &mut Rng, cpu: f64, idle: f64, seconds: f64) {
        let mean = RATE * seconds;
        let n = (mean + mean.sqrt() * rng.normal()).round().max(0.0);
        // Sum of n requests with mean `cpu` and standard deviation `cpu`.
        let work = (n * cpu + n.sqrt() * cpu * rng.normal()).max(0.0);
        let neighbour = (NEIGHBOUR_SIGMA * rng.normal()).exp();
        self.requests += n as u64;
        self.cpu_exact += (work + idle * seconds) * neighbour;
    }

    fn counts(&self) -> ArmCounts {
        ArmCounts {
            requests: self.requests,
            // Clock ticks: /proc reports CPU time in hundredths of a second.
            cpu_seconds: (self.cpu_exact * 100.0).floor() / 100.0,
            ..ArmCounts::default()
        }
    }
}

#[derive(Default)]
struct Tally {
    runs: usize,
    fail_times: Vec<f64>,
    pass_times: Vec<f64>,
}

impl Tally {
    fn fail_rate(&self) -> f64 {
        self.fail_times.len() as f64 / self.runs as f64
    }
    fn pass_rate(&self) -> f64 {
        self.pass_times.len() as f64 / self.runs as f64
    }
}

fn median(times: &[f64]) -> Option<f64> {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    (!t.is_empty()).then(|| t[t.len() / 2])
}

fn config() -> JudgeConfig {
    JudgeConfig {
        errors: None,
        latency: None,
        cpu: Some(CpuConfig::default()),
        alpha: ALPHA,
        ..JudgeConfig::default()
    }
}

fn simulate(s: &Scenario, interval: f64, runs: usize, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally {
        runs,
        ..Tally::default()
    };
    let looks = (DEADLINE_SECONDS / interval) as usize;
    for _ in 0..runs {
        let mut judge = Judge::new(config()).expect("valid config");
        let (mut stable, mut canary) = (ArmState::default(), ArmState::default());
        // Counters already running before the first look.
        stable.step(&mut rng, s.stable_cpu, s.idle, 600.0);
        canary.step(&mut rng, s.canary_cpu, s.idle, 60.0);
        for look in 0..=looks {
            if look > 0 {
                stable.step(&mut rng, s.stable_cpu, s.idle, interval);
                canary.step(&mut rng, s.canary_cpu, s.idle, interval);
            }
            let snapshot = Snapshot {
                stable: stable.counts(),
                canary: canary.counts(),
            };
            match judge.observe(snapshot) {
                Some(Verdict::Fail) => tally.fail_times.push(look as f64 * interval),
                Some(Verdict::Pass) => tally.pass_times.push(look as f64 * interval),
                _ => continue,
            }
            break;
        }
    }
    tally
}

#[test]
fn cpu_comparison_keeps_its_error_rates() {
    let runs = 1000;
    let same = simulate(&SCENARIOS[0], 30.0, runs, 1);
    assert!(
        same.fail_rate() <= ALPHA,
        "{} false fails in {runs}",
        same.fail_times.len()
    );
    assert!(same.pass_rate() > 0.9, "pass rate {}", same.pass_rate());

    let worse = simulate(&SCENARIOS[3], 30.0, runs, 2);
    assert!(worse.fail_rate() >= 0.95, "detection {}", worse.fail_rate());
    assert!(worse.pass_times.is_empty(), "a +50% canary passed");
    // Seven intervals at the least: the capital after n straight bits is
    // 1, 1.5, 2.5, 4.4, 7.9, 14, 27 >= 1/alpha = 20 (3.5 minutes).
    let m = median(&worse.fail_times).unwrap();
    assert!((150.0..=330.0).contains(&m), "median time to fail {m}s");
}

#[test]
#[ignore = "a few seconds in release; prints the study's table"]
fn cpu_simulation_study() {
    let runs: usize = std::env::var("JUDGE_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!(
        "\nCPU comparison: {runs} runs per scenario, {RATE} req/s per arm, margin 20%, alpha \
         {ALPHA} (CPU comparison alone), deadline {} min.",
        DEADLINE_SECONDS / 60.0
    );
    println!(
        "  | {:<52} | {:>8} | {:>6} | {:>13} | {:>6} | {:>13} |",
        "scenario", "interval", "fail", "median t_fail", "pass", "median t_pass"
    );
    let show = |t: Option<f64>| t.map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s"));
    for (i, s) in SCENARIOS.iter().enumerate() {
        for interval in [30.0, 10.0] {
            let t = simulate(s, interval, runs, 100 + i as u64);
            println!(
                "  | {:<52} | {:>7}s | {:>5.1}% | {:>13} | {:>5.1}% | {:>13} |",
                s.name,
                interval,
                100.0 * t.fail_rate(),
                show(median(&t.fail_times)),
                100.0 * t.pass_rate(),
                show(median(&t.pass_times)),
            );
            if i < 3 {
                assert!(t.fail_rate() <= ALPHA, "{}: {}", s.name, t.fail_rate());
            } else {
                assert!(t.pass_times.is_empty(), "{}", s.name);
            }
            if i == 2 {
                assert!(t.pass_rate() <= ALPHA, "{}: {}", s.name, t.pass_rate());
            }
        }
    }
}
