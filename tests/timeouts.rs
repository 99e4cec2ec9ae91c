//! Connection timeouts on the application listener: silent and slowloris connections are
//! closed by the header-read timeout, idle keep-alive connections by the idle timeout, and
//! legitimate requests are served meanwhile.

use std::time::{Duration, Instant};

use podcycle_test_support as support;
use support::{with_child, SOON};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

support::child!();

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
    let env = [
        ("PODCYCLE_HEADER_READ_TIMEOUT", "1s"),
        ("PODCYCLE_IDLE_TIMEOUT", "3s"),
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let app = child.app;
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
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0);
}

#[test]
fn connections_past_their_maximum_age_are_told_to_reconnect_and_no_request_fails() {
    let env = [
        ("PODCYCLE_MAX_CONNECTION_AGE", "1s"),
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let app = child.app;
        // HTTP/1: requests every 100 ms on one keep-alive connection (bounded: 60); past
        // ~1 s (0.9–1.1 s with the jitter, plus one sweep) a response says
        // `Connection: close` and the connection ends.
        let start = Instant::now();
        let mut conn = support::client::Conn::open(app).await.unwrap();
        let mut closed_at = None;
        for _ in 0..60 {
            let reply = conn.get("/hello").await.expect("no request fails");
            assert_eq!(reply.status, 200);
            if reply.closes() {
                closed_at = Some(start.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let closed_at = closed_at.expect("the connection was told to close");
        assert!(
            closed_at >= Duration::from_millis(850) && closed_at < Duration::from_secs(4),
            "HTTP/1 told to reconnect after its maximum age: {closed_at:?}"
        );
        conn.finished()
            .await
            .expect("closed cleanly after the last response");

        // HTTP/2: the same on one connection; past the age the server sends GOAWAY and the
        // client connection ends cleanly, with every request answered.
        let (mut sender, driver) = support::client::h2(app).await;
        let start = Instant::now();
        let mut answered = 0;
        for _ in 0..60 {
            if sender.ready().await.is_err() {
                break; // GOAWAY received: no new streams on this connection
            }
            let req = http::Request::get(format!("http://{app}/hello"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            match sender.send_request(req).await {
                Ok(res) => {
                    assert_eq!(res.status(), 200);
                    answered += 1;
                }
                Err(e) => {
                    // Only a request refused by the GOAWAY may fail, never one accepted.
                    assert!(e.is_canceled() || e.is_closed(), "{e}");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ended = tokio::time::timeout(SOON, driver)
            .await
            .expect("the HTTP/2 connection ended")
            .unwrap();
        assert!(ended.is_ok(), "ended cleanly: {ended:?}");
        let took = start.elapsed();
        assert!(
            answered >= 5,
            "requests answered before the GOAWAY: {answered}"
        );
        assert!(
            took >= Duration::from_millis(850) && took < Duration::from_secs(5),
            "HTTP/2 connection ended by GOAWAY after its maximum age: {took:?}"
        );
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0);
}

/// A client that trickles its request body is closed once its rate, measured while the
/// handler waits for the body, stays under the minimum past the grace period; a handler that
/// works for longer than that grace on a body it has whole is not affected, nor is a normal
/// upload.
#[test]
fn a_trickled_request_body_is_closed_by_the_minimum_body_rate() {
    let env = [
        ("PODCYCLE_MIN_BODY_RATE", "1000"),
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let start = Instant::now();
        // 100 kB announced, 10 bytes every 200 ms (50 bytes/s), bounded: 60 chunks.
        let slow = TcpStream::connect(app).await.unwrap();
        let (slow_read, mut slow_write) = slow.into_split();
        let slow = tokio::spawn(closed_after(slow_read, start));
        let trickle = tokio::spawn(async move {
            let head = "POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\n";
            let _ = slow_write.write_all(head.as_bytes()).await;
            for i in 0..60 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if slow_write.write_all(&[b'x'; 10]).await.is_err() {
                    return i;
                }
            }
            60
        });
        // A whole body at once, then 6.5 s of work: longer than the grace period.
        let worker = tokio::spawn(async move {
            let mut c = TcpStream::connect(app).await.unwrap();
            let body = vec![b'y'; 50_000];
            let head = format!(
                "POST /upload?ms=6500 HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            c.write_all(head.as_bytes()).await.unwrap();
            c.write_all(&body).await.unwrap();
            let mut reply = Vec::new();
            tokio::time::timeout(SOON, c.read_to_end(&mut reply))
                .await
                .expect("answered")
                .unwrap();
            String::from_utf8_lossy(&reply).into_owned()
        });
        let normal = support::client::get(app, "/hello").await.unwrap();
        assert_eq!(normal.status, 200);

        let (took, sent) = slow.await.unwrap();
        assert!(
            sent.is_empty() || sent.starts_with(b"HTTP/1.1 "),
            "{sent:?}"
        );
        assert!(
            took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
            "the trickled body is closed after the 5 s grace: {took:?}"
        );
        let chunks = trickle.await.unwrap();
        assert!(chunks < 60, "closed while it trickled");
        let reply = worker.await.unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("received 50000"),
            "a handler working on a whole body is not cut: {reply}"
        );
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0);
}
