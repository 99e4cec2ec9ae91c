//! Long-lived WebSocket sessions through the load balancer, alongside the request load: each
//! session sends a question to `GET /v1/chat/ws` every few hundred milliseconds and reads its
//! answer; when the server closes the session it reconnects at once. A close frame 1001 (going
//! away, sent by a draining podcycle replica) is a clean end; anything else (no close frame, a
//! reset, 1006) is abnormal: a failure. The reconnect times give the peak reconnect rate the
//! remaining replicas see.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// WebSocket sessions, as the clients saw them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WsStats {
    /// Sessions opened (first connections and reconnections).
    pub sessions: u64,
    /// Sessions the server ended with close 1001 (going away): clean.
    pub closed_going_away: u64,
    /// Sessions the client ended itself when the load stopped (close 1000): clean.
    pub closed_by_client: u64,
    /// Sessions ended without a close frame, by a reset, or with another code: failures.
    pub abnormal: u64,
    /// Connection or handshake attempts that failed (retried after 100 ms): failures.
    pub connect_failures: u64,
    /// Answers received in full (ending with their sources).
    pub answers: u64,
    /// Most reconnections in any 100 ms, after a server closed sessions.
    pub peak_reconnects_per_100ms: u64,
    /// The first few abnormal ends, for the report.
    pub errors: Vec<String>,
}

impl WsStats {
    /// Sessions that ended badly or could not start.
    pub fn failures(&self) -> u64 {
        self.abnormal + self.connect_failures
    }
}

/// Running sessions; [`WsLoad::stop`] ends them and returns what they saw.
#[derive(Debug)]
pub struct WsLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Session>>,
}

/// What one session task saw over its reconnections.
#[derive(Debug, Default)]
struct Session {
    stats: WsStats,
    reconnects: Vec<f64>,
}

impl WsLoad {
    /// Starts `sessions` sessions to `target`, each asking a question every `every`.
    pub fn start(target: SocketAddr, sessions: usize, every: Duration, clock: Instant) -> WsLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..sessions)
            .map(|i| tokio::spawn(session(target, every, clock, stop.clone(), i)))
            .collect();
        WsLoad { stop, tasks }
    }

    /// Ends every session (close 1000), bounded, and adds up what they saw.
    pub async fn stop(self) -> WsStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = WsStats::default();
        let mut reconnects = Vec::new();
        for task in self.tasks {
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), task).await else {
                total.abnormal += 1;
                continue;
            };
            let s: Session = s;
            total.sessions += s.stats.sessions;
            total.closed_going_away += s.stats.closed_going_away;
            total.closed_by_client += s.stats.closed_by_client;
            total.abnormal += s.stats.abnormal;
            total.connect_failures += s.stats.connect_failures;
            total.answers += s.stats.answers;
            for e in s.stats.errors {
                if total.errors.len() < 20 {
                    total.errors.push(e);
                }
            }
            reconnects.extend(s.reconnects);
        }
        total.peak_reconnects_per_100ms = peak_per_100ms(&reconnects);
        total
    }
}

/// The most times in any 100 ms bucket.
fn peak_per_100ms(times: &[f64]) -> u64 {
    let mut buckets = std::collections::HashMap::<u64, u64>::new();
    for t in times {
        *buckets.entry((t * 10.0) as u64).or_default() += 1;
    }
    buckets.values().copied().max().unwrap_or(0)
}

const QUESTIONS: &[&str] = &[
    "How do I size terminationGracePeriodSeconds?",
    "What does exit code 4 mean?",
    "Why do I get 502 errors during a rolling update?",
    "How do I drain WebSockets?",
];

async fn session(
    target: SocketAddr,
    every: Duration,
    clock: Instant,
    stop: Arc<AtomicBool>,
    index: usize,
) -> Session {
    let mut s = Session::default();
    let url = format!("ws://{target}/v1/chat/ws");
    let mut closed_by_server = false;
    let mut asked = index;
    // Bounded: the drill stops every session; this is a backstop.
    let give_up = Instant::now() + Duration::from_secs(900);
    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(&url),
        )
        .await;
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                s.stats.connect_failures += 1;
                note(&mut s.stats, format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                s.stats.connect_failures += 1;
                note(&mut s.stats, "connect: timed out".into());
                continue;
            }
        };
        if closed_by_server {
            s.reconnects.push(clock.elapsed().as_secs_f64());
        }
        s.stats.sessions += 1;
        let mut tick = tokio::time::interval(every);
        let mut waiting = false;
        let end = loop {
            tokio::select! {
                _ = tick.tick() => {
                    if stop.load(Ordering::Relaxed) {
                        let _ = ws.close(None).await;
                        break End::Client;
                    }
                    if !waiting {
                        asked += 1;
                        let q = QUESTIONS[asked % QUESTIONS.len()];
                        if let Err(e) = ws.send(Message::text(q)).await {
                            break End::Abnormal(format!("send: {e}"));
                        }
                        waiting = true;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if t.as_str().contains("\"type\":\"done\"") {
                            s.stats.answers += 1;
                            waiting = false;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => match frame {
                        Some(f) if f.code == CloseCode::Away => break End::Away,
                        other => break End::Abnormal(format!("closed with {other:?}")),
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break End::Abnormal(format!("read: {e}")),
                    None => break End::Abnormal("ended without a close frame".into()),
                }
            }
        };
        match end {
            End::Away => {
                s.stats.closed_going_away += 1;
                closed_by_server = true;
                // Complete the closing handshake (bounded), then reconnect at once.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
            End::Client => {
                s.stats.closed_by_client += 1;
                return s;
            }
            End::Abnormal(e) => {
                s.stats.abnormal += 1;
                closed_by_server = true;
                note(&mut s.stats, e);
            }
        }
    }
    s
}

enum End {
    Away,
    Client,
    Abnormal(String),
}

fn note(stats: &mut WsStats, error: String) {
    if stats.errors.len() < 5 {
        stats.errors.push(error);
    }
}
