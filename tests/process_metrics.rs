//! Process and runtime metrics: `process_cpu_seconds_total` rises by the CPU the process
//! burned, and the runtime families describe the runtime the lifecycle runs on. One test per
//! file's process matters here: a test running beside it would add its own CPU time.

use std::time::{Duration, Instant};

use podcycle::{Config, Lifecycle};

fn config() -> Config {
    Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .handle_signals(false)
        .version("3.0.0")
        .metric_label("track", "canary")
}

/// The value of the one sample of `name` whose labels are exactly `labels`, in any order (the
/// registry writes its common labels in no fixed order).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut want = labels.to_vec();
    want.sort_unstable();
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        let mut got: Vec<&str> = set.split(',').collect();
        got.sort_unstable();
        (got == want).then(|| value.parse().unwrap())
    })
}

/// This thread's CPU time so far (`/proc/thread-self/schedstat`, nanoseconds): independent of
/// the clock-tick counts `process_cpu_seconds_total` is read from.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        text.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Spins until this thread has used `cpu` of CPU time, for at most 20 s of wall time; returns
/// the CPU time it used.
fn burn(cpu: Duration) -> Duration {
    let start = thread_cpu_time().unwrap();
    let wall = Instant::now();
    let mut x = 1u64;
    loop {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let spent = thread_cpu_time().unwrap() - start;
        if spent >= cpu || wall.elapsed() > Duration::from_secs(20) {
            return spent;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_seconds_rise_by_the_cpu_burned_and_runtime_metrics_describe_the_runtime() {
    if std::fs::metadata("/proc/self/stat").is_err() || thread_cpu_time().is_none() {
        eprintln!("no /proc: process metrics are absent; nothing to compare");
        return;
    }
    let lifecycle = Lifecycle::new(config()).unwrap();
    let labels = &["track=\"canary\"", "version=\"3.0.0\""];
    let name = "process_cpu_seconds_total";

    let before = sample(&lifecycle.metrics().render(), name, labels).expect("rendered");
    // On a worker (the test body itself runs outside them), so the runtime counts it busy.
    let burned = tokio::spawn(async { burn(Duration::from_millis(300)) })
        .await
        .unwrap();
    let after = sample(&lifecycle.metrics().render(), name, labels).expect("rendered");
    let risen = after - before;
    let burned = burned.as_secs_f64();
    eprintln!("process_cpu_seconds_total rose by {risen:.3} s; this thread burned {burned:.3} s");
    assert!(
        (risen - burned).abs() <= 0.2 * burned,
        "process_cpu_seconds_total rose by {risen:.3} s; this thread burned {burned:.3} s"
    );

    let text = lifecycle.metrics().render();
    assert_eq!(
        sample(&text, "podcycle_runtime_workers", labels),
        Some(2.0),
        "{text}"
    );
    let tasks = sample(&text, "podcycle_runtime_alive_tasks", labels).unwrap();
    assert!(tasks >= 1.0, "at least the watchdog: {tasks}");
    assert!(sample(&text, "podcycle_runtime_global_queue_depth", labels).is_some());
    // A worker adds its busy time when it next parks.
    let busy = || {
        let text = lifecycle.metrics().render();
        sample(&text, "podcycle_runtime_busy_seconds_total", labels).unwrap()
    };
    podcycle_test_support::eventually(|| busy() > 0.2).await;
    assert!(sample(&text, "podcycle_runtime_parks_total", labels).is_some());
    // The watchdog's first tick is immediate: one lag observation at least.
    let lag_count = sample(
        &text,
        "podcycle_runtime_scheduling_lag_seconds_count",
        labels,
    );
    assert!(lag_count >= Some(1.0), "{text}");
    for (family, at_least) in [
        ("process_resident_memory_bytes", 1e5),
        ("process_virtual_memory_bytes", 1e5),
        ("process_open_fds", 3.0),
        ("process_max_fds", 3.0),
        ("process_threads", 3.0),
        ("process_start_time_seconds", 1e9),
    ] {
        let value = sample(&text, family, labels);
        assert!(value >= Some(at_least), "{family} {value:?}:\n{text}");
    }
}
