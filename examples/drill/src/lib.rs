//! The rollout drill: real HAProxy on loopback in front of replicas of the example chatbot,
//! open-loop load through it, and a scripted rolling, blue/green or canary rollout that does
//! what Kubernetes does; every request is classified, and the report says what was lost.
//!
//! ```no_run
//! # async fn drill() -> Result<(), String> {
//! // Replicas are this executable started again with `--replica`; there it must run the
//! // chatbot with `drill::run_replica`, as the `drill` binary does.
//! let replica = drill::ReplicaCommand {
//!     program: std::env::current_exe().map_err(|e| e.to_string())?,
//!     args: vec!["--replica".into()],
//! };
//! let opts = drill::Options::new(replica, "haproxy".into(), "target/drill/run".into());
//! let report = drill::run(&opts).await?;
//! print!("{}", drill::report::text(&report));
//! # Ok(())
//! # }
//! ```
//!
//! Shared by the `drill` binary (`cargo run --release -p drill -- --help`) and the integration
//! test (`tests/rollout_drill.rs`). Replicas are the caller's own executable started again (see
//! [`ReplicaCommand`]); the caller runs the chatbot there with [`run_replica`].
#![forbid(unsafe_code)]

pub mod grpc;
pub mod haproxy;
pub mod lag;
pub mod load;
pub mod replicas;
pub mod report;
pub mod rollout;
pub mod websockets;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use replicas::ReplicaCommand;
pub use rollout::run;

/// Which server the replicas run: the chatbot's `CHATBOT_MODE` (podcycle, or one of the two
/// baselines built from the same chatbot code).
pub use chatbot::Mode;

/// `podcycle`, `plain`, `graceful`, a comma-separated list, or `all`.
pub fn parse_modes(s: &str) -> Result<Vec<Mode>, String> {
    parse_list(
        s,
        &Mode::ALL,
        Mode::name,
        "podcycle, plain, graceful or all",
    )
}

/// How the new version replaces the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// One new replica up, one old replica terminated, repeat (maxSurge 1, maxUnavailable 0).
    Rolling,
    /// All new replicas up, switch HAProxy's backend, terminate all old replicas.
    BlueGreen,
    /// One new replica at a small weight, hold, promote, then replace the rest one by one.
    Canary,
}

impl Strategy {
    /// Every strategy, rolling first.
    pub const ALL: [Strategy; 3] = [Strategy::Rolling, Strategy::BlueGreen, Strategy::Canary];

    /// The strategy's name, as `--strategy` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
        }
    }

    /// `rolling`, `blue-green`, `canary`, a comma-separated list, or `all`.
    pub fn parse_list(s: &str) -> Result<Vec<Strategy>, String> {
        parse_list(
            s,
            &Strategy::ALL,
            Strategy::name,
            "rolling, blue-green, canary or all",
        )
    }
}

fn parse_list<T: Copy>(
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    expected: &str,
) -> Result<Vec<T>, String> {
    if s == "all" {
        return Ok(all.to_vec());
    }
    s.split(',')
        .map(|part| {
            all.iter()
                .copied()
                .find(|t| name(*t) == part.trim())
                .ok_or_else(|| format!("unknown {part:?}: expected {expected}"))
        })
        .collect()
}

/// The old version.
pub const VERSION_A: &str = "1.0.0";
/// The new version.
pub const VERSION_B: &str = "1.1.0";

/// Everything one drill run needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which server the replicas run.
    pub mode: Mode,
    /// How the new version replaces the old one.
    pub strategy: Strategy,
    /// Replicas of each version.
    pub replicas: usize,
    /// Requests per second, for the whole drill.
    pub rate: f64,
    /// Keep-alive connections in the load generator's pool.
    pub connections: usize,
    /// Every n-th request is an SSE stream (0: none).
    pub stream_every: u64,
    /// Long-lived WebSocket sessions alongside the requests (0: none).
    pub websockets: usize,
    /// How often each WebSocket session asks a question.
    pub ws_every: Duration,
    /// gRPC clients alongside the requests, each on its own long-lived HTTP/2 connection
    /// through HAProxy's HTTP/2 frontend (0: none, and no such frontend).
    pub grpc: usize,
    /// Time between two calls of one gRPC client (every 8th call is an `AskStream`).
    pub grpc_every: Duration,
    /// `PODCYCLE_STREAM_CLOSE_SPREAD` of the replicas (`None`: podcycle's default, half the
    /// drain timeout; zero: every stream told at once).
    pub stream_close_spread: Option<Duration>,
    /// Steady load before the rollout starts.
    pub before: Duration,
    /// Steady load after the rollout ends.
    pub after: Duration,
    /// How long the canary runs at its small weight before promotion.
    pub canary_hold: Duration,
    /// The canary's share of traffic, percent.
    pub canary_percent: u32,
    /// HAProxy's health check interval (`inter`, `fall 1`): its removal lag.
    pub check_interval: Duration,
    /// `PODCYCLE_SHUTDOWN_DELAY` of the replicas.
    pub shutdown_delay: Duration,
    /// `PODCYCLE_DRAIN_TIMEOUT` of the replicas.
    pub drain_timeout: Duration,
    /// `CHATBOT_WARMUP_DELAY` of the replicas.
    pub warmup_delay: Duration,
    /// `CHATBOT_TOKEN_DELAY`: time between streamed tokens.
    pub token_delay: Duration,
    /// The `haproxy` executable.
    pub haproxy: PathBuf,
    /// How to start a replica.
    pub replica: ReplicaCommand,
    /// This run's directory: HAProxy's config and log, replica logs.
    pub dir: PathBuf,
    /// Run number (1-based), for the report.
    pub run: usize,
}

impl Options {
    /// The drill's defaults: 3 replicas, 2000 req/s over 16 connections, 300 ms checks,
    /// a 1 s shutdown delay.
    pub fn new(replica: ReplicaCommand, haproxy: PathBuf, dir: PathBuf) -> Options {
        Options {
            mode: Mode::Podcycle,
            strategy: Strategy::Rolling,
            replicas: 3,
            rate: 2000.0,
            connections: 16,
            stream_every: 64,
            websockets: 0,
            ws_every: Duration::from_millis(300),
            grpc: 0,
            grpc_every: Duration::from_millis(10),
            stream_close_spread: None,
            before: Duration::from_secs(5),
            after: Duration::from_secs(5),
            canary_hold: Duration::from_secs(5),
            canary_percent: 10,
            check_interval: Duration::from_millis(300),
            shutdown_delay: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            warmup_delay: Duration::from_millis(500),
            token_delay: Duration::from_millis(5),
            haproxy,
            replica,
            dir,
            run: 1,
        }
    }
}

/// Seconds since the drill started.
#[derive(Clone, Copy, Debug)]
pub struct Clock(pub Instant);

impl Clock {
    /// Seconds since the drill started.
    pub fn now(self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Something that happened during the drill.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Seconds on the drill's clock.
    pub t: f64,
    /// `start`, `ready`, `in-lb`, `sigterm`, `lb-down`, `lb-up`, `lb-maint`, `exit`,
    /// `switch`, `canary`, `promote`, `load-start`, `rollout-start`, `rollout-end`, `load-stop`,
    /// `note`.
    pub kind: &'static str,
    /// A replica (`A1`), a slot (`blue/s1`) or empty.
    pub subject: String,
    /// Free text: a port, an exit status, a weight, ...
    pub detail: String,
}

/// The drill's event log, shared with the HAProxy watcher.
#[derive(Clone, Debug)]
pub struct Events {
    clock: Clock,
    list: Arc<Mutex<Vec<Event>>>,
}

impl Events {
    /// An empty log on `clock`.
    pub fn new(clock: Clock) -> Events {
        Events {
            clock,
            list: Arc::default(),
        }
    }

    /// Records an event now and returns its time.
    pub fn push(&self, kind: &'static str, subject: &str, detail: String) -> f64 {
        let t = self.clock.now();
        tracing::debug!(t, kind, subject, %detail, "drill event");
        self.list.lock().unwrap().push(Event {
            t,
            kind,
            subject: subject.to_owned(),
            detail,
        });
        t
    }

    /// The events so far, in time order.
    pub fn snapshot(&self) -> Vec<Event> {
        let mut v = self.list.lock().unwrap().clone();
        v.sort_by(|a, b| a.t.total_cmp(&b.t));
        v
    }
}

/// The ignored `replica` test a drill test binary carries: the drill starts replicas by running
/// the test binary again with `DRILL_REPLICA` set, and this test then runs the chatbot (the
/// same code as `cargo run -p drill`). Invoke once at the top level of each drill test file.
#[macro_export]
macro_rules! replica_test {
    () => {
        #[test]
        #[ignore = "a chatbot replica, started by the drill in a child process"]
        fn replica() {
            if std::env::var_os("DRILL_REPLICA").is_none() {
                return;
            }
            let code = $crate::run_replica(|| async {
                match chatbot::Mode::from_env() {
                    Ok(mode) => chatbot::run(mode).await,
                    Err(e) => podcycle::Outcome::Failed(e),
                }
            });
            std::process::exit(i32::from(code));
        }
    };
}

/// Runs the chatbot in a replica process: a runtime, logs to stderr, the service future from
/// `serve`, and the exit code podcycle's outcome calls for.
pub fn run_replica<F, Fut>(serve: F) -> u8
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = podcycle::Outcome>,
{
    use std::process::Termination;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("replica: cannot start a runtime: {e}");
            return 1;
        }
    };
    let outcome = rt.block_on(serve());
    rt.shutdown_timeout(Duration::from_secs(1));
    let code = outcome.exit_code();
    let _ = outcome.report();
    code
}
