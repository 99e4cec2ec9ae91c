//! The rollout drill, short, through real HAProxy: a rolling update and a blue/green switch of
//! two chatbot replicas under steady load lose no request of any kind, cut no stream, and every
//! replica exits 0 a little after its shutdown delay.
//!
//! Replicas are this test binary run again (its ignored `replica` test runs the chatbot), the
//! same code as `cargo run --example drill`. Needs `haproxy` (Debian package `haproxy`): in CI
//! (`CI` set) a missing HAProxy fails the test; elsewhere it says clearly that it skipped.

mod support;

#[allow(dead_code)]
#[path = "../examples/drill/drill.rs"]
mod drill;
#[path = "../examples/chatbot/service.rs"]
mod service;

use std::time::Duration;

use drill::{Mode, Options, ReplicaCommand, Strategy, VERSION_A, VERSION_B};

#[test]
#[ignore = "a chatbot replica, started by the drill in a child process"]
fn replica() {
    if std::env::var_os("DRILL_REPLICA").is_none() {
        return;
    }
    let code = drill::run_replica(|| async {
        match service::Mode::from_env() {
            Ok(mode) => service::run(mode).await,
            Err(e) => podcycle::Outcome::Failed(e),
        }
    });
    std::process::exit(i32::from(code));
}

fn short_drill(haproxy: std::path::PathBuf, strategy: Strategy) -> Options {
    let replica = ReplicaCommand {
        program: std::env::current_exe().unwrap(),
        args: [
            "--ignored",
            "--exact",
            "replica",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from)
        .to_vec(),
    };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "rollout-drill-{}-{}",
        strategy.name(),
        std::process::id()
    ));
    Options {
        mode: Mode::Podcycle,
        strategy,
        replicas: 2,
        rate: 400.0,
        connections: 8,
        stream_every: 25,
        before: Duration::from_secs(2),
        after: Duration::from_secs(2),
        ..Options::new(replica, haproxy, dir)
    }
}

#[test]
fn podcycle_loses_no_request_in_a_rolling_update_or_a_blue_green_switch() {
    let Some(haproxy) = support::tool("haproxy") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for strategy in [Strategy::Rolling, Strategy::BlueGreen] {
        let opts = short_drill(haproxy.clone(), strategy);
        let report = rt
            .block_on(drill::run(&opts))
            .unwrap_or_else(|e| panic!("{} drill did not complete: {e}", strategy.name()));
        let text = drill::report::text(&report);
        println!("{text}");
        let evidence = || {
            format!(
                "{text}\nfirst failures: {:#?}\nHAProxy log: {:#?}\nlogs in {}",
                report.failures,
                report.haproxy_log,
                opts.dir.display()
            )
        };

        // The load really ran through the whole drill, and both versions served.
        let expected = opts.rate * (opts.before + opts.after).as_secs_f64();
        assert!(
            report.requests as f64 > expected,
            "only {} requests: {}",
            report.requests,
            evidence()
        );
        for version in [VERSION_A, VERSION_B] {
            let ok = report
                .by_version
                .get(version)
                .and_then(|m| m.get("ok"))
                .copied()
                .unwrap_or(0);
            assert!(ok > 100, "version {version} served {ok}: {}", evidence());
        }
        assert!(report.streams.total > 10, "{}", evidence());

        // Zero failed requests of every kind, zero truncated streams.
        assert_eq!(
            report.not_sent,
            0,
            "the load generator could not send its load (the machine stalled): {}",
            evidence()
        );
        assert_eq!(report.failed, 0, "{}", evidence());
        for (outcome, n) in &report.outcomes {
            if *outcome != "ok" {
                assert_eq!(*n, 0, "{outcome}: {}", evidence());
            }
        }
        assert_eq!(report.streams.truncated, 0, "{}", evidence());
        assert_eq!(
            report.streams.done + report.streams.reconnect,
            report.streams.total,
            "{}",
            evidence()
        );

        // Every replica exited 0, after its delay and well before its drain timeout.
        assert_eq!(report.replicas.len(), 2 * opts.replicas, "{}", evidence());
        for r in &report.replicas {
            assert_eq!(
                r.exit_code,
                Some(0),
                "{} exited {:?}: {}",
                r.name,
                r.exit,
                evidence()
            );
            let took = r.shutdown_seconds.expect("shutdown time");
            let delay = opts.shutdown_delay.as_secs_f64();
            assert!(
                took >= delay && took < delay + 3.0,
                "{} took {took:.2}s from SIGTERM to exit (delay {delay}s): {}",
                r.name,
                evidence()
            );
        }
        // HAProxy took each old replica out on its failing /readyz before it stopped serving.
        for r in report.rolled() {
            let lag = r.removal_lag_seconds.expect("HAProxy saw it DOWN");
            assert!(
                lag < opts.shutdown_delay.as_secs_f64(),
                "{} left HAProxy {lag:.2}s after SIGTERM, not within the delay: {}",
                r.name,
                evidence()
            );
        }
        let _ = std::fs::remove_dir_all(&opts.dir);
    }
}
