//! Throughput on loopback of a minimal axum handler, `GET /hello/{name}`, served three ways:
//! bare `axum::serve`, the full podcycle stack (`lifecycle.serve(app)` with
//! `.layer(lifecycle.metrics().layer())`: in-flight tracking for the drain plus metrics), and
//! `axum-prometheus` (its layer and a `/metrics` route, as its README sets it up).
//!
//! ```sh
//! apt-get install -y wrk            # else the in-repo load generator is used
//! cargo bench --bench load
//! LOAD_SECS=5 LOAD_ROUNDS=9 cargo bench --bench load
//! ```
//!
//! Each server is this binary started again (`--load-server KIND`) under `taskset -c 0`, on a
//! runtime with ONE tokio worker thread; the load generator (`wrk -t1`, or this binary with
//! `--load-client`, a closed-loop hyper client on a current-thread runtime) runs under
//! `taskset -c 1`. Runs are interleaved (A B C A B C ...) against long-lived servers, so the
//! resident memory after each run shows whether memory grows with requests served.
//!
//! Environment (defaults finish in about 2 minutes): `LOAD_SECS` (2) per run, `LOAD_ROUNDS` (15;
//! many short interleaved runs pair each server's run with bare axum's under the same conditions),
//! `LOAD_WARMUP_SECS` (2, per server, not reported), `LOAD_CONNS` (64 keep-alive connections),
//! `LOAD_SERVERS` (`bare,podcycle,axum-prometheus`; also `podcycle-routing`: the full podcycle
//! stack with the route named by a `podcycle::routing::get` handler instead of the metrics
//! layer, `podcycle-native`: `podcycle` with `PODCYCLE_NATIVE_HISTOGRAMS` on,
//! `podcycle-traced`: `podcycle-native` with requests traced (`LOAD_TRACE_SAMPLING`, default 1:
//! every request gets a trace id and an exemplar; no `tracing` subscriber listens, so no span),
//! `podcycle-admission` and `podcycle-adaptive`: the full stack with admission control on, a
//! fixed limit the load never reaches and the adaptive limit, `podcycle-no-metrics`: podcycle's
//! serving stack naming no routes (nothing recorded), `axum-podcycle-layer`: `axum::serve` with
//! podcycle's metrics layer, `axum-noop-layer` and `podcycle-noop-layer`: a `Router::layer`
//! that does nothing, i.e. what any layer costs inside axum's router; `tonic-bare` and
//! `tonic-podcycle`: unary gRPC, `grpc.health.v1.Health/Check` served by tonic's own server and
//! as an axum route under `lifecycle.serve` with the metrics layer, loaded by an in-repo tonic
//! client with `LOAD_CONNS` calls in flight over 4 HTTP/2 connections and compared with
//! `tonic-bare`), `LOAD_CLIENT` (`wrk` or `builtin`; `wrk`
//! when installed), `LOAD_SERVER_CPU` (0), `LOAD_CLIENT_CPU` (1).
//! Everything stays on 127.0.0.1; every run is bounded in time, and servers exit when this
//! process goes away (their stdin closes) or after a hard time limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;

const SERVER_FLAG: &str = "--load-server";
const CLIENT_FLAG: &str = "--load-client";
/// Servers run by default.
const DEFAULT_KINDS: [&str; 3] = ["bare", "podcycle", "axum-prometheus"];
/// Every server kind; the others split podcycle's cost between its serving stack (in-flight
/// tracking, polite close), its metrics, and what any `Router::layer` costs.
const KINDS: [&str; 14] = [
    "bare",
    "podcycle",
    "podcycle-routing",
    "podcycle-native",
    "podcycle-traced",
    "podcycle-admission",
    "podcycle-adaptive",
    "axum-prometheus",
    "podcycle-no-metrics",
    "axum-podcycle-layer",
    "axum-noop-layer",
    "podcycle-noop-layer",
    "tonic-bare",
    "tonic-podcycle",
];

/// Whether a server kind speaks gRPC (unary `grpc.health.v1.Health/Check`, compared with
/// `tonic-bare`, loaded by the in-repo gRPC client).
fn is_grpc(kind: &str) -> bool {
    kind.starts_with("tonic")
}
const PATH: &str = "/hello/world";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == SERVER_FLAG) {
        let kind = args.get(i + 1).map_or("", String::as_str);
        let max_secs: u64 = args.get(i + 2).and_then(|s| s.parse().ok()).unwrap_or(600);
        server(kind, Duration::from_secs(max_secs));
    } else if let Some(i) = args.iter().position(|a| a == CLIENT_FLAG) {
        let addr: SocketAddr = args[i + 1].parse().expect("client address");
        let conns: usize = args[i + 2].parse().expect("client connections");
        let secs: f64 = args[i + 3].parse().expect("client seconds");
        if args.get(i + 4).is_some_and(|a| a == "grpc") {
            grpc_client(addr, conns, Duration::from_secs_f64(secs));
        } else {
            client(addr, conns, Duration::from_secs_f64(secs));
        }
    } else {
        orchestrate();
    }
}

// ---------------------------------------------------------------------------------------------
// Server side (a child process).

async fn hello(Path(name): Path<String>) -> String {
    format!("Hello, {name}!")
}

fn announce(app: SocketAddr, metrics: Option<String>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY {app} {}", metrics.as_deref().unwrap_or("-"));
    let _ = out.flush();
}

fn server(kind: &str, max: Duration) {
    // Bounded: exit when the orchestrator goes away (stdin closes) or after `max`.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let name = kind.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(max);
        eprintln!("load server {name}: time limit reached, exiting");
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = Router::new().route("/hello/{name}", get(hello));
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
        match kind {
            "bare" => {
                let listener = tokio::net::TcpListener::bind(loopback).await.expect("bind");
                announce(listener.local_addr().expect("addr"), None);
                axum::serve(listener, app).await.expect("serve");
            }
            "podcycle"
            | "podcycle-routing"
            | "podcycle-native"
            | "podcycle-traced"
            | "podcycle-no-metrics"
            | "podcycle-noop-layer"
            | "podcycle-admission"
            | "podcycle-adaptive" => {
                let admission = match kind {
                    // Admission control on, a limit the load never reaches: its cost under
                    // capacity, nothing shed.
                    "podcycle-admission" => podcycle::Admission::Fixed(100_000),
                    "podcycle-adaptive" => podcycle::Admission::Adaptive,
                    _ => podcycle::Admission::Off,
                };
                let lifecycle = podcycle::Lifecycle::new(
                    podcycle::Config::default()
                        .addr(loopback)
                        .admin_addr(Some(loopback))
                        .native_histograms(matches!(kind, "podcycle-native" | "podcycle-traced"))
                        .trace_sampling(if kind == "podcycle-traced" {
                            trace_sampling()
                        } else {
                            0.0
                        })
                        .admission(admission),
                )
                .expect("lifecycle");
                let app = match kind {
                    "podcycle" | "podcycle-native" | "podcycle-traced" | "podcycle-admission"
                    | "podcycle-adaptive" => app.layer(lifecycle.metrics().layer()),
                    // The route named by its handler: no `Router::layer`.
                    "podcycle-routing" => {
                        Router::new().route("/hello/{name}", podcycle::routing::get(hello))
                    }
                    "podcycle-noop-layer" => app.layer(tower::layer::util::Identity::new()),
                    _ => app,
                };
                let lc = lifecycle.clone();
                tokio::spawn(async move {
                    lc.reached(podcycle::Phase::Serving).await;
                    let metrics = lc.admin_addr().map(|a| format!("{a}/metrics"));
                    announce(lc.app_addr().expect("app listener bound"), metrics);
                });
                let outcome = lifecycle.serve(app).await;
                eprintln!("load server {kind}: {outcome:?}");
            }
            "axum-podcycle-layer" => {
                let lifecycle = podcycle::Lifecycle::new(
                    podcycle::Config::default()
                        .addr(loopback)
                        .admin_addr(Some(loopback)),
                )
                .expect("lifecycle");
                let app = app.layer(lifecycle.metrics().layer());
                let listener = tokio::net::TcpListener::bind(loopback).await.expect("bind");
                let metrics = lifecycle.admin_addr().map(|a| format!("{a}/metrics"));
                announce(listener.local_addr().expect("addr"), metrics);
                axum::serve(listener, app).await.expect("serve");
            }
            "axum-noop-layer" => {
                // What any `Router::layer` costs, before the layer does anything.
                let app = app.layer(tower::layer::util::Identity::new());
                let listener = tokio::net::TcpListener::bind(loopback).await.expect("bind");
                announce(listener.local_addr().expect("addr"), None);
                axum::serve(listener, app).await.expect("serve");
            }
            "axum-prometheus" => {
                let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
                let app = app
                    .route("/metrics", get(move || async move { handle.render() }))
                    .layer(layer);
                let listener = tokio::net::TcpListener::bind(loopback).await.expect("bind");
                let addr = listener.local_addr().expect("addr");
                announce(addr, Some(format!("{addr}/metrics")));
                axum::serve(listener, app).await.expect("serve");
            }
            "tonic-bare" => {
                // tonic's own server (hyper, HTTP/2), no lifecycle and no metrics; TCP_NODELAY
                // on each connection, as podcycle sets it (tonic's own setting does not apply to
                // an incoming stream).
                use tokio_stream::StreamExt as _;
                let (_reporter, health) = tonic_health::server::health_reporter();
                let listener = tokio::net::TcpListener::bind(loopback).await.expect("bind");
                announce(listener.local_addr().expect("addr"), None);
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
                    s.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                });
                tonic::transport::Server::builder()
                    .add_service(health)
                    .serve_with_incoming(incoming)
                    .await
                    .expect("serve");
            }
            "tonic-podcycle" => {
                // The same tonic service as an axum route under `lifecycle.serve`, with metrics.
                let (_reporter, health) = tonic_health::server::health_reporter();
                let lifecycle = podcycle::Lifecycle::new(
                    podcycle::Config::default()
                        .addr(loopback)
                        .admin_addr(Some(loopback)),
                )
                .expect("lifecycle");
                let app = Router::new()
                    .route_service("/grpc.health.v1.Health/{*rest}", health)
                    .layer(lifecycle.metrics().layer());
                let lc = lifecycle.clone();
                tokio::spawn(async move {
                    lc.reached(podcycle::Phase::Serving).await;
                    let metrics = lc.admin_addr().map(|a| format!("{a}/metrics"));
                    announce(lc.app_addr().expect("app listener bound"), metrics);
                });
                let outcome = lifecycle.serve(app).await;
                eprintln!("load server {kind}: {outcome:?}");
            }
            other => panic!("unknown server kind {other:?}; expected one of {KINDS:?}"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// In-repo load generator (when wrk is missing): closed loop, N keep-alive HTTP/1.1 connections
// on a current-thread runtime. Prints `DONE <requests> <errors> <seconds>`.

fn client(addr: SocketAddr, conns: usize, duration: Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (ok, errors, took) = rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(connection_loop(addr, deadline)))
            .collect();
        let (mut ok, mut errors) = (0u64, 0u64);
        for t in tasks {
            let (o, e) = t.await.unwrap_or((0, 1));
            ok += o;
            errors += e;
        }
        (ok, errors, start.elapsed())
    });
    println!("DONE {ok} {errors} {}", took.as_secs_f64());
}

async fn connection_loop(addr: SocketAddr, deadline: tokio::time::Instant) -> (u64, u64) {
    use http_body_util::{BodyExt, Empty};
    let (mut ok, mut errors) = (0u64, 0u64);
    // Bounded: every iteration either completes a request or counts an error and pauses.
    while tokio::time::Instant::now() < deadline {
        let Ok(Ok(stream)) =
            tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await
        else {
            errors += 1;
            break;
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while tokio::time::Instant::now() < deadline {
            let req = http::Request::get(PATH)
                .header(http::header::HOST, "127.0.0.1")
                .body(Empty::<bytes::Bytes>::new())
                .expect("request");
            let sent = tokio::time::timeout_at(deadline, async {
                let res = sender.send_request(req).await?;
                let status = res.status();
                res.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            })
            .await;
            match sent {
                Ok(Ok(status)) if status.is_success() => ok += 1,
                Ok(Ok(_)) => errors += 1,
                Ok(Err(_)) => {
                    errors += 1;
                    break; // reconnect
                }
                Err(_) => break, // deadline: the request in flight is not counted
            }
        }
    }
    (ok, errors)
}

/// The gRPC load generator: `calls` unary `grpc.health.v1.Health/Check` calls in flight at
/// once, over 4 HTTP/2 connections, closed loop, on a current-thread runtime. Prints
/// `DONE <calls> <errors> <seconds>`.
fn grpc_client(addr: SocketAddr, calls: usize, duration: Duration) {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (ok, errors, took) = rt.block_on(async move {
        let mut channels = Vec::new();
        for _ in 0..4 {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect");
            channels.push(channel);
        }
        let start = tokio::time::Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = (0..calls)
            .map(|i| {
                let mut client = HealthClient::new(channels[i % channels.len()].clone());
                tokio::spawn(async move {
                    let (mut ok, mut errors) = (0u64, 0u64);
                    // Bounded by the deadline: every call completes, fails, or is cut by it.
                    while tokio::time::Instant::now() < deadline {
                        let call = client.check(HealthCheckRequest::default());
                        match tokio::time::timeout_at(deadline, call).await {
                            Ok(Ok(_)) => ok += 1,
                            Ok(Err(_)) => errors += 1,
                            Err(_) => break,
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        let (mut ok, mut errors) = (0u64, 0u64);
        for t in tasks {
            let (o, e) = t.await.unwrap_or((0, 1));
            ok += o;
            errors += e;
        }
        (ok, errors, start.elapsed())
    });
    println!("DONE {ok} {errors} {}", took.as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// Orchestrator.

struct Settings {
    secs: f64,
    rounds: usize,
    warmup_secs: f64,
    conns: usize,
    servers: Vec<String>,
    wrk: bool,
    server_cpu: String,
    client_cpu: String,
    taskset: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("invalid {name}={v:?}")),
        Err(_) => default,
    }
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Settings {
    fn from_env() -> Settings {
        let have_wrk = have("wrk");
        let wrk = match std::env::var("LOAD_CLIENT").as_deref() {
            Ok("builtin") => false,
            Ok("wrk") => {
                assert!(
                    have_wrk,
                    "LOAD_CLIENT=wrk but wrk is not installed (apt-get install -y wrk)"
                );
                true
            }
            Ok(other) => panic!("invalid LOAD_CLIENT={other:?}: expected wrk or builtin"),
            Err(_) => {
                if !have_wrk {
                    eprintln!("NOTE: wrk is not installed (apt-get install -y wrk); using the in-repo load generator (closed-loop hyper client)");
                }
                have_wrk
            }
        };
        let servers: String = env_or("LOAD_SERVERS", DEFAULT_KINDS.join(","));
        let servers: Vec<String> = servers.split(',').map(|s| s.trim().to_owned()).collect();
        for s in &servers {
            assert!(
                KINDS.contains(&s.as_str()),
                "invalid LOAD_SERVERS entry {s:?}: expected some of {KINDS:?}"
            );
        }
        let taskset = have("taskset");
        if !taskset {
            eprintln!("WARNING: taskset is missing (util-linux): server and load generator are NOT pinned");
        }
        Settings {
            secs: env_or("LOAD_SECS", 2.0f64).clamp(1.0, 120.0),
            rounds: env_or("LOAD_ROUNDS", 15usize).clamp(1, 100),
            warmup_secs: env_or("LOAD_WARMUP_SECS", 2.0f64).clamp(0.0, 60.0),
            conns: env_or("LOAD_CONNS", 64usize).clamp(1, 1024),
            servers,
            wrk,
            server_cpu: env_or("LOAD_SERVER_CPU", "0".to_owned()),
            client_cpu: env_or("LOAD_CLIENT_CPU", "1".to_owned()),
            taskset,
        }
    }

    /// `program args...`, pinned to `cpu` when taskset exists.
    fn pinned(&self, cpu: &str, program: &str) -> Command {
        if self.taskset {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, program]);
            c
        } else {
            Command::new(program)
        }
    }

    /// An upper bound on the whole benchmark, used as the servers' own time limit.
    fn total_secs(&self) -> u64 {
        let per_server = self.warmup_secs + self.secs * self.rounds as f64;
        (per_server * self.servers.len() as f64 * 1.5) as u64 + 120
    }
}

/// A server child process; killed when dropped.
struct Server {
    kind: String,
    child: Child,
    addr: SocketAddr,
    metrics: Option<String>,
    served: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(settings: &Settings, kind: &str) -> Server {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = settings
            .pinned(&settings.server_cpu, &exe.to_string_lossy())
            .args([SERVER_FLAG, kind, &settings.total_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server");
        let stdout = child.stdout.take().expect("server stdout");
        let line = read_line_within(stdout, Duration::from_secs(30));
        let mut server = Server {
            kind: kind.to_owned(),
            child,
            addr: "127.0.0.1:0".parse().expect("address"),
            metrics: None,
            served: 0,
        };
        let line = line.unwrap_or_else(|| panic!("server {kind} did not start within 30 s"));
        let mut words = line.split_whitespace().skip(1);
        server.addr = words
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("server {kind}: bad ready line {line:?}"));
        server.metrics = words.next().filter(|m| *m != "-").map(str::to_owned);
        server
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// Requests to `/hello/{name}` the server's own metrics recorded.
    fn recorded(&self) -> Option<u64> {
        let url = self.metrics.as_deref()?;
        let (addr, path) = url.split_once('/')?;
        if matches!(
            self.kind.as_str(),
            "podcycle-no-metrics" | "podcycle-noop-layer"
        ) {
            return None;
        }
        let text = http_get(addr.parse().ok()?, &format!("/{path}"))?;
        let (prefix, route) = match self.kind.as_str() {
            "podcycle"
            | "podcycle-routing"
            | "podcycle-native"
            | "podcycle-traced"
            | "axum-podcycle-layer"
            | "podcycle-admission"
            | "podcycle-adaptive" => (
                "http_server_request_duration_seconds_count{",
                "http_route=\"/hello/{name}\"",
            ),
            "tonic-podcycle" => (
                "http_server_request_duration_seconds_count{",
                "http_route=\"/grpc.health.v1.Health/Check\"",
            ),
            _ => ("axum_http_requests_total{", "endpoint=\"/hello/{name}\""),
        };
        Some(
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(route))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        )
    }
}

fn read_line_within(stdout: ChildStdout, limit: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep the pipe open (and drained) for as long as the server lives.
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    rx.recv_timeout(limit)
        .ok()
        .filter(|l| l.starts_with("READY "))
}

/// A one-shot HTTP/1.0 GET on loopback, bounded by socket timeouts.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// One load run.
struct Run {
    requests: u64,
    errors: u64,
    rps: f64,
    /// Share of the run the load generator spent on a CPU, and waiting for one.
    generator: (f64, f64),
}

/// Runs the load generator against `server` for `secs`, bounded by a hard deadline.
fn load(settings: &Settings, server: &Server, secs: f64) -> Run {
    let wrk = settings.wrk && !is_grpc(&server.kind);
    let mut cmd = if wrk {
        let mut c = settings.pinned(&settings.client_cpu, "wrk");
        c.args([
            "-t1".to_owned(),
            format!("-c{}", settings.conns),
            format!("-d{}s", secs.ceil() as u64),
            "--timeout".to_owned(),
            "2s".to_owned(),
            format!("http://{}{PATH}", server.addr),
        ]);
        c
    } else {
        let exe = std::env::current_exe().expect("current exe");
        let mut c = settings.pinned(&settings.client_cpu, &exe.to_string_lossy());
        c.args([
            CLIENT_FLAG.to_owned(),
            server.addr.to_string(),
            settings.conns.to_string(),
            secs.to_string(),
        ]);
        if is_grpc(&server.kind) {
            c.arg("grpc");
        }
        c
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the load generator");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut out);
        let _ = tx.send(out);
    });
    // Whether the load generator itself got its CPU, sampled inside the run.
    let window = (secs - 0.6).max(0.1);
    std::thread::sleep(Duration::from_millis(300));
    let s0 = sched_ns(child.id());
    std::thread::sleep(Duration::from_secs_f64(window));
    let s1 = sched_ns(child.id());
    let generator = (
        s1.0.saturating_sub(s0.0) as f64 / 1e9 / window,
        s1.1.saturating_sub(s0.1) as f64 / 1e9 / window,
    );
    let limit = Duration::from_secs_f64(secs.ceil() + 15.0);
    let out = rx.recv_timeout(limit);
    let _ = child.kill();
    let _ = child.wait();
    let out = out.unwrap_or_else(|_| panic!("load generator exceeded {limit:?}"));
    let mut run = if wrk {
        parse_wrk(&out)
    } else {
        let mut w = out
            .lines()
            .find_map(|l| l.strip_prefix("DONE "))
            .unwrap_or_else(|| panic!("load generator output: {out}"))
            .split_whitespace();
        let requests: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let errors: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let took: f64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(secs);
        Run {
            requests,
            errors,
            rps: requests as f64 / took,
            generator: (0.0, 0.0),
        }
    };
    run.generator = generator;
    run
}

fn parse_wrk(out: &str) -> Run {
    let number_after = |key: &str| -> Option<f64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("unexpected wrk output:\n{out}"));
    let rps = number_after("Requests/sec:").unwrap_or_else(|| panic!("wrk output:\n{out}"));
    let non_2xx = number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket_errors: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |rest| {
            rest.split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        });
    Run {
        requests,
        errors: non_2xx + socket_errors,
        rps,
        generator: (0.0, 0.0),
    }
}

/// The `q` quantile (0..=1), interpolated between the closest ranks.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Time the server's threads spent on a CPU and waiting for one, in ns (from schedstat).
fn sched_ns(pid: u32) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return total;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        total.0 += f.next().unwrap_or(0);
        total.1 += f.next().unwrap_or(0);
    }
    total
}

/// Ticks the hypervisor stole from this machine's CPUs, and all ticks (from /proc/stat).
fn steal_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
    (f.get(7).copied().unwrap_or(0), f.iter().take(8).sum())
}

/// One measured run, as reported.
struct Measured {
    round: usize,
    server: usize,
    rps: f64,
    /// Share of the run the server spent on a CPU, and waiting for one (runnable, preempted).
    busy: f64,
    waiting: f64,
    /// Requests per second of server CPU time: throughput normalized for CPU stolen by others.
    per_cpu_s: f64,
    generator: (f64, f64),
    /// Share of the machine's CPU time the hypervisor took during the run.
    steal: f64,
    rss: (f64, f64),
    errors: u64,
}

fn orchestrate() {
    let s = Settings::from_env();
    let load_before = loadavg();
    let generator = if s.wrk {
        format!("wrk -t1 -c{}", s.conns)
    } else {
        format!("in-repo hyper client, {} connections", s.conns)
    };
    eprintln!(
        "load: {} rounds x {} s per server ({} s warm-up), {generator}; servers on CPU {}, load generator on CPU {}; load average {}",
        s.rounds, s.secs, s.warmup_secs, s.server_cpu, s.client_cpu, load_before
    );
    let mut servers: Vec<Server> = s.servers.iter().map(|k| Server::start(&s, k)).collect();
    let idle_rss: Vec<f64> = servers.iter().map(Server::rss_mb).collect();
    if s.warmup_secs > 0.0 {
        for server in &mut servers {
            let run = load(&s, server, s.warmup_secs);
            server.served += run.requests;
        }
    }
    let warm_rss: Vec<f64> = servers.iter().map(Server::rss_mb).collect();

    let mut runs: Vec<Measured> = Vec::new();
    for round in 1..=s.rounds {
        for (i, server) in servers.iter_mut().enumerate() {
            let rss_before = server.rss_mb();
            let (cpu0, wait0) = sched_ns(server.child.id());
            let steal0 = steal_ticks();
            let started = std::time::Instant::now();
            let run = load(&s, server, s.secs);
            let wall = started.elapsed().as_secs_f64();
            let (cpu1, wait1) = sched_ns(server.child.id());
            let steal1 = steal_ticks();
            let rss_after = server.rss_mb();
            server.served += run.requests;
            let cpu_s = (cpu1.saturating_sub(cpu0)) as f64 / 1e9;
            let m = Measured {
                round,
                server: i,
                rps: run.rps,
                busy: cpu_s / wall,
                waiting: (wait1.saturating_sub(wait0)) as f64 / 1e9 / wall,
                per_cpu_s: run.requests as f64 / cpu_s.max(1e-9),
                generator: run.generator,
                steal: steal1.0.saturating_sub(steal0.0) as f64
                    / (steal1.1.saturating_sub(steal0.1)).max(1) as f64,
                rss: (rss_before, rss_after),
                errors: run.errors,
            };
            eprintln!(
                "round {round} {:<20} {:>7.0} req/s  server on CPU {:>3.0}%, waiting {:>3.0}%  generator on CPU {:>3.0}%, waiting {:>3.0}%  steal {:>3.0}%  {:>7.0} req per CPU-s  RSS {:.1} -> {:.1} MB  errors {}",
                server.kind,
                m.rps,
                m.busy * 100.0,
                m.waiting * 100.0,
                m.generator.0 * 100.0,
                m.generator.1 * 100.0,
                m.steal * 100.0,
                m.per_cpu_s,
                m.rss.0,
                m.rss.1,
                m.errors
            );
            runs.push(m);
        }
    }
    let end_rss: Vec<f64> = servers.iter().map(Server::rss_mb).collect();
    let recorded: Vec<Option<u64>> = servers.iter().map(Server::recorded).collect();
    let load_after = loadavg();
    report(
        &s,
        &generator,
        &servers,
        &runs,
        [&idle_rss, &warm_rss, &end_rss],
        &recorded,
        (&load_before, &load_after),
    );
    drop(servers);
}

/// Whether nothing else took the CPUs during the run: neither the server nor the load
/// generator waited for a CPU more than 5% of the time, and the hypervisor stole less than 5%.
fn undisturbed(r: &Measured) -> bool {
    r.waiting < DISTURBED && r.generator.1 < DISTURBED && r.steal < DISTURBED
}

const DISTURBED: f64 = 0.05;

/// Undisturbed runs when there are at least 3 (per server, or per round pair), else all.
fn select(runs: Vec<&Measured>, ok: impl Fn(&Measured) -> bool) -> (Vec<&Measured>, bool) {
    let clean: Vec<&Measured> = runs.iter().copied().filter(|r| ok(r)).collect();
    if clean.len() >= 3 {
        (clean, true)
    } else {
        (runs, false)
    }
}

/// Median over rounds of `rps / bare's rps in the same round` (or, with `per_cpu`, of
/// requests per server CPU-second: what a request costs, which CPU steal does not inflate).
fn ratio_vs_bare(runs: &[Measured], bare: Option<usize>, i: usize, per_cpu: bool) -> String {
    let Some(b) = bare else {
        return "-".into();
    };
    let base = |r: &Measured| runs.iter().find(|x| x.server == b && x.round == r.round);
    let mine: Vec<&Measured> = runs.iter().filter(|r| r.server == i).collect();
    let (chosen, _) = select(mine, |r| undisturbed(r) && base(r).is_some_and(undisturbed));
    let ratios: Vec<f64> = chosen
        .iter()
        .filter_map(|r| {
            let b = base(r)?;
            Some(if per_cpu {
                r.per_cpu_s / b.per_cpu_s
            } else {
                r.rps / b.rps
            })
        })
        .collect();
    if ratios.len() < 4 {
        return format!("{:.2}x", median(&ratios));
    }
    format!(
        "{:.2}x ({:.2}–{:.2})",
        median(&ratios),
        quantile(&ratios, 0.25),
        quantile(&ratios, 0.75)
    )
}

fn report(
    s: &Settings,
    generator: &str,
    servers: &[Server],
    runs: &[Measured],
    [idle_rss, warm_rss, end_rss]: [&Vec<f64>; 3],
    recorded: &[Option<u64>],
    (load_before, load_after): (&str, &str),
) {
    let bare = s.servers.iter().position(|k| k == "bare");
    let tonic_bare = s.servers.iter().position(|k| k == "tonic-bare");
    println!();
    println!(
        "## Load: `GET /hello/{{name}}` on loopback, one tokio worker (CPU {}), {generator} (CPU {}), {} interleaved rounds x {} s",
        s.server_cpu, s.client_cpu, s.rounds, s.secs
    );
    println!();
    println!(
        "CPUs: {} · load average (1/5/15 min) before: {load_before}, after: {load_after}. \
         A run is disturbed (†) when the server or the load generator waited for a CPU more \
         than {:.0}% of the time (schedstat), or the hypervisor stole as much (/proc/stat); medians and ratios use the undisturbed runs when \
         there are at least 3, else all runs. The ratio is the median (and interquartile range) \
         of per-round ratios against bare axum, of throughput and of requests per second of server CPU time (which CPU steal does not inflate).",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        DISTURBED * 100.0
    );
    println!();
    println!("| server | median req/s | vs bare axum (p25–p75) | req per server CPU-s vs bare (p25–p75) | runs used | RSS idle → warm → end (MB) | requests served | recorded by its metrics | errors |");
    println!("|---|---:|---:|---:|---:|---|---:|---:|---:|");
    for (i, server) in servers.iter().enumerate() {
        let mine: Vec<&Measured> = runs.iter().filter(|r| r.server == i).collect();
        let total = mine.len();
        let (chosen, clean) = select(mine, undisturbed);
        let rps: Vec<f64> = chosen.iter().map(|r| r.rps).collect();
        // gRPC servers are compared with bare tonic, HTTP ones with bare axum.
        let bare = if is_grpc(&server.kind) {
            tonic_bare
        } else {
            bare
        };
        println!(
            "| {} | {:.0} | {} | {} | {}/{total}{} | {:.1} → {:.1} → {:.1} | {} | {} | {} |",
            server.kind,
            median(&rps),
            ratio_vs_bare(runs, bare, i, false),
            ratio_vs_bare(runs, bare, i, true),
            chosen.len(),
            if clean { "" } else { " (machine busy)" },
            idle_rss[i],
            warm_rss[i],
            end_rss[i],
            server.served,
            recorded[i].map_or_else(|| "-".into(), |r| r.to_string()),
            runs.iter()
                .filter(|r| r.server == i)
                .map(|r| r.errors)
                .sum::<u64>()
        );
    }
    println!();
    println!("| round | server | req/s | server on CPU / waiting | load generator on CPU / waiting | steal | req per server CPU-s | RSS before → after (MB) | errors |");
    println!("|---:|---|---:|---:|---:|---:|---:|---|---:|");
    for r in runs {
        println!(
            "| {}{} | {} | {:.0} | {:.0}% / {:.0}% | {:.0}% / {:.0}% | {:.0}% | {:.0} | {:.1} → {:.1} | {} |",
            r.round,
            if undisturbed(r) { "" } else { " †" },
            servers[r.server].kind,
            r.rps,
            r.busy * 100.0,
            r.waiting * 100.0,
            r.generator.0 * 100.0,
            r.generator.1 * 100.0,
            r.steal * 100.0,
            r.per_cpu_s,
            r.rss.0,
            r.rss.1,
            r.errors
        );
    }
}

/// The sampling ratio of the `podcycle-traced` server: `LOAD_TRACE_SAMPLING` (default 1).
fn trace_sampling() -> f64 {
    std::env::var("LOAD_TRACE_SAMPLING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}
