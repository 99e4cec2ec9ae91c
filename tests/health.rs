//! The health model seen through the probes: non-gating checks, the application's serving
//! switch, readiness kept through the shutdown delay, and what dropping `serve` does.

use podcycle_test_support as support;

use std::time::{Duration, Instant};

use podcycle::{Check, Lifecycle, Phase};
use support::{client, eventually, in_process_config as config, status, SOON};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_non_gating_check_is_reported_but_readyz_stays_green() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    lifecycle.check(
        Check::readiness("recommendations", || async { Err("upstream slow") }).gating(false),
    );
    let serving = tokio::spawn(lifecycle.clone().serve(axum::Router::new()));
    lifecycle.reached(Phase::Serving).await;
    // Wait until the check has run (and failed) at least once.
    let mut verbose = String::new();
    let deadline = Instant::now() + SOON;
    while !verbose.contains("[-]recommendations") {
        assert!(Instant::now() < deadline, "check never reported: {verbose}");
        tokio::time::sleep(Duration::from_millis(10)).await;
        verbose = client::get(admin, "/readyz?verbose").await.unwrap().body;
    }
    let ready = client::get(admin, "/readyz?verbose").await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready
            .body
            .contains("[-]recommendations failed (not gating): upstream slow\n"),
        "{}",
        ready.body
    );
    assert!(
        ready.body.ends_with("readyz check passed\n"),
        "{}",
        ready.body
    );
    assert!(lifecycle.is_ready());
    // The check's own path reports it as failing.
    assert_eq!(status(admin, "/readyz/recommendations").await, 503);
    // JSON says it does not gate.
    let json = client::get_json(admin, "/readyz").await.unwrap();
    let line = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "recommendations")
        .unwrap()
        .clone();
    assert_eq!(
        (line["ok"].clone(), line["gating"].clone()),
        (false.into(), false.into())
    );
    // And metrics show it failing.
    let metrics = client::get(admin, "/metrics").await.unwrap().body;
    assert!(
        metrics.contains(
            "podcycle_check_status{check=\"recommendations\",probe=\"readyz\",version=\"9.9.9\"} 0"
        ),
        "{metrics}"
    );
    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_switch_flips_readyz_and_back_at_once() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let serving = tokio::spawn(lifecycle.clone().serve(axum::Router::new()));
    lifecycle.reached(Phase::Serving).await;
    assert_eq!(status(admin, "/readyz").await, 200);

    lifecycle.set_serving(false);
    // No waiting: the very next probe sees it (well within a millisecond of the call).
    assert!(!lifecycle.is_ready());
    let off = client::get(admin, "/readyz").await.unwrap();
    assert_eq!(off.status, 503);
    assert!(
        off.body
            .contains("[-]serving failed: switched off by the application\n"),
        "{}",
        off.body
    );
    assert_eq!(status(admin, "/livez").await, 200, "liveness unaffected");
    assert_eq!(lifecycle.phase(), Phase::Serving, "no shutdown started");

    lifecycle.set_serving(true);
    assert!(lifecycle.is_ready());
    assert_eq!(status(admin, "/readyz").await, 200);
    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_during_delay_keeps_readyz_green_until_the_listener_closes() {
    for keep in [false, true] {
        let lifecycle = Lifecycle::new(
            config()
                .shutdown_delay(Duration::from_secs(2))
                .ready_during_delay(keep),
        )
        .unwrap();
        let admin = lifecycle.admin_addr().unwrap();
        let serving = tokio::spawn(lifecycle.clone().serve(axum::Router::new()));
        lifecycle.reached(Phase::Serving).await;
        assert_eq!(status(admin, "/readyz").await, 200);
        lifecycle.shutdown();
        assert_eq!(lifecycle.phase(), Phase::Deregistering);
        let during_delay = status(admin, "/readyz").await;
        assert_eq!(during_delay, if keep { 200 } else { 503 }, "keep={keep}");
        lifecycle.reached(Phase::Draining).await;
        assert_eq!(status(admin, "/readyz").await, 503, "keep={keep}");
        assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_serve_future_stops_accepting() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let app = axum::Router::new().route("/x", axum::routing::get(|| async { "x" }));
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    assert_eq!(status(addr, "/x").await, 200);
    serving.abort(); // drops the serve future
    assert!(serving.await.unwrap_err().is_cancelled());
    eventually(|| std::net::TcpStream::connect(addr).is_err()).await;
    let refused = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}
