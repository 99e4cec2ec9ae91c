//! SIGTERM in a real child process: readiness flips at once, serving continues for the
//! propagation delay, in-flight requests complete, then new connections are refused.

use podcycle_test_support as support;

use std::time::{Duration, Instant};

use support::{client, with_child};

support::child!();

#[test]
fn in_flight_requests_complete_and_the_process_exits_after_the_last() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
    ];
    let ((sent, results), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let handles: Vec<_> = (0..5)
            .map(|i| {
                tokio::spawn(async move {
                    let r = client::get(app, &format!("/slow?ms={}", 1200 + i * 100)).await;
                    (r, Instant::now())
                })
            })
            .collect();
        for _ in 0..5 {
            child.wait_line("START /slow");
        }
        // The slow handlers each print one START; consume the rest of them.
        let sent = child.signal("TERM");
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.unwrap());
        }
        (sent, results)
    });
    let last = results.iter().map(|(_, t)| *t).max().unwrap();
    for (r, _) in &results {
        let r = r.as_ref().expect("in-flight request must complete");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "slow done");
    }
    let out = exit.output;
    assert_eq!(exit.code, 0, "{out}");
    assert!(exit.at >= last, "process exited before its last response");
    assert!(sent.elapsed() < Duration::from_secs(8));
    assert!(out.contains("HOOK done"), "{out}");
    assert!(out.contains("OUTCOME 0"), "{out}");
}

#[test]
fn during_the_delay_readiness_fails_but_new_connections_are_served_then_refused() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "1500ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let (admin, app) = (child.admin, child.app);
        assert_eq!(client::get(admin, "/readyz").await.unwrap().status, 200);
        // Keeps the process in the draining phase long enough to look at it.
        let slow = tokio::spawn(async move { client::get(app, "/slow?ms=3000").await });
        child.wait_line("START /slow");
        child.signal("TERM");
        child.wait_line("phase=\"deregistering\"");
        let ready = client::get(admin, "/readyz?verbose").await.unwrap();
        assert_eq!(ready.status, 503);
        assert!(ready.body.contains("[-]shutdown failed"), "{}", ready.body);
        assert_eq!(client::get(admin, "/livez").await.unwrap().status, 200);
        // A load balancer that has not caught up yet still gets served, on new connections.
        for _ in 0..3 {
            let r = client::get(app, "/hello").await.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body, "hello 42");
        }
        child.wait_line("application listener closed");
        let err = client::get(app, "/hello").await.unwrap_err();
        assert!(err.contains("Connection refused"), "{err}");
        // Probes still answer while draining: liveness green, readiness red.
        assert_eq!(client::get(admin, "/livez").await.unwrap().status, 200);
        assert_eq!(client::get(admin, "/readyz").await.unwrap().status, 503);
        let slow = slow.await.unwrap().expect("in-flight request completes");
        assert_eq!(slow.status, 200);
    });
    assert_eq!(exit.code, 0);
}

#[test]
fn readiness_flips_before_the_delay_elapses_and_requests_in_the_window_are_counted() {
    let ((), exit) = with_child(&[("PODCYCLE_SHUTDOWN_DELAY", "3s")], |child| async move {
        let (admin, app) = (child.admin, child.app);
        let sent = child.signal("TERM");
        // Poll as fast as possible: the flip must be visible long before the delay ends.
        loop {
            if client::get(admin, "/readyz").await.unwrap().status == 503 {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "readiness did not flip"
            );
        }
        for _ in 0..4 {
            assert_eq!(client::get(app, "/hello").await.unwrap().status, 200);
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "check ran past the delay"
        );
        child.wait_line("phase=\"draining\"");
    });
    assert_eq!(exit.code, 0);
    let out = exit.output;
    assert!(
        out.contains("requests_after_unready=4"),
        "the 4 requests served during the delay must be counted:\n{out}"
    );
}

#[test]
fn a_second_signal_forces_exit() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "100ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "30s"),
    ];
    let ((second, slow), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let slow = tokio::spawn(async move { client::get(app, "/slow?ms=20000").await });
        child.wait_line("START /slow");
        child.signal("TERM");
        child.wait_line("phase=\"draining\"");
        let second = child.signal("INT");
        child.wait_exit();
        (second, slow.await.unwrap())
    });
    assert_eq!(exit.code, 130, "128 + SIGINT");
    assert!(
        exit.at - second < Duration::from_secs(3),
        "forced exit must be immediate"
    );
    let out = exit.output;
    // Through tracing (the child has a subscriber), with what was in flight.
    let line = out
        .lines()
        .find(|l| l.contains("second signal: exiting immediately"))
        .unwrap_or_else(|| panic!("the second-signal line:\n{out}"));
    assert!(line.contains("in_flight=1"), "{line}");
    assert!(
        slow.is_err(),
        "the request in flight was cut by the forced exit"
    );
}
