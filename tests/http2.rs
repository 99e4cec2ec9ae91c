//! Hostile HTTP/2 clients on the application port, in a real child process, speaking raw
//! frames (a client library would acknowledge PINGs and honour GOAWAY for us):
//!
//! - an idle connection, whose client sends control frames after its last stream, lives the
//!   idle timeout and ends with a GOAWAY, not the header-read timeout and a bare close; so
//!   does one that sent only the preface;
//! - at SIGTERM, a connection that only PINGs does not hold the drain, and a client that
//!   ignores the GOAWAY gets its new streams refused (`REFUSED_STREAM`) after the grace;
//! - streams whose request bodies never come are reset after the minimum body rate's grace,
//!   the connection lives on, and the server advertises its concurrent streams limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use podcycle_test_support as support;
use support::{with_child, SOON};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

support::child!();

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

/// One frame: type, flags, stream id, payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn code(&self) -> u32 {
        // RST_STREAM: the code is the payload; GOAWAY: after the last stream id.
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A request's header block: HPACK literals without indexing, no Huffman (short strings).
fn header_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    let fields = [
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", "t"),
    ];
    for (name, value) in fields.iter().chain(extra) {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// The write half of a raw HTTP/2 connection.
struct Writer(OwnedWriteHalf);

impl Writer {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes).await
    }

    async fn request(&mut self, stream: u32, method: &str, path: &str) -> std::io::Result<()> {
        let block = header_block(method, path, &[]);
        self.send(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
            .await
    }

    /// Request headers announcing a body that never comes.
    async fn open_upload(&mut self, stream: u32) -> std::io::Result<()> {
        let block = header_block("POST", "/upload", &[("content-length", "1000")]);
        self.send(&frame(HEADERS, END_HEADERS, stream, &block))
            .await
    }

    async fn ping(&mut self, ack: bool, data: [u8; 8]) -> std::io::Result<()> {
        self.send(&frame(PING, if ack { ACK } else { 0 }, 0, &data))
            .await
    }
}

/// The read half: frames, or `None` at the end of the connection.
struct Reader {
    inner: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & !(1 << 31),
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.inner.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame within `within`; panics if none comes (the connection ending is `None`).
    async fn next_within(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no frame and no close within {within:?}"))
    }
}

/// Connects, sends the preface and empty SETTINGS, reads the server's SETTINGS and
/// acknowledges them. Returns the halves and the server's SETTINGS payload.
async fn connect(app: SocketAddr) -> (Reader, Writer, Vec<u8>) {
    let (read, write) = TcpStream::connect(app).await.unwrap().into_split();
    let (mut r, mut w) = (
        Reader {
            inner: read,
            buf: Vec::new(),
        },
        Writer(write),
    );
    w.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    w.send(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let settings = loop {
        let f = r.next_within(SOON).await.expect("server SETTINGS");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            break f.payload;
        }
    };
    w.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    (r, w, settings)
}

/// The value of SETTINGS parameter `id` in `payload`.
fn setting(payload: &[u8], id: u16) -> Option<u32> {
    payload.chunks_exact(6).find_map(|p| {
        (u16::from_be_bytes([p[0], p[1]]) == id)
            .then(|| u32::from_be_bytes(p[2..6].try_into().unwrap()))
    })
}

/// Reads frames until stream `id` ends (END_STREAM or RST_STREAM); returns the frame that
/// ended it. Answers the server's PINGs when `ack_pings`.
async fn until_stream_ends(r: &mut Reader, w: &mut Writer, id: u32, ack_pings: bool) -> Frame {
    loop {
        let f = r.next_within(SOON).await.expect("connection open");
        if f.kind == PING && f.flags & ACK == 0 && ack_pings {
            w.ping(true, f.payload[..8].try_into().unwrap())
                .await
                .unwrap();
        }
        if f.stream == id
            && (f.kind == RST_STREAM
                || (f.kind == DATA || f.kind == HEADERS) && f.flags & END_STREAM != 0)
        {
            return f;
        }
    }
}

/// Writes what it is sent to `w`, until the channel closes or a write fails.
fn writer_task(mut w: Writer) -> tokio::sync::mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if w.send(&bytes).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// What the end of a connection looked like: when it closed (from `since`) and the GOAWAY
/// codes received before. The server's PINGs are acknowledged through `acks`, if given.
async fn until_closed(
    mut r: Reader,
    acks: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    since: Instant,
    within: Duration,
) -> (Duration, Vec<u32>) {
    let mut goaways = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let f = tokio::time::timeout_at(deadline, r.next())
            .await
            .unwrap_or_else(|_| panic!("connection not closed within {within:?}"));
        let Some(f) = f else {
            return (since.elapsed(), goaways);
        };
        match (f.kind, &acks) {
            (GOAWAY, _) => goaways.push(f.code()),
            (PING, Some(acks)) if f.flags & ACK == 0 => {
                let _ = acks.send(frame(PING, ACK, 0, &f.payload));
            }
            _ => {}
        }
    }
}

/// Row 3 of issue 23: a gRPC-style client keeps its connection between calls and sends
/// control frames after its last stream (here a WINDOW_UPDATE and PINGs). Before, the sweep
/// took those bytes for a partial request and closed the connection after the header-read
/// timeout, with no GOAWAY. A client that sent only the preface (a gRPC channel connecting
/// ahead of its first call) is idle too: decided so, as Go's HTTP/2 server does.
#[test]
fn an_idle_http2_connection_lives_the_idle_timeout_and_ends_with_a_goaway() {
    let env = [
        ("PODCYCLE_HEADER_READ_TIMEOUT", "1s"),
        ("PODCYCLE_IDLE_TIMEOUT", "4s"),
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let app = child.app;
        // One call, then control frames only, acknowledging the server's PINGs.
        let (mut r, mut w, _) = connect(app).await;
        w.request(1, "GET", "/hello").await.unwrap();
        let end = until_stream_ends(&mut r, &mut w, 1, true).await;
        assert_ne!(end.kind, RST_STREAM, "answered");
        let answered = Instant::now();
        let out = writer_task(w);
        let chatter = out.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = chatter.send(frame(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()));
            // A PING every 500 ms (bounded: 20), as a keepalive would.
            for i in 0..20u8 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if chatter.send(frame(PING, 0, 0, &[i; 8])).is_err() {
                    break;
                }
            }
        });
        // The preface and SETTINGS, then nothing.
        let (r2, w2, _) = connect(app).await;
        let preface_only = tokio::spawn(until_closed(
            r2,
            Some(writer_task(w2)),
            Instant::now(),
            SOON,
        ));
        // A client that never acknowledges the GOAWAY's PING is closed all the same.
        let (mut r3, mut w3, _) = connect(app).await;
        w3.request(1, "GET", "/hello").await.unwrap();
        until_stream_ends(&mut r3, &mut w3, 1, false).await;
        let deaf = tokio::spawn(until_closed(r3, None, Instant::now(), SOON));

        let (took, goaways) = until_closed(r, Some(out), answered, SOON).await;
        println!(
            "idle connection with control frames: closed after {took:?}, GOAWAY codes {goaways:?}"
        );
        assert!(
            took >= Duration::from_millis(3500) && took < Duration::from_secs(8),
            "closed by the 4 s idle timeout, not the 1 s header-read one: {took:?}"
        );
        assert!(
            goaways.contains(&0),
            "a graceful GOAWAY (NO_ERROR) before the close: {goaways:?}"
        );
        let (took, goaways) = preface_only.await.unwrap();
        println!("preface-only connection: closed after {took:?}, GOAWAY codes {goaways:?}");
        assert!(
            took >= Duration::from_millis(3500) && took < Duration::from_secs(8),
            "a preface-only connection is idle, closed after 4 s: {took:?}"
        );
        assert!(goaways.contains(&0), "with a GOAWAY: {goaways:?}");
        let (took, goaways) = deaf.await.unwrap();
        println!("PING-deaf connection: closed after {took:?}, GOAWAY codes {goaways:?}");
        assert!(
            took >= Duration::from_millis(3500) && took < Duration::from_secs(8),
            "a client deaf to PINGs is closed about a second after its GOAWAY: {took:?}"
        );
        assert!(goaways.contains(&0), "with a GOAWAY: {goaways:?}");
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0);
}

/// Row 6 of issue 23: at SIGTERM, one client PINGs every 100 ms and never acknowledges the
/// server's PING; another ignores the GOAWAY and opens a stream every 100 ms. Before, the
/// first held the drain to its deadline (12 s) and the second had every request answered.
#[test]
fn at_sigterm_a_pinging_client_does_not_hold_the_drain_and_one_ignoring_goaway_is_refused() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "12s"),
    ];
    let ((sigterm, pinger, ignorer), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let (mut r, mut w, _) = connect(app).await;
        w.request(1, "GET", "/hello").await.unwrap();
        until_stream_ends(&mut r, &mut w, 1, false).await;
        let pinger = tokio::spawn(async move {
            let pings = tokio::spawn(async move {
                for i in 0..200u8 {
                    if w.ping(false, [i; 8]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut goaway = false;
            let started = Instant::now();
            while let Some(f) = tokio::time::timeout(Duration::from_secs(20), r.next())
                .await
                .expect("bounded")
            {
                goaway |= f.kind == GOAWAY;
            }
            pings.abort();
            (started.elapsed(), goaway)
        });

        let (mut r, mut w, _) = connect(app).await;
        let ignorer = tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let reader = tokio::spawn(async move {
                // (stream, frame kind, RST code, when) for every stream end; GOAWAY time.
                let mut goaway_at = None;
                while let Some(f) = r.next().await {
                    if f.kind == GOAWAY && goaway_at.is_none() {
                        goaway_at = Some(Instant::now());
                    }
                    let ended = f.kind == RST_STREAM
                        || (f.kind == DATA || f.kind == HEADERS) && f.flags & END_STREAM != 0;
                    if f.stream != 0 && ended {
                        let code = (f.kind == RST_STREAM).then(|| f.code());
                        let _ = tx.send((f.stream, code, Instant::now()));
                    }
                }
                goaway_at
            });
            let mut id = 1;
            for _ in 0..150 {
                if w.request(id, "GET", "/hello").await.is_err() {
                    break;
                }
                id += 2;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(w);
            let goaway_at = reader.await.unwrap();
            let mut ends = Vec::new();
            while let Ok(e) = rx.try_recv() {
                ends.push(e);
            }
            (goaway_at, ends)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sigterm = child.signal("TERM");
        child.wait_exit();
        (sigterm, pinger.await.unwrap(), ignorer.await.unwrap())
    });
    assert_eq!(exit.code, 0, "{}", exit.output);
    let took = exit.at - sigterm;
    println!("exited {took:?} after SIGTERM (12 s drain timeout)");
    assert!(
        took < Duration::from_secs(5),
        "neither connection held the 12 s drain: exited {took:?} after SIGTERM"
    );
    let (_, goaway) = pinger;
    assert!(
        goaway,
        "the pinging client was told GOAWAY before the close"
    );
    let (goaway_at, ends) = ignorer;
    let goaway_at = goaway_at.expect("the ignoring client was told GOAWAY");
    // The server refuses from 1 s after its GOAWAY (at its next 250 ms look); slack for a
    // loaded machine.
    let grace = goaway_at + Duration::from_millis(2000);
    let answered_late: Vec<_> = ends
        .iter()
        .filter(|(_, code, at)| code.is_none() && *at > grace)
        .collect();
    let refused = ends
        .iter()
        .filter(|(_, code, _)| *code == Some(REFUSED_STREAM))
        .count();
    println!(
        "ignoring GOAWAY: {} streams ended, {refused} refused (REFUSED_STREAM), {} answered past the grace",
        ends.len(),
        answered_late.len()
    );
    assert!(
        answered_late.is_empty(),
        "no stream answered past the GOAWAY's grace: {answered_late:?}"
    );
    assert!(
        refused >= 1,
        "streams opened past the grace refused: {ends:?}"
    );
}

/// Row 5 of issue 23: 2 connections × 100 streams whose request bodies never come (the
/// audit's 10 × 200, scaled to the limit the server now advertises). Before, every handler
/// stayed in flight until the client left and SIGTERM then exited 4; now each stream is
/// reset once it has waited the minimum body rate's 5 s grace, the connections live on,
/// and SIGTERM exits 0.
#[test]
fn http2_request_bodies_that_never_come_are_reset_per_stream_and_the_connection_lives_on() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "3s"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let app = child.app;
        let mut conns = Vec::new();
        for _ in 0..2 {
            let (r, mut w, settings) = connect(app).await;
            assert_eq!(
                setting(&settings, 0x3),
                Some(100),
                "SETTINGS_MAX_CONCURRENT_STREAMS advertised"
            );
            for i in 0..100 {
                w.open_upload(1 + 2 * i).await.unwrap();
            }
            conns.push((r, w));
        }
        let opened = Instant::now();
        let mut tasks = Vec::new();
        for (mut r, mut w) in conns {
            tasks.push(tokio::spawn(async move {
                // Every stream is reset (a handler that answers its body's error first has
                // its answer sent before the RST_STREAM).
                let mut reset = std::collections::HashMap::new();
                while reset.len() < 100 {
                    let f = r.next_within(Duration::from_secs(15)).await.expect("open");
                    if f.kind == PING && f.flags & ACK == 0 {
                        w.ping(true, f.payload[..8].try_into().unwrap())
                            .await
                            .unwrap();
                    }
                    if f.kind == RST_STREAM {
                        reset.insert(f.stream, f.code());
                    }
                }
                let all_ended = opened.elapsed();
                let resets = reset.len();
                // The connection lives on: a new stream is answered.
                w.request(201, "GET", "/hello").await.unwrap();
                let end = until_stream_ends(&mut r, &mut w, 201, true).await;
                (all_ended, resets, end.kind)
            }));
        }
        for t in tasks {
            let (took, resets, end) = t.await.unwrap();
            println!("100 waiting streams: all reset {took:?} after opening ({resets} RST_STREAM)");
            assert!(
                took >= Duration::from_millis(4500) && took < Duration::from_secs(10),
                "every waiting stream ended after the 5 s grace: {took:?}"
            );
            assert_eq!(resets, 100, "every stream was reset (RST_STREAM)");
            assert_ne!(
                end, RST_STREAM,
                "a new stream on the same connection is answered"
            );
        }
        child.signal("TERM");
    });
    assert_eq!(exit.code, 0, "nothing left in flight at SIGTERM");
}
