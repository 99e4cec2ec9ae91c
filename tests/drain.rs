//! The drain: streams that observe draining end cleanly; what outlives the drain deadline is
//! cut at delay + drain, with the forced exit code.

use podcycle_test_support as support;

use std::time::Duration;

use support::{client, with_child, SOON};

support::child!();

#[test]
fn an_sse_stream_that_observes_draining_ends_with_a_final_event() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
    ];
    let ((sent, (text, ended)), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let stream = tokio::spawn(async move { client::stream(app, "/stream?n=1000&ms=50").await });
        child.wait_line("START /stream");
        let sent = child.signal("TERM");
        (sent, stream.await.unwrap())
    });
    ended.expect("the stream ends cleanly, not cut");
    assert!(text.contains("data: tick 0"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("event: reconnect\ndata: server draining"),
        "last event tells the client to reconnect: {text}"
    );
    assert_eq!(exit.code, 0);
    assert!(
        exit.at - sent < Duration::from_secs(5),
        "exit long before the drain deadline"
    );
}

#[test]
fn a_stream_that_ignores_draining_is_cut_at_the_deadline_with_the_forced_exit_code() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "1s"),
    ];
    let ((sent, (text, ended)), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let stream = tokio::spawn(async move {
            client::stream(app, "/stream-ignoring-drain?n=1000&ms=50").await
        });
        child.wait_line("START /stream-ignoring-drain");
        let sent = child.signal("TERM");
        child.wait_exit();
        (sent, stream.await.unwrap())
    });
    let out = exit.output;
    assert_eq!(exit.code, 4, "{out}");
    let took = exit.at - sent;
    assert!(
        took >= Duration::from_millis(1300),
        "cut before delay + drain: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1300) + Duration::from_secs(2),
        "{took:?}"
    );
    assert!(text.contains("data: tick"), "{text}");
    assert!(
        ended.is_err(),
        "the stream was cut, and the client can tell"
    );
    assert!(out.contains("OUTCOME 4"), "{out}");
}

#[test]
fn a_request_slower_than_the_deadline_exits_at_delay_plus_drain() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "500ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "1500ms"),
        ("PODCYCLE_HOOK_TIMEOUT", "1s"),
    ];
    let ((sent, slow), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let slow = tokio::spawn(async move { client::get(app, "/slow?ms=60000").await });
        child.wait_line("START /slow");
        let sent = child.signal("TERM");
        child.wait_exit();
        (sent, slow.await.unwrap())
    });
    let took = exit.at - sent;
    assert_eq!(exit.code, 4);
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(
        took < Duration::from_secs(4),
        "delay + drain + 2 s slack: {took:?}"
    );
    assert!(slow.is_err());
    let out = exit.output;
    assert!(
        out.contains("HOOK done"),
        "hooks still run after a forced drain: {out}"
    );
}

/// One request on a fresh connection: `Ok(status)`, or `Err(connect refused)` when the
/// listener is closed, or `Err(other)` when the request got no answer.
async fn one_request(app: std::net::SocketAddr, path: &str) -> Result<u16, std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(SOON, s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))??;
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))
}

#[test]
fn half_sent_and_silent_connections_do_not_hold_the_drain_or_count_as_cut() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "20s"),
    ];
    let (sent, exit) = with_child(&env, |child| async move {
        use tokio::io::AsyncWriteExt;
        let app = child.app;
        // One connection that sent half a request line, one that sent part of its headers,
        // one that never sent a byte.
        let mut held = Vec::new();
        for partial in [&b"G"[..], b"GET /hello HTTP/1.1\r\nHo", b""] {
            let mut s = tokio::net::TcpStream::connect(app).await.unwrap();
            s.write_all(partial).await.unwrap();
            held.push(s);
        }
        // Let the server read what was sent.
        assert_eq!(one_request(app, "/hello").await.unwrap(), 200);
        let sent = child.signal("TERM");
        // The connections stay open until the process has exited.
        child.wait_exit();
        drop(held);
        sent
    });
    let out = exit.output;
    assert_eq!(exit.code, 0, "{out}");
    let took = exit.at - sent;
    assert!(
        took < Duration::from_millis(300) + Duration::from_secs(2),
        "exits right after the delay and the linger, not at the 20 s deadline: {took:?}"
    );
    assert!(out.contains("OUTCOME 0"), "{out}");
}

#[test]
fn reject_mode_answers_every_request_of_the_reject_window_and_exits_clean() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
        ("PODCYCLE_STOP_ACCEPTING", "reject"),
        // A fixed delay: these clients' new connections would otherwise (rightly) keep the
        // adaptive delay serving them 200 until they stop.
        ("PODCYCLE_SHUTDOWN_QUIET", "0s"),
    ];
    let ((ok, rejected, lost), exit) = with_child(&env, |child| async move {
        let app = child.app;
        // A request in flight keeps the drain (and so the reject window) open for ~1.5 s.
        let slow = tokio::spawn(async move { one_request(app, "/slow?ms=2000").await });
        child.wait_line("START /slow");
        let window_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let over = window_over.clone();
                tokio::spawn(async move {
                    let (mut ok, mut rejected, mut lost) = (0u32, 0u32, Vec::new());
                    // Bounded: at most 500 requests per client, and until the slow request ends.
                    for _ in 0..500 {
                        if over.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        match one_request(app, "/hello").await {
                            Ok(200) => ok += 1,
                            Ok(503) => rejected += 1,
                            Ok(other) => lost.push(format!("status {other}")),
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                            Err(e) => lost.push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    (ok, rejected, lost)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        child.signal("TERM");
        assert_eq!(
            slow.await.unwrap().unwrap(),
            200,
            "the in-flight request completes"
        );
        window_over.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut ok, mut rejected, mut lost) = (0, 0, Vec::new());
        for c in clients {
            let (o, r, l) = c.await.unwrap();
            ok += o;
            rejected += r;
            lost.extend(l);
        }
        (ok, rejected, lost)
    });
    let out = exit.output;
    assert!(lost.is_empty(), "requests without an answer: {lost:?}");
    assert!(ok > 0 && rejected > 0, "served {ok}, rejected {rejected}");
    assert_eq!(exit.code, 0, "{out}");
    assert!(out.contains("OUTCOME 0"), "{out}");
}

/// A client that pipelines requests and reads nothing until the process is gone: the response
/// the process completed (a large one, mostly still in the kernel's buffers when hyper is
/// done with it) arrives whole. Closing the socket at once would reset the connection when
/// the client's next request arrives, and the reset throws away the queued bytes.
#[test]
fn a_pipelining_client_that_reads_late_receives_every_completed_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BYTES: usize = 1 << 20;
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
    ];
    let ((sent, read, received), exit) = with_child(&env, |child| async move {
        let mut socket = tokio::net::TcpStream::connect(child.app).await.unwrap();
        let first = format!("GET /big?bytes={BYTES}&ms=400 HTTP/1.1\r\nhost: test\r\n\r\n");
        socket.write_all(first.as_bytes()).await.unwrap();
        child.wait_line("START /big");
        let sent = child.signal("TERM");
        // Keep pipelining (bounded: 150 requests, 20 ms apart) without reading, past the
        // moment the response is complete and the process has exited.
        for _ in 0..150 {
            if socket
                .write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.wait_exit();
        let mut received = Vec::new();
        let read = tokio::time::timeout(SOON, socket.read_to_end(&mut received)).await;
        (sent, read, received)
    });
    let out = exit.output;
    assert_eq!(
        exit.code, 0,
        "the process says every request completed: {out}"
    );
    assert!(sent.elapsed() < SOON, "{out}");
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let body = head_end.map_or(0, |h| received.len() - h);
    assert!(
        matches!(read, Ok(Ok(_))) && body >= BYTES,
        "the completed response arrived whole: {body} of {BYTES} body bytes, read {read:?}"
    );
    let head = String::from_utf8_lossy(&received[..head_end.unwrap()]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}
