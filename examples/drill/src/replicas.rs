//! Replicas: the chatbot in a child process (the caller's own executable, run again), on
//! loopback ports of its own, stopped with a real `kill -TERM`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::haproxy::Slot;
use super::Mode;

/// How to start a replica: a program and its arguments. The drill's CLI runs itself with
/// `--replica`; the integration test runs its own binary's ignored `replica` test.
#[derive(Clone, Debug)]
pub struct ReplicaCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl ReplicaCommand {
    /// The running test binary again, running only its ignored `replica` test (the one
    /// [`replica_test!`](crate::replica_test) declares): how the drill's tests start replicas.
    pub fn this_test_binary() -> ReplicaCommand {
        ReplicaCommand {
            program: std::env::current_exe().expect("the test binary's path"),
            args: [
                "--ignored",
                "--exact",
                "replica",
                "--nocapture",
                "--test-threads=1",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Settings every replica gets through its environment.
#[derive(Clone, Debug)]
pub struct ReplicaEnv {
    /// `CHATBOT_MODE`.
    pub mode: Mode,
    /// `CHATBOT_WARMUP_DELAY`.
    pub warmup_delay: Duration,
    /// `PODCYCLE_SHUTDOWN_DELAY`.
    pub shutdown_delay: Duration,
    /// `PODCYCLE_DRAIN_TIMEOUT`.
    pub drain_timeout: Duration,
    /// `CHATBOT_TOKEN_DELAY`.
    pub token_delay: Duration,
    /// `PODCYCLE_STREAM_CLOSE_SPREAD`, when set.
    pub stream_close_spread: Option<Duration>,
    /// More variables, set last (e.g. `PODCYCLE_GRACE_PERIOD` for the removal-lag drill).
    pub extra: Vec<(String, String)>,
}

/// What happened to one replica, times in seconds on the drill's clock.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaRecord {
    /// `A1` (version 1.0.0) or `B1` (1.1.0), ...
    pub name: String,
    /// `APP_VERSION`.
    pub version: String,
    /// Its HAProxy slot (`blue/s1`).
    pub slot: String,
    /// Process id.
    pub pid: u32,
    /// `PODCYCLE_ADDR`'s port.
    pub app_port: u16,
    /// `PODCYCLE_ADMIN_ADDR`'s port.
    pub admin_port: u16,
    /// Spawned.
    pub started: f64,
    /// Its own `/readyz` answered 200 (the kubelet's readiness probe).
    pub ready: Option<f64>,
    /// HAProxy had it UP after a passed health check.
    pub in_lb: Option<f64>,
    /// SIGTERM sent.
    pub sigterm: Option<f64>,
    /// HAProxy first saw it DOWN after the SIGTERM.
    pub out_of_lb: Option<f64>,
    /// The process exited (or was killed).
    pub exited: Option<f64>,
    /// `0`, `3`, or `signal 15`, or `killed (no exit within ...)`.
    pub exit: Option<String>,
    /// Exit code, `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// SIGTERM → exit, seconds.
    pub shutdown_seconds: Option<f64>,
    /// SIGTERM → HAProxy DOWN, seconds.
    pub removal_lag_seconds: Option<f64>,
    /// SIGTERM → end of the last response it served, seconds (from `x-served-by`).
    pub last_response_after_sigterm: Option<f64>,
    /// Responses it served (from `x-served-by`).
    pub served: u64,
    /// Failed requests HAProxy had sent to it (from `x-served-by`, HAProxy's errors included).
    pub failed: u64,
    /// Stopped at the end of the drill, after the load, rather than by the rollout.
    pub cleanup: bool,
}

/// A running replica.
#[derive(Debug)]
pub struct Replica {
    /// Its HAProxy slot.
    pub slot: Slot,
    /// What happened to it so far.
    pub record: ReplicaRecord,
    child: tokio::process::Child,
    log: PathBuf,
}

/// A port that is free now, below Linux's ephemeral range (32768+) so that no outgoing
/// connection can take it before the replica binds it, and never handed out twice by this
/// process.
pub fn free_port() -> Result<u16, String> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let base = 20_000 + (h.finish() % 10_000) as u16;
        let _ = NEXT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..2_000 {
        let mut port = NEXT.fetch_add(1, Ordering::Relaxed);
        if !(20_000..32_000).contains(&port) {
            port = 20_000 + port % 12_000;
            NEXT.store(port + 1, Ordering::Relaxed);
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port in 20000..32000".into())
}

impl Replica {
    /// Starts a replica; it logs to `<dir>/<name>.log`.
    pub fn spawn(
        command: &ReplicaCommand,
        env: &ReplicaEnv,
        dir: &std::path::Path,
        name: &str,
        version: &str,
        slot: Slot,
        now: f64,
    ) -> Result<Replica, String> {
        let app_port = free_port()?;
        let admin_port = free_port()?;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let human = |d: Duration| format!("{}ms", d.as_millis());
        let child = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .env("DRILL_REPLICA", "1")
            .env("PODCYCLE_ADDR", format!("127.0.0.1:{app_port}"))
            .env("PODCYCLE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("APP_VERSION", version)
            .env("CHATBOT_MODE", env.mode.name())
            .env("CHATBOT_WARMUP_DELAY", human(env.warmup_delay))
            .env("CHATBOT_TOKEN_DELAY", human(env.token_delay))
            .env("PODCYCLE_SHUTDOWN_DELAY", human(env.shutdown_delay))
            .env("PODCYCLE_DRAIN_TIMEOUT", human(env.drain_timeout))
            .env_remove("PODCYCLE_GRACE_PERIOD")
            .env_remove("PODCYCLE_STREAM_CLOSE_SPREAD")
            .env_remove("CHATBOT_FAULT_ERROR_RATE")
            .env_remove("CHATBOT_FAULT_LATENCY")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .envs(
                env.stream_close_spread
                    .map(|d| ("PODCYCLE_STREAM_CLOSE_SPREAD", human(d))),
            )
            .envs(env.extra.iter().map(|(k, v)| (k, v)))
            .spawn()
            .map_err(|e| format!("starting replica {name}: {e}"))?;
        Ok(Replica {
            slot,
            record: ReplicaRecord {
                name: name.to_owned(),
                version: version.to_owned(),
                slot: slot.to_string(),
                pid: child.id().unwrap_or(0),
                app_port,
                admin_port,
                started: now,
                ..ReplicaRecord::default()
            },
            child,
            log,
        })
    }

    /// Its log file (`<dir>/<name>.log`).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// `A1`, `B2`, ...
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Polls the replica's own `/readyz` until it answers 200 (what the kubelet does before the
    /// endpoint is published), bounded by `within`.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.record.admin_port));
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "replica {} exited before it was ready ({status}); log:\n{}",
                    self.record.name,
                    super::haproxy::tail(&self.log, 20)
                ));
            }
            if probe(addr).await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "replica {} not ready within {within:?}; log:\n{}",
                    self.record.name,
                    super::haproxy::tail(&self.log, 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a real SIGTERM with kill(1).
    pub async fn sigterm(&mut self) -> Result<(), String> {
        let status = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.record.pid.to_string())
            .status()
            .await
            .map_err(|e| format!("kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -TERM {} failed", self.record.pid))
        }
    }

    /// Waits for the process to exit; kills it if it takes longer than `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> (Option<i32>, String) {
        use std::os::unix::process::ExitStatusExt;
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => match (status.code(), status.signal()) {
                (Some(code), _) => (Some(code), code.to_string()),
                (None, Some(sig)) => (None, format!("signal {sig}")),
                _ => (None, status.to_string()),
            },
            Ok(Err(e)) => (None, format!("wait failed: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                (None, format!("killed (no exit within {within:?})"))
            }
        }
    }
}

/// `GET /readyz` on the admin port; the status code, if any.
async fn probe(addr: SocketAddr) -> Option<u16> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nhost: drill\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..buf.len().min(32)]).into_owned();
        head.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
}
