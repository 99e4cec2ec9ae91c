//! Signals other than a single SIGTERM, sent for real to the server in a child process:
//! Ctrl-C (SIGINT) skips the propagation delay that SIGTERM keeps; SIGQUIT drains as SIGTERM
//! does; SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored instead of killing the process
//! without a line.

use podcycle_test_support as support;

use std::time::Duration;

use support::{client, code, with_child, Child, SOON};

support::child!();

/// Issue 29 item 6: Ctrl-C in a terminal waited the whole propagation delay (5 s by default).
/// With a 60 s delay, SIGINT must end the process within the 10 s bound.
#[test]
fn sigint_skips_the_propagation_delay() {
    let ((), exit) = with_child(&[("PODCYCLE_SHUTDOWN_DELAY", "60s")], |child| async move {
        child.signal("INT");
    });
    let out = exit.output;
    assert_eq!(exit.code, 0, "{out}");
    assert!(out.contains("skipping the propagation delay"), "{out}");
    // The sequence still ran: readiness off, drain, hooks.
    assert!(out.contains("PHASE deregistering"), "{out}");
    assert!(out.contains("HOOK done"), "{out}");
}

/// SIGTERM (the kubelet's signal) keeps the whole delay.
#[test]
fn sigterm_keeps_the_propagation_delay() {
    let delay = Duration::from_secs(2);
    let (sent, exit) = with_child(&[("PODCYCLE_SHUTDOWN_DELAY", "2s")], |child| async move {
        child.signal("TERM")
    });
    let out = exit.output;
    assert_eq!(exit.code, 0, "{out}");
    assert!(
        exit.at.duration_since(sent) >= delay,
        "exited {:?} after SIGTERM, before the {delay:?} delay:\n{out}",
        exit.at.duration_since(sent)
    );
    assert!(!out.contains("skipping the propagation delay"), "{out}");
}

/// Issue 23 row 12: SIGHUP, SIGUSR1, SIGUSR2 killed the process with no log line. Now each is
/// logged and ignored (the server keeps serving), and SIGQUIT drains like SIGTERM.
#[test]
fn hup_and_usr_signals_are_logged_and_ignored_and_sigquit_drains() {
    let ((), exit) = with_child(
        &[("PODCYCLE_SHUTDOWN_DELAY", "100ms")],
        |child| async move {
            let (admin, app) = (child.admin, child.app);
            for sig in ["HUP", "USR1", "USR2"] {
                child.signal(sig);
                child.wait_line(&format!("signal=\"SIG{sig}\""));
                assert!(
                    child.try_exit().is_none(),
                    "SIG{sig} ended the process:\n{}",
                    child.output()
                );
                assert_eq!(client::get(admin, "/readyz").await.unwrap().status, 200);
                assert_eq!(client::get(app, "/hello").await.unwrap().body, "hello 42");
            }
            let out = child.output();
            assert_eq!(
                out.matches("signal received and ignored").count(),
                3,
                "{out}"
            );
            child.signal("QUIT");
        },
    );
    let out = exit.output;
    assert_eq!(exit.code, 0, "{out}");
    assert!(
        out.contains("starting graceful shutdown signal=\"SIGQUIT\""),
        "{out}"
    );
    assert!(out.contains("reason=SIGQUIT"), "{out}");
    assert!(out.contains("HOOK done"), "{out}");
    assert!(out.contains("OUTCOME 0"), "{out}");
}

/// Issue 29 item 1: a service with no tracing subscriber said nothing, not even that
/// `PODCYCLE_DRAIN_TIMOUT` is a typo. Its startup line, phase changes, signals and the
/// unknown-variable warning now go to stderr.
#[test]
fn without_a_subscriber_podcycle_speaks_on_stderr() {
    let mut child = Child::spawn(&[
        ("TEST_NO_SUBSCRIBER", "1"),
        ("PODCYCLE_DRAIN_TIMOUT", "5s"),
        ("PODCYCLE_SHUTDOWN_DELAY", "100ms"),
    ]);
    child.wait_line(
        "stderr: podcycle: warning: unknown variable PODCYCLE_DRAIN_TIMOUT ignored: did you mean PODCYCLE_DRAIN_TIMEOUT?",
        SOON,
    );
    child.wait_line(
        "stderr: podcycle: lifecycle started: version 0.0.0-test",
        SOON,
    );
    child.wait_admin();
    let app = child.wait_app();
    child.wait_line(
        &format!("stderr: podcycle: application listener bound on {app}"),
        SOON,
    );
    child.wait_line("stderr: podcycle: phase serving (from starting)", SOON);
    child.signal("TERM");
    child.wait_line(
        "stderr: podcycle: SIGTERM received: starting graceful shutdown",
        SOON,
    );
    let (status, _) = child.wait_exit(SOON);
    let out = child.drain_output(Duration::from_secs(1));
    assert_eq!(code(status), 0, "{out}");
    for line in [
        "stderr: podcycle: phase deregistering (from serving)",
        "stderr: podcycle: phase draining (from deregistering)",
        "stderr: podcycle: phase stopped (from stopping)",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    // Without a subscriber nothing else writes: no tracing line slipped through.
    assert!(!out.contains(" INFO "), "{out}");
}
