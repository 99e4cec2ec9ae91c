//! gRPC load through the load balancer's HTTP/2 frontend, alongside the request load: each
//! client holds one long-lived HTTP/2 connection and sends the chatbot's `Ask` (unary) and,
//! every few calls, `AskStream` (server streaming) on it at a steady pace, several calls in
//! flight at once. The load balancer spreads the calls of one connection over the replicas.
//!
//! A call is OK when it ends with status `OK`; a stream also must end with its final message
//! (`done`, or `reconnect` from a draining replica). Every other end is a failure: any other
//! status (the drill sends only valid questions, so the app means to return none), a reset
//! (tonic reports it as `UNKNOWN` or `INTERNAL`), `UNAVAILABLE`, a stream cut before its final
//! message, or no answer within the timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatbot::grpc::pb::chatbot_client::ChatbotClient;
use chatbot::grpc::pb::AskRequest;
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

/// gRPC calls, as the clients saw them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GrpcStats {
    /// Calls started (unary and streaming).
    pub sent: u64,
    /// Calls that ended with `OK` (streams: and their final message).
    pub ok: u64,
    /// Calls that ended any other way (see the module docs).
    pub failed: u64,
    /// Of `sent`: server-streaming calls.
    pub streams: u64,
    /// Streams that ended with their final message and `OK`.
    pub streams_final: u64,
    /// Of those: the final message said `reconnect` (the replica was draining).
    pub streams_reconnect: u64,
    /// Calls not started because the client already had its most calls in flight (the
    /// replicas or the machine could not keep up): not failures, but the pace was not held.
    pub skipped: u64,
    /// Channels the clients opened (tonic reconnects a channel itself when its connection ends).
    pub connections: u64,
    /// The first few failures, by status and message.
    pub errors: Vec<String>,
}

/// Running gRPC clients; [`GrpcLoad::stop`] ends them and returns what they saw.
#[derive(Debug)]
pub struct GrpcLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<GrpcStats>>,
}

/// How each client paces its calls.
#[derive(Clone, Copy, Debug)]
pub struct GrpcPace {
    /// Time between two calls of one client.
    pub every: Duration,
    /// Every n-th call is an `AskStream` (0: none).
    pub stream_every: u64,
    /// At most this many calls in flight per client.
    pub max_in_flight: usize,
    /// A unary call's deadline; a stream gets four times as long.
    pub timeout: Duration,
}

const QUESTIONS: &[&str] = &[
    "How do I size terminationGracePeriodSeconds?",
    "What does exit code 4 mean?",
    "Why do I get 502 errors during a rolling update?",
    "How do readiness probes work?",
];

impl GrpcLoad {
    /// Starts `clients` clients to `target` (an HTTP/2 cleartext address), each on its own
    /// connection.
    pub fn start(target: SocketAddr, clients: usize, pace: GrpcPace) -> GrpcLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|i| tokio::spawn(client(target, pace, stop.clone(), i)))
            .collect();
        GrpcLoad { stop, tasks }
    }

    /// Stops sending, waits (bounded) for the calls in flight, and adds up what they saw.
    pub async fn stop(self) -> GrpcStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = GrpcStats::default();
        for task in self.tasks {
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(60), task).await else {
                total.failed += 1;
                note(&mut total, "a client did not finish within 60 s".into());
                continue;
            };
            total.sent += s.sent;
            total.ok += s.ok;
            total.failed += s.failed;
            total.streams += s.streams;
            total.streams_final += s.streams_final;
            total.streams_reconnect += s.streams_reconnect;
            total.skipped += s.skipped;
            total.connections += s.connections;
            for e in s.errors {
                if total.errors.len() < 20 {
                    total.errors.push(e);
                }
            }
        }
        total
    }
}

/// How one call ended.
enum End {
    Ok,
    StreamFinal { reconnect: bool },
    Failed(String),
}

async fn connect(target: SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))
}

async fn client(
    target: SocketAddr,
    pace: GrpcPace,
    stop: Arc<AtomicBool>,
    index: usize,
) -> GrpcStats {
    let mut s = GrpcStats::default();
    // Bounded: the drill stops every client; this is a backstop.
    let give_up = Instant::now() + Duration::from_secs(900);
    let mut calls = JoinSet::new();
    let mut n = index as u64;
    let mut channel: Option<Channel> = None;
    let mut tick = tokio::time::interval(pace.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
        tokio::select! {
            _ = tick.tick() => {}
            Some(done) = calls.join_next(), if !calls.is_empty() => {
                count(&mut s, done);
                continue;
            }
        }
        let ch = match &channel {
            Some(ch) => ch.clone(),
            None => match connect(target).await {
                Ok(ch) => {
                    s.connections += 1;
                    channel = Some(ch.clone());
                    ch
                }
                Err(e) => {
                    // Not a call: counted once per attempt, then retried on the next tick.
                    s.failed += 1;
                    note(&mut s, e);
                    continue;
                }
            },
        };
        if calls.len() >= pace.max_in_flight {
            s.skipped += 1;
            continue;
        }
        n += 1;
        s.sent += 1;
        let question = QUESTIONS[n as usize % QUESTIONS.len()].to_owned();
        let stream = pace.stream_every > 0 && n.is_multiple_of(pace.stream_every);
        if stream {
            s.streams += 1;
        }
        calls.spawn(call(ch, question, stream, pace.timeout));
    }
    // Bounded by each call's own timeout.
    while let Some(done) = calls.join_next().await {
        count(&mut s, done);
    }
    s
}

fn count(s: &mut GrpcStats, done: Result<End, tokio::task::JoinError>) {
    match done {
        Ok(End::Ok) => s.ok += 1,
        Ok(End::StreamFinal { reconnect }) => {
            s.ok += 1;
            s.streams_final += 1;
            s.streams_reconnect += u64::from(reconnect);
        }
        Ok(End::Failed(e)) => {
            s.failed += 1;
            note(s, e);
        }
        Err(e) => {
            s.failed += 1;
            note(s, format!("call task: {e}"));
        }
    }
}

async fn call(ch: Channel, question: String, stream: bool, timeout: Duration) -> End {
    let mut client = ChatbotClient::new(ch);
    let req = AskRequest { question };
    if !stream {
        return match tokio::time::timeout(timeout, client.ask(req)).await {
            Ok(Ok(_)) => End::Ok,
            Ok(Err(status)) => {
                End::Failed(format!("Ask: {:?}: {}", status.code(), status.message()))
            }
            Err(_) => End::Failed(format!("Ask: no answer within {timeout:?}")),
        };
    }
    let streamed = async {
        let mut chunks = client
            .ask_stream(req)
            .await
            .map_err(|status| format!("AskStream: {:?}: {}", status.code(), status.message()))?
            .into_inner();
        let mut last = None;
        loop {
            match chunks.message().await {
                Ok(Some(chunk)) => {
                    if chunk.done || chunk.reconnect {
                        last = Some(chunk.reconnect);
                    }
                }
                // The stream ended with OK.
                Ok(None) => {
                    return last
                        .map(|reconnect| End::StreamFinal { reconnect })
                        .ok_or_else(|| "AskStream: OK without its final message".to_owned())
                }
                Err(status) => {
                    return Err(format!(
                        "AskStream: {:?} after {}: {}",
                        status.code(),
                        if last.is_some() {
                            "the final message"
                        } else {
                            "some tokens"
                        },
                        status.message()
                    ))
                }
            }
        }
    };
    match tokio::time::timeout(timeout * 4, streamed).await {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => End::Failed(e),
        Err(_) => End::Failed(format!("AskStream: not ended within {:?}", timeout * 4)),
    }
}

fn note(stats: &mut GrpcStats, error: String) {
    if stats.errors.len() < 5 {
        stats.errors.push(error);
    }
}
