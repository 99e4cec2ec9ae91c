//! Test support shared by the workspace's integration tests (podcycle's, the judge's, the
//! drill's): a server under test that runs as a real child process (the test binary itself,
//! re-executed to run its ignored `child` test), real signals, and a small HTTP client.
//!
//! A test file declares its child once with [`child!`], then most tests are
//! `with_child(env, |child| async move { .. })` ([`with_child`]): start, wait for the
//! listeners, run the body, wait for the exit. HTTP/2 connections come from [`client::h2`],
//! ports fixed in advance from [`free_port`], a real Prometheus server from
//! [`prometheus::Prometheus`].
#![forbid(unsafe_code)]

pub mod child;
pub mod client;
pub mod prometheus;
mod run;

pub use run::{with_child, Exit, Running};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The ignored `child` test that [`Child::spawn`] re-executes the test binary to run: each
/// test file that spawns a child declares it once.
///
/// `support::child!();` runs the server under test of [`child::main`];
/// `support::child!("why", body)` runs `body` instead (for example
/// [`child::serve`]`(|| chatbot::run(..))`), the reason shown by `cargo test -- --ignored`.
/// Outside a child process (`PODCYCLE_TEST_CHILD` unset) the test returns at once.
#[macro_export]
macro_rules! child {
    () => {
        $crate::child!(
            "the server under test, run by the other tests in a child process",
            $crate::child::main()
        );
    };
    ($reason:literal, $body:expr) => {
        #[test]
        #[ignore = $reason]
        fn child() {
            if ::std::env::var_os("PODCYCLE_TEST_CHILD").is_none() {
                return;
            }
            $body
        }
    };
}

/// A loopback port that is free now (bound, then released), for a child that must be told
/// its ports in advance.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A generous bound for anything that should happen "soon" (CI machines are slow).
pub const SOON: Duration = Duration::from_secs(10);

/// The server under test, running in a child process.
pub struct Child {
    proc: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    pub admin: Option<SocketAddr>,
    pub app: Option<SocketAddr>,
    pub started: Instant,
}

impl Child {
    /// Starts the child with `env` on top of test defaults (loopback, port 0, short timings).
    pub fn spawn(env: &[(&str, &str)]) -> Child {
        Child::spawn_command(Command::new(std::env::current_exe().unwrap()), env)
    }

    /// Like [`Child::spawn`], with the child's soft file-descriptor limit set to `open_files`
    /// (`ulimit -n` in a shell that then execs the test binary).
    pub fn spawn_with_fd_limit(env: &[(&str, &str)], open_files: u32) -> Child {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(std::env::current_exe().unwrap());
        Child::spawn_command(cmd, env)
    }

    /// Runs the binary at `path` (e.g. `env!("CARGO_BIN_EXE_chatbot")`) with loopback
    /// listeners on free ports and `env` on top; stdout and stderr are captured as lines.
    pub fn spawn_binary(path: &str, env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(path);
        cmd.env("PODCYCLE_ADDR", "127.0.0.1:0")
            .env("PODCYCLE_ADMIN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Child::capture(cmd.spawn().expect("spawn binary"))
    }

    fn spawn_command(mut cmd: Command, env: &[(&str, &str)]) -> Child {
        cmd.args([
            "--ignored",
            "--exact",
            "child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PODCYCLE_TEST_CHILD", "1")
        .env("PODCYCLE_ADDR", "127.0.0.1:0")
        .env("PODCYCLE_ADMIN_ADDR", "127.0.0.1:0")
        .env("PODCYCLE_CHECK_INTERVAL", "100ms")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Child::capture(cmd.spawn().expect("spawn child"))
    }

    fn capture(mut proc: std::process::Child) -> Child {
        let (tx, rx) = mpsc::channel();
        let out = proc.stdout.take().unwrap();
        let err = proc.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        Child {
            proc,
            lines: rx,
            seen: Vec::new(),
            admin: None,
            app: None,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Waits for a line starting with `prefix`; returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str, within: Duration) -> String {
        if let Some(rest) = self.seen.iter().find_map(|l| after(l, prefix)) {
            return rest;
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = after(&line, prefix);
                    self.seen.push(line);
                    if let Some(rest) = hit {
                        return rest;
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?} within {within:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Collects output until the process closes stdout/stderr (or `within` passes).
    pub fn drain_output(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    pub fn output(&self) -> String {
        self.seen.join("\n")
    }

    pub fn wait_admin(&mut self) -> SocketAddr {
        let a = self.wait_line("ADMIN ", SOON).parse().unwrap();
        self.admin = Some(a);
        a
    }

    pub fn wait_app(&mut self) -> SocketAddr {
        let a = self.wait_line("APP ", SOON).parse().unwrap();
        self.app = Some(a);
        a
    }

    /// Sends a real signal (`TERM`, `INT`, ...) with kill(1).
    /// Returns an instant taken just before the signal is sent, so that "exited at least X after
    /// the signal" holds however long starting kill(1) takes.
    pub fn signal(&self, sig: &str) -> Instant {
        let before = Instant::now();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
        before
    }

    /// Waits for the process to exit, bounded; returns its status and when it was seen.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.proc.try_wait().unwrap() {
                return (status, Instant::now());
            }
            if Instant::now() > deadline {
                let _ = self.proc.kill();
                let out = self.drain_output(Duration::from_secs(1));
                panic!("child did not exit within {within:?}; output:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.proc.try_wait().unwrap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// The text after `prefix` when the line contains it (libtest may print before it).
fn after(line: &str, prefix: &str) -> Option<String> {
    line.find(prefix)
        .map(|i| line[i + prefix.len()..].trim().to_owned())
}

/// A runtime for the test's own client side; spawned tasks run in the background.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The exit code of a status (panics on death by signal, with the signal in the message).
pub fn code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| panic!("killed by signal {:?}", status.signal()))
}

/// Finds an external tool. A missing tool fails the test (the summary shows it: a skip must
/// not look like a pass), unless `PODCYCLE_SKIP_MISSING_TOOLS=1` asks to skip: then the test
/// returns early and says SKIPPED. In CI (`CI` set) a missing tool always fails.
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing_tool(
            &format!("{name} is not installed"),
            &format!("apt-get install -y {}", debian_package(name)),
        );
    }
    found
}

/// Says that something a test needs (`what`, e.g. "promtool is not installed") is missing,
/// with the command that installs it: fails the test, unless `PODCYCLE_SKIP_MISSING_TOOLS=1`
/// (and not in CI), in which case it prints `SKIPPED: ...` and the caller returns early.
/// Every test that needs a tool, a venv or a service calls this (or [`tool`]) when it is
/// missing.
pub fn missing_tool(what: &str, install: &str) {
    let skip = std::env::var("PODCYCLE_SKIP_MISSING_TOOLS").as_deref() == Ok("1");
    match missing_verdict(what, install, std::env::var_os("CI").is_some(), skip) {
        Ok(skipped) => eprintln!("{skipped}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// What to do about a missing tool: `Err` fails the test with the message, `Ok` skips it with
/// the message.
fn missing_verdict(what: &str, install: &str, ci: bool, skip: bool) -> Result<String, String> {
    if ci {
        Err(format!(
            "{what}, and CI requires it (.ci/run installs it: {install})"
        ))
    } else if !skip {
        Err(format!(
            "{what}, and this test needs it: {install}; \
             or set PODCYCLE_SKIP_MISSING_TOOLS=1 to skip the tests that need a missing tool"
        ))
    } else {
        Ok(format!(
            "SKIPPED: {what} ({install}); this test did not run"
        ))
    }
}

fn debian_package(tool: &str) -> &str {
    match tool {
        "promtool" | "prometheus" => "prometheus",
        other => other,
    }
}

/// A configuration for a lifecycle run inside the test process: loopback listeners on free
/// ports, checks every 20 ms, a 100 ms shutdown delay, no signal handlers (tests in one
/// process must not share them), version `9.9.9`.
pub fn in_process_config() -> podcycle::Config {
    podcycle::Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
        .check_interval(Duration::from_millis(20))
        .shutdown_delay(Duration::from_millis(100))
        .handle_signals(false)
        .version("9.9.9")
}

/// Waits until `f` holds, checking every 5 ms; fails the test after [`SOON`].
pub async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !f() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `GET path` on `addr` answers 200, asking every 100 ms (a refused connection
/// counts as not yet); fails the test after `within`.
pub async fn wait_ok(addr: SocketAddr, path: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client::get(addr, path).await {
            if r.status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr}{path} did not answer 200 within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status code of `GET path` on `addr`.
pub async fn status(addr: SocketAddr, path: &str) -> u16 {
    client::get(addr, path).await.unwrap().status.as_u16()
}

#[cfg(test)]
mod tests {
    use super::missing_verdict;

    /// Issue 29 item 3: a test whose tool is missing fails unless skipping is asked for, and
    /// never skips in CI.
    #[test]
    fn a_missing_tool_fails_unless_skipping_is_asked_for_and_never_in_ci() {
        let failed = missing_verdict("x is missing", "install x", false, false).unwrap_err();
        assert!(failed.contains("PODCYCLE_SKIP_MISSING_TOOLS=1"), "{failed}");
        assert!(failed.contains("install x"), "{failed}");
        assert!(missing_verdict("x is missing", "install x", true, true).is_err());
        let skipped = missing_verdict("x is missing", "install x", false, true).unwrap();
        assert!(skipped.starts_with("SKIPPED: x is missing"), "{skipped}");
    }
}
