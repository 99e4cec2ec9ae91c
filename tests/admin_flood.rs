//! The admin port cannot be starved: a probe on a new connection is answered whatever other
//! clients of the admin port do. Each test runs an attack from the outside audit (issue 23)
//! against a lifecycle's real admin listener and probes it the way the kubelet does: a new
//! connection per probe, a 1 s timeout.

use podcycle_test_support as support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podcycle::Lifecycle;
use support::{client, in_process_config as config};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The admin listener's connection slots (`ADMIN_MAX_CONNECTIONS`).
const SLOTS: usize = 64;
/// The kubelet's default probe timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One kubelet-style probe: a new connection, `GET path`, answered within [`PROBE_TIMEOUT`].
async fn probe(admin: SocketAddr, path: &str) -> Result<u16, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, client::get(admin, path)).await {
        Ok(Ok(reply)) => Ok(reply.status.as_u16()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out after 1 s".into()),
    }
}

/// Probes `count` times, `every` apart; returns the failures (index and error).
async fn probe_series(admin: SocketAddr, count: usize, every: Duration) -> Vec<(usize, String)> {
    let mut failures = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        match probe(admin, "/livez").await {
            Ok(200) => {}
            Ok(code) => failures.push((i, format!("status {code}"))),
            Err(e) => failures.push((i, e)),
        }
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
    failures
}

/// Row 1 of the audit: 64 connections that send nothing, each reopened as soon as the server
/// closes it. Before: every slot held for 30 s, 0 of 12 probes answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_reopened_at_once_cannot_starve_the_probes() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..SLOTS {
        let (stop, opened) = (stop.clone(), opened.clone());
        attackers.spawn(async move {
            // Bounded: at most 10,000 reconnects each, and stopped by the test.
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(Ok(mut silent)) =
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(admin)).await
                else {
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                // Send nothing; wait for the server to close it (or the test to end).
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
            }
        });
    }
    // Every slot is taken before the probes start.
    support::eventually(|| opened.load(Ordering::Relaxed) >= SLOTS as u64).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 12 probes over ~6 s (the kubelet's every 5 s, faster): each one answered within 1 s.
    let failures = probe_series(admin, 12, Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let reopened = opened.load(Ordering::Relaxed);
    attackers.abort_all();
    assert!(
        failures.is_empty(),
        "{} of 12 probes failed while {SLOTS} silent connections held the admin port \
         ({reopened} connections opened): {failures:?}",
        failures.len()
    );
}

/// The same, with four times as many silent connections as slots: the backlog is full of
/// them, and a probe still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_full_of_silent_connections_cannot_starve_the_probes() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let mut silent = Vec::new();
    for _ in 0..4 * SLOTS {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(admin)).await
        {
            silent.push(c);
        }
    }
    assert!(silent.len() > SLOTS + 64, "only {} connected", silent.len());
    let failures = probe_series(admin, 6, Duration::from_millis(300)).await;
    assert!(
        failures.is_empty(),
        "{} of 6 probes failed behind {} silent connections: {failures:?}",
        failures.len(),
        silent.len()
    );
}

/// A connection that sends nothing is closed after the first-byte timeout (2 s), long before
/// the admin idle timeout (30 s), even when nobody needs its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_admin_connection_is_closed_after_the_first_byte_timeout() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let mut silent = TcpStream::connect(admin).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection is closed: {read:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_500) && took < Duration::from_secs(8),
        "closed after {took:?}, expected about 2 s"
    );
}

/// Row 2 of the audit: 64 HTTP/2 connections, each with one open `grpc.health.v1.Health/Watch`
/// (a documented, legitimate RPC). Before: `/livez` timed out and none of the 64 was closed.
/// Now at most a quarter of the slots hold a Watch; the rest get RESOURCE_EXHAUSTED, and
/// probes on new connections are answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_health_watches_cannot_starve_the_probes() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let mut open = Vec::new();
    let mut exhausted = 0;
    for _ in 0..SLOTS {
        // One HTTP/2 connection each (a tonic Channel is one connection).
        let channel = tokio::time::timeout(
            Duration::from_secs(5),
            tonic::transport::Channel::from_shared(format!("http://{admin}"))
                .unwrap()
                .connect(),
        )
        .await
        .expect("connected within 5 s")
        .unwrap();
        let mut health = HealthClient::new(channel);
        let watch = tokio::time::timeout(
            Duration::from_secs(5),
            health.watch(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .expect("the Watch is answered within 5 s");
        match watch {
            Ok(stream) => open.push((health, stream.into_inner())),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                exhausted += 1;
            }
        }
    }
    assert_eq!(
        (open.len(), exhausted),
        (SLOTS / 4, SLOTS - SLOTS / 4),
        "a quarter of the slots for Watch streams, RESOURCE_EXHAUSTED beyond"
    );
    // Every open Watch still streams: its first message came.
    for (_, stream) in &mut open {
        let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the first status within 5 s");
        assert!(matches!(first, Ok(Some(_))), "{first:?}");
    }
    // Probes at once and over the next seconds, with all 64 connections still open.
    let failures = probe_series(admin, 8, Duration::from_millis(500)).await;
    assert!(
        failures.is_empty(),
        "{} of 8 probes failed with {} Watches and {exhausted} more HTTP/2 connections open: \
         {failures:?}",
        failures.len(),
        open.len()
    );
}
