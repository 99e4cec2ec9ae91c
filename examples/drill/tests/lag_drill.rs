//! The removal-lag drill, short: through an L4 path that pins connections (HAProxy in `mode
//! tcp`), old replicas stay in the backend 3 s after their SIGTERM, three times their 1 s
//! shutdown delay. podcycle's adaptive delay serves every request of short-lived and pooled
//! keep-alive clients and exits soon after the lag; the same replicas with a fixed delay
//! (`PODCYCLE_SHUTDOWN_QUIET=0s`) lose requests, which shows the drill can see a loss.
//!
//! Needs `haproxy` (Debian package `haproxy`): without it the test fails, unless
//! `PODCYCLE_SKIP_MISSING_TOOLS=1` asks to skip (always fails in CI).

use std::time::Duration;

use drill::lag::{LagOptions, LagReport};
use drill::ReplicaCommand;

drill::replica_test!();

const LAG: Duration = Duration::from_secs(3);

fn short(haproxy: std::path::PathBuf, name: &str, quiet: Option<Duration>) -> LagOptions {
    let replica = ReplicaCommand::this_test_binary();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lag-drill-{name}-{}", std::process::id()));
    LagOptions {
        replicas: 2,
        short_rate: 20.0,
        pooled: 16,
        pooled_gap: Duration::from_millis(300),
        shutdown_delay: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
        quiet,
        before: Duration::from_secs(1),
        after: Duration::from_secs(1),
        ..LagOptions::new(replica, haproxy, dir, LAG)
    }
}

fn run(opts: &LagOptions) -> LagReport {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(drill::lag::run(opts)).expect("the drill runs");
    println!("{}", report.line());
    report
}

#[test]
fn the_adaptive_delay_loses_nothing_at_a_lag_three_times_the_delay() {
    let Some(haproxy) = podcycle_test_support::tool("haproxy") else {
        return;
    };
    let adaptive = run(&short(haproxy.clone(), "adaptive", None));
    assert_eq!(adaptive.failed(), 0, "{}", adaptive.line());
    assert!(
        adaptive.short.sent > 50 && adaptive.pooled.sent > 100,
        "{}",
        adaptive.line()
    );
    for r in &adaptive.replicas {
        assert_eq!(r.exit, "0", "{}", adaptive.line());
        // Served while still routed to, then out within the quiet period (2 s), the drain of
        // what was in flight and a second (with slack for a busy machine).
        let lag = LAG.as_secs_f64();
        assert!(
            r.sigterm_to_exit >= lag && r.sigterm_to_exit < lag + 2.0 + 1.0 + 2.0,
            "{}",
            adaptive.line()
        );
        assert_eq!(
            r.delay_ended.as_deref(),
            Some("quiet"),
            "{}",
            adaptive.line()
        );
    }

    let fixed = run(&short(haproxy, "fixed", Some(Duration::ZERO)));
    assert!(
        fixed.failed() > 0,
        "a fixed 1 s delay at a 3 s lag: {}",
        fixed.line()
    );
}
