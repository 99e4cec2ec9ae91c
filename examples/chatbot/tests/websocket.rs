//! The chatbot's WebSocket, `GET /v1/chat/ws`, against the real binary in a child process:
//! answers stream as messages ending with the sources; at SIGTERM the answer in progress is
//! finished, then the session is closed with 1001; bad input gets the right close code and
//! the server goes on serving.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SOON: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The chatbot binary, started with `env`; its application address, read from its log.
struct Chatbot {
    child: tokio::process::Child,
    addr: String,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Chatbot {
    async fn start(env: &[(&str, &str)]) -> Chatbot {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot"));
        cmd.env("PODCYCLE_ADDR", "127.0.0.1:0")
            .env("PODCYCLE_ADMIN_ADDR", "127.0.0.1:0")
            .env("CHATBOT_WARMUP_DELAY", "0s")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the chatbot binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, mut log) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        // The address, then the serving phase: until the warm-ups end, the listener answers
        // 503 at once.
        let addr = tokio::time::timeout(SOON, async {
            let mut addr = None;
            loop {
                let line = log.recv().await.expect("the chatbot exited before serving");
                if line.contains("application listener bound") {
                    let rest = line.split("addr=").nth(1).expect("addr=").trim();
                    addr = Some(rest.split_whitespace().next().unwrap().to_owned());
                }
                if line.contains("phase=\"serving\"") {
                    break addr.expect("bound before serving");
                }
            }
        })
        .await
        .expect("the chatbot serves soon");
        Chatbot { child, addr, log }
    }

    async fn connect(&self) -> Ws {
        tokio_tungstenite::connect_async(format!("ws://{}/v1/chat/ws", self.addr))
            .await
            .expect("websocket handshake")
            .0
    }

    fn term(&self) -> Instant {
        let sent = Instant::now();
        let pid = self.child.id().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        sent
    }

    async fn exit_code(mut self) -> (i32, Vec<String>) {
        let status = tokio::time::timeout(SOON, self.child.wait())
            .await
            .expect("exits soon")
            .unwrap();
        let mut log = Vec::new();
        while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(1), self.log.recv()).await
        {
            log.push(l);
        }
        (status.code().unwrap_or(-1), log)
    }
}

/// The next message that is not a ping or pong.
async fn next(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(SOON, ws.next())
            .await
            .expect("a message soon")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => return m,
            other => panic!("the session ended without a close frame: {other:?}"),
        }
    }
}

/// Reads one answer: token messages, then the done message (returned, as JSON).
async fn answer(ws: &mut Ws) -> (String, serde_json::Value) {
    let mut text = String::new();
    loop {
        let m = next(ws).await;
        let Message::Text(t) = m else {
            panic!("expected a text message, got {m:?}")
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        match v["type"].as_str() {
            Some("token") => text.push_str(v["text"].as_str().unwrap()),
            Some("done") => return (text, v),
            _ => panic!("unexpected message {v}"),
        }
    }
}

async fn close_code(ws: &mut Ws) -> (CloseCode, String) {
    match next(ws).await {
        Message::Close(Some(frame)) => (frame.code, frame.reason.as_str().to_owned()),
        m => panic!("expected a close frame, got {m:?}"),
    }
}

#[tokio::test]
async fn an_answer_in_progress_at_sigterm_is_finished_then_the_session_closes_with_1001() {
    let bot = Chatbot::start(&[
        ("CHATBOT_TOKEN_DELAY", "40ms"),
        ("PODCYCLE_SHUTDOWN_DELAY", "200ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "8s"),
        ("PODCYCLE_STREAM_CLOSE_SPREAD", "500ms"),
    ])
    .await;
    let mut ws = bot.connect().await;
    ws.send(Message::text(
        "How do I size terminationGracePeriodSeconds?",
    ))
    .await
    .unwrap();
    let (text, done) = answer(&mut ws).await;
    assert!(text.contains("terminationGracePeriodSeconds"), "{text}");
    let slugs = done["sources"].to_string();
    assert!(slugs.contains("sizing-termination-grace-period"), "{slugs}");

    // A second question; SIGTERM once its answer is under way.
    ws.send(Message::text("why do I get 502 during a deploy"))
        .await
        .unwrap();
    let first = next(&mut ws).await;
    assert!(first.to_text().unwrap().contains("\"token\""), "{first:?}");
    let sent = bot.term();
    let (rest, done) = answer(&mut ws).await;
    assert!(!rest.is_empty());
    assert!(
        done["sources"].is_array(),
        "the answer was finished: {done}"
    );
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Away, "{reason}");
    assert!(reason.contains("reconnect"), "{reason}");
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "closed before the drain deadline"
    );
    drop(ws);
    let (code, log) = bot.exit_code().await;
    assert_eq!(code, 0, "{}", log.join("\n"));
}

#[tokio::test]
async fn bad_input_gets_its_close_code_and_the_server_goes_on() {
    let bot = Chatbot::start(&[
        ("CHATBOT_TOKEN_DELAY", "0s"),
        ("CHATBOT_MAX_BODY_BYTES", "1024"),
        ("PODCYCLE_SHUTDOWN_DELAY", "0s"),
        ("PODCYCLE_DRAIN_TIMEOUT", "4s"),
    ])
    .await;

    let mut ws = bot.connect().await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Unsupported, "binary: 1003, {reason}");

    let mut ws = bot.connect().await;
    ws.send(Message::text("a".repeat(4096))).await.unwrap();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Size, "oversized: 1009, {reason}");

    let mut ws = bot.connect().await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x80], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Invalid, "invalid UTF-8: 1007, {reason}");

    // An empty question is an error message; the session goes on.
    let mut ws = bot.connect().await;
    ws.send(Message::text("   ")).await.unwrap();
    let m = next(&mut ws).await;
    assert!(m.to_text().unwrap().contains("empty"), "{m:?}");
    ws.send(Message::text("what does exit code 4 mean"))
        .await
        .unwrap();
    let (text, _) = answer(&mut ws).await;
    assert!(!text.is_empty());
    ws.close(None).await.unwrap();

    bot.term();
    let (code, log) = bot.exit_code().await;
    let log = log.join("\n");
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
