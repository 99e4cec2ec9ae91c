//! The canary judge against a real Prometheus server (Debian's `prometheus`), scraping three
//! real chatbot replicas: stable, a canary with injected errors, and a healthy canary.
//! The judge (the `podcycle-judge` binary) must say FAIL for the faulty canary within its
//! deadline and must not say FAIL for the healthy one. The same for CPU per request (a canary
//! with `CHATBOT_FAULT_CPU`), judged by the command and by `podcycle-judge serve` called over
//! HTTP the way Argo Rollouts' Web provider calls it.

use podcycle_test_support as support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::prometheus::Prometheus;
use support::{client, wait_ok, Child, SOON};

support::child!(
    "a chatbot replica, run by the other tests in a child process",
    support::child::serve(|| chatbot::run(chatbot::Mode::Podcycle))
);

struct Replica {
    _child: Child,
    app: SocketAddr,
    admin: SocketAddr,
}

fn replica(version: &str, error_rate: &str) -> Replica {
    replica_with(version, &[("CHATBOT_FAULT_ERROR_RATE", error_rate)])
}

fn replica_with(version: &str, faults: &[(&str, &str)]) -> Replica {
    let (app, admin) = (support::free_port(), support::free_port());
    let app_addr = format!("127.0.0.1:{app}");
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut env = vec![
        ("PODCYCLE_ADDR", app_addr.as_str()),
        ("PODCYCLE_ADMIN_ADDR", admin_addr.as_str()),
        ("APP_VERSION", version),
        ("CHATBOT_WARMUP_DELAY", "100ms"),
        ("CHATBOT_TOKEN_DELAY", "0ms"),
        ("PODCYCLE_SHUTDOWN_DELAY", "0s"),
        ("RUST_LOG", "warn"),
    ];
    env.extend_from_slice(faults);
    let child = Child::spawn(&env);
    Replica {
        _child: child,
        app: app_addr.parse().unwrap(),
        admin: admin_addr.parse().unwrap(),
    }
}

/// The `podcycle-judge` command for `canary` against stable `1.0.0`, reading `prom`, with
/// `options` after.
fn judge_command(prom: &Prometheus, canary: &str, options: &[&str]) -> Command {
    let mut judge = Command::new(env!("CARGO_BIN_EXE_podcycle-judge"));
    judge
        .args([
            "--prometheus",
            &prom.url(),
            "--stable",
            "1.0.0",
            "--canary",
            canary,
        ])
        .args(options);
    judge
}

/// A judge run's stdout and stderr, for a failure message.
fn show(o: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Steady load: `rate` requests/s to `app`, until `stop` passes.
async fn load(app: SocketAddr, rate: u32, stop: Instant) -> u64 {
    let mut conn = client::Conn::open(app).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut sent = 0u64;
    while Instant::now() < stop {
        tick.tick().await;
        let q = [
            "probes",
            "exit+codes",
            "canary",
            "grace+period",
            "keep-alive",
        ][(sent % 5) as usize];
        if conn
            .get(&format!("/v1/chat/stream?question={q}"))
            .await
            .is_err()
        {
            conn = client::Conn::open(app).await.unwrap();
        }
        sent += 1;
    }
    sent
}

#[test]
fn the_judge_fails_a_faulty_canary_and_does_not_fail_a_healthy_one() {
    let Some(prom_bin) = support::tool("prometheus") else {
        return;
    };
    let stable = replica("1.0.0", "0");
    let faulty = replica("1.1.0-faulty", "0.2");
    let healthy = replica("1.1.0-healthy", "0");
    let rt = support::rt();
    rt.block_on(async {
        for r in [&stable, &faulty, &healthy] {
            wait_ok(r.admin, "/readyz", SOON * 3).await;
        }
    });
    let prom = Prometheus::start(
        &prom_bin,
        "chatbot",
        &[stable.admin, faulty.admin, healthy.admin],
        &[],
    );
    let stop = Instant::now() + Duration::from_secs(80);
    let loads: Vec<_> = [&stable, &faulty, &healthy]
        .iter()
        .map(|r| rt.spawn(load(r.app, 60, stop)))
        .collect();
    rt.block_on(prom.ready());

    let judge = |canary: &str, max_duration: &str| {
        judge_command(
            &prom,
            canary,
            &[
                "--interval",
                "2s",
                "--max-duration",
                max_duration,
                "--min-requests",
                "100",
                "--no-latency",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run podcycle-judge")
    };
    let started = Instant::now();
    let (faulty_run, healthy_run) = (judge("1.1.0-faulty", "60s"), judge("1.1.0-healthy", "30s"));
    let faulty_out = faulty_run.wait_with_output().unwrap();
    let faulty_took = started.elapsed();
    let healthy_out = healthy_run.wait_with_output().unwrap();
    assert_eq!(
        faulty_out.status.code(),
        Some(1),
        "faulty canary must FAIL:\n{}",
        show(&faulty_out)
    );
    assert!(
        faulty_took < Duration::from_secs(45),
        "within its deadline: {faulty_took:?}"
    );
    assert_ne!(
        healthy_out.status.code(),
        Some(1),
        "healthy canary must not FAIL:\n{}",
        show(&healthy_out)
    );
    assert!(
        matches!(healthy_out.status.code(), Some(0) | Some(2)),
        "{}",
        show(&healthy_out)
    );
    eprintln!(
        "judge: faulty canary -> exit 1 after {faulty_took:?}; healthy canary -> exit {:?}",
        healthy_out.status.code()
    );
    for l in loads {
        l.abort();
    }
}

#[test]
fn a_canary_that_sheds_fails_by_its_shed_counter() {
    let Some(prom_bin) = support::tool("prometheus") else {
        return;
    };
    // Both arms 50 ms a request; the canary admits one at a time (a limit set too low), so
    // under three clients it sheds most requests: answered 503 at once, never in the request
    // histogram, only in `podcycle_requests_shed_total`.
    let stable = replica_with("1.0.0", &[("CHATBOT_FAULT_LATENCY", "50ms")]);
    let canary = replica_with(
        "1.1.0-shedding",
        &[
            ("CHATBOT_FAULT_LATENCY", "50ms"),
            ("PODCYCLE_ADMISSION", "1"),
        ],
    );
    let rt = support::rt();
    rt.block_on(async {
        for r in [&stable, &canary] {
            wait_ok(r.admin, "/readyz", SOON * 3).await;
        }
    });
    let prom = Prometheus::start(&prom_bin, "chatbot", &[stable.admin, canary.admin], &[]);
    let stop = Instant::now() + Duration::from_secs(60);
    let loads: Vec<_> = [&stable, &canary]
        .iter()
        .flat_map(|r| (0..3).map(|_| rt.spawn(load(r.app, 20, stop))))
        .collect();
    rt.block_on(prom.ready());
    let out = judge_command(
        &prom,
        "1.1.0-shedding",
        &[
            "--interval",
            "2s",
            "--max-duration",
            "40s",
            "--min-requests",
            "50",
            "--no-latency",
        ],
    )
    .output()
    .expect("run podcycle-judge");
    let show = show(&out);
    // Without the shed counter the canary's admitted requests all succeed: no FAIL.
    assert_eq!(
        out.status.code(),
        Some(1),
        "a shedding canary must FAIL:\n{show}"
    );
    assert!(
        show.contains("podcycle_requests_shed_total{version=\"1.1.0-shedding\"}"),
        "{show}"
    );
    eprintln!("judge: shedding canary -> exit 1");
    for l in loads {
        l.abort();
    }
}

/// `podcycle-judge serve` as a child process, killed on drop.
struct Server {
    proc: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn verdict_of(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    json["verdict"].as_str().unwrap_or("?").to_owned()
}

#[test]
fn cpu_per_request_fails_a_burning_canary_by_command_and_by_web_provider() {
    let Some(prom_bin) = support::tool("prometheus") else {
        return;
    };
    let stable = replica_with("1.0.0", &[]);
    let burning = replica_with("1.1.0-cpu", &[("CHATBOT_FAULT_CPU", "3ms")]);
    let healthy = replica_with("1.1.0-healthy", &[]);
    let rt = support::rt();
    rt.block_on(async {
        for r in [&stable, &burning, &healthy] {
            wait_ok(r.admin, "/readyz", SOON * 3).await;
        }
    });
    let prom = Prometheus::start(
        &prom_bin,
        "chatbot",
        &[stable.admin, burning.admin, healthy.admin],
        &[],
    );
    let stop = Instant::now() + Duration::from_secs(75);
    let loads: Vec<_> = [&stable, &burning, &healthy]
        .iter()
        .map(|r| rt.spawn(load(r.app, 50, stop)))
        .collect();
    rt.block_on(prom.ready());
    let options = [
        "--interval",
        "2s",
        "--min-requests",
        "50",
        "--no-errors",
        "--no-latency",
        "--cpu",
    ];

    // The web service, with the judge's options as its defaults.
    let port = support::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server {
        proc: Command::new(env!("CARGO_BIN_EXE_podcycle-judge"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--max-analysis-duration",
                "1m",
                "--",
            ])
            .args(["--prometheus", &prom.url()])
            .args(options)
            // Under podcycle: its admin listener on a free loopback port, not 0.0.0.0:9090.
            .env("PODCYCLE_ADMIN_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run podcycle-judge serve"),
        addr,
    };
    rt.block_on(wait_ok(server.addr, "/healthz", SOON * 3));

    // The command and the web provider, all four judgements at once.
    let judge = |canary: &str| {
        judge_command(&prom, canary, &options)
            .args(["--max-duration", "45s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run podcycle-judge")
    };
    let (burning_run, healthy_run) = (judge("1.1.0-cpu"), judge("1.1.0-healthy"));
    let web = |canary: &'static str| {
        rt.spawn(async move {
            // Argo's Web provider: a GET, the verdict read from the JSON body.
            let mut conn = client::Conn::open(addr).await.unwrap();
            let path = format!("/v1/judge?stable=1.0.0&canary={canary}&max-duration=45s");
            tokio::time::timeout(Duration::from_secs(90), conn.get(&path))
                .await
                .expect("the analysis ends by its max-duration")
                .unwrap()
        })
    };
    let (burning_web, healthy_web) = (web("1.1.0-cpu"), web("1.1.0-healthy"));
    let burning_out = burning_run.wait_with_output().unwrap();
    let healthy_out = healthy_run.wait_with_output().unwrap();
    assert_eq!(
        burning_out.status.code(),
        Some(1),
        "a canary burning 3 ms per request must FAIL:\n{}",
        show(&burning_out)
    );
    assert!(
        show(&burning_out).contains("cpu:"),
        "{}",
        show(&burning_out)
    );
    assert!(
        matches!(healthy_out.status.code(), Some(0) | Some(2)),
        "a healthy canary must not FAIL:\n{}",
        show(&healthy_out)
    );
    let (burning_web, healthy_web) =
        rt.block_on(async { (burning_web.await.unwrap(), healthy_web.await.unwrap()) });
    assert_eq!(burning_web.status, 200);
    assert_eq!(verdict_of(&burning_web.body), "fail");
    assert_eq!(healthy_web.status, 200);
    assert_ne!(verdict_of(&healthy_web.body), "fail");
    eprintln!(
        "cpu: command {:?}/{:?}, web provider {}/{}",
        burning_out.status.code(),
        healthy_out.status.code(),
        verdict_of(&burning_web.body),
        verdict_of(&healthy_web.body)
    );

    // A bad request names its field.
    let bad = rt.block_on(async {
        let mut conn = client::Conn::open(addr).await.unwrap();
        conn.get("/v1/judge?stable=1.0.0&canary=x&interval=soon")
            .await
            .unwrap()
    });
    assert_eq!(bad.status, 400);
    let json: serde_json::Value = serde_json::from_str(&bad.body).unwrap();
    assert_eq!(json["field"], "interval", "{json}");
    for l in loads {
        l.abort();
    }
}
