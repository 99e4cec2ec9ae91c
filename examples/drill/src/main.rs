//! The rollout drill: does a deploy lose requests? Real HAProxy on loopback (health checks on
//! each replica's `/readyz`, no retries) in front of replicas of the example chatbot, steady
//! open-loop load, and a rolling, blue/green or canary rollout from version 1.0.0 to 1.1.0,
//! with podcycle and with two baselines built from the same chatbot code.
//!
//! ```text
//! cargo run --release -p drill                          # rolling: podcycle and baselines
//! cargo run --release -p drill -- --strategy rolling --mode podcycle --runs 10
//! cargo run --release -p drill -- --help
//! ```
//!
//! Prints a report per run and a side-by-side table per strategy; writes JSON and SVG charts to
//! `--out` (default `target/drill/`). Exits 1 when a podcycle run lost a request, could not
//! send its load, or a podcycle replica did not exit 0 (the baselines are expected to lose some).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use drill::report::RunReport;
use drill::{Mode, Options, ReplicaCommand, Strategy};

const HELP: &str = "\
rollout drill: HAProxy + chatbot replicas + load + a scripted rollout, podcycle vs baselines

USAGE: cargo run --release -p drill -- [OPTIONS]

  --mode M            podcycle | plain | graceful | all (default all; comma lists work)
  --strategy S        rolling | blue-green | canary | all (default rolling)
  --replicas N        replicas per version (default 3)
  --rate R            requests per second for the whole drill (default 2000)
  --connections N     keep-alive connections in the load generator's pool (default 16)
  --stream-every N    every N-th request is an SSE stream (default 64; 0 = none)
  --websockets N      long-lived WebSocket sessions alongside the load (default 0)
  --ws-every D        each session asks a question this often (default 300ms)
  --grpc N            gRPC clients alongside the load, each on one long-lived HTTP/2
                      connection through an HTTP/2 frontend (default 0)
  --grpc-every D      each gRPC client starts a call this often, every 8th an AskStream
                      (default 10ms: 100 RPC/s per client)
  --stream-close-spread D  PODCYCLE_STREAM_CLOSE_SPREAD of the replicas (default: podcycle's,
                      half the drain timeout; 0s = every stream told at once)
  --before D          steady load before the rollout (default 5s)
  --after D           steady load after the rollout (default 5s)
  --canary-hold D     canary at its small weight before promotion (default 5s)
  --canary-percent P  canary share of traffic (default 10)
  --check-interval D  HAProxy health check interval, fall 1 rise 1 (default 300ms)
  --shutdown-delay D  PODCYCLE_SHUTDOWN_DELAY of the replicas (default 1s)
  --drain-timeout D   PODCYCLE_DRAIN_TIMEOUT of the replicas (default 10s)
  --warmup-delay D    CHATBOT_WARMUP_DELAY of the replicas (default 500ms)
  --token-delay D     CHATBOT_TOKEN_DELAY, between streamed tokens (default 5ms)
  --runs N            repeat each strategy × mode N times (default 1)
  --out DIR           reports, charts and logs (default target/drill)
  --haproxy PATH      the haproxy executable (default: haproxy on PATH)

Removal-lag drill (L4: HAProxy in mode tcp pins connections as conntrack does; each old
replica leaves the backend a fixed lag after its SIGTERM; replicas run podcycle's defaults):
  --lag D[,D...]      run the removal-lag drill at these lags instead of the rollout drill
  --grace D           SIGKILL this long after SIGTERM (default 30s); when given, also the
                      replicas' PODCYCLE_GRACE_PERIOD
  --short-rate R      short-lived clients: new connections (one POST each) per second (default 40)
  --pooled N          pooled keep-alive POST clients (default 60)
  (--before D also applies: load before the new replicas start; default 2s here)
  --pooled-gap D      mean idle gap between a pooled client's requests (default 1s; uniform in
                      half to one and a half of it)

Durations are human: 5s, 300ms, 1m. Everything listens on 127.0.0.1.";

struct Cli {
    lags: Vec<Duration>,
    grace: Option<Duration>,
    short_rate: f64,
    pooled: usize,
    pooled_gap: Duration,
    lag_before: Option<Duration>,
    modes: Vec<Mode>,
    strategies: Vec<Strategy>,
    runs: usize,
    out: PathBuf,
    base: Options,
}

fn parse(args: &[String]) -> Result<Option<Cli>, String> {
    let haproxy = find_on_path("haproxy").unwrap_or_else(|| PathBuf::from("haproxy"));
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let replica = ReplicaCommand {
        program: exe,
        args: vec!["--replica".into()],
    };
    let mut cli = Cli {
        lags: Vec::new(),
        grace: None,
        short_rate: 40.0,
        pooled: 60,
        pooled_gap: Duration::from_secs(1),
        lag_before: None,
        modes: Mode::ALL.to_vec(),
        strategies: vec![Strategy::Rolling],
        runs: 1,
        out: PathBuf::from("target/drill"),
        base: Options::new(replica, haproxy, PathBuf::new()),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        if !HELP.contains(&format!("  {flag} ")) {
            return Err(format!("unknown option {flag:?} (see --help)"));
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
        let dur = || {
            humantime::parse_duration(value)
                .map_err(|_| format!("{flag} {value:?}: expected a duration such as 5s or 300ms"))
        };
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value:?}: expected a whole number"))
        };
        let b = &mut cli.base;
        match flag.as_str() {
            "--mode" => cli.modes = drill::parse_modes(value)?,
            "--lag" => {
                cli.lags = value
                    .split(',')
                    .map(|v| {
                        humantime::parse_duration(v.trim())
                            .map_err(|_| format!("--lag {v:?}: expected a duration such as 12s"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--grace" => cli.grace = Some(dur()?),
            "--short-rate" => {
                cli.short_rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0 && *r <= 2000.0)
                    .ok_or_else(|| format!("--short-rate {value:?}: expected 0 < rate <= 2000"))?
            }
            "--pooled" => cli.pooled = num()?.min(2_000) as usize,
            "--pooled-gap" => cli.pooled_gap = dur()?.max(Duration::from_millis(10)),
            "--strategy" => cli.strategies = Strategy::parse_list(value)?,
            "--replicas" => b.replicas = num()?.clamp(1, 16) as usize,
            "--rate" => {
                b.rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0 && *r <= 50_000.0)
                    .ok_or_else(|| format!("--rate {value:?}: expected 0 < rate <= 50000"))?
            }
            "--connections" => b.connections = num()?.clamp(1, 1024) as usize,
            "--stream-every" => b.stream_every = num()?,
            "--websockets" => b.websockets = num()?.min(10_000) as usize,
            "--ws-every" => b.ws_every = dur()?,
            "--grpc" => b.grpc = num()?.min(1_000) as usize,
            "--grpc-every" => b.grpc_every = dur()?.max(Duration::from_millis(1)),
            "--stream-close-spread" => b.stream_close_spread = Some(dur()?),
            "--before" => {
                b.before = dur()?;
                cli.lag_before = Some(b.before);
            }
            "--after" => b.after = dur()?,
            "--canary-hold" => b.canary_hold = dur()?,
            "--canary-percent" => b.canary_percent = num()?.clamp(1, 99) as u32,
            "--check-interval" => b.check_interval = dur()?,
            "--shutdown-delay" => b.shutdown_delay = dur()?,
            "--drain-timeout" => b.drain_timeout = dur()?,
            "--warmup-delay" => b.warmup_delay = dur()?,
            "--token-delay" => b.token_delay = dur()?,
            "--runs" => cli.runs = num()?.clamp(1, 1000) as usize,
            "--out" => cli.out = PathBuf::from(value),
            "--haproxy" => b.haproxy = PathBuf::from(value),
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    Ok(Some(cli))
}

/// The removal-lag drill over `cli.lags` × `cli.modes`: a line per run, a table at the end.
/// Exits 1 when a podcycle run whose lag fits its budget lost a request.
async fn lag_drill(cli: &Cli) -> ExitCode {
    let mut reports = Vec::new();
    let mut broken = false;
    for &lag in &cli.lags {
        for &mode in &cli.modes {
            for run in 1..=cli.runs {
                let name = format!("lag-{}ms-{}-run{run}", lag.as_millis(), mode.name());
                let mut opts = drill::lag::LagOptions::new(
                    cli.base.replica.clone(),
                    cli.base.haproxy.clone(),
                    cli.out.join(&name),
                    lag,
                );
                opts.mode = mode;
                opts.replicas = cli.base.replicas;
                opts.short_rate = cli.short_rate;
                opts.pooled = cli.pooled;
                opts.pooled_gap = cli.pooled_gap;
                opts.before = cli.lag_before.unwrap_or(opts.before);
                if let Some(g) = cli.grace {
                    opts.grace = g;
                    opts.grace_to_podcycle = true;
                }
                eprintln!("drill: {name} (logs in {})", opts.dir.display());
                match drill::lag::run(&opts).await {
                    Ok(r) => {
                        println!("{}", r.line());
                        for f in r.short.first.iter().chain(&r.pooled.first).take(5) {
                            println!("    first failures: {f}");
                        }
                        // Fits: lag + quiet (2 s) within the cap podcycle plans with.
                        let cap = podcycle::Config::default()
                            .grace_period(opts.grace)
                            .shutdown_delay_cap();
                        if mode == Mode::Podcycle
                            && lag + Duration::from_secs(2) <= cap
                            && r.failed() > 0
                        {
                            broken = true;
                        }
                        let _ = std::fs::write(
                            cli.out.join(format!("{name}.json")),
                            serde_json::to_string_pretty(&r).unwrap_or_default(),
                        );
                        reports.push(r);
                    }
                    Err(e) => {
                        eprintln!("drill: {name} failed: {e}");
                        broken = true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    println!("\n| lag | grace | server | failed (short / pooled) | SIGTERM → exit (max) | closed idle at the delay's end |");
    println!("|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {:.1} s | {:.0} s | {} | {} of {} ({} / {}) | {:.1} s | {} |",
            r.lag,
            r.grace,
            r.mode,
            r.failed(),
            r.short.sent + r.pooled.sent,
            r.short.failed,
            r.pooled.failed,
            r.max_exit(),
            r.closed_idle()
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        );
    }
    if broken {
        eprintln!("drill: a podcycle run whose lag fits its budget lost requests (see above)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--replica") {
        return ExitCode::from(drill::run_replica(|| async {
            match chatbot::Mode::from_env() {
                Ok(mode) => chatbot::run(mode).await,
                Err(e) => podcycle::Outcome::Failed(e),
            }
        }));
    }
    let cli = match parse(&args) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("drill: {e}");
            return ExitCode::from(2);
        }
    };
    if find_on_path("haproxy").is_none() && !cli.base.haproxy.is_file() {
        eprintln!("drill: haproxy is not installed (apt-get install -y haproxy) or not on PATH");
        return ExitCode::from(2);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drill: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(drive(cli))
}

async fn drive(cli: Cli) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&cli.out) {
        eprintln!("drill: {}: {e}", cli.out.display());
        return ExitCode::from(1);
    }
    if !cli.lags.is_empty() {
        return lag_drill(&cli).await;
    }
    let mut all: Vec<RunReport> = Vec::new();
    let mut broken = false;
    // Whether a broken podcycle run was one during which the machine stalled.
    let mut stalled = false;
    for &strategy in &cli.strategies {
        for run in 1..=cli.runs {
            let mut this_run: Vec<RunReport> = Vec::new();
            for &mode in &cli.modes {
                let name = format!("{}-{}-run{run}", strategy.name(), mode.name());
                let opts = Options {
                    mode,
                    strategy,
                    run,
                    dir: cli.out.join(&name),
                    ..cli.base.clone()
                };
                eprintln!(
                    "drill: {name}: {} replicas, {} req/s ... (logs in {})",
                    opts.replicas,
                    opts.rate,
                    opts.dir.display()
                );
                match drill::run(&opts).await {
                    Ok(report) => {
                        print!("{}", drill::report::text(&report));
                        let json = cli.out.join(format!("{name}.json"));
                        match serde_json::to_string_pretty(&report) {
                            Ok(text) => {
                                if let Err(e) = std::fs::write(&json, text) {
                                    eprintln!("drill: {}: {e}", json.display());
                                }
                            }
                            Err(e) => eprintln!("drill: JSON: {e}"),
                        }
                        if mode == Mode::Podcycle
                            && (report.failed > 0
                                || report.not_sent > 0
                                || !report.all_exited_zero())
                        {
                            broken = true;
                            stalled |= report.machine_stalled();
                        }
                        this_run.push(report);
                    }
                    Err(e) => {
                        eprintln!("drill: {name} failed: {e}");
                        broken = true;
                    }
                }
                // Let ports and sockets settle between runs.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if !this_run.is_empty() {
                let refs: Vec<&RunReport> = this_run.iter().collect();
                let svg = cli.out.join(format!("{}-run{run}.svg", strategy.name()));
                let title = format!(
                    "{} update, {} replicas, {} req/s through HAProxy (checks every {} ms, no retries) — run {run}",
                    strategy.name(),
                    cli.base.replicas,
                    cli.base.rate,
                    cli.base.check_interval.as_millis()
                );
                match std::fs::write(&svg, drill::report::chart(&title, &refs)) {
                    Ok(()) => println!("   chart: {}", svg.display()),
                    Err(e) => eprintln!("drill: {}: {e}", svg.display()),
                }
            }
            all.extend(this_run);
        }
    }
    for &strategy in &cli.strategies {
        let refs: Vec<&RunReport> = all
            .iter()
            .filter(|r| r.strategy == strategy.name())
            .collect();
        if !refs.is_empty() {
            print!("{}", drill::report::comparison(strategy.name(), &refs));
        }
    }
    let summary: Vec<serde_json::Value> = all
        .iter()
        .map(|r| {
            serde_json::json!({
                "strategy": r.strategy, "mode": r.mode, "run": r.run,
                "requests": r.requests, "failed": r.failed, "not_sent": r.not_sent,
                "outcomes": r.outcomes,
                "streams": r.streams, "all_exited_zero": r.all_exited_zero(),
                "shutdown_seconds": r.replicas.iter().map(|x| x.shutdown_seconds).collect::<Vec<_>>(),
                "loadavg": r.loadavg,
                "machine": r.machine,
                "max_dispatch_lag": r.generator.max_dispatch_lag,
            })
        })
        .collect();
    let path = cli.out.join("summary.json");
    if let Ok(text) = serde_json::to_string_pretty(&summary) {
        let _ = std::fs::write(&path, text);
        println!("summary: {}", path.display());
    }
    if broken {
        eprintln!(
            "drill: a podcycle run lost requests, could not send its load, or had a replica exit non-zero (see above)"
        );
        if stalled {
            eprintln!(
                "drill: the machine stalled during such a run (the generator was held up): run the drill again on a quieter machine"
            );
        }
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
