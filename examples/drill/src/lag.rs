//! The removal-lag drill: an L4 path that pins connections as conntrack does, and a removal
//! that comes a chosen time after SIGTERM, as kube-proxy's, a cloud load balancer's or an
//! ingress controller's does.
//!
//! HAProxy in `mode tcp` stands for kube-proxy: it picks a replica per TCP connection
//! (round-robin) and keeps every established connection on its replica for good; nothing is
//! health-checked. The rollout surges: every new replica is started, readied (its own
//! `/readyz`) and added; then every old replica gets SIGTERM at once, and each is removed from
//! the backend (`disable server`: new connections go elsewhere, established ones stay) `lag`
//! after its SIGTERM. A replica still running at the grace period gets SIGKILL, as from the
//! kubelet.
//!
//! Two kinds of clients run through it, both sending `POST /v1/chat` (never retried: Go's
//! transport and nginx do not retry a non-idempotent request either):
//! - short-lived: a new connection per request, at a steady rate;
//! - pooled: keep-alive connections, each sending after an idle gap; a connection the server
//!   closed (seen closed before use, or `Connection: close`) is re-dialled, as Go's
//!   `http.Transport` does. A request written as the server closes an idle connection fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::haproxy::{command, tail, Slot};
use crate::replicas::{free_port, Replica, ReplicaCommand, ReplicaEnv};
use crate::{Mode, VERSION_A, VERSION_B};

/// What to run.
#[derive(Clone, Debug)]
pub struct LagOptions {
    /// How replicas are started.
    pub replica: ReplicaCommand,
    /// The haproxy executable.
    pub haproxy: PathBuf,
    /// Logs and the HAProxy config.
    pub dir: PathBuf,
    /// The replicas' server.
    pub mode: Mode,
    /// SIGTERM → removal from the backend.
    pub lag: Duration,
    /// Replicas per version.
    pub replicas: usize,
    /// Short-lived clients: new connections (one request each) per second, in total.
    pub short_rate: f64,
    /// Pooled keep-alive connections.
    pub pooled: usize,
    /// Mean idle gap between a pooled connection's requests (uniform in ½..1½ of it).
    pub pooled_gap: Duration,
    /// The pod's `terminationGracePeriodSeconds`: SIGKILL this long after SIGTERM. Also given to
    /// podcycle as `PODCYCLE_GRACE_PERIOD` when `grace_to_podcycle`.
    pub grace: Duration,
    /// Whether the replicas are told the grace period (else podcycle assumes 30 s).
    pub grace_to_podcycle: bool,
    /// `PODCYCLE_SHUTDOWN_DELAY` (podcycle's default: 5 s).
    pub shutdown_delay: Duration,
    /// `PODCYCLE_DRAIN_TIMEOUT` (podcycle's default: 20 s).
    pub drain_timeout: Duration,
    /// `PODCYCLE_SHUTDOWN_QUIET`, when set (`0s`: a fixed delay).
    pub quiet: Option<Duration>,
    /// Steady load before the rollout, and after the last exit.
    pub before: Duration,
    /// See `before`.
    pub after: Duration,
}

impl LagOptions {
    /// podcycle's defaults, 3 replicas, 40 new connections/s and 60 pooled connections with
    /// 1 s gaps, Kubernetes' default 30 s grace period.
    pub fn new(replica: ReplicaCommand, haproxy: PathBuf, dir: PathBuf, lag: Duration) -> Self {
        LagOptions {
            replica,
            haproxy,
            dir,
            mode: Mode::Podcycle,
            lag,
            replicas: 3,
            short_rate: 40.0,
            pooled: 60,
            pooled_gap: Duration::from_secs(1),
            grace: Duration::from_secs(30),
            grace_to_podcycle: false,
            shutdown_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            quiet: None,
            before: Duration::from_secs(2),
            after: Duration::from_secs(2),
        }
    }
}

/// Requests of one kind of client.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientStats {
    /// Requests sent.
    pub sent: u64,
    /// Requests that got no 2xx answer.
    pub failed: u64,
    /// Failures by cause.
    pub causes: BTreeMap<String, u64>,
    /// The first few failures, with their time after the first SIGTERM.
    pub first: Vec<String>,
}

impl ClientStats {
    fn fail(&mut self, cause: &str, at: f64) {
        self.failed += 1;
        *self.causes.entry(cause.to_owned()).or_default() += 1;
        if self.first.len() < 10 {
            self.first.push(format!("{at:+.2}s {cause}"));
        }
    }
}

/// One old replica's shutdown.
#[derive(Clone, Debug, Serialize)]
pub struct LagReplica {
    /// `A1`, ...
    pub name: String,
    /// SIGTERM → exit (or SIGKILL), seconds.
    pub sigterm_to_exit: f64,
    /// `0`, `signal 15`, `killed at the grace period`, ...
    pub exit: String,
    /// From podcycle's log: keep-alive connections idle when the delay ended, closed then.
    pub closed_idle: Option<u64>,
    /// From podcycle's log: how the delay ended (`floor`, `quiet`, or `cap`).
    pub delay_ended: Option<String>,
}

/// What one run saw.
#[derive(Clone, Debug, Serialize)]
pub struct LagReport {
    /// `podcycle`, `plain` or `graceful`.
    pub mode: String,
    /// SIGTERM → removal, seconds.
    pub lag: f64,
    /// The grace period, seconds.
    pub grace: f64,
    /// New connection per request.
    pub short: ClientStats,
    /// Keep-alive POST clients.
    pub pooled: ClientStats,
    /// The old replicas.
    pub replicas: Vec<LagReplica>,
}

impl LagReport {
    /// Failed requests of both kinds.
    pub fn failed(&self) -> u64 {
        self.short.failed + self.pooled.failed
    }

    /// The longest SIGTERM → exit.
    pub fn max_exit(&self) -> f64 {
        self.replicas
            .iter()
            .map(|r| r.sigterm_to_exit)
            .fold(0.0, f64::max)
    }

    /// Connections closed idle at the end of the delay, over the replicas (podcycle only).
    pub fn closed_idle(&self) -> Option<u64> {
        self.replicas.iter().map(|r| r.closed_idle).sum()
    }

    /// One line per run.
    pub fn line(&self) -> String {
        let idle = self
            .closed_idle()
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let ended: Vec<_> = self
            .replicas
            .iter()
            .filter_map(|r| r.delay_ended.clone())
            .collect();
        format!(
            "lag {:>5.1}s grace {:>3.0}s {:<9} failed {:>5} (short {} of {}, pooled {} of {}) \
             SIGTERM->exit max {:>5.2}s  closed idle {idle}  delay ended {ended:?}  exits {:?}  causes {:?}",
            self.lag,
            self.grace,
            self.mode,
            self.failed(),
            self.short.failed,
            self.short.sent,
            self.pooled.failed,
            self.pooled.sent,
            self.max_exit(),
            self.replicas.iter().map(|r| r.exit.as_str()).collect::<Vec<_>>(),
            self.short
                .causes
                .iter()
                .chain(&self.pooled.causes)
                .collect::<Vec<_>>(),
        )
    }
}

/// The HAProxy configuration: one TCP frontend, one TCP backend of `slots` servers in
/// maintenance, no health checks, no retries.
pub fn config_text(socket: &Path, port: u16, slots: usize) -> String {
    let mut text = format!(
        "# Written by the removal-lag drill: L4, connections pinned as conntrack pins them.
global
    stats socket {socket} mode 600 level admin
    stats timeout 10s
    maxconn 8000

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 0
    no option redispatch

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    balance roundrobin
",
        socket = socket.display()
    );
    for i in 1..=slots {
        text.push_str(&format!("    server s{i} 127.0.0.1:1 disabled\n"));
    }
    text
}

/// Runs one removal-lag drill.
pub async fn run(opts: &LagOptions) -> Result<LagReport, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let dir = std::fs::canonicalize(&opts.dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let socket = std::env::temp_dir().join(format!(
        "podcycle-lag-drill-{}-{port}.sock",
        std::process::id()
    ));
    let cfg = dir.join("haproxy-l4.cfg");
    std::fs::write(&cfg, config_text(&socket, port, opts.replicas * 2))
        .map_err(|e| e.to_string())?;
    let log = dir.join("haproxy-l4.log");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut haproxy = tokio::process::Command::new(&opts.haproxy)
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", opts.haproxy.display()))?;
    let started = Instant::now();
    while command(&socket, "show info").await.is_err() {
        if started.elapsed() > Duration::from_secs(10)
            || haproxy.try_wait().ok().flatten().is_some()
        {
            return Err(format!("haproxy did not start: {}", tail(&log, 20)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = drive(
        opts,
        &dir,
        &socket,
        SocketAddr::from(([127, 0, 0, 1], port)),
    )
    .await;
    let _ = haproxy.kill().await;
    let _ = std::fs::remove_file(&socket);
    result
}

async fn set(socket: &Path, line: &str) -> Result<(), String> {
    let out = command(socket, line).await?;
    let out = out.trim();
    if out.is_empty() || out.contains("changed") || out.contains("no need to change") {
        Ok(())
    } else {
        Err(format!("haproxy `{line}`: {out}"))
    }
}

async fn attach(socket: &Path, slot: Slot, app_port: u16) -> Result<(), String> {
    let name = format!("be/s{}", slot.server);
    set(
        socket,
        &format!("set server {name} addr 127.0.0.1 port {app_port}"),
    )
    .await?;
    set(socket, &format!("enable server {name}")).await
}

async fn drive(
    opts: &LagOptions,
    dir: &Path,
    socket: &Path,
    target: SocketAddr,
) -> Result<LagReport, String> {
    let human = |d: Duration| format!("{}ms", d.as_millis());
    let mut extra = vec![("CHATBOT_TOKEN_DELAY".to_owned(), "0ms".to_owned())];
    if let Some(q) = opts.quiet {
        extra.push(("PODCYCLE_SHUTDOWN_QUIET".to_owned(), human(q)));
    }
    if opts.grace_to_podcycle {
        extra.push(("PODCYCLE_GRACE_PERIOD".to_owned(), human(opts.grace)));
    }
    let env = ReplicaEnv {
        mode: opts.mode,
        warmup_delay: Duration::from_millis(200),
        shutdown_delay: opts.shutdown_delay,
        drain_timeout: opts.drain_timeout,
        token_delay: Duration::ZERO,
        stream_close_spread: None,
        extra,
    };
    let clock = Instant::now();
    let now = || clock.elapsed().as_secs_f64();
    let slot = |i: usize| Slot {
        backend: "be",
        server: i,
    };
    let mut old = Vec::new();
    for i in 1..=opts.replicas {
        let name = format!("A{i}");
        let mut r = Replica::spawn(&opts.replica, &env, dir, &name, VERSION_A, slot(i), now())?;
        r.wait_ready(Duration::from_secs(30)).await?;
        attach(socket, r.slot, r.record.app_port).await?;
        old.push(r);
    }
    // Failures are timed from the first SIGTERM (set below).
    let sigterm_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let short = tokio::spawn(short_lived(
        target,
        opts.short_rate,
        running.clone(),
        sigterm_at.clone(),
    ));
    let pooled: Vec<_> = (0..opts.pooled)
        .map(|i| {
            tokio::spawn(pooled_client(
                target,
                opts.pooled_gap,
                i as u64,
                running.clone(),
                sigterm_at.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(opts.before).await;
    let mut new = Vec::new();
    for i in 1..=opts.replicas {
        let name = format!("B{i}");
        let s = slot(opts.replicas + i);
        let mut r = Replica::spawn(&opts.replica, &env, dir, &name, VERSION_B, s, now())?;
        r.wait_ready(Duration::from_secs(30)).await?;
        attach(socket, r.slot, r.record.app_port).await?;
        new.push(r);
    }
    *sigterm_at.lock().unwrap() = Some(Instant::now());
    let downs: Vec<_> = old
        .into_iter()
        .map(|mut r| {
            let socket = socket.to_owned();
            let (lag, grace) = (opts.lag, opts.grace);
            tokio::spawn(async move {
                let sent = Instant::now();
                r.sigterm().await?;
                let remove = tokio::spawn({
                    let name = format!("be/s{}", r.slot.server);
                    async move {
                        tokio::time::sleep_until((sent + lag).into()).await;
                        set(&socket, &format!("disable server {name}")).await
                    }
                });
                let (_, exit) = r.wait_exit(grace).await;
                let took = sent.elapsed().as_secs_f64();
                remove.await.map_err(|e| e.to_string())??;
                let log = std::fs::read_to_string(r.log_path()).unwrap_or_default();
                Ok::<_, String>(LagReplica {
                    name: r.name().to_owned(),
                    sigterm_to_exit: took,
                    exit,
                    closed_idle: field(&log, "closed_idle=").and_then(|v| v.parse().ok()),
                    delay_ended: field(&log, "ended=")
                        .map(|v| v.trim_matches('"').to_owned())
                        .or_else(|| log.contains("at its cap").then(|| "cap".to_owned())),
                })
            })
        })
        .collect();
    let mut replicas = Vec::new();
    for d in downs {
        replicas.push(d.await.map_err(|e| e.to_string())??);
    }
    tokio::time::sleep(opts.after).await;
    running.store(false, Ordering::Relaxed);
    let short = short.await.map_err(|e| e.to_string())?;
    let mut pooled_stats = ClientStats::default();
    for p in pooled {
        let s = p.await.map_err(|e| e.to_string())?;
        pooled_stats.sent += s.sent;
        pooled_stats.failed += s.failed;
        for (k, v) in s.causes {
            *pooled_stats.causes.entry(k).or_default() += v;
        }
        for f in s.first {
            if pooled_stats.first.len() < 10 {
                pooled_stats.first.push(f);
            }
        }
    }
    for mut r in new {
        let _ = r.sigterm().await;
        let _ = r.wait_exit(Duration::from_secs(2)).await;
    }
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(LagReport {
        mode: opts.mode.name().to_owned(),
        lag: opts.lag.as_secs_f64(),
        grace: opts.grace.as_secs_f64(),
        short,
        pooled: pooled_stats,
        replicas,
    })
}

/// The value after the last `key` in `log`, up to a space.
fn field<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    let at = log.rfind(key)? + key.len();
    log[at..].split_whitespace().next()
}

type Sender = SendRequest<Full<Bytes>>;

async fn dial(target: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| cause_of_io(&e))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

fn cause_of_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => format!("connect: {}", e.kind()),
    }
}

/// One POST on `sender`: `Ok(closes)` for a 2xx answer read whole, else the cause.
async fn post(sender: &mut Sender, n: u64) -> Result<bool, String> {
    sender
        .ready()
        .await
        .map_err(|_| "connection closed before the request".to_owned())?;
    let body = format!("{{\"question\":\"How long should the shutdown delay be? ({n})\"}}");
    let req = hyper::Request::post("/v1/chat")
        .header("host", "drill.local")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| {
            if e.is_incomplete_message() {
                "connection closed under the request (EOF)".to_owned()
            } else {
                format!("request: {e}")
            }
        })?;
    let status = res.status();
    let closes = res
        .headers()
        .get(hyper::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    res.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    if status.is_success() {
        Ok(closes)
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

fn since(sigterm: &Mutex<Option<Instant>>) -> f64 {
    sigterm
        .lock()
        .unwrap()
        .map_or(f64::NAN, |t| t.elapsed().as_secs_f64())
}

/// A new connection per request, `rate` per second, until `running` turns false.
async fn short_lived(
    target: SocketAddr,
    rate: f64,
    running: Arc<AtomicBool>,
    sigterm: Arc<Mutex<Option<Instant>>>,
) -> ClientStats {
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    // Bounded: at most 10 minutes' worth of requests.
    while running.load(Ordering::Relaxed) && n < (rate * 600.0) as u64 {
        tick.tick().await;
        n += 1;
        let sigterm = sigterm.clone();
        tasks.spawn(async move {
            let result = match dial(target).await {
                Ok(mut s) => post(&mut s, n).await.map(|_| ()),
                Err(e) => Err(e),
            };
            // Timed when it failed, not when it is collected.
            result.map_err(|cause| (cause, since(&sigterm)))
        });
    }
    let mut stats = ClientStats::default();
    while let Some(r) = tasks.join_next().await {
        stats.sent += 1;
        match r {
            Ok(Ok(())) => {}
            Ok(Err((cause, at))) => stats.fail(&cause, at),
            Err(e) => stats.fail(&format!("client task: {e}"), f64::NAN),
        }
    }
    stats
}

/// One pooled keep-alive connection sending a POST after each idle gap; re-dialled when the
/// server closed it (seen before use, or `Connection: close`), never retried on a failure.
async fn pooled_client(
    target: SocketAddr,
    gap: Duration,
    seed: u64,
    running: Arc<AtomicBool>,
    sigterm: Arc<Mutex<Option<Instant>>>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut conn: Option<Sender> = None;
    // A small xorshift per client: gaps uniform in ½..1½ of `gap`, different per client.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) && n < 100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let frac = (x >> 11) as f64 / (1u64 << 53) as f64;
        tokio::time::sleep(gap.mul_f64(0.5 + frac)).await;
        n += 1;
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            conn = None;
        }
        let sender = match conn.as_mut() {
            Some(s) => s,
            None => match dial(target).await {
                Ok(s) => conn.insert(s),
                Err(cause) => {
                    stats.sent += 1;
                    stats.fail(&cause, since(&sigterm));
                    continue;
                }
            },
        };
        stats.sent += 1;
        match post(sender, n).await {
            Ok(false) => {}
            Ok(true) => conn = None,
            Err(cause) => {
                stats.fail(&cause, since(&sigterm));
                conn = None;
            }
        }
    }
    stats
}
