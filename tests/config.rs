//! Bad configuration stops startup with a message naming the variable and the value.

use podcycle_test_support as support;

use support::Child;

support::child!();

#[test]
fn a_typo_in_the_drain_timeout_stops_startup() {
    let exit = Child::spawn(&[("PODCYCLE_DRAIN_TIMEOUT", "20 seconds-ish")]).exited();
    assert_eq!(exit.code, 1);
    let out = &exit.output;
    assert!(
        out.contains(
            "invalid PODCYCLE_DRAIN_TIMEOUT=\"20 seconds-ish\": expected a duration such as 5s"
        ),
        "{out}"
    );
    assert!(!out.contains("ADMIN "), "nothing started: {out}");
}

#[test]
fn a_budget_over_the_grace_period_stops_startup_showing_the_arithmetic() {
    let exit = Child::spawn(&[
        ("PODCYCLE_SHUTDOWN_DELAY", "15s"),
        ("PODCYCLE_GRACE_PERIOD", "30s"),
    ])
    .exited();
    assert_eq!(exit.code, 1);
    let out = &exit.output;
    assert!(out.contains("15s + PODCYCLE_DRAIN_TIMEOUT 20s + PODCYCLE_HOOK_TIMEOUT 3s + margin 1s = 39s > PODCYCLE_GRACE_PERIOD 30s"), "{out}");
}

#[test]
fn an_admin_port_in_use_stops_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let exit = Child::spawn(&[("PODCYCLE_ADMIN_ADDR", &addr)]).exited();
    assert_eq!(exit.code, 1);
    let out = &exit.output;
    assert!(
        out.contains(&format!(
            "cannot bind the admin listener PODCYCLE_ADMIN_ADDR={addr}: "
        )),
        "{out}"
    );
}

#[test]
fn a_huge_warmup_timeout_stops_startup_with_the_config_error_not_a_panic() {
    let exit = Child::spawn(&[("PODCYCLE_WARMUP_TIMEOUT", "500000000000y")]).exited();
    assert_eq!(exit.code, 1);
    let out = &exit.output;
    assert!(
        out.contains(
            "invalid PODCYCLE_WARMUP_TIMEOUT=\"500000000000y\": expected a duration of at most 365 days"
        ),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    assert!(!out.contains("ADMIN "), "nothing started: {out}");
}

#[test]
fn a_zero_watchdog_stall_stops_startup() {
    let exit = Child::spawn(&[("PODCYCLE_WATCHDOG_STALL", "0s")]).exited();
    assert_eq!(exit.code, 1);
    let out = &exit.output;
    assert!(
        out.contains("invalid PODCYCLE_WATCHDOG_STALL=\"0s\": expected a non-zero duration"),
        "{out}"
    );
}

/// Issue 23 row 11: `1ms` was accepted, and `/livez` then failed 93 of 98 probes on an idle
/// server. Refused at startup, naming the minimum and why.
#[test]
fn a_watchdog_stall_below_the_minimum_stops_startup() {
    let exit = Child::spawn(&[("PODCYCLE_WATCHDOG_STALL", "1ms")]).exited();
    let out = &exit.output;
    assert_eq!(exit.code, 1, "{out}");
    assert!(
        out.contains(
            "invalid PODCYCLE_WATCHDOG_STALL=\"1ms\": expected a duration of at least 1s (podcycle::MIN_WATCHDOG_STALL)"
        ),
        "{out}"
    );
    assert!(!out.contains("ADMIN "), "nothing started: {out}");
}

#[test]
fn a_duplicated_metric_label_stops_startup() {
    let exit = Child::spawn(&[("PODCYCLE_METRIC_LABELS", "track=a,track=b")]).exited();
    assert_eq!(exit.code, 1);
    let out = &exit.output;
    assert!(
        out.contains("invalid PODCYCLE_METRIC_LABELS=\"track=a,track=b\": expected comma-separated name=value pairs, each name once"),
        "{out}"
    );
}
