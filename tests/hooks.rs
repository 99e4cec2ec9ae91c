//! Step 5 and the options around the drain: background work is cancelled, hooks and tracked
//! tasks run within the hook timeout; reject mode; HTTP/2 GOAWAY.

use podcycle_test_support as support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use podcycle::{Config, Lifecycle, Outcome, Phase, StopAccepting};
use support::client;

fn config() -> Config {
    Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .shutdown_delay(Duration::from_millis(100))
        .drain_timeout(Duration::from_secs(5))
        .hook_timeout(Duration::from_millis(500))
        .handle_signals(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_work_is_cancelled_and_hooks_run_after_the_drain() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let token = lifecycle.shutdown_token();
    let task_finished = Arc::new(AtomicBool::new(false));
    let finished = task_finished.clone();
    let tl = lifecycle.clone();
    lifecycle.spawn(async move {
        token.cancelled().await;
        // Only cancelled once requests have drained.
        assert_eq!(tl.phase(), Phase::Stopping);
        tokio::time::sleep(Duration::from_millis(50)).await;
        finished.store(true, Ordering::SeqCst);
    });
    let hook_ran = Arc::new(AtomicBool::new(false));
    let ran = hook_ran.clone();
    let hl = lifecycle.clone();
    lifecycle.on_shutdown("flush", async move {
        assert_eq!(hl.phase(), Phase::Stopping);
        ran.store(true, Ordering::SeqCst);
    });
    let serving = tokio::spawn(lifecycle.clone().serve(axum::Router::new()));
    lifecycle.reached(Phase::Serving).await;
    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
    assert!(task_finished.load(Ordering::SeqCst));
    assert!(hook_ran.load(Ordering::SeqCst));
    assert_eq!(lifecycle.phase(), Phase::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_past_the_hook_timeout_gives_its_own_exit_code() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    lifecycle.on_shutdown("quick", async {});
    lifecycle.on_shutdown("stuck-flush", std::future::pending());
    let serving = tokio::spawn(lifecycle.clone().serve(axum::Router::new()));
    lifecycle.reached(Phase::Serving).await;
    let started = tokio::time::Instant::now();
    lifecycle.shutdown();
    let outcome = serving.await.unwrap();
    assert_eq!(
        outcome,
        Outcome::HooksTimedOut {
            pending_hooks: vec!["stuck-flush".into()],
            pending_tasks: 0
        }
    );
    assert_eq!(outcome.exit_code(), 5);
    // delay 100 ms + hook timeout 500 ms, counted once each.
    assert!(started.elapsed() < Duration::from_millis(100 + 500 + 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_keeps_the_listener_and_answers_503_with_retry_after() {
    let lifecycle = Lifecycle::new(
        config()
            .stop_accepting(StopAccepting::Reject)
            .drain_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        );
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    let slow = tokio::spawn(async move { client::get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    lifecycle.shutdown();
    lifecycle.draining().await;
    let r = client::get(addr, "/hello").await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.closes());
    assert_eq!(slow.await.unwrap().unwrap().body, "slow");
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_get_goaway_and_in_flight_streams_complete() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            "slow"
        }),
    );
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    let (mut sender, driver) = client::h2(addr).await;
    let req = http::Request::get(format!("http://{addr}/slow"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let pending = sender.send_request(req);
    let shutdown = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lifecycle.shutdown();
    };
    let (res, ()) = tokio::join!(pending, shutdown);
    let res = res.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("connection").is_none(),
        "no connection header on h2"
    );
    // GOAWAY then close: the client's connection ends without error.
    driver.await.unwrap().unwrap();
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
}
