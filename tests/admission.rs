//! Admission control (`PODCYCLE_ADMISSION`): beyond the limit a request is answered `503` with
//! `Retry-After` at once instead of queueing, the probes stay `200` (an overloaded pod is
//! neither unready nor dead), and a shed request is not in flight (the drain waits only for
//! the admitted ones).

use podcycle_test_support as support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{client, with_child, Exit, SOON};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

support::child!();

/// One request on its own connection: the status and whether it carried `Retry-After`.
async fn one_request(app: SocketAddr, path: &str) -> Result<(u16, bool), String> {
    let mut s = tokio::net::TcpStream::connect(app)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(SOON, s.read_to_end(&mut buf))
        .await
        .map_err(|_| "no answer in time (queued instead of answered)".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let code = text
        .strip_prefix("http/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    Ok((code, text.contains("\r\nretry-after: 1\r\n")))
}

/// The child drained cleanly (exit 0, `OUTCOME 0`) less than `within` after SIGTERM was
/// `sent`: the drain waited for the admitted requests only, not for its deadline.
fn assert_drained_with_the_admitted(exit: &Exit, sent: Instant, within: Duration) {
    assert_eq!(exit.code, 0, "{}", exit.output);
    assert!(exit.output.contains("OUTCOME 0"), "{}", exit.output);
    assert!(
        exit.at - sent < within,
        "the drain ended with the admitted requests, not at its deadline: {:?}",
        exit.at - sent
    );
}

/// A WebSocket upgrade request to `/hello`: the head of the answer.
async fn upgrade_request(app: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(app).await.unwrap();
    s.write_all(
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0; 1024];
    let n = tokio::time::timeout(SOON, s.read(&mut buf))
        .await
        .expect("no answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Both probes, each within a second: `200`.
async fn probes_pass(admin: SocketAddr) {
    for probe in ["/livez", "/readyz"] {
        let reply = tokio::time::timeout(Duration::from_secs(1), client::get(admin, probe))
            .await
            .unwrap_or_else(|_| panic!("{probe} did not answer within 1 s"))
            .unwrap();
        assert_eq!(reply.status, 200, "{probe}: {}", reply.body);
    }
}

#[test]
fn beyond_a_fixed_limit_requests_get_503_at_once_probes_pass_and_the_drain_waits_only_for_the_admitted(
) {
    let env = [
        ("PODCYCLE_ADMISSION", "4"),
        ("PODCYCLE_SHUTDOWN_DELAY", "1s"),
        ("PODCYCLE_SHUTDOWN_QUIET", "0s"),
        ("PODCYCLE_DRAIN_TIMEOUT", "20s"),
    ];
    let (sent, exit) = with_child(&env, |child| async move {
        let (app, admin) = (child.app, child.admin);
        // Four slow requests take the four slots.
        let hold = move || tokio::spawn(async move { one_request(app, "/slow?ms=4000").await });
        let mut slow: Vec<_> = (0..4).map(|_| hold()).collect();
        child.wait_line("START /slow");
        // Once they are all in, the next request is shed (bounded wait for that moment). A
        // slow request that lost its slot to one of these is sent again.
        let mut shed = false;
        for _ in 0..200 {
            for s in &mut slow {
                if s.is_finished() {
                    *s = hold();
                }
            }
            if one_request(app, "/hello").await.unwrap() == (503, true) {
                shed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            shed,
            "no request was shed with four 4 s requests in flight and a limit of 4"
        );
        // A burst: every request answered 503 + Retry-After before any slot frees.
        let burst: Vec<_> = (0..40)
            .map(|_| tokio::spawn(async move { one_request(app, "/hello").await }))
            .collect();
        for b in burst {
            assert_eq!(b.await.unwrap().unwrap(), (503, true));
        }
        assert!(
            slow.iter().all(|s| !s.is_finished()),
            "the burst was answered only after a slow request ended: it queued"
        );
        // A gRPC request beyond the limit: trailers-only RESOURCE_EXHAUSTED.
        let (mut h2, _conn) = client::h2::<http_body_util::Empty<bytes::Bytes>>(app).await;
        let res = h2
            .send_request(
                http::Request::post(format!("http://{app}/hello"))
                    .header("content-type", "application/grpc")
                    .body(http_body_util::Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "8", "{:?}", res.headers());
        assert!(
            hyper::body::Body::is_end_stream(res.body()),
            "trailers-only"
        );
        // A WebSocket upgrade is never shed (this route answers it as a plain GET).
        let upgrade = upgrade_request(app).await;
        assert!(upgrade.starts_with("HTTP/1.1 200"), "{upgrade}");
        probes_pass(admin).await;
        let metrics = client::get(admin, "/metrics").await.unwrap().body;
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        };
        assert_eq!(value("podcycle_admission_limit{"), 4.0);
        assert_eq!(value("podcycle_admission_in_flight{"), 4.0);
        assert!(value("podcycle_requests_shed_total{") >= 41.0);
        // The drain waits for the four admitted requests, and only for them: the shed ones
        // were never in flight (else the drain would run to its 20 s deadline, exit code 4).
        let sent = child.signal("TERM");
        // During the shutdown delay the limit still holds.
        assert_eq!(one_request(app, "/hello").await.unwrap(), (503, true));
        for s in slow {
            assert_eq!(
                s.await.unwrap().unwrap().0,
                200,
                "an admitted request completes"
            );
        }
        sent
    });
    assert_drained_with_the_admitted(&exit, sent, Duration::from_secs(10));
}

#[test]
fn an_overloaded_pod_with_adaptive_admission_sheds_and_stays_ready_and_live() {
    // `/queued`: two at a time, 20 ms each, the rest wait their turn (capacity ~100
    // requests/s). First the load it can serve, then 48 clients in a closed loop.
    let env = [
        ("PODCYCLE_ADMISSION", "adaptive"),
        // kube-apiserver's answer rather than the default 503.
        ("PODCYCLE_SHED_STATUS", "429"),
        ("PODCYCLE_SHUTDOWN_DELAY", "0s"),
        ("PODCYCLE_SHUTDOWN_QUIET", "0s"),
    ];
    let ((ok, shed, lost), exit) = with_child(&env, |child| async move {
        let (app, admin) = (child.app, child.admin);
        let ok = Arc::new(AtomicU32::new(0));
        let shed = Arc::new(AtomicU32::new(0));
        let client = |clients: usize, until: Instant| -> Vec<_> {
            (0..clients)
                .map(|_| {
                    let (ok, shed) = (ok.clone(), shed.clone());
                    tokio::spawn(async move {
                        let mut lost = Vec::new();
                        // Bounded: at most 500 requests per client, and until `until`.
                        for _ in 0..500 {
                            if Instant::now() >= until {
                                break;
                            }
                            match one_request(app, "/queued?ms=20").await {
                                Ok((200, _)) => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok((429, true)) => {
                                    shed.fetch_add(1, Ordering::Relaxed);
                                    // As a client honouring `Retry-After` would, sooner.
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                other => lost.push(format!("{other:?}")),
                            }
                        }
                        lost
                    })
                })
                .collect()
        };
        // Under capacity: the controller learns the latency without a queue; nothing shed.
        let mut lost = Vec::new();
        for c in client(2, Instant::now() + Duration::from_secs(1)) {
            lost.extend(c.await.unwrap());
        }
        assert_eq!(shed.load(Ordering::Relaxed), 0, "shed under capacity");
        // Overload.
        let until = Instant::now() + Duration::from_secs(3);
        let clients = client(48, until);
        // The probes, every 100 ms while the overload lasts: 200 throughout.
        while Instant::now() < until {
            probes_pass(admin).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in clients {
            lost.extend(c.await.unwrap());
        }
        probes_pass(admin).await;
        child.signal("TERM");
        (
            ok.load(Ordering::Relaxed),
            shed.load(Ordering::Relaxed),
            lost,
        )
    });
    assert!(lost.is_empty(), "requests without an answer: {lost:?}");
    assert!(ok > 0, "nothing served");
    assert!(shed > 0, "nothing shed: {ok} served");
    assert_eq!(exit.code, 0, "{}", exit.output);
}

/// `podcycle_admission_in_flight` as `/metrics` shows it.
async fn admitted_in_flight(admin: SocketAddr) -> f64 {
    let metrics = client::get(admin, "/metrics").await.unwrap().body;
    metrics
        .lines()
        .find(|l| l.starts_with("podcycle_admission_in_flight{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no podcycle_admission_in_flight in:\n{metrics}"))
}

#[test]
fn with_a_queue_a_request_beyond_the_limit_waits_for_a_slot_up_to_its_bound_and_the_drain_sheds_it()
{
    const BOUND: Duration = Duration::from_secs(5);
    let env = [
        ("PODCYCLE_ADMISSION", "1"),
        ("PODCYCLE_ADMISSION_QUEUE", "5s"),
        ("PODCYCLE_SHUTDOWN_DELAY", "1s"),
        ("PODCYCLE_SHUTDOWN_QUIET", "0s"),
        ("PODCYCLE_DRAIN_TIMEOUT", "20s"),
    ];
    let (sent, exit) = with_child(&env, |child| async move {
        let (app, admin) = (child.app, child.admin);
        // The slot is taken for 300 ms: a request beyond the limit waits, then is served.
        let short = tokio::spawn(async move { one_request(app, "/slow?ms=300").await });
        child.wait_line("START /slow");
        let asked = Instant::now();
        assert_eq!(one_request(app, "/hello").await.unwrap().0, 200);
        assert!(asked.elapsed() < BOUND, "{:?}", asked.elapsed());
        assert_eq!(short.await.unwrap().unwrap().0, 200);
        // The slot is taken for 9 s: the one beyond the limit is shed at its bound, not
        // before, and not much after.
        let long = tokio::spawn(async move { one_request(app, "/slow?ms=9000").await });
        let deadline = Instant::now() + SOON;
        while admitted_in_flight(admin).await < 1.0 {
            assert!(Instant::now() < deadline, "the 9 s request never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let asked = Instant::now();
        assert_eq!(one_request(app, "/hello").await.unwrap(), (503, true));
        let waited = asked.elapsed();
        assert!(
            waited >= BOUND - Duration::from_millis(50) && waited < BOUND + Duration::from_secs(3),
            "shed after {waited:?}, the bound is {BOUND:?}"
        );
        // Waiting requests are not in flight, and the probes pass meanwhile.
        assert_eq!(admitted_in_flight(admin).await, 1.0);
        probes_pass(admin).await;
        // SIGTERM: during the 1 s shutdown delay a request beyond the limit waits; when the
        // drain begins it is shed at once (long before its 5 s bound), and the drain waits
        // only for the admitted 9 s request.
        let sent = child.signal("TERM");
        let asked = Instant::now();
        assert_eq!(one_request(app, "/hello").await.unwrap(), (503, true));
        assert!(
            asked.elapsed() < Duration::from_millis(3500),
            "the waiting request was held {:?} into the drain",
            asked.elapsed()
        );
        assert_eq!(long.await.unwrap().unwrap().0, 200);
        sent
    });
    assert_drained_with_the_admitted(&exit, sent, Duration::from_secs(15));
}

/// The overload table of `docs/limits.md`: open-loop load at 1×, 2× and 4× the capacity of
/// `/queued` (two at a time, 20 ms each: 100 requests/s), with admission off, tower's
/// `ConcurrencyLimit` (alone, and behind `LoadShed`), podcycle's fixed limit and adaptive.
/// Measures, asserts nothing; run by hand (about 90 s):
/// `cargo test -p podcycle --test admission overload_table -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: prints the overload table"]
fn overload_table() {
    println!("| admission | load | goodput/s | p50 ms | p99 ms | p99 ms after 1 s | shed | no answer | probe max ms | probe failures |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let modes = [
        ("off", ("PODCYCLE_ADMISSION", "off")),
        ("tower ConcurrencyLimit 4", ("TEST_TOWER", "limit:4")),
        (
            "tower LoadShed + ConcurrencyLimit 4",
            ("TEST_TOWER", "shed:4"),
        ),
        ("fixed 4", ("PODCYCLE_ADMISSION", "4")),
        ("adaptive", ("PODCYCLE_ADMISSION", "adaptive")),
    ];
    for (mode, setting) in modes {
        for times in [1u32, 2, 4] {
            let env = [
                setting,
                ("PODCYCLE_SHUTDOWN_DELAY", "0s"),
                ("PODCYCLE_SHUTDOWN_QUIET", "0s"),
                ("PODCYCLE_DRAIN_TIMEOUT", "1s"),
            ];
            let (row, _exit) = with_child(&env, |child| async move {
                let (app, admin) = (child.app, child.admin);
                let rate = 100 * times;
                let run = Duration::from_secs(3);
                let start = Instant::now();
                let mut tasks = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
                let probes = tokio::spawn(async move {
                    let (mut worst, mut failed) = (Duration::ZERO, 0);
                    while start.elapsed() < run {
                        let t = Instant::now();
                        let ok = tokio::time::timeout(
                            Duration::from_secs(1),
                            client::get(admin, "/livez"),
                        )
                        .await
                        .is_ok_and(|r| r.is_ok_and(|r| r.status == 200));
                        worst = worst.max(t.elapsed());
                        failed += u32::from(!ok);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    (worst, failed)
                });
                while start.elapsed() < run {
                    tick.tick().await;
                    let settled = start.elapsed() >= Duration::from_secs(1);
                    tasks.push(tokio::spawn(async move {
                        let t = Instant::now();
                        (
                            one_request(app, "/queued?ms=20").await,
                            t.elapsed(),
                            settled,
                        )
                    }));
                }
                let (mut ok, mut later, mut shed, mut lost) = (Vec::new(), Vec::new(), 0, 0);
                for t in tasks {
                    match t.await.unwrap() {
                        (Ok((200, _)), took, settled) => {
                            ok.push(took);
                            if settled {
                                later.push(took);
                            }
                        }
                        (Ok((503, _)), _, _) => shed += 1,
                        _ => lost += 1,
                    }
                }
                let (worst, failed) = probes.await.unwrap();
                ok.sort();
                later.sort();
                let pct = |v: &[Duration], p: f64| {
                    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                        .map_or(0, |d| d.as_millis())
                };
                child.signal("TERM");
                format!(
                    "| {mode} | {times}× | {:.0} | {} | {} | {} | {shed} | {lost} | {} | {failed} |",
                    ok.len() as f64 / start.elapsed().as_secs_f64(),
                    pct(&ok, 0.5),
                    pct(&ok, 0.99),
                    pct(&later, 0.99),
                    worst.as_millis()
                )
            });
            println!("{row}");
        }
    }
}
