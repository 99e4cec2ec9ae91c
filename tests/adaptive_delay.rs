//! The shutdown delay follows the load balancer: it lasts while new connections still arrive,
//! and it moves keep-alive clients onto new connections while the listener is still open.

use podcycle_test_support as support;

use std::time::{Duration, Instant};

use support::{client, with_child};

support::child!();

/// The value of the first series of `metrics` whose line starts with `prefix`.
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn new_connections_arriving_past_the_delay_are_served_until_they_stop() {
    // A balancer that routes new connections here for 2.5 s after SIGTERM, five times the
    // 500 ms delay: with a fixed delay the listener would close under them.
    const LAG: Duration = Duration::from_millis(2500);
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "500ms"),
        ("PODCYCLE_SHUTDOWN_QUIET", "500ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
    ];
    let ((sent, served, failed, metrics), exit) = with_child(&env, |child| async move {
        let (admin, app) = (child.admin, child.app);
        let sent = child.signal("TERM");
        child.wait_line("phase=\"deregistering\"");
        let (mut served, mut failed) = (0u32, Vec::new());
        // Bounded: one new connection every 50 ms, at most 200 of them.
        for _ in 0..200 {
            if sent.elapsed() >= LAG {
                break;
            }
            match client::get(app, "/hello").await {
                Ok(r) if r.status == 200 => served += 1,
                Ok(r) => failed.push(format!("status {}", r.status)),
                Err(e) => failed.push(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let metrics = client::get(admin, "/metrics").await.unwrap().body;
        (sent, served, failed, metrics)
    });
    assert!(
        failed.is_empty(),
        "lost while still routed here: {failed:?}"
    );
    assert!(served >= 10, "served {served}");
    let new = metric(
        &metrics,
        "podcycle_requests_after_unready_total{connection=\"new\"",
    );
    assert_eq!(new, Some(f64::from(served)), "{metrics}");
    let last = metric(&metrics, "podcycle_shutdown_last_new_connection_seconds").unwrap();
    assert!(last >= 2.0, "last new connection at {last}s");
    // Once nothing arrives for the quiet period the delay ends: exit well before the cap
    // (30 s - 3 s - 1 s - 10 s / 4 = 23.5 s), within lag + quiet + 1 s and slack.
    assert_eq!(exit.code, 0);
    let took = exit.at - sent;
    assert!(took >= LAG, "exited while still routed: {took:?}");
    assert!(
        took < LAG + Duration::from_secs(4),
        "waited for the cap: {took:?}"
    );
    let out = exit.output;
    assert!(out.contains("ended=\"quiet\""), "{out}");
}

#[test]
fn keep_alive_clients_are_moved_to_new_connections_during_the_delay() {
    // A fixed 2 s delay: the close schedule spreads over its first half.
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "2s"),
        ("PODCYCLE_SHUTDOWN_QUIET", "0s"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
    ];
    let clients = 8;
    let ((metrics, started), exit) = with_child(&env, |child| async move {
        let (admin, app) = (child.admin, child.app);
        let mut conns = Vec::new();
        for _ in 0..clients {
            let mut conn = client::Conn::open(app).await.unwrap();
            let r = conn.get("/hello").await.unwrap();
            assert!(!r.closes(), "no Connection: close while serving normally");
            conns.push(conn);
        }
        let sent = child.signal("TERM");
        child.wait_line("phase=\"deregistering\"");
        // Each client sends every 50 ms; when told to close, it re-dials (the listener is still
        // open) and goes on, until 1.5 s after the signal.
        let moved: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    let mut moved_at = None;
                    for _ in 0..100 {
                        if sent.elapsed() >= Duration::from_millis(1500) {
                            break;
                        }
                        let r = conn.get("/hello").await?;
                        if r.status != 200 {
                            return Err(format!("status {}", r.status));
                        }
                        if r.closes() {
                            moved_at.get_or_insert(sent.elapsed());
                            conn.finished().await?;
                            conn = client::Conn::open(app).await.map_err(|e| e.to_string())?;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok::<_, String>(moved_at)
                })
            })
            .collect();
        for m in moved {
            let at = m.await.unwrap().expect("no failed request");
            let at = at.expect("every keep-alive client was moved during the delay");
            assert!(at < Duration::from_millis(1500), "moved at {at:?}");
        }
        let metrics = client::get(admin, "/metrics").await.unwrap().body;
        (metrics, Instant::now())
    });
    let reused = metric(
        &metrics,
        "podcycle_requests_after_unready_total{connection=\"reused\"",
    )
    .unwrap();
    let new = metric(
        &metrics,
        "podcycle_requests_after_unready_total{connection=\"new\"",
    )
    .unwrap();
    assert!(reused >= f64::from(clients) && new > 0.0, "{metrics}");
    assert_eq!(exit.code, 0);
    assert!(exit.at - started < Duration::from_secs(5));
    let out = exit.output;
    // Every client's last connection was used after the schedule closed it: none idle at the end
    // of the delay but the last re-dials (at most one per client).
    let idle = out
        .lines()
        .find(|l| l.contains("drain over"))
        .and_then(|l| l.split("closed_idle=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok())
        .expect("drain over line");
    assert!(idle <= clients, "{idle} closed idle: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_used_during_the_delay_gets_goaway_before_the_delay_ends() {
    use podcycle::{Config, Lifecycle, Outcome, Phase};
    let config = Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .shutdown_delay(Duration::from_secs(2))
        .shutdown_quiet(Duration::ZERO)
        .drain_timeout(Duration::from_secs(5))
        .handle_signals(false);
    let lifecycle = Lifecycle::new(config).unwrap();
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    let (mut sender, driver) = client::h2(addr).await;
    lifecycle.shutdown();
    // A request every 50 ms: past this connection's moment in the close schedule (within the
    // first second), its next request brings a graceful GOAWAY; the connection then ends
    // cleanly while the listener is still open.
    let mut answered = 0;
    for _ in 0..40 {
        if sender.ready().await.is_err() {
            break;
        }
        let req = http::Request::get(format!("http://{addr}/hello"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        match sender.send_request(req).await {
            Ok(res) => {
                assert_eq!(res.status(), 200);
                answered += 1;
            }
            // A request racing the GOAWAY is refused (never processed) and safe to retry.
            Err(e) => {
                assert!(sender.is_closed() || e.is_canceled(), "{e}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(2), driver)
        .await
        .expect("the connection ended during the delay")
        .unwrap()
        .unwrap();
    assert!(answered >= 1);
    assert_eq!(
        lifecycle.phase(),
        Phase::Deregistering,
        "moved while the listener is still open"
    );
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
}
