//! The rollout drill, short, through real HAProxy: a rolling update and a blue/green switch of
//! two chatbot replicas under steady load lose no request of any kind, cut no stream, and every
//! replica exits 0 a little after its shutdown delay.
//!
//! A run during which the machine stalled (the load generator's own timing shows the host took
//! the CPUs away) and that failed is run again, up to three times; a run that failed without a
//! stall fails the test at once.
//!
//! Replicas are this test binary run again (its ignored `replica` test runs the chatbot), the
//! same code as `cargo run -p drill`. Needs `haproxy` (Debian package `haproxy`): a missing
//! HAProxy fails the test, unless `PODCYCLE_SKIP_MISSING_TOOLS=1` asks to skip (never in CI).

use std::time::Duration;

use drill::{Mode, Options, ReplicaCommand, Strategy, VERSION_A, VERSION_B};

drill::replica_test!();

fn short_drill(haproxy: std::path::PathBuf, strategy: Strategy, attempt: usize) -> Options {
    let replica = ReplicaCommand::this_test_binary();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "rollout-drill-{}-{}-{attempt}",
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
        websockets: 16,
        grpc: 4,
        grpc_every: Duration::from_millis(20),
        stream_close_spread: Some(Duration::from_secs(1)),
        before: Duration::from_secs(2),
        after: Duration::from_secs(2),
        ..Options::new(replica, haproxy, dir)
    }
}

/// Runs of one strategy at most, when the machine stalls (see below).
const ATTEMPTS: usize = 3;

#[test]
fn podcycle_loses_no_request_in_a_rolling_update_or_a_blue_green_switch() {
    let Some(haproxy) = podcycle_test_support::tool("haproxy") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for strategy in [Strategy::Rolling, Strategy::BlueGreen] {
        for attempt in 1..=ATTEMPTS {
            let opts = short_drill(haproxy.clone(), strategy, attempt);
            let report = rt
                .block_on(drill::run(&opts))
                .unwrap_or_else(|e| panic!("{} drill did not complete: {e}", strategy.name()));
            let text = drill::report::text(&report);
            println!("{text}");
            match check(&report, &opts) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&opts.dir);
                    break;
                }
                // On a shared VM the host sometimes takes the CPUs away for seconds (the
                // generator's own timing shows it): such a run did not apply its load and its
                // failures say nothing about podcycle, so it runs again. A run that failed
                // without a stall fails the test at once, and so does the last attempt.
                Err(why) if report.machine_stalled() && attempt < ATTEMPTS => {
                    println!(
                        "the machine stalled during {} attempt {attempt} ({why}); running it again",
                        strategy.name()
                    );
                }
                Err(why) => panic!(
                    "{why}\n{text}\nfirst failures: {:#?}\nHAProxy log: {:#?}\nlogs in {}",
                    report.failures,
                    report.haproxy_log,
                    opts.dir.display()
                ),
            }
        }
    }
}

/// Returns `Err(what)` unless `report` shows `what` must hold: no failed request of any kind, no
/// cut stream, and every replica out of HAProxy within its delay and exited 0 soon after.
fn check(report: &drill::report::RunReport, opts: &Options) -> Result<(), String> {
    macro_rules! ensure {
        ($cond:expr, $($why:tt)+) => {
            let holds: bool = $cond;
            if !holds {
                return Err(format!($($why)+));
            }
        };
    }
    // The load really ran through the whole drill, and both versions served.
    let expected = opts.rate * (opts.before + opts.after).as_secs_f64();
    ensure!(
        report.requests as f64 > expected,
        "only {} requests",
        report.requests
    );
    for version in [VERSION_A, VERSION_B] {
        let ok = report
            .by_version
            .get(version)
            .and_then(|m| m.get("ok"))
            .copied()
            .unwrap_or(0);
        ensure!(ok > 100, "version {version} served {ok}");
    }
    ensure!(
        report.streams.total > 10,
        "only {} streams",
        report.streams.total
    );

    // Zero failed requests of every kind, zero truncated streams.
    ensure!(
        report.not_sent == 0,
        "the load generator could not send {} requests (the machine stalled)",
        report.not_sent
    );
    ensure!(report.failed == 0, "{} requests failed", report.failed);
    for (outcome, n) in &report.outcomes {
        ensure!(*outcome == "ok" || *n == 0, "{outcome}: {n}");
    }
    ensure!(
        report.streams.truncated == 0,
        "{} streams truncated",
        report.streams.truncated
    );
    ensure!(
        report.streams.done + report.streams.reconnect == report.streams.total,
        "streams: {} done + {} reconnect of {}",
        report.streams.done,
        report.streams.reconnect,
        report.streams.total
    );

    // WebSocket sessions: every one ended by a draining replica got close 1001 and
    // reconnected; none ended abnormally.
    let ws = &report.generator.websockets;
    ensure!(
        ws.failures() == 0,
        "websockets: {} abnormal ends, {} failed connects: {:?}",
        ws.abnormal,
        ws.connect_failures,
        ws.errors
    );
    ensure!(
        ws.closed_going_away > 0 && ws.sessions > opts.websockets as u64,
        "websockets: {} sessions, {} closed with 1001",
        ws.sessions,
        ws.closed_going_away
    );

    // gRPC over long-lived HTTP/2 connections through HAProxy: every call ended OK, every
    // stream with its final message.
    let rpc = &report.generator.grpc;
    ensure!(
        rpc.failed == 0,
        "gRPC: {} of {} calls failed: {:?}",
        rpc.failed,
        rpc.sent,
        rpc.errors
    );
    ensure!(
        rpc.sent > 100 && rpc.ok == rpc.sent && rpc.streams > 10,
        "gRPC: {} sent, {} OK, {} streams",
        rpc.sent,
        rpc.ok,
        rpc.streams
    );
    ensure!(
        rpc.streams_final == rpc.streams,
        "gRPC: {} of {} streams ended with their final message",
        rpc.streams_final,
        rpc.streams
    );

    // Every replica exited 0, after its delay and well before its drain timeout: the delay
    // ends one quiet period (podcycle's default, 2 s) after the last new connection, which
    // comes before HAProxy takes the replica out (within the delay, checked below).
    ensure!(
        report.replicas.len() == 2 * opts.replicas,
        "{} replicas recorded",
        report.replicas.len()
    );
    for r in &report.replicas {
        ensure!(r.exit_code == Some(0), "{} exited {:?}", r.name, r.exit);
        let took = r.shutdown_seconds.expect("shutdown time");
        let delay = opts.shutdown_delay.as_secs_f64();
        let quiet = podcycle::DEFAULT_SHUTDOWN_QUIET.as_secs_f64();
        ensure!(
            took >= delay && took < delay + quiet + 3.0,
            "{} took {took:.2}s from SIGTERM to exit (delay {delay}s)",
            r.name
        );
    }
    // HAProxy took each old replica out on its failing /readyz before it stopped serving.
    for r in report.rolled() {
        let lag = r.removal_lag_seconds.expect("HAProxy saw it DOWN");
        ensure!(
            lag < opts.shutdown_delay.as_secs_f64(),
            "{} left HAProxy {lag:.2}s after SIGTERM, not within the delay",
            r.name
        );
    }
    Ok(())
}
