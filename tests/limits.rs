//! Connection limits: a flood of idle connections on the application port, under a low
//! file-descriptor limit, must not starve the probes (`/readyz` answers, failing its
//! `connections` line while the listener is full); and the admin listener closes a client
//! that never finishes its headers.

use podcycle_test_support as support;

use std::time::{Duration, Instant};

use support::{client, code, rt, with_child, Child, SOON};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

support::child!();

/// Connections in the flood: more than the child has file descriptors.
const FLOOD: usize = 400;
/// The child's soft file-descriptor limit.
const OPEN_FILES: u32 = 256;
/// What podcycle derives from it: 256 less 64 (admin) less max(64, 256/8).
const DERIVED_LIMIT: usize = 128;

#[test]
fn probes_answer_while_idle_connections_flood_the_app_port_under_a_low_fd_limit() {
    let child = Child::spawn_with_fd_limit(&[("PODCYCLE_SHUTDOWN_DELAY", "100ms")], OPEN_FILES);
    let ((), exit) = child.run(|child| async move {
        let (admin, app) = (child.admin, child.app);
        let line = child.wait_line("application connection limit");
        assert!(
            line.contains(&format!("max_connections={DERIVED_LIMIT}"))
                && line.contains(&format!("open_files={OPEN_FILES}")),
            "{line}"
        );
        // Idle connections, opened at once, each bounded in time; held until dropped. Those
        // the server accepts plus those the listener's backlog holds complete; the rest give
        // up.
        let mut connecting = tokio::task::JoinSet::new();
        for _ in 0..FLOOD {
            connecting.spawn(tokio::time::timeout(
                Duration::from_secs(2),
                TcpStream::connect(app),
            ));
        }
        let mut flood: Vec<TcpStream> = Vec::new();
        while let Some(done) = connecting.join_next().await {
            if let Ok(Ok(Ok(stream))) = done {
                flood.push(stream);
            }
        }
        assert!(
            flood.len() > DERIVED_LIMIT + 64,
            "only {} of {FLOOD} flood connections opened: the flood does not reach the limit",
            flood.len()
        );
        let mut took = Vec::new();
        let mut not_ready = 0;
        for round in 0..20 {
            for probe in ["/livez", "/readyz"] {
                let started = std::time::Instant::now();
                let reply = tokio::time::timeout(Duration::from_secs(1), client::get(admin, probe))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{probe} (round {round}) took over 1 s during the flood")
                    })
                    .unwrap_or_else(|e| panic!("{probe} (round {round}) failed: {e}"));
                took.push(started.elapsed());
                if probe == "/readyz" && reply.status == 503 {
                    // The listener is full: a pod that cannot take a request is not ready,
                    // and says why (issue 23).
                    assert!(
                        reply.body.contains("[-]connections failed"),
                        "{probe} (round {round}): {reply:?}"
                    );
                    not_ready += 1;
                } else {
                    assert_eq!(reply.status, 200, "{probe} (round {round}): {reply:?}");
                }
            }
        }
        assert!(not_ready > 0, "/readyz failed while the listener was full");
        // Every probe within the kubelet's default 1 s timeout (above); the median under
        // 100 ms.
        took.sort();
        println!(
            "probe latency during the flood: median {:?}, max {:?}",
            took[20], took[39]
        );
        assert!(took[20] < Duration::from_millis(100), "{took:?}");
        // Failed accepts are counted if there were any; the limit may have kept the loop from
        // reaching the descriptor limit at all, so only the scrape itself is checked.
        let metrics = tokio::time::timeout(SOON, client::get(admin, "/metrics"))
            .await
            .expect("/metrics in time")
            .expect("/metrics answered");
        assert_eq!(metrics.status, 200);
        for line in metrics.body.lines() {
            if line.starts_with("podcycle_accept_errors_total") {
                eprintln!("during the flood: {line}");
            }
        }
        drop(flood);
        // The flood gone, the application serves again.
        let reply = tokio::time::timeout(SOON, client::get(app, "/hello"))
            .await
            .expect("the app port answers once the flood is gone")
            .expect("a normal request succeeds");
        assert_eq!(
            (reply.status.as_u16(), reply.body.as_str()),
            (200, "hello 42")
        );
        let deadline = Instant::now() + SOON;
        let mut ready = true;
        while support::status(admin, "/readyz").await != 200 {
            if Instant::now() > deadline {
                ready = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "/readyz passes again once the flood is gone");
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0, "{}", exit.output);
}

#[test]
fn a_configured_limit_above_what_the_fd_limit_leaves_room_for_is_kept_with_a_warning() {
    let mut child = Child::spawn_with_fd_limit(&[("PODCYCLE_MAX_CONNECTIONS", "1000")], OPEN_FILES);
    child.wait_app();
    let warning = child.wait_line("PODCYCLE_MAX_CONNECTIONS exceeds", SOON);
    assert!(warning.contains("room_for=128"), "{warning}");
    let line = child.wait_line("application connection limit", SOON);
    assert!(line.contains("max_connections=1000"), "{line}");
}

#[test]
fn an_invalid_connection_limit_stops_startup_naming_the_variable() {
    for value in ["0", "abc"] {
        let mut child = Child::spawn(&[("PODCYCLE_MAX_CONNECTIONS", value)]);
        let (status, _) = child.wait_exit(SOON);
        let out = child.drain_output(Duration::from_secs(1));
        assert_ne!(code(status), 0, "{out}");
        assert!(
            out.contains(&format!("invalid PODCYCLE_MAX_CONNECTIONS=\"{value}\"")),
            "{out}"
        );
    }
}

/// Reads until the server closes the connection; `None` if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(received)
}

/// The admin header-read timeout (5 s) plus a generous margin.
const ADMIN_CLOSES_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn an_admin_client_that_never_finishes_its_headers_is_disconnected() {
    let mut child = Child::spawn(&[]);
    let admin = child.wait_admin();
    let rt = rt();
    let started = Instant::now();
    let closed = rt.block_on(async {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        read_until_closed(&mut stream, ADMIN_CLOSES_WITHIN).await
    });
    assert!(
        closed.is_some(),
        "a half-sent request held an admin connection for {:?}",
        started.elapsed()
    );
}

#[test]
fn an_idle_keep_alive_admin_connection_is_closed() {
    let mut child = Child::spawn(&[]);
    let admin = child.wait_admin();
    let rt = rt();
    let started = Instant::now();
    let received = rt.block_on(async {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut stream, ADMIN_CLOSES_WITHIN).await
    });
    let received = received.unwrap_or_else(|| {
        panic!(
            "an idle keep-alive admin connection was still open after {:?}",
            started.elapsed()
        )
    });
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
}

/// At the connection limit, connections wait in the kernel's backlog: 300 of them (more than
/// the 128 the standard library's `bind` asks for) all complete their handshake at once, and
/// are served in turn once the connection holding the limit closes.
#[test]
fn at_the_connection_limit_a_deep_backlog_holds_the_waiting_connections() {
    const WAITING: usize = 300;
    // The kernel caps the backlog at net.core.somaxconn (4096 by default since Linux 5.4).
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    assert!(
        somaxconn > WAITING,
        "net.core.somaxconn is {somaxconn}: this machine caps every backlog below {WAITING}"
    );
    let env = [
        ("PODCYCLE_MAX_CONNECTIONS", "1"),
        ("PODCYCLE_SHUTDOWN_DELAY", "100ms"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let app = child.app;
        // Takes the only slot.
        let mut holder = TcpStream::connect(app).await.unwrap();
        holder
            .write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        holder.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        // Each connect given 2 s: a SYN the kernel dropped for a full backlog is only
        // retried after 1 s, then 3 s.
        let connects: Vec<_> = (0..WAITING)
            .map(|_| {
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(app)).await
                })
            })
            .collect();
        let mut waiting = Vec::new();
        for c in connects {
            match c.await.unwrap() {
                Ok(Ok(s)) => waiting.push(s),
                other => panic!(
                    "connection {} of {WAITING} not completed by the kernel: {other:?}",
                    waiting.len()
                ),
            }
        }
        // Every waiting connection sends its request (kernel buffers hold them), then the
        // slot frees: they are accepted and served one by one, in the backlog's order.
        for s in &mut waiting {
            s.write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
        }
        drop(holder);
        let replies: Vec<_> = waiting
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut reply = Vec::new();
                    tokio::time::timeout(SOON, s.read_to_end(&mut reply))
                        .await
                        .expect("served in time")
                        .unwrap();
                    reply
                })
            })
            .collect();
        let mut served = 0;
        for reply in replies {
            let reply = reply.await.unwrap();
            assert!(reply.starts_with(b"HTTP/1.1 200"), "{reply:?}");
            served += 1;
        }
        assert_eq!(served, WAITING);
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0);
}
