//! Long-lived connections at SIGTERM, in a real child process: a WebSocket is told to go
//! away (close 1001) within the stream close spread and the process exits 0; an upgraded
//! connection that ignores the drain is cut at the deadline (exit 4); hundreds of SSE streams
//! and WebSockets end spread over the window, never all at once.

use podcycle_test_support as support;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, Stream, StreamExt};
use podcycle::Lifecycle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as ClientMessage;

use support::{client, with_child, Child, SOON};

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

support::child!(
    "the server under test, run by the other tests in a child process",
    server()
);

/// The server under test (the child process's body): `/ws` echoes text until its stream
/// drain signal, then closes with 1001; `/sse` ticks until its signal, then sends
/// `event: reconnect`; `/raw` switches protocols and then holds the socket, ignoring the
/// drain.
fn server() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(async {
        let lifecycle = Lifecycle::from_env("0.0.0-test").expect("config");
        say(format!("ADMIN {}", lifecycle.admin_addr().unwrap()));
        let l = lifecycle.clone();
        tokio::spawn(async move {
            l.reached(podcycle::Phase::Serving).await;
            say(format!("APP {}", l.app_addr().unwrap()));
        });
        let (ws, sse) = (lifecycle.clone(), lifecycle.clone());
        let app = Router::new()
            .route(
                "/ws",
                get(move |upgrade: WebSocketUpgrade| {
                    let told = ws.stream_drain();
                    async move { upgrade.on_upgrade(move |socket| echo(socket, told)) }
                }),
            )
            .route(
                "/sse",
                get(move || async move { Sse::new(ticks(sse.stream_drain())) }),
            )
            .route("/raw", get(raw))
            .layer(lifecycle.metrics().layer());
        let outcome = lifecycle.serve(app).await;
        say(format!("OUTCOME {} {outcome}", outcome.exit_code()));
        i32::from(outcome.exit_code())
    });
    std::process::exit(code);
}

async fn echo(mut socket: WebSocket, told: impl std::future::Future<Output = ()>) {
    say("WS open".into());
    tokio::pin!(told);
    loop {
        tokio::select! {
            _ = &mut told => {
                let close = CloseFrame { code: 1001, reason: "server draining: reconnect".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                // Wait for the client's close frame (bounded by the drain deadline).
                while let Some(Ok(_)) = socket.recv().await {}
                return;
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if socket.send(Message::Text(t)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    }
}

fn ticks(
    told: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let told = Box::pin(told);
    futures_util::stream::unfold((0u32, Some(told)), |(i, told)| async move {
        let mut told = told?;
        tokio::select! {
            _ = &mut told => Some((Ok(Event::default().event("reconnect").data("draining")), (i, None))),
            _ = tokio::time::sleep(Duration::from_millis(if i == 0 { 0 } else { 100 })) => {
                Some((Ok(Event::default().data(format!("tick {i}"))), (i + 1, Some(told))))
            }
        }
    })
}

/// Switches to a made-up protocol and holds the socket, ignoring every drain signal.
async fn raw(req: axum::extract::Request) -> impl IntoResponse {
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            say("RAW upgraded".into());
            let _held = upgraded;
            std::future::pending::<()>().await;
        }
    });
    (
        http::StatusCode::SWITCHING_PROTOCOLS,
        [("connection", "upgrade"), ("upgrade", "raw")],
    )
}

async fn metrics(admin: SocketAddr) -> String {
    client::get(admin, "/metrics").await.unwrap().body
}

/// The value of the first sample line starting with `series` (name and labels so far).
fn sample(metrics: &str, name: &str, has: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && has.iter().all(|h| l.contains(h)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_websocket_open_at_sigterm_gets_close_1001_within_the_spread_and_the_process_exits_0() {
    let delay = Duration::from_millis(300);
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "5s"),
        ("PODCYCLE_STREAM_CLOSE_SPREAD", "1s"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let (admin, app) = (child.admin, child.app);
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{app}/ws"))
            .await
            .expect("websocket handshake");
        ws.send(ClientMessage::text("ping")).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), "ping");
        let m = metrics(admin).await;
        assert_eq!(
            sample(&m, "podcycle_upgraded_connections", &[]),
            Some(1.0),
            "{m}"
        );
        let sent = child.signal("TERM");
        let close = loop {
            match tokio::time::timeout(SOON, ws.next())
                .await
                .expect("a close frame, soon")
            {
                Some(Ok(ClientMessage::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        };
        let at = sent.elapsed();
        let frame = close.expect("a close code");
        assert_eq!(frame.code, CloseCode::Away, "1001 going away");
        assert!(frame.reason.contains("draining"), "{}", frame.reason);
        assert!(
            at >= delay,
            "closed before the propagation delay was over: {at:?}"
        );
        assert!(
            at < delay + Duration::from_secs(5),
            "closed after the drain deadline: {at:?}"
        );
        drop(ws);
    });
    assert_eq!(exit.code, 0, "{}", exit.output);
}

#[test]
fn a_websocket_that_ends_is_recorded_with_status_101_and_leaves_the_gauge() {
    let ((), exit) = with_child(&[("PODCYCLE_SHUTDOWN_DELAY", "0s")], |child| async move {
        let (admin, app) = (child.admin, child.app);
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{app}/ws"))
            .await
            .unwrap();
        ws.send(ClientMessage::text("hi")).await.unwrap();
        ws.next().await.unwrap().unwrap();
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        let deadline = Instant::now() + SOON;
        loop {
            let m = metrics(admin).await;
            let ended = sample(
                &m,
                "http_server_request_duration_seconds_count",
                &["http_route=\"/ws\"", "http_response_status_code=\"101\""],
            );
            if ended == Some(1.0) {
                assert_eq!(sample(&m, "podcycle_upgraded_connections", &[]), Some(0.0));
                assert!(
                    !m.contains("http_route=\"/ws\",http_response_status_code=\"101\",error_type"),
                    "{m}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no 101 recorded for /ws:\n{m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0);
}

#[test]
fn an_upgraded_connection_that_ignores_the_drain_is_cut_at_the_deadline_with_exit_4() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "100ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "1s"),
    ];
    let ((sent, closed), exit) = with_child(&env, |child| async move {
        let (admin, app) = (child.admin, child.app);
        let mut s = tokio::net::TcpStream::connect(app).await.unwrap();
        s.write_all(b"GET /raw HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: raw\r\n\r\n")
            .await
            .unwrap();
        let mut head = vec![0u8; 256];
        let n = s.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(!head.to_lowercase().contains("connection: close"), "{head}");
        child.wait_line("RAW upgraded");
        let sent = child.signal("TERM");
        child.wait_line("phase=\"draining\"");
        // The drain waits for it: still counted while draining.
        let m = metrics(admin).await;
        assert_eq!(
            sample(&m, "podcycle_upgraded_connections", &[]),
            Some(1.0),
            "{m}"
        );
        child.wait_exit();
        // The process is gone: the socket is closed.
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(SOON, s.read(&mut buf)).await.unwrap();
        (sent, closed)
    });
    let out = exit.output;
    assert_eq!(exit.code, 4, "{out}");
    assert!(
        exit.at - sent >= Duration::from_millis(1100),
        "exited before the drain deadline"
    );
    assert!(out.contains("upgraded connection (WebSocket) cut"), "{out}");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

#[test]
fn hundreds_of_streams_and_websockets_end_spread_over_the_window() {
    const SSE: usize = 200;
    const WS: usize = 50;
    let spread = Duration::from_secs(2);
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "6s"),
        ("PODCYCLE_STREAM_CLOSE_SPREAD", "2s"),
        ("RUST_LOG", "warn"),
    ];
    let (ends, exit) = with_child(&env, |child| async move {
        let (admin, app) = (child.admin, child.app);
        let mut tasks = Vec::new();
        for _ in 0..SSE {
            tasks.push(tokio::spawn(async move {
                let (text, end) = client::stream(app, "/sse").await;
                let ok = end.is_ok() && text.contains("event: reconnect");
                (ok, Instant::now(), text.len())
            }));
        }
        let mut sockets = Vec::new();
        for _ in 0..WS {
            let ws = tokio_tungstenite::connect_async(format!("ws://{app}/ws"))
                .await
                .expect("websocket handshake")
                .0;
            sockets.push(ws);
        }
        for mut ws in sockets {
            tasks.push(tokio::spawn(async move {
                loop {
                    match ws.next().await {
                        Some(Ok(ClientMessage::Close(frame))) => {
                            let at = Instant::now();
                            let ok = frame.is_some_and(|f| f.code == CloseCode::Away);
                            return (ok, at, 0);
                        }
                        Some(Ok(_)) => {}
                        _ => return (false, Instant::now(), 0),
                    }
                }
            }));
        }
        // Every stream open before the signal.
        let deadline = Instant::now() + SOON;
        loop {
            let m = metrics(admin).await;
            let active = sample(&m, "http_server_active_requests", &[]).unwrap_or(0.0);
            if active >= (SSE + WS) as f64 {
                break;
            }
            assert!(Instant::now() < deadline, "streams not all open:\n{m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.signal("TERM");
        let mut ends: Vec<(bool, Instant, usize)> = Vec::new();
        for t in tasks {
            ends.push(tokio::time::timeout(SOON, t).await.expect("ended").unwrap());
        }
        ends
    });
    let out = exit.output;
    assert_eq!(exit.code, 0, "{out}");
    let failed = ends.iter().filter(|(ok, _, _)| !ok).count();
    assert_eq!(failed, 0, "streams without their final event or close 1001");
    let first = ends.iter().map(|e| e.1).min().unwrap();
    let last = ends.iter().map(|e| e.1).max().unwrap();
    assert!(
        last - first >= spread / 2,
        "ends not spread: {:?} from first to last",
        last - first
    );
    let slice = spread / 10;
    let mut per_slice = vec![0usize; 12];
    for (_, at, _) in &ends {
        let i = ((*at - first).as_secs_f64() / slice.as_secs_f64()) as usize;
        per_slice[i.min(11)] += 1;
    }
    let most = *per_slice.iter().max().unwrap();
    eprintln!(
        "{} streams ended over {:?}; per tenth of the spread: {per_slice:?}",
        ends.len(),
        last - first
    );
    assert!(
        most <= (SSE + WS) / 4,
        "more than a quarter of the streams ended in one tenth of the window: {per_slice:?}"
    );
}

/// Sends an upgrade request for `/raw` on a new connection; returns the connection and the
/// response head.
async fn upgrade_raw(app: SocketAddr) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(app).await.unwrap();
    s.write_all(b"GET /raw HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: raw\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(SOON, s.read(&mut head))
        .await
        .expect("answered")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_lowercase();
    (s, head)
}

/// Row 4 of issue 23: with `ulimit -n 256` (a connection limit of 128), 128 upgraded
/// connections used to take every slot for good: ordinary requests timed out while `/readyz`
/// stayed 200. Now upgrades beyond half the limit are answered 503 with `Retry-After`, an
/// ordinary request is still served, and once even HTTP has no slot left `/readyz` fails
/// naming `connections`, passing again when slots free.
#[test]
fn upgraded_connections_leave_room_for_http_and_a_full_listener_is_not_ready() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "100ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "1s"),
    ];
    let child = Child::spawn_with_fd_limit(&env, 256);
    let ((), exit) = child.run(|child| async move {
        let (admin, app) = (child.admin, child.app);
        let mut upgraded = Vec::new();
        let mut refused = 0;
        for _ in 0..128 {
            let (s, head) = upgrade_raw(app).await;
            if head.starts_with("http/1.1 101") {
                upgraded.push(s);
            } else {
                assert!(head.starts_with("http/1.1 503"), "{head}");
                assert!(head.contains("retry-after: 1"), "{head}");
                refused += 1;
            }
        }
        assert_eq!(
            (upgraded.len(), refused),
            (64, 64),
            "half the 128 slots for upgrades, the rest refused"
        );
        let reply = tokio::time::timeout(SOON, client::get(app, "/nothing-here"))
            .await
            .expect("an ordinary request gets a slot")
            .unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(support::status(admin, "/readyz").await, 200);
        // Idle connections take the slots upgrades left: the listener is full.
        let mut idle = Vec::new();
        for _ in 0..80 {
            idle.push(tokio::net::TcpStream::connect(app).await.unwrap());
        }
        let deadline = Instant::now() + SOON;
        loop {
            let reply = client::get(admin, "/readyz").await.unwrap();
            if reply.status == 503 {
                assert!(
                    reply.body.contains("[-]connections failed"),
                    "{}",
                    reply.body
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never failed: {}",
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(idle);
        let deadline = Instant::now() + SOON;
        while support::status(admin, "/readyz").await != 200 {
            assert!(Instant::now() < deadline, "/readyz did not recover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(upgraded);
        child.signal("TERM");
    });
    // `/raw` holds its sockets whatever the client does: cut at the drain deadline.
    assert_eq!(exit.code, 4, "{}", exit.output);
}
