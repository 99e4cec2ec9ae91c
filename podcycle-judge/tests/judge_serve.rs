//! `podcycle-judge` as a process: its exit codes and help (issue 29 item 7), and
//! `podcycle-judge serve` as a hardened service under podcycle (issue 23 rows 8 and 9,
//! issue 26 item 5): credentials in `--prometheus` refused at startup without echo, idle
//! connections that cannot starve it, probes on the admin port, a SIGTERM drain.
//!
//! Prometheus is a stand-in on loopback that answers every query with an empty vector and
//! counts them (the judgements here need no data; `judge_prometheus.rs` runs a real one).

use podcycle_test_support as support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use support::{client, SOON};

const JUDGE: &str = env!("CARGO_BIN_EXE_podcycle-judge");

/// The judge's usage-error exit code (`EX_USAGE`), outside the verdicts' 0, 1 and 2.
const USAGE_ERROR: i32 = 64;

fn run(args: &[&str]) -> Output {
    Command::new(JUDGE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run podcycle-judge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Issue 29 item 7: a usage error must not read as a verdict (Argo's Job provider, a CI
/// script: 2 is "inconclusive"), `help` works, `serve` is in the usage, and durations are
/// refused in podcycle's words.
#[test]
fn usage_errors_exit_64_and_help_works() {
    for args in [
        &["--bogus"][..],
        &[],
        &["--prometheus", "http://p", "--stable", "a"],
        &[
            "--prometheus",
            "http://p",
            "--stable",
            "a",
            "--canary",
            "b",
            "--interval",
            "30",
        ],
        &[
            "--prometheus",
            "http://p",
            "--stable",
            "a",
            "--canary",
            "b",
            "--interval",
            "1ms",
        ],
        &["--prometheus", "http://p", "--stable", "a", "--canary", "a"],
        &["serve", "--bogus"],
        &[
            "serve",
            "--max-analysis-duration",
            "soon",
            "--",
            "--prometheus",
            "http://p",
        ],
        &["serve", "--", "--prometheus", "ftp://p"],
        &["help", "nothing"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(USAGE_ERROR),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?}: a usage error says why");
    }
    let out = run(&[
        "--prometheus",
        "http://p",
        "--stable",
        "a",
        "--canary",
        "b",
        "--interval",
        "30",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("expected a duration such as 5s, 500ms or 1m30s"),
        "{stderr}"
    );
    let out = run(&["serve", "--max-analysis-duration", "soon"]);
    assert!(
        text(&out.stderr).contains("expected a duration such as 5s, 500ms or 1m30s"),
        "{}",
        text(&out.stderr)
    );

    for args in [&["help"][..], &["--help"], &["-h"]] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let help = text(&out.stdout);
        assert!(
            help.contains("Usage: podcycle-judge [OPTIONS] --prometheus"),
            "{help}"
        );
        assert!(help.contains("podcycle-judge serve [OPTIONS] --"), "{help}");
        assert!(help.contains("64 usage error"), "{help}");
    }
    for args in [&["help", "serve"][..], &["serve", "--help"]] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let help = text(&out.stdout);
        assert!(
            help.contains("Usage: podcycle-judge serve [OPTIONS]"),
            "{help}"
        );
        assert!(!help.contains("Usage: serve"), "{help}");
        assert!(help.contains("--api-token-file"), "{help}");
    }
}

/// Issue 23 row 9, the attack: `--prometheus http://user:secret@host?x=1` started, then every
/// request got a 500 whose body held the password. Now refused at startup, by the command
/// and by `serve`, with a pointer to the credential flags, and the secret never printed.
#[test]
fn credentials_in_the_prometheus_url_are_refused_at_startup() {
    let url = "http://judge:hunter2@127.0.0.1:9?x=1";
    for url in [
        url,
        "http://judge:hunter2@127.0.0.1:9",
        "http://127.0.0.1:9?token=hunter2",
    ] {
        let command = ["--prometheus", url, "--stable", "a", "--canary", "b"];
        let serve = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--",
            "--prometheus",
            url,
        ];
        for args in [&command[..], &serve[..]] {
            let started = Instant::now();
            let mut child = Command::new(JUDGE)
                .args(args)
                .env("PODCYCLE_ADMIN_ADDR", "127.0.0.1:0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > SOON {
                    let _ = child.kill();
                    panic!("{args:?}: started instead of refusing the URL");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let out = child.wait_with_output().unwrap();
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert_eq!(status.code(), Some(USAGE_ERROR), "{args:?}: {stderr}");
            assert!(
                !stdout.contains("hunter2") && !stderr.contains("hunter2"),
                "{args:?}: the secret is printed:\n{stdout}\n{stderr}"
            );
            assert!(stderr.contains("--prometheus"), "{args:?}: {stderr}");
            if url.contains('@') {
                assert!(stderr.contains("--bearer-token-file"), "{stderr}");
                assert!(stderr.contains("--basic-auth-password-file"), "{stderr}");
            } else {
                assert!(stderr.contains("query string"), "{stderr}");
            }
        }
    }
}

/// A Prometheus stand-in: every query answers an empty vector; counted.
struct FakePrometheus {
    url: String,
    queries: Arc<AtomicU64>,
}

fn fake_prometheus(rt: &tokio::runtime::Runtime) -> FakePrometheus {
    let queries = Arc::new(AtomicU64::new(0));
    let app = Router::new().route(
        "/api/v1/query",
        get({
            let queries = queries.clone();
            move || async move {
                queries.fetch_add(1, Ordering::Relaxed);
                Json(serde_json::json!({
                    "status": "success",
                    "data": {"resultType": "vector", "result": []}
                }))
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    FakePrometheus { url, queries }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `podcycle-judge serve` in a child process (optionally with `ulimit -n`), its output kept
/// for failure messages; killed on drop.
struct Judge {
    proc: std::process::Child,
    app: SocketAddr,
    admin: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

impl Judge {
    fn start(prometheus: &str, open_files: Option<u32>, env: &[(&str, &str)]) -> Judge {
        let (app, admin) = (free_addr(), free_addr());
        let mut cmd = match open_files {
            Some(n) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(JUDGE);
                cmd
            }
            None => Command::new(JUDGE),
        };
        cmd.args(["serve", "--listen", &app.to_string(), "--"])
            .args(["--prometheus", prometheus])
            .env("PODCYCLE_ADMIN_ADDR", admin.to_string())
            .env("PODCYCLE_SHUTDOWN_DELAY", "1s")
            .env("PODCYCLE_CHECK_INTERVAL", "200ms")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = cmd.spawn().expect("run podcycle-judge serve");
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(proc.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(proc.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        Judge {
            proc,
            app,
            admin,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for `/readyz` on the admin port.
    async fn ready(&self) {
        let deadline = Instant::now() + SOON;
        loop {
            if let Ok(r) = client::get(self.admin, "/readyz").await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {SOON:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.proc.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.proc.try_wait().unwrap() {
                return support::code(status);
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Judge {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// Issue 23 row 8, the attack: 300 connections that send nothing, reopened as soon as they
/// are closed, against a judge with `ulimit -n 256`. Before, `/healthz` and `/v1/judge`
/// timed out for as long as the clients stayed. Now the judge runs on podcycle's listener:
/// at most 128 application connections at that limit (the rest wait in the backlog), each
/// closed by the header-read timeout (2 s here) if it sends nothing, and the probes on an
/// admin listener of their own. So the probes keep answering, and a real request gets its
/// turn within a few header-read timeouts.
#[test]
fn idle_connections_do_not_starve_the_judge() {
    const ATTACKERS: usize = 300;
    let rt = support::rt();
    let prometheus = fake_prometheus(&rt);
    let judge = Judge::start(
        &prometheus.url,
        Some(256),
        &[("PODCYCLE_HEADER_READ_TIMEOUT", "2s")],
    );
    rt.block_on(judge.ready());

    let stop = Instant::now() + Duration::from_secs(30);
    let reopened = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let (app, reopened) = (judge.app, reopened.clone());
            rt.spawn(async move {
                use tokio::io::AsyncReadExt;
                while Instant::now() < stop {
                    let Ok(mut stream) = tokio::net::TcpStream::connect(app).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    // Hold it, sending nothing, until the judge closes it; then come back.
                    let mut buf = [0u8; 64];
                    let left = stop.saturating_duration_since(Instant::now());
                    let _ = tokio::time::timeout(left, stream.read(&mut buf)).await;
                    reopened.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (probes, judged) = rt.block_on(async {
        // Let the flood take every slot first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let judged = tokio::spawn({
            let app = judge.app;
            async move {
                let reply = client::get(app, "/v1/judge?canary=v2").await;
                (reply, started.elapsed())
            }
        });
        // Kubelet-style probes meanwhile: a new connection each, 1 s timeout, every 500 ms.
        let mut probes = Vec::new();
        for i in 0..12 {
            let path = if i % 2 == 0 { "/livez" } else { "/readyz" };
            let t = Instant::now();
            let answer =
                tokio::time::timeout(Duration::from_secs(1), client::get(judge.admin, path)).await;
            probes.push((
                path,
                answer.ok().and_then(Result::ok).map(|r| r.status.as_u16()),
                t.elapsed(),
            ));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let judged = tokio::time::timeout(Duration::from_secs(20), judged)
            .await
            .map(Result::unwrap);
        (probes, judged)
    });
    for a in attackers {
        a.abort();
    }
    // Every probe is answered within the kubelet's 1 s: `/livez` 200; `/readyz` 200, or 503
    // while the flood holds every application connection slot (podcycle's `connections`
    // readiness line: a pod that cannot accept a request is not ready, issue 23 row 4).
    let failed: Vec<_> = probes
        .iter()
        .filter(|(path, s, _)| match *path {
            "/readyz" => !matches!(s, Some(200 | 503)),
            _ => *s != Some(200),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "probes starved by the flood: {failed:?}\n{}",
        judge.output()
    );
    let (reply, took) = judged.unwrap_or_else(|_| {
        panic!(
            "/v1/judge not answered within 20 s under the flood\n{}",
            judge.output()
        )
    });
    let reply = reply.unwrap();
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("\"field\":\"stable\""),
        "{}",
        reply.body
    );
    assert!(
        reopened.load(Ordering::Relaxed) >= ATTACKERS as u64 / 2,
        "the header-read timeout closed idle connections"
    );
    let slowest = probes.iter().map(|p| p.2).max().unwrap();
    eprintln!(
        "judge under {ATTACKERS} idle connections at ulimit -n 256: {} of {} probes 200 (slowest \
         {slowest:?}); /v1/judge answered after {took:?}; {} idle connections closed",
        probes.len() - failed.len(),
        probes.len(),
        reopened.load(Ordering::Relaxed)
    );
}

/// Issue 26 item 5: the judge runs under podcycle. Ready once Prometheus answered, its own
/// RED metrics on the admin port, and on SIGTERM: readiness off, the running analysis
/// answered `503` (retry elsewhere) when the drain starts, exit 0.
#[test]
fn serve_drains_on_sigterm_and_exports_its_metrics() {
    let rt = support::rt();
    let prometheus = fake_prometheus(&rt);
    let mut judge = Judge::start(&prometheus.url, None, &[]);
    rt.block_on(judge.ready());
    let startup = rt
        .block_on(client::get(judge.admin, "/startupz?verbose"))
        .unwrap();
    assert_eq!(startup.status, 200);
    assert!(
        startup.body.contains("warmup/prometheus"),
        "{}",
        startup.body
    );

    // A long analysis: a look every second for ten minutes.
    let before = prometheus.queries.load(Ordering::Relaxed);
    let running = rt.spawn({
        let app = judge.app;
        async move {
            client::get(
                app,
                "/v1/judge?stable=v1&canary=v2&interval=1s&max-duration=10m",
            )
            .await
        }
    });
    rt.block_on(async {
        let deadline = Instant::now() + SOON;
        while prometheus.queries.load(Ordering::Relaxed) < before + 8 {
            assert!(Instant::now() < deadline, "the analysis does not look");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // A request that ends, then the judge's own RED metrics.
    let bad = rt
        .block_on(client::get(judge.app, "/v1/judge?canary=v2"))
        .unwrap();
    assert_eq!(bad.status, 400);
    let metrics = rt
        .block_on(client::get(judge.admin, "/metrics"))
        .unwrap()
        .body;
    assert!(
        metrics.contains("http_route=\"/v1/judge\"")
            && metrics.contains("http_response_status_code=\"400\""),
        "the judge's requests in its RED metrics:\n{metrics}"
    );

    let signalled = Instant::now();
    judge.signal("TERM");
    rt.block_on(async {
        let deadline = Instant::now() + SOON;
        while client::get(judge.admin, "/readyz").await.map(|r| r.status)
            != Ok(http::StatusCode::SERVICE_UNAVAILABLE)
        {
            assert!(
                Instant::now() < deadline,
                "readiness stays on after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let reply = rt
        .block_on(async { tokio::time::timeout(SOON, running).await })
        .expect("the running analysis is answered at the drain")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("shutting down"), "{}", reply.body);
    let code = judge.wait_exit(SOON);
    assert_eq!(code, 0, "{}", judge.output());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the propagation delay is kept: {took:?}"
    );
    eprintln!("judge: SIGTERM to exit 0 in {took:?}, the running analysis answered 503");
}

/// `--api-token-file` (here from `PODCYCLE_JUDGE_API_TOKEN_FILE`): `/v1/*` needs the bearer
/// token, the probes and `/healthz` do not; podcycle does not take the judge's own variable
/// for a mistyped one of its own.
#[test]
fn the_api_token_guards_the_api_but_not_the_probes() {
    let rt = support::rt();
    let prometheus = fake_prometheus(&rt);
    let dir = std::env::temp_dir().join(format!("judge-serve-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let judge = Judge::start(
        &prometheus.url,
        None,
        &[(
            "PODCYCLE_JUDGE_API_TOKEN_FILE",
            token_file.to_str().unwrap(),
        )],
    );
    rt.block_on(judge.ready());
    let raw = |authorization: &str| {
        let request = format!(
            "GET /v1/judge?canary=v2 HTTP/1.1\r\nHost: judge\r\n{authorization}Connection: \
             close\r\n\r\n"
        );
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(judge.app).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            tokio::time::timeout(SOON, stream.read_to_string(&mut response))
                .await
                .unwrap()
                .unwrap();
            response
        })
    };
    let denied = raw("");
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(denied.contains("www-authenticate: Bearer"), "{denied}");
    assert!(raw("Authorization: Bearer wrong\r\n").starts_with("HTTP/1.1 401"));
    let allowed = raw("Authorization: Bearer t0ken\r\n");
    assert!(allowed.starts_with("HTTP/1.1 400"), "{allowed}");
    assert!(allowed.contains("\"field\":\"stable\""), "{allowed}");
    let healthz = rt.block_on(client::get(judge.app, "/healthz")).unwrap();
    assert_eq!(healthz.status, 200);
    let output = judge.output();
    assert!(
        !output.contains("unknown podcycle variable"),
        "the judge's variable taken for a typo:\n{output}"
    );
    assert!(!output.contains("t0ken"), "the token is logged:\n{output}");
    std::fs::remove_dir_all(&dir).unwrap();
}
