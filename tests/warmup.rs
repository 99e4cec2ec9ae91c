//! Warm-up: readiness waits for it; a signal during it stops cleanly without serving; a
//! failure stops startup with the warm-up's name and error.

use podcycle_test_support as support;

use std::time::Duration;

use support::{client, code, rt, Child, SOON};

support::child!();

#[test]
fn startup_and_readiness_wait_for_the_warm_up_while_liveness_is_green() {
    let mut child = Child::spawn(&[("TEST_WARMUP", "ok:5s")]);
    let admin = child.wait_admin();
    let rt = rt();
    rt.block_on(async {
        let s = client::get(admin, "/startupz?verbose").await.unwrap();
        assert_eq!(s.status, 503);
        assert!(
            s.body.contains("[-]warmup/test-data failed: still running"),
            "{}",
            s.body
        );
        assert_eq!(client::get(admin, "/readyz").await.unwrap().status, 503);
        assert_eq!(client::get(admin, "/livez").await.unwrap().status, 200);
    });
    child.wait_app();
    rt.block_on(async {
        assert_eq!(client::get(admin, "/startupz").await.unwrap().status, 200);
        // Readiness checks run every 100 ms here; the first run may still be pending.
        let mut ok = false;
        for _ in 0..100 {
            if client::get(admin, "/readyz").await.unwrap().status == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "ready after warm-up");
    });
    child.signal("TERM");
    assert_eq!(code(child.wait_exit(SOON).0), 0);
}

#[test]
fn a_signal_during_warm_up_stops_without_serving() {
    let mut child = Child::spawn(&[("TEST_WARMUP", "ok:60s"), ("PODCYCLE_SHUTDOWN_DELAY", "5s")]);
    child.wait_admin();
    child.wait_line("warm-up started", SOON);
    let sent = child.signal("TERM");
    let (status, exited) = child.wait_exit(SOON);
    assert_eq!(code(status), 0);
    // Never ready, so no load balancer has the endpoint: no propagation delay.
    assert!(exited - sent < Duration::from_secs(3));
    let out = child.drain_output(Duration::from_secs(1));
    assert!(!out.contains("APP "), "nothing was served: {out}");
    assert!(out.contains("HOOK done"), "{out}");
    assert!(out.contains("stopped during warm-up"), "{out}");
}

#[test]
fn a_failing_warm_up_exits_non_zero_naming_the_warm_up_and_error() {
    let exit = Child::spawn(&[("TEST_WARMUP", "fail")]).exited();
    assert_eq!(exit.code, 3);
    let out = &exit.output;
    assert!(out.contains("warmup=test-data"), "{out}");
    assert!(
        out.contains("could not load test data: file missing"),
        "{out}"
    );
    assert!(!out.contains("APP "), "{out}");
}

#[test]
fn a_panicking_warm_up_is_a_failure_not_a_crash() {
    let exit = Child::spawn(&[("TEST_WARMUP", "panic")]).exited();
    assert_eq!(exit.code, 3);
    let out = &exit.output;
    assert!(out.contains("panicked: warm-up exploded"), "{out}");
}

#[test]
fn a_warm_up_past_its_deadline_fails_startup() {
    let exit = Child::spawn(&[
        ("TEST_WARMUP", "ok:60s"),
        ("PODCYCLE_WARMUP_TIMEOUT", "500ms"),
    ])
    .exited();
    assert_eq!(exit.code, 3);
    let out = &exit.output;
    assert!(
        out.contains("did not finish within PODCYCLE_WARMUP_TIMEOUT 500ms"),
        "{out}"
    );
}

#[test]
fn stay_unready_keeps_the_process_up_until_a_signal() {
    let mut child = Child::spawn(&[
        ("TEST_WARMUP", "fail"),
        ("PODCYCLE_ON_WARMUP_FAILURE", "stay-unready"),
    ]);
    let admin = child.wait_admin();
    child.wait_line("staying up and unready", SOON);
    let rt = rt();
    rt.block_on(async {
        let s = client::get(admin, "/startupz").await.unwrap();
        assert_eq!(s.status, 503);
        assert!(s.body.contains("could not load test data"), "{}", s.body);
    });
    assert!(child.try_exit().is_none());
    child.signal("TERM");
    assert_eq!(code(child.wait_exit(SOON).0), 3);
}

/// Issue 29 item 5: a request sent during warm-up waited in the backlog until the warm-up
/// ended (~2 s for the chatbot; forever here). Now it is answered at once: 503, `Retry-After`,
/// `Connection: close`; once warmed up, the application answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_during_warm_up_is_answered_503_at_once_not_held_in_the_backlog() {
    use axum::{routing::get, Router};
    let lifecycle = podcycle::Lifecycle::new(support::in_process_config()).unwrap();
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let _warmup = lifecycle.warmup("held", async move { held.await.map_err(|e| e.to_string()) });
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    support::eventually(|| lifecycle.app_addr().is_some()).await;
    let addr = lifecycle.app_addr().unwrap();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(5), client::get(addr, "/hello"))
            .await
            .expect("answered within 5 s, not held until the warm-up ends")
            .unwrap();
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.headers["retry-after"], "1");
        assert!(r.closes(), "Connection: close: {:?}", r.headers);
        assert!(r.body.contains("warming up"), "{}", r.body);
    }
    assert_eq!(lifecycle.phase(), podcycle::Phase::Starting);
    release.send(()).unwrap();
    lifecycle.reached(podcycle::Phase::Serving).await;
    let r = client::get(addr, "/hello").await.unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "hello"));
    lifecycle.shutdown();
    let outcome = tokio::time::timeout(SOON, serving).await.unwrap().unwrap();
    assert_eq!(outcome, podcycle::Outcome::Drained);
}
