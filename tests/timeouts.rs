//! Connection timeouts on the application listener: silent and slowloris connections are
//! closed by the header-read timeout, idle keep-alive connections by the idle timeout, and
//! legitimate requests are served meanwhile.

use std::time::{Duration, Instant};

use podcycle_test_support as support;
use support::{code, rt, Child, SOON};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
#[ignore = "the server under test, run by the other tests in a child process"]
fn child() {
    support::child::main();
}

/// Reads until the server closes the connection; returns when (from `since`) and what it sent.
async fn closed_after(
    mut s: impl tokio::io::AsyncRead + Unpin,
    since: Instant,
) -> (Duration, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(SOON, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (since.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was not closed within {SOON:?}"),
        }
    }
}

#[test]
fn silent_slowloris_and_idle_connections_are_closed_by_their_timeouts() {
    let mut child = Child::spawn(&[
        ("PODCYCLE_HEADER_READ_TIMEOUT", "1s"),
        ("PODCYCLE_IDLE_TIMEOUT", "3s"),
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
    ]);
    child.wait_admin();
    let app = child.wait_app();
    let rt = rt();
    rt.block_on(async move {
        let start = Instant::now();
        // Never sends a byte.
        let silent = TcpStream::connect(app).await.unwrap();
        let silent = tokio::spawn(closed_after(silent, start));
        // Sends a header line every 200 ms, never finishing (bounded: 50 lines).
        let slow = TcpStream::connect(app).await.unwrap();
        let (slow_read, mut slow_write) = slow.into_split();
        let slow = tokio::spawn(closed_after(slow_read, start));
        let trickle = tokio::spawn(async move {
            let _ = slow_write.write_all(b"GET /hello HTTP/1.1\r\n").await;
            for i in 0..50 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if slow_write
                    .write_all(format!("x-slow-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return i;
                }
            }
            50
        });
        // One request, then idle on a kept-alive connection.
        let mut idle = TcpStream::connect(app).await.unwrap();
        idle.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        idle.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let answered = Instant::now();
        let idle = tokio::spawn(closed_after(idle, answered));

        // Legitimate requests are served meanwhile.
        for _ in 0..5 {
            let r = support::client::get(app, "/hello").await.unwrap();
            assert_eq!(r.status, 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let (took, sent) = silent.await.unwrap();
        assert!(sent.is_empty(), "nothing sent to the silent connection");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "silent connection closed by the 1 s header-read timeout: {took:?}"
        );
        let (took, _) = slow.await.unwrap();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "slowloris connection closed by the 1 s header-read timeout: {took:?}"
        );
        let lines = trickle.await.unwrap();
        assert!(
            lines < 50,
            "the slowloris connection was closed while it trickled"
        );
        let (took, _) = idle.await.unwrap();
        assert!(
            took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
            "idle keep-alive closed by the 3 s idle timeout, not the 1 s header one: {took:?}"
        );
    });
    child.signal("TERM");
    assert_eq!(code(child.wait_exit(SOON).0), 0);
}
