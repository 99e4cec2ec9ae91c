//! Probe endpoints: kube-apiserver format, per-check paths, verbose, exclude, JSON; and
//! answers that stay fast while every application worker is blocked.

use podcycle_test_support as support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podcycle::Lifecycle;
use support::{client, eventually, in_process_config as config, status, with_child, SOON};

support::child!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_checks_and_the_output_is_kube_style() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let db_up = Arc::new(AtomicBool::new(true));
    let up = db_up.clone();
    lifecycle.readiness_check("db", move || {
        let ok = up.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(())
            } else {
                Err("connection refused")
            }
        }
    });
    lifecycle.liveness_check("deadlock-detector", || async { Ok::<(), String>(()) });
    let warm = lifecycle.warmup("cache", async { Ok::<_, String>(7) });
    assert_eq!(warm.wait().await, Some(&7));
    let app = axum::Router::new();
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(podcycle::Phase::Serving).await;
    let l = lifecycle.clone();
    eventually(|| l.is_ready()).await;

    let ok = client::get(admin, "/readyz").await.unwrap();
    assert_eq!((ok.status.as_u16(), ok.body.as_str()), (200, "ok\n"));
    let verbose = client::get(admin, "/readyz?verbose").await.unwrap().body;
    assert_eq!(
        verbose,
        "[+]ping ok\n[+]warmup/cache ok\n[+]db ok\n[+]serving ok\n[+]connections ok\n[+]shutdown ok\nreadyz check passed\n"
    );
    assert_eq!(status(admin, "/readyz/db").await, 200);
    assert_eq!(status(admin, "/readyz/warmup/cache").await, 200);
    assert_eq!(status(admin, "/readyz/nope").await, 404);
    assert_eq!(status(admin, "/livez/deadlock-detector").await, 200);
    assert_eq!(status(admin, "/livez/watchdog").await, 200);
    assert_eq!(status(admin, "/startupz").await, 200);
    assert_eq!(status(admin, "/nothing-here").await, 404);

    db_up.store(false, Ordering::SeqCst);
    let l = lifecycle.clone();
    eventually(|| !l.is_ready()).await;
    let failing = client::get(admin, "/readyz").await.unwrap();
    assert_eq!(failing.status, 503);
    assert!(
        failing.body.contains("[-]db failed: connection refused\n"),
        "{}",
        failing.body
    );
    assert!(failing.body.ends_with("readyz check failed\n"));
    assert_eq!(status(admin, "/readyz/db").await, 503);
    // Excluding the failing check passes; an unknown exclusion is reported, not fatal.
    let excluded = client::get(admin, "/readyz?exclude=db&exclude=bogus&verbose")
        .await
        .unwrap();
    assert_eq!(excluded.status, 200, "{}", excluded.body);
    assert!(excluded.body.contains("[+]db excluded: ok"));
    assert!(excluded.body.contains("no matches for \"bogus\""));
    // Liveness does not depend on dependencies.
    assert_eq!(status(admin, "/livez").await, 200);

    let json = client::get_json(admin, "/readyz").await.unwrap();
    assert_eq!(json["status"], "failed");
    assert_eq!(json["probe"], "readyz");
    let db = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "db")
        .unwrap();
    assert_eq!(db["ok"], false);
    assert_eq!(db["reason"], "connection refused");

    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_can_be_mounted_on_the_application_router() {
    let lifecycle = Lifecycle::new(config().admin_addr(None)).unwrap();
    assert_eq!(lifecycle.admin_addr(), None);
    let app = axum::Router::new()
        .route("/x", axum::routing::get(|| async { "x" }))
        .merge(lifecycle.probes().router());
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(podcycle::Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    assert_eq!(status(addr, "/x").await, 200);
    assert_eq!(status(addr, "/livez").await, 200);
    assert_eq!(status(addr, "/readyz/shutdown").await, 200);
    lifecycle.shutdown();
    assert_eq!(status(addr, "/readyz").await, 503);
    assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lifecycles_in_one_process_are_independent() {
    let a = Lifecycle::new(config().version("a")).unwrap();
    let b = Lifecycle::new(config().version("b")).unwrap();
    let sa = tokio::spawn(a.clone().serve(axum::Router::new()));
    let sb = tokio::spawn(b.clone().serve(axum::Router::new()));
    a.reached(podcycle::Phase::Serving).await;
    b.reached(podcycle::Phase::Serving).await;
    a.shutdown();
    assert_eq!(sa.await.unwrap(), podcycle::Outcome::Drained);
    assert_eq!(b.phase(), podcycle::Phase::Serving);
    assert_eq!(
        status(b.admin_addr().unwrap(), "/readyz/shutdown").await,
        200
    );
    b.shutdown();
    assert_eq!(sb.await.unwrap(), podcycle::Outcome::Drained);
}

#[test]
fn probes_answer_quickly_while_every_application_worker_is_blocked() {
    let env = [
        ("TEST_WORKERS", "2"),
        ("PODCYCLE_WATCHDOG_STALL", "1s"),
        ("PODCYCLE_SHUTDOWN_DELAY", "0s"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let (admin, app) = (child.admin, child.app);
        let blockers: Vec<_> = (0..2)
            .map(|_| tokio::spawn(async move { client::get(app, "/block?ms=4000").await }))
            .collect();
        child.wait_line("START /block");
        child.wait_line("START /block");
        for path in ["/readyz", "/startupz", "/livez"] {
            let t = Instant::now();
            let r = client::get(admin, path).await.unwrap();
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{path} took {:?}",
                t.elapsed()
            );
            assert!(r.status == 200 || r.status == 503);
        }
        // The watchdog notices the runtime made no progress for longer than the stall limit.
        let mut failed = None;
        for _ in 0..300 {
            let r = client::get(admin, "/livez").await.unwrap();
            if r.status == 503 {
                failed = Some(r.body);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let body = failed.expect("livez fails while the runtime is stalled");
        assert!(
            body.contains("[-]watchdog failed: application runtime made no progress for"),
            "{body}"
        );
        for b in blockers {
            assert_eq!(b.await.unwrap().unwrap().status, 200);
        }
        let mut healthy = false;
        for _ in 0..300 {
            if client::get(admin, "/livez").await.unwrap().status == 200 {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(healthy, "livez recovers once the runtime moves again");
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_heavy_probe_requests_leaves_livez_fast_and_too_many_excludes_get_400() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    for i in 0..16 {
        lifecycle.readiness_check(&format!("check-{i}"), || async { Ok::<(), String>(()) });
    }
    let serving = tokio::spawn(lifecycle.clone().serve(axum::Router::new()));
    lifecycle.reached(podcycle::Phase::Serving).await;
    // Serving does not wait for the checks' first results (on a busy machine they may come
    // later): the heavy probe below must see them all passing.
    eventually(|| lifecycle.is_ready()).await;

    let heavy: String = (0..podcycle::probes::MAX_EXCLUDES)
        .map(|i| format!("exclude=no-such-check-{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let heavy = format!("/readyz?verbose&{heavy}");
    let too_many = format!("{heavy}&exclude=one-more");
    let refused = client::get(admin, &too_many).await.unwrap();
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("too many exclude parameters"),
        "{}",
        refused.body
    );
    assert_eq!(client::get(admin, &heavy).await.unwrap().status, 200);

    // 32 connections sending the heaviest accepted probe back to back, bounded in count and
    // time, while /livez is timed.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..32)
        .map(|_| {
            let (stop, heavy) = (stop.clone(), heavy.clone());
            tokio::spawn(async move {
                let mut conn = client::Conn::open(admin).await.unwrap();
                for _ in 0..2_000 {
                    if stop.load(Ordering::Relaxed) || conn.get(&heavy).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut took = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(status(admin, "/livez").await, 200);
        took.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = tokio::time::timeout(SOON, f).await;
    }
    took.sort();
    println!(
        "/livez during the ?exclude= flood: median {:?}, max {:?}",
        took[10], took[19]
    );
    // Every probe well within the kubelet's default 1 s timeout; the median under 100 ms
    // (before the linear-time exclusions, 64 such connections pushed 9 of 20 over 1 s).
    assert!(took[19] < Duration::from_secs(1), "{took:?}");
    assert!(took[10] < Duration::from_millis(100), "{took:?}");
    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
}
