//! The load generator: open-loop at a fixed request rate over a pool of keep-alive HTTP/1.1
//! connections, mixing `POST /v1/chat` with some `GET /v1/chat/stream` server-sent-event
//! streams, and classifying every request.
//!
//! Open loop: request `i` is due at `start + i / rate` whatever happened to the earlier ones,
//! and its latency is measured from that due time (no coordinated omission). When every pooled
//! connection is busy a new one is opened rather than delaying the schedule. Everything is
//! bounded: the number of requests (`rate × max_duration`), the number of connections, each
//! request's time, and the final wait for stragglers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// How a request ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Outcome {
    /// 2xx with a complete body (a stream: ended with `event: done` or `event: reconnect`).
    Ok,
    /// 4xx: the drill sends only valid requests, so this is a failure too.
    Http4xx,
    /// 5xx answered by the application (it carries `x-app-version`).
    App5xx,
    /// 502 from HAProxy: the server closed or reset the connection before a full response.
    Lb502,
    /// 503 from HAProxy: no server available, or the connection to it was refused.
    Lb503,
    /// 504 from HAProxy: the server did not answer in time.
    Lb504,
    /// Another 5xx without `x-app-version`.
    Lb5xx,
    /// The connection to the load balancer was refused.
    Refused,
    /// The connection was reset or closed before the response headers.
    Reset,
    /// No complete response within the request timeout.
    Timeout,
    /// The response started but its body was cut (a stream without its final event).
    Truncated,
    /// The generator itself hit its connection limit (not the server's fault, but reported).
    Overload,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 12] = [
        Outcome::Ok,
        Outcome::Http4xx,
        Outcome::App5xx,
        Outcome::Lb502,
        Outcome::Lb503,
        Outcome::Lb504,
        Outcome::Lb5xx,
        Outcome::Refused,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::Truncated,
        Outcome::Overload,
    ];

    /// The key used in tables and JSON.
    pub fn key(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Http4xx => "http_4xx",
            Outcome::App5xx => "app_5xx",
            Outcome::Lb502 => "lb_502",
            Outcome::Lb503 => "lb_503",
            Outcome::Lb504 => "lb_504",
            Outcome::Lb5xx => "lb_5xx_other",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Truncated => "truncated",
            Outcome::Overload => "generator_overload",
        }
    }

    /// What it means, for the printed report.
    pub fn meaning(self) -> &'static str {
        match self {
            Outcome::Ok => "2xx, complete",
            Outcome::Http4xx => "4xx",
            Outcome::App5xx => "5xx from the app",
            Outcome::Lb502 => "502 from HAProxy (server closed/reset)",
            Outcome::Lb503 => "503 from HAProxy (no server / refused)",
            Outcome::Lb504 => "504 from HAProxy (server timeout)",
            Outcome::Lb5xx => "other 5xx from HAProxy",
            Outcome::Refused => "connection refused",
            Outcome::Reset => "connection reset/closed",
            Outcome::Timeout => "client timeout",
            Outcome::Truncated => "truncated body/stream",
            Outcome::Overload => "generator out of connections",
        }
    }

    /// A request that was sent and did not succeed. [`Outcome::Overload`] is not one: that
    /// request was never sent (it is reported apart, as a broken measurement).
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Overload)
    }
}

/// Which endpoint a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/chat`.
    Chat,
    /// `GET /v1/chat/stream` (server-sent events).
    Stream,
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// `event: done`: the whole answer.
    Done,
    /// `event: reconnect`: the server was draining and said so; a clean end.
    Reconnect,
}

/// One request, classified.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was due, seconds since the drill's clock started.
    pub at: f64,
    /// From due time to the end of the response (or the failure), seconds.
    pub latency: f64,
    /// Which endpoint.
    pub kind: Kind,
    /// How it went.
    pub outcome: Outcome,
    /// HTTP status, 0 when there was none.
    pub status: u16,
    /// `x-app-version` of the response.
    pub version: Option<Box<str>>,
    /// `x-served-by` (HAProxy's `backend/server`) of the response.
    pub served_by: Option<Box<str>>,
    /// For streams: how it ended, if it ended with a final event.
    pub stream_end: Option<StreamEnd>,
    /// For failures: what the client saw.
    pub error: Option<Box<str>>,
}

impl Sample {
    /// When the response ended, seconds since the drill's clock started.
    pub fn end(&self) -> f64 {
        self.at + self.latency
    }
}

/// Load settings.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Where to send the requests (HAProxy's frontend).
    pub target: SocketAddr,
    /// Requests per second.
    pub rate: f64,
    /// Keep-alive connections kept in the pool.
    pub connections: usize,
    /// Hard limit on open connections (beyond it a request is counted as `generator_overload`).
    pub max_connections: usize,
    /// Every `stream_every`-th request is a stream (0: none).
    pub stream_every: u64,
    /// Deadline of a `POST /v1/chat`.
    pub timeout: Duration,
    /// Deadline of a whole stream.
    pub stream_timeout: Duration,
    /// Stop scheduling after this long even if never told to stop.
    pub max_duration: Duration,
}

/// What the generator did, besides the samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadStats {
    /// Requests due (sent or not).
    pub scheduled: u64,
    /// Connections the generator opened.
    pub connections_opened: u64,
    /// Most connections open at once.
    pub max_open_connections: usize,
    /// Pooled connections found closed before a request was sent on them (not failures).
    pub stale_connections: u64,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// Worst delay between a request's due time and its dispatch, seconds.
    pub max_dispatch_lag: f64,
    /// Requests still unfinished when the bounded final wait ended (counted as timeouts).
    pub abandoned: u64,
    /// The long-lived WebSocket sessions alongside the requests.
    pub websockets: crate::websockets::WsStats,
    /// The gRPC clients alongside the requests.
    pub grpc: crate::grpc::GrpcStats,
}

/// A running load; [`Load::stop`] ends it and returns every sample.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<(Vec<Sample>, LoadStats)>>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Load {
    /// Starts scheduling requests now; times are measured against `clock`.
    pub fn start(config: LoadConfig, clock: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(schedule(config, clock, stop.clone()));
        Load {
            stop,
            task: Some(task),
        }
    }

    /// Stops scheduling, waits (bounded) for requests in flight, and returns the samples.
    pub async fn stop(mut self) -> Result<(Vec<Sample>, LoadStats), String> {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task.take().expect("stopped once");
        task.await
            .map_err(|e| format!("load generator panicked: {e}"))
    }
}

/// Questions the chatbot's knowledge base can answer (and a few it cannot).
const QUESTIONS: &[&str] = &[
    "How do I size terminationGracePeriodSeconds?",
    "What does exit code 4 mean?",
    "Why do I get 502 errors during a rolling update?",
    "How long should the shutdown delay be?",
    "What is the difference between liveness and readiness probes?",
    "How do I run a canary with Argo Rollouts?",
    "How does a blue/green switch work?",
    "What does /readyz?verbose show?",
    "How do I drain server-sent event streams?",
    "Why does my pod receive traffic after SIGTERM?",
    "How do I alert on errors during deploys?",
    "What is PODCYCLE_DRAIN_TIMEOUT?",
    "How do I set APP_VERSION from the downward API?",
    "What happens when a warm-up fails?",
    "How do I compare canary and stable error ratios?",
    "Do I need a preStop sleep?",
    "What is maxSurge and maxUnavailable?",
    "How are keep-alive connections closed on shutdown?",
    "Which metrics does podcycle export?",
    "What is the watchdog on /livez?",
    "How do I roll back a bad deploy?",
    "What does podcycle_requests_after_unready_total count?",
    "Can I use HTTP/2 with podcycle?",
    "What is the weather like on Mars?",
];

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Sender = SendRequest<Full<Bytes>>;

/// A pooled connection; dropping it closes the connection and frees its place.
struct Conn {
    sender: Sender,
    pool: Arc<Pool>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.pool.open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Pool {
    target: SocketAddr,
    keep: usize,
    max: usize,
    /// First in, first out, so every pooled connection stays in use.
    idle: Mutex<VecDeque<Conn>>,
    open: AtomicUsize,
    max_open: AtomicUsize,
    opened: AtomicU64,
    stale: AtomicU64,
}

/// Why a connection could not be had.
enum ConnectError {
    Overload,
    Failed(Outcome, String),
}

impl Pool {
    async fn get(self: &Arc<Self>) -> Result<Conn, ConnectError> {
        // Bounded: the idle queue holds at most `keep` connections and only shrinks here.
        loop {
            let next = self.idle.lock().unwrap().pop_front();
            match next {
                // Nothing was sent on it yet, so a connection closed meanwhile is no failure
                // (but it is counted).
                Some(conn) if conn.sender.is_closed() => {
                    self.stale.fetch_add(1, Ordering::Relaxed);
                }
                Some(mut conn) => match conn.sender.ready().await {
                    Ok(()) => return Ok(conn),
                    Err(_) => {
                        self.stale.fetch_add(1, Ordering::Relaxed);
                    }
                },
                None => break,
            }
        }
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        if open > self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(ConnectError::Overload);
        }
        self.max_open.fetch_max(open, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        // From here on the guard gives the place back on every path.
        let stream = match tokio::net::TcpStream::connect(self.target).await {
            Ok(s) => s,
            Err(e) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err(ConnectError::Failed(
                    io_outcome(&e),
                    format!("connect: {e}"),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        match http1::handshake(TokioIo::new(stream)).await {
            Ok((sender, connection)) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(Conn {
                    sender,
                    pool: self.clone(),
                })
            }
            Err(e) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                Err(ConnectError::Failed(
                    Outcome::Reset,
                    format!("handshake: {e}"),
                ))
            }
        }
    }

    fn put(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.keep {
            idle.push_back(conn);
        }
    }
}

fn io_outcome(e: &std::io::Error) -> Outcome {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Outcome::Refused,
        TimedOut => Outcome::Timeout,
        _ => Outcome::Reset,
    }
}

/// The first `std::io::Error` in an error's source chain.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

async fn schedule(
    config: LoadConfig,
    clock: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Sample>, LoadStats) {
    let pool = Arc::new(Pool {
        target: config.target,
        keep: config.connections,
        max: config.max_connections,
        idle: Mutex::new(VecDeque::new()),
        open: AtomicUsize::new(0),
        max_open: AtomicUsize::new(0),
        opened: AtomicU64::new(0),
        stale: AtomicU64::new(0),
    });
    let samples = Arc::new(Mutex::new(Vec::with_capacity(
        (config.rate * 60.0).min(2_000_000.0) as usize,
    )));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let bodies: Vec<Bytes> = QUESTIONS
        .iter()
        .map(|q| Bytes::from(serde_json::json!({ "question": q }).to_string()))
        .collect();
    let paths: Vec<String> = QUESTIONS
        .iter()
        .map(|q| format!("/v1/chat/stream?question={}", encode(q)))
        .collect();
    let config = Arc::new(config);

    let start = Instant::now();
    let limit = (config.rate * config.max_duration.as_secs_f64()).ceil() as u64;
    let mut next: u64 = 0;
    let mut max_lag = 0f64;
    while next < limit && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due = ((now - start).as_secs_f64() * config.rate).floor() as u64 + 1;
        while next < due.min(limit) {
            let i = next;
            next += 1;
            let scheduled = start + Duration::from_secs_f64(i as f64 / config.rate);
            max_lag = max_lag.max(now.saturating_duration_since(scheduled).as_secs_f64());
            let q = (i as usize).wrapping_mul(7) % QUESTIONS.len();
            let stream =
                config.stream_every > 0 && i % config.stream_every == config.stream_every / 2;
            let request = if stream {
                Prepared::Stream(paths[q].clone())
            } else {
                Prepared::Chat(bodies[q].clone())
            };
            let n = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            max_in_flight.fetch_max(n, Ordering::Relaxed);
            let (pool, samples, in_flight, config) = (
                pool.clone(),
                samples.clone(),
                in_flight.clone(),
                config.clone(),
            );
            tokio::spawn(async move {
                let sample = one(&pool, &config, request, scheduled, clock).await;
                samples.lock().unwrap().push(sample);
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Bounded wait for the stragglers.
    let deadline = Instant::now() + config.stream_timeout + Duration::from_secs(2);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let abandoned = in_flight.load(Ordering::Relaxed) as u64;
    pool.idle.lock().unwrap().clear();
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let stats = LoadStats {
        scheduled: next,
        connections_opened: pool.opened.load(Ordering::Relaxed),
        max_open_connections: pool.max_open.load(Ordering::Relaxed),
        stale_connections: pool.stale.load(Ordering::Relaxed),
        max_in_flight: max_in_flight.load(Ordering::Relaxed),
        max_dispatch_lag: max_lag,
        abandoned,
        websockets: Default::default(),
        grpc: Default::default(),
    };
    (samples, stats)
}

enum Prepared {
    Chat(Bytes),
    Stream(String),
}

/// What one exchange produced, before timing is attached.
struct Exchange {
    outcome: Outcome,
    status: u16,
    version: Option<Box<str>>,
    served_by: Option<Box<str>>,
    stream_end: Option<StreamEnd>,
    error: Option<String>,
}

impl Exchange {
    fn failed(outcome: Outcome, status: u16, error: String) -> Exchange {
        Exchange {
            outcome,
            status,
            version: None,
            served_by: None,
            stream_end: None,
            error: Some(error),
        }
    }
}

async fn one(
    pool: &Arc<Pool>,
    config: &LoadConfig,
    request: Prepared,
    scheduled: Instant,
    clock: Instant,
) -> Sample {
    let kind = match request {
        Prepared::Chat(_) => Kind::Chat,
        Prepared::Stream(_) => Kind::Stream,
    };
    let limit = match kind {
        Kind::Chat => config.timeout,
        Kind::Stream => config.stream_timeout,
    };
    let result = tokio::time::timeout_at((scheduled + limit).into(), exchange(pool, request)).await;
    let x = result.unwrap_or_else(|_| {
        Exchange::failed(
            Outcome::Timeout,
            0,
            format!("no complete response within {limit:?}"),
        )
    });
    Sample {
        at: scheduled.saturating_duration_since(clock).as_secs_f64(),
        latency: scheduled.elapsed().as_secs_f64(),
        kind,
        outcome: x.outcome,
        status: x.status,
        version: x.version,
        served_by: x.served_by,
        stream_end: x.stream_end,
        error: x.error.map(String::into_boxed_str),
    }
}

async fn exchange(pool: &Arc<Pool>, request: Prepared) -> Exchange {
    let mut conn = match pool.get().await {
        Ok(c) => c,
        Err(ConnectError::Overload) => {
            return Exchange::failed(
                Outcome::Overload,
                0,
                format!("all {} connections busy", pool.max),
            )
        }
        Err(ConnectError::Failed(o, e)) => return Exchange::failed(o, 0, e),
    };
    let builder = hyper::Request::builder().header("host", "drill.local");
    let (req, kind) = match request {
        Prepared::Chat(body) => (
            builder
                .method("POST")
                .uri("/v1/chat")
                .header("content-type", "application/json")
                .body(Full::new(body)),
            Kind::Chat,
        ),
        Prepared::Stream(path) => (
            builder
                .method("GET")
                .uri(path)
                .header("accept", "text/event-stream")
                .body(Full::new(Bytes::new())),
            Kind::Stream,
        ),
    };
    let req = req.expect("valid request");
    let res = match conn.sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            let outcome = match io_cause(&e) {
                Some(io) => io_outcome(io),
                None => Outcome::Reset,
            };
            return Exchange::failed(outcome, 0, format!("request: {e}"));
        }
    };
    let status = res.status().as_u16();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.to_owned().into_boxed_str())
    };
    let version = header("x-app-version");
    let served_by = header("x-served-by");
    let mut body = res.into_body();
    let mut text: Vec<u8> = Vec::new();
    let mut body_error = None;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                body_error = Some(e);
                break;
            }
        }
    }
    let mut x = Exchange {
        outcome: Outcome::Ok,
        status,
        version,
        served_by,
        stream_end: None,
        error: None,
    };
    x.outcome = match status {
        200..=299 => Outcome::Ok,
        400..=499 => Outcome::Http4xx,
        _ if x.version.is_some() => Outcome::App5xx,
        502 => Outcome::Lb502,
        503 => Outcome::Lb503,
        504 => Outcome::Lb504,
        _ => Outcome::Lb5xx,
    };
    if let Some(e) = body_error {
        x.outcome = Outcome::Truncated;
        x.error = Some(format!("body: {e}"));
        return x;
    }
    if x.outcome != Outcome::Ok {
        x.error = Some(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(160)]).trim()
        ));
    } else {
        match kind {
            Kind::Chat => {
                if !text.ends_with(b"}") {
                    x.outcome = Outcome::Truncated;
                    x.error = Some(format!("incomplete JSON body ({} bytes)", text.len()));
                }
            }
            Kind::Stream => {
                let s = String::from_utf8_lossy(&text);
                x.stream_end = if s.contains("event: done\n") {
                    Some(StreamEnd::Done)
                } else if s.contains("event: reconnect\n") {
                    Some(StreamEnd::Reconnect)
                } else {
                    None
                };
                if x.stream_end.is_none() {
                    x.outcome = Outcome::Truncated;
                    x.error = Some(format!(
                        "stream ended without `event: done` or `event: reconnect` ({} bytes)",
                        text.len()
                    ));
                }
            }
        }
    }
    pool.put(conn);
    x
}
