//! The chatbot service: settings, routes and handlers, and three ways to run it: with podcycle
//! (the example), and the two baselines the rollout drill compares it with (a plain
//! `axum::serve` that dies on SIGTERM, and `axum::serve(...).with_graceful_shutdown`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::retrieval::{self, Answer, Index};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use podcycle::{Lifecycle, Outcome, Warmup};
use serde::{Deserialize, Serialize};

/// The chatbot's own settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    warmup_delay: Duration,
    knowledge_dir: Option<String>,
    fault_error_rate: f64,
    fault_latency: Duration,
    /// CPU burned per chat request (`CHATBOT_FAULT_CPU`), at most [`MAX_FAULT_CPU`].
    fault_cpu: Duration,
    /// Bytes leaked per chat request (`CHATBOT_FAULT_LEAK`), until [`LEAK_CAP`] in all.
    fault_leak: usize,
    pub(crate) token_delay: Duration,
    max_question_chars: usize,
    pub(crate) max_body_bytes: usize,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }
        fn duration(name: &str, default: Duration) -> Result<Duration, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => humantime::parse_duration(v.trim()).map_err(|_| {
                    format!("invalid {name}={v:?}: expected a duration such as 2s or 500ms")
                }),
            }
        }
        fn number<T: std::str::FromStr>(
            name: &str,
            default: T,
            expected: &str,
        ) -> Result<T, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid {name}={v:?}: expected {expected}")),
            }
        }
        let fault_error_rate: f64 = number(
            "CHATBOT_FAULT_ERROR_RATE",
            0.0,
            "a fraction between 0 and 1",
        )?;
        if !(0.0..=1.0).contains(&fault_error_rate) {
            return Err(format!(
                "invalid CHATBOT_FAULT_ERROR_RATE={fault_error_rate}: expected a fraction between 0 and 1"
            ));
        }
        let fault_cpu = duration("CHATBOT_FAULT_CPU", Duration::ZERO)?;
        if fault_cpu > MAX_FAULT_CPU {
            return Err(format!(
                "invalid CHATBOT_FAULT_CPU={fault_cpu:?}: expected at most {MAX_FAULT_CPU:?} of CPU per request"
            ));
        }
        let fault_leak: usize = number("CHATBOT_FAULT_LEAK", 0, "a number of bytes per request")?;
        if fault_leak > LEAK_CAP {
            return Err(format!(
                "invalid CHATBOT_FAULT_LEAK={fault_leak}: expected at most {LEAK_CAP} bytes per request"
            ));
        }
        Ok(Settings {
            warmup_delay: duration("CHATBOT_WARMUP_DELAY", Duration::from_secs(2))?,
            knowledge_dir: var("CHATBOT_KNOWLEDGE_DIR"),
            fault_error_rate,
            fault_latency: duration("CHATBOT_FAULT_LATENCY", Duration::ZERO)?,
            fault_cpu,
            fault_leak,
            token_delay: duration("CHATBOT_TOKEN_DELAY", Duration::from_millis(30))?,
            max_question_chars: number(
                "CHATBOT_MAX_QUESTION_CHARS",
                2000,
                "a number of characters",
            )?,
            max_body_bytes: number("CHATBOT_MAX_BODY_BYTES", 16 * 1024, "a number of bytes")?,
        })
    }
}

/// The most CPU `CHATBOT_FAULT_CPU` may burn per request.
const MAX_FAULT_CPU: Duration = Duration::from_secs(1);

/// The most `CHATBOT_FAULT_LEAK` keeps in all (256 MiB): past it, requests leak nothing more,
/// so a forgotten setting cannot take the machine's memory.
const LEAK_CAP: usize = 256 << 20;

/// Memory leaked on purpose (`CHATBOT_FAULT_LEAK`): written, so it is resident, and never freed.
#[derive(Debug, Default)]
struct Leak {
    kept: Mutex<Vec<Box<[u8]>>>,
    total: AtomicUsize,
}

impl Leak {
    /// Keeps `bytes` more, unless that would pass `cap` ([`LEAK_CAP`]); returns the total kept.
    fn leak(&self, bytes: usize, cap: usize) -> usize {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.total.load(Ordering::Relaxed);
        if bytes == 0 || total + bytes > cap {
            return total;
        }
        // Non-zero bytes: zeroed allocations may stay unbacked and never count as resident.
        kept.push(vec![0xa5u8; bytes].into_boxed_slice());
        self.total.store(total + bytes, Ordering::Relaxed);
        total + bytes
    }
}

/// Keeps this thread busy until it has used `cpu` of CPU time (measured with the thread's
/// scheduler statistics; wall time where those are not available), and for at most ten times
/// `cpu` of wall time.
fn burn_cpu(cpu: Duration) {
    let wall = Instant::now();
    let start = thread_cpu_time();
    let mut x = 0u64;
    loop {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let spent = match (start, thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall.elapsed(),
        };
        if spent >= cpu || wall.elapsed() >= cpu * 10 {
            return;
        }
    }
}

/// The CPU time this thread has used: the first field of `/proc/thread-self/schedstat`, in
/// nanoseconds. `None` where it cannot be read.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The knowledge base: a podcycle warm-up, or (baselines) loaded before serving.
#[derive(Clone)]
enum Knowledge {
    Warmup(Warmup<Index>),
    Loaded(Arc<Index>),
}

impl Knowledge {
    fn get(&self) -> Option<&Index> {
        match self {
            Knowledge::Warmup(w) => w.get(),
            Knowledge::Loaded(i) => Some(i),
        }
    }
}

/// Shared application state.
#[derive(Clone)]
pub(crate) struct AppState {
    index: Knowledge,
    /// Absent in the baselines: they cannot tell a stream that the server is draining.
    pub(crate) lifecycle: Option<Lifecycle>,
    pub(crate) version: String,
    pub(crate) settings: Arc<Settings>,
    answers: prometheus::IntCounterVec,
    served: Arc<AtomicU64>,
    leak: Arc<Leak>,
}

#[derive(Deserialize)]
struct ChatRequest {
    question: String,
}

#[derive(Serialize)]
struct SourceJson {
    slug: String,
    title: String,
    score: f64,
}

#[derive(Serialize)]
struct ChatResponse {
    answer: String,
    sources: Vec<SourceJson>,
    version: String,
}

/// A JSON error: `{"error": "...", "status": 422}`.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1, "status": self.0.as_u16() });
        (self.0, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let what = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with `content-type: application/json`".to_owned()
            }
            JsonRejection::JsonSyntaxError(_) => format!("malformed JSON: {}", r.body_text()),
            JsonRejection::JsonDataError(_) => format!(
                "the JSON must be an object like {{\"question\": \"...\"}}: {}",
                r.body_text()
            ),
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
            _ => r.body_text(),
        };
        ApiError(status, what)
    }
}

impl AppState {
    pub(crate) fn index(&self) -> Result<&Index, ApiError> {
        // podcycle serves only once every warm-up has succeeded; this is belt and braces.
        self.index.get().ok_or(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "knowledge base is still loading".into(),
        ))
    }

    pub(crate) fn validate(&self, question: &str) -> Result<String, ApiError> {
        let q = question.trim();
        if q.is_empty() {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the question is empty".into(),
            ));
        }
        let n = q.chars().count();
        if n > self.settings.max_question_chars {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the question is too long: {n} characters, at most {}",
                    self.settings.max_question_chars
                ),
            ));
        }
        Ok(q.to_owned())
    }

    /// Injected CPU, memory, latency and errors, for canary demos.
    pub(crate) async fn faults(&self) -> Result<(), ApiError> {
        if !self.settings.fault_cpu.is_zero() {
            burn_cpu(self.settings.fault_cpu);
        }
        if self.settings.fault_leak > 0 {
            self.leak.leak(self.settings.fault_leak, LEAK_CAP);
        }
        if !self.settings.fault_latency.is_zero() {
            tokio::time::sleep(self.settings.fault_latency).await;
        }
        if self.settings.fault_error_rate > 0.0
            && random_fraction() < self.settings.fault_error_rate
        {
            return Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected fault (CHATBOT_FAULT_ERROR_RATE)".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn count(&self, answer: &Answer) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.answers
            .with_label_values(&[if answer.found() { "true" } else { "false" }])
            .inc();
    }
}

/// A fraction in [0, 1) from a per-process SplitMix64 sequence (good enough for fault injection).
fn random_fraction() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

fn sources(answer: &Answer) -> Vec<SourceJson> {
    answer
        .sources
        .iter()
        .map(|s| SourceJson {
            slug: s.slug.clone(),
            title: s.title.clone(),
            score: (s.score * 1000.0).round() / 1000.0,
        })
        .collect()
}

async fn chat(
    State(state): State<AppState>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Json<ChatResponse>, ApiError> {
    let Json(req) = body?;
    let question = state.validate(&req.question)?;
    state.faults().await?;
    let answer = state.index()?.answer(&question, 3);
    state.count(&answer);
    Ok(Json(ChatResponse {
        sources: sources(&answer),
        answer: answer.text,
        version: state.version.clone(),
    }))
}

#[derive(Deserialize)]
struct StreamParams {
    question: String,
}

async fn chat_stream(
    State(state): State<AppState>,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(params) = params.map_err(|r| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected ?question=...: {}", r.body_text()),
        )
    })?;
    let question = state.validate(&params.question)?;
    state.faults().await?;
    let answer = state.index()?.answer(&question, 3);
    state.count(&answer);
    let done = serde_json::json!({
        "sources": sources(&answer),
        "version": state.version,
    })
    .to_string();
    let tokens: Vec<String> = answer
        .text
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    Ok(Sse::new(token_stream(
        tokens,
        done,
        state.settings.token_delay,
        drain_signal(&state),
    ))
    .keep_alive(KeepAlive::default()))
}

/// This stream's own drain signal: staggered over `PODCYCLE_STREAM_CLOSE_SPREAD` after the
/// listener closes, so that the clients of many streams do not all reconnect at once. The
/// baselines have none.
fn drain_signal(
    state: &AppState,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    match &state.lifecycle {
        Some(l) => Box::pin(l.stream_drain()),
        None => Box::pin(std::future::pending()),
    }
}

/// `GET /v1/chat/ws`: a WebSocket session. Each text message is a question; the answer comes
/// back as `{"type":"token","text":...}` messages, then `{"type":"done","sources":[...]}`.
/// When this session's drain signal comes, the answer in progress is finished, then the
/// socket is closed with 1001 (going away): the client reconnects, to another replica.
async fn chat_ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let max = state.settings.max_body_bytes;
    let told = drain_signal(&state);
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|error| tracing::warn!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| ws_session(socket, state, told))
}

/// Why a session ends with a close frame of ours.
const DRAINING: &str = "server draining: reconnect to continue";

async fn ws_session(
    mut socket: WebSocket,
    state: AppState,
    mut told: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = told.as_mut() => {
                close(socket, close_code::AWAY, DRAINING).await;
                return;
            }
            msg = socket.recv() => msg,
        };
        let (code, why) = match msg {
            // The client closed (tungstenite answers its close frame) or went away.
            None | Some(Ok(Message::Close(_))) => return,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(question))) => {
                // Not interrupted by the drain signal: the answer in progress is finished.
                if ws_answer(&mut socket, &state, question.as_str())
                    .await
                    .is_err()
                {
                    tracing::debug!("websocket client went away during an answer");
                    return;
                }
                continue;
            }
            Some(Ok(Message::Binary(_))) => (
                close_code::UNSUPPORTED,
                "binary messages are not supported: send each question as a text message",
            ),
            Some(Err(error)) => {
                let (code, why) = read_error_close(error.into_inner());
                (code, why)
            }
        };
        tracing::warn!(
            code,
            reason = why,
            "closing a websocket session on bad input"
        );
        close(socket, code, why).await;
        return;
    }
}

/// The close code and reason for a failed read: 1009 for a message over the size limit,
/// 1007 for a text message that is not UTF-8, 1002 for any other protocol error.
fn read_error_close(error: axum::BoxError) -> (u16, &'static str) {
    match error.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => (
            close_code::SIZE,
            "message too large: see CHATBOT_MAX_BODY_BYTES",
        ),
        Some(tungstenite::Error::Utf8(_)) => {
            (close_code::INVALID, "text message is not valid UTF-8")
        }
        _ => (close_code::PROTOCOL, "websocket protocol error"),
    }
}

/// Sends a close frame and waits, briefly, for the client's; then drops the socket.
async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// Streams the answer to `question` on `socket`; a bad question gets an error message and
/// the session goes on. `Err` when the client is gone.
async fn ws_answer(socket: &mut WebSocket, state: &AppState, question: &str) -> Result<(), ()> {
    let send = |value: serde_json::Value| Message::Text(value.to_string().into());
    let answer = match state
        .validate(question)
        .and_then(|q| Ok(state.index()?.answer(&q, 3)))
    {
        Ok(answer) => answer,
        Err(ApiError(status, error)) => {
            let msg =
                serde_json::json!({"type": "error", "error": error, "status": status.as_u16()});
            return socket.send(send(msg)).await.map_err(drop);
        }
    };
    state.count(&answer);
    for (i, token) in answer.text.split_inclusive(' ').enumerate() {
        if i > 0 && !state.settings.token_delay.is_zero() {
            tokio::time::sleep(state.settings.token_delay).await;
        }
        let msg = serde_json::json!({"type": "token", "text": token});
        socket.send(send(msg)).await.map_err(drop)?;
    }
    let done = serde_json::json!({
        "type": "done",
        "sources": sources(&answer),
        "version": state.version,
    });
    socket.send(send(done)).await.map_err(drop)
}

/// The answer token by token, then `event: done` with the sources; if this stream's drain
/// signal comes first, a last `event: reconnect` so the client asks again elsewhere.
fn token_stream(
    tokens: Vec<String>,
    done: String,
    every: Duration,
    draining: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    enum Next {
        Token(usize),
        Finished,
    }
    stream::unfold(
        (Next::Token(0), tokens, done, draining),
        move |(next, tokens, done, mut draining)| async move {
            let Next::Token(i) = next else {
                return None;
            };
            if i == tokens.len() {
                let event = Event::default().event("done").data(done.clone());
                return Some((Ok(event), (Next::Finished, tokens, done, draining)));
            }
            tokio::select! {
                biased;
                _ = draining.as_mut() => {
                    let event = Event::default()
                        .event("reconnect")
                        .data("this server is shutting down; ask again to reach another replica");
                    return Some((Ok(event), (Next::Finished, tokens, done, draining)));
                }
                _ = tokio::time::sleep(if i == 0 { Duration::ZERO } else { every }) => {}
            }
            let event = Event::default().data(tokens[i].clone());
            Some((Ok(event), (Next::Token(i + 1), tokens, done, draining)))
        },
    )
}

async fn not_found(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let grpc = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        // A gRPC client calling a service this server does not have.
        let status = tonic::Status::unimplemented(format!("no gRPC service at {}", uri.path()));
        return status.into_http::<axum::body::Body>();
    }
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {method} {}; try POST /v1/chat, GET /v1/chat/stream?question=... or a WebSocket on GET /v1/chat/ws",
            uri.path()
        ),
    )
    .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed for this route".into(),
    )
}

fn load_articles(settings: &Settings) -> Result<Vec<retrieval::Article>, String> {
    match &settings.knowledge_dir {
        Some(dir) => {
            let articles = retrieval::load_dir(dir)?;
            if articles.is_empty() {
                return Err(format!("CHATBOT_KNOWLEDGE_DIR={dir:?} has no .md articles"));
            }
            Ok(articles)
        }
        None => Ok(retrieval::builtin()),
    }
}

/// Which server the chatbot runs as (`CHATBOT_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// podcycle: warm-up-gated probes, propagation delay, drain, metrics (the default).
    Podcycle,
    /// Baseline: `axum::serve`, no signal handling: SIGTERM kills the process.
    Plain,
    /// Baseline: `axum::serve(...).with_graceful_shutdown(SIGTERM)`: stops accepting at once,
    /// drains in-flight requests; readiness never flips.
    Graceful,
}

impl Mode {
    /// Every mode, podcycle first.
    pub const ALL: [Mode; 3] = [Mode::Podcycle, Mode::Plain, Mode::Graceful];

    /// The mode's name, as `CHATBOT_MODE` spells it: `podcycle`, `plain` or `graceful`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Podcycle => "podcycle",
            Mode::Plain => "plain",
            Mode::Graceful => "graceful",
        }
    }

    /// The mode `CHATBOT_MODE` names (`podcycle` when unset), or what is wrong with it.
    pub fn from_env() -> Result<Mode, String> {
        match std::env::var("CHATBOT_MODE") {
            Err(_) => Ok(Mode::Podcycle),
            Ok(value) => Mode::ALL
                .into_iter()
                .find(|mode| mode.name() == value)
                .ok_or_else(|| {
                    format!("invalid CHATBOT_MODE={value:?}: expected podcycle, plain or graceful")
                }),
        }
    }
}

fn answers_metric() -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "chatbot_answers_total",
            "Answers given, by whether the knowledge base had one.",
        ),
        &["found"],
    )
    .expect("valid metric")
}

/// The application router, for any mode.
fn router(state: AppState) -> Router {
    let version =
        HeaderValue::from_str(&state.version).unwrap_or(HeaderValue::from_static("unknown"));
    let max_body = state.settings.max_body_bytes;
    let metrics = state.lifecycle.as_ref().map(|l| l.metrics().layer());
    let grpc = crate::grpc::GrpcChatbot::server(state.clone());
    let app = Router::new()
        .route("/v1/chat", post(chat).fallback(method_not_allowed))
        .route(
            "/v1/chat/stream",
            get(chat_stream).fallback(method_not_allowed),
        )
        .route("/v1/chat/ws", get(chat_ws).fallback(method_not_allowed))
        .route_service(crate::grpc::ROUTE, grpc)
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body));
    let app = match metrics {
        Some(layer) => app.layer(layer),
        None => app,
    };
    app.layer(axum::middleware::map_response(move |mut res: Response| {
        let version = version.clone();
        async move {
            res.headers_mut().insert("x-app-version", version);
            res
        }
    }))
}

/// Runs the chatbot in `mode` until it is told to stop.
pub async fn run(mode: Mode) -> Outcome {
    let settings = match Settings::from_env() {
        Ok(s) => Arc::new(s),
        Err(e) => return Outcome::Failed(format!("chatbot configuration: {e}")),
    };
    match mode {
        Mode::Podcycle => run_podcycle(settings).await,
        Mode::Plain | Mode::Graceful => run_baseline(settings, mode).await,
    }
}

async fn run_podcycle(settings: Arc<Settings>) -> Outcome {
    let lifecycle = match Lifecycle::from_env(env!("CARGO_PKG_VERSION")) {
        Ok(l) => l,
        Err(e) => return e.into(), // the message, exit code 1
    };

    // Warm-ups: readiness (and serving) wait for both.
    let s = settings.clone();
    let index = lifecycle.warmup("knowledge-base", async move {
        tokio::task::spawn_blocking(move || {
            let articles = load_articles(&s)?;
            let index = Index::build(articles);
            tracing::info!(articles = index.len(), "knowledge base indexed");
            Ok::<_, String>(index)
        })
        .await
        .map_err(|e| e.to_string())?
    });
    let delay = settings.warmup_delay;
    lifecycle.warmup("model", async move {
        // Stands in for loading model weights.
        tokio::time::sleep(delay).await;
        Ok::<_, String>(())
    });
    let kb = index.clone();
    lifecycle.readiness_check("knowledge-base-loaded", move || {
        let ok = kb.get().is_some_and(|i| !i.is_empty());
        async move {
            if ok {
                Ok(())
            } else {
                Err("knowledge base not loaded")
            }
        }
    });

    let answers = answers_metric();
    lifecycle
        .metrics()
        .registry()
        .register(Box::new(answers.clone()))
        .expect("registered once");
    let served = Arc::new(AtomicU64::new(0));

    // A background task tracked for shutdown: cancelled after the drain, awaited before exit.
    let token = lifecycle.shutdown_token();
    let counter = served.clone();
    lifecycle.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        while token.run_until_cancelled(tick.tick()).await.is_some() {
            tracing::info!(answers = counter.load(Ordering::Relaxed), "chatbot stats");
        }
        tracing::info!(
            answers = counter.load(Ordering::Relaxed),
            "chatbot stats: final"
        );
    });
    let counter = served.clone();
    lifecycle.on_shutdown("flush-conversation-log", async move {
        tracing::info!(
            answers = counter.load(Ordering::Relaxed),
            "conversation log flushed"
        );
    });

    let state = AppState {
        index: Knowledge::Warmup(index),
        lifecycle: Some(lifecycle.clone()),
        version: lifecycle.version().to_owned(),
        settings,
        answers,
        served,
        leak: Arc::default(),
    };
    lifecycle.serve(router(state)).await
}

/// The baselines: same routes and handlers, none of podcycle's lifecycle. `/readyz` on the
/// admin address answers 200 for as long as the process lives (what a naive health endpoint does).
async fn run_baseline(settings: Arc<Settings>, mode: Mode) -> Outcome {
    let env_addr = |name: &str, default: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| default.to_owned())
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("invalid {name}: {e}"))
    };
    let (addr, admin) = match (
        env_addr("PODCYCLE_ADDR", "0.0.0.0:8080"),
        env_addr("PODCYCLE_ADMIN_ADDR", "0.0.0.0:9090"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Outcome::Failed(e),
    };
    let version = std::env::var("APP_VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").into());
    let s = settings.clone();
    let index = match tokio::task::spawn_blocking(move || load_articles(&s).map(Index::build)).await
    {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return Outcome::Failed(e),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    tokio::time::sleep(settings.warmup_delay).await;
    let state = AppState {
        index: Knowledge::Loaded(Arc::new(index)),
        lifecycle: None,
        version,
        settings,
        answers: answers_metric(),
        served: Arc::new(AtomicU64::new(0)),
        leak: Arc::default(),
    };
    let health = Router::new()
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }));
    let (listener, admin_listener) = match (
        tokio::net::TcpListener::bind(addr).await,
        tokio::net::TcpListener::bind(admin).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Outcome::Failed(format!("bind: {e}")),
    };
    tokio::spawn(async move { axum::serve(admin_listener, health).await });
    tracing::info!(%addr, mode = mode.name(), "baseline chatbot serving");
    let served = axum::serve(listener, router(state));
    let result = if mode == Mode::Graceful {
        served
            .with_graceful_shutdown(async {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                }
            })
            .await
    } else {
        served.await
    };
    match result {
        Ok(()) => Outcome::Drained,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state(settings: Settings) -> AppState {
        AppState {
            index: Knowledge::Loaded(Arc::new(Index::build(retrieval::builtin()))),
            lifecycle: None,
            version: "9.9.9".into(),
            settings: Arc::new(settings),
            answers: answers_metric(),
            served: Arc::new(AtomicU64::new(0)),
            leak: Arc::default(),
        }
    }

    fn settings() -> Settings {
        Settings {
            warmup_delay: Duration::ZERO,
            knowledge_dir: None,
            fault_error_rate: 0.0,
            fault_latency: Duration::ZERO,
            fault_cpu: Duration::ZERO,
            fault_leak: 0,
            token_delay: Duration::ZERO,
            max_question_chars: 200,
            max_body_bytes: 1024,
        }
    }

    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, String, serde_json::Value, String) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = app
            .clone()
            .oneshot(req.body(axum::body::Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let version = res.headers()["x-app-version"].to_str().unwrap().to_owned();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, version, json, text)
    }

    const JSON: Option<&str> = Some("application/json");

    #[tokio::test]
    async fn a_question_gets_an_answer_with_sources_and_the_version() {
        let app = router(state(settings()));
        let (status, version, json, _) = send(
            &app,
            "POST",
            "/v1/chat",
            JSON,
            r#"{"question":"How do I size terminationGracePeriodSeconds?"}"#,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(version, "9.9.9");
        assert_eq!(json["version"], "9.9.9");
        assert!(json["answer"]
            .as_str()
            .unwrap()
            .contains("terminationGracePeriodSeconds"));
        assert_eq!(
            json["sources"][0]["slug"],
            "sizing-termination-grace-period"
        );
    }

    #[tokio::test]
    async fn bad_input_gets_the_right_status_and_a_json_error() {
        let app = router(state(settings()));
        let long = format!(r#"{{"question":"{}"}}"#, "a".repeat(300));
        let huge = format!(r#"{{"question":"{}"}}"#, "a".repeat(5000));
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, u16, &'a str);
        let cases: Vec<Case> = vec![
            (
                "POST",
                "/v1/chat",
                JSON,
                r#"{"question":"#,
                400,
                "malformed JSON",
            ),
            ("POST", "/v1/chat", JSON, "[1,2]", 422, "must be an object"),
            (
                "POST",
                "/v1/chat",
                JSON,
                r#"{"q":"x"}"#,
                422,
                "missing field `question`",
            ),
            (
                "POST",
                "/v1/chat",
                JSON,
                r#"{"question":"   "}"#,
                422,
                "the question is empty",
            ),
            (
                "POST",
                "/v1/chat",
                JSON,
                &long,
                422,
                "too long: 300 characters, at most 200",
            ),
            ("POST", "/v1/chat", JSON, &huge, 413, "too large"),
            (
                "POST",
                "/v1/chat",
                None,
                r#"{"question":"hi"}"#,
                415,
                "content-type",
            ),
            ("GET", "/v1/chat", None, "", 405, "method not allowed"),
            (
                "GET",
                "/v1/chat/stream",
                None,
                "",
                400,
                "expected ?question=",
            ),
            ("GET", "/v1/chat/stream?question=", None, "", 422, "empty"),
            (
                "GET",
                "/admin/../etc/passwd",
                None,
                "",
                404,
                "no route for GET",
            ),
        ];
        for (method, uri, ct, body, want, says) in cases {
            let (status, version, json, text) = send(&app, method, uri, ct, body).await;
            assert_eq!(status.as_u16(), want, "{method} {uri} {body:.40}: {text}");
            assert_eq!(version, "9.9.9");
            assert_eq!(json["status"], want, "{text}");
            assert!(
                json["error"].as_str().unwrap().contains(says),
                "{uri}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn the_stream_sends_tokens_then_a_done_event_with_sources() {
        let app = router(state(settings()));
        let (status, _, _, text) = send(
            &app,
            "GET",
            "/v1/chat/stream?question=How%20do%20I%20size%20terminationGracePeriodSeconds%3F",
            None,
            "",
        )
        .await;
        assert_eq!(status, 200);
        assert!(text.starts_with("data: "), "{text}");
        let done = text
            .split("event: done\ndata: ")
            .nth(1)
            .expect("a done event");
        let json: serde_json::Value = serde_json::from_str(done.trim()).unwrap();
        let slugs: Vec<&str> = json["sources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["slug"].as_str())
            .collect();
        assert!(
            slugs.contains(&"sizing-termination-grace-period"),
            "{slugs:?}"
        );
    }

    #[tokio::test]
    async fn injected_faults_answer_500() {
        let mut s = settings();
        s.fault_error_rate = 1.0;
        let app = router(state(s));
        let (status, _, json, _) =
            send(&app, "POST", "/v1/chat", JSON, r#"{"question":"probes"}"#).await;
        assert_eq!(status, 500);
        assert!(json["error"].as_str().unwrap().contains("injected fault"));
    }

    #[tokio::test]
    async fn injected_cpu_and_leak_are_spent_per_chat_request() {
        let mut s = settings();
        s.fault_cpu = Duration::from_millis(20);
        s.fault_leak = 1 << 20;
        let st = state(s);
        let app = router(st.clone());
        let before = thread_cpu_time();
        let started = Instant::now();
        for _ in 0..3 {
            let (status, _, _, _) =
                send(&app, "POST", "/v1/chat", JSON, r#"{"question":"probes"}"#).await;
            assert_eq!(status, 200);
        }
        // The current-thread test runtime ran the handlers on this thread.
        let spent = match (before, thread_cpu_time()) {
            (Some(a), Some(b)) => b - a,
            _ => started.elapsed(),
        };
        assert!(spent >= Duration::from_millis(60), "{spent:?}");
        assert_eq!(st.leak.total.load(Ordering::Relaxed), 3 << 20);
    }

    #[test]
    fn leak_stops_at_its_cap() {
        let leak = Leak::default();
        assert_eq!(leak.leak(1000, 1010), 1000);
        assert_eq!(leak.leak(11, 1010), 1000, "past the cap: nothing more");
        assert_eq!(leak.leak(10, 1010), 1010);
    }

    #[test]
    fn fault_fraction_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..1000).map(|_| random_fraction()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
