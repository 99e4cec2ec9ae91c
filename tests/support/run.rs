//! [`with_child`]: the dance most child-process tests repeat, done once. Start the server
//! under test, wait until both listeners are announced, run the test body against them on a
//! client runtime, and wait (bounded) for the process to exit.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{code, rt, Child, SOON};

/// Runs `test` against the server under test started with `env` (see [`Child::spawn`]), once
/// it has announced its admin and application addresses; then waits for it to exit (within
/// [`SOON`]) and returns what `test` returned with how the process exited.
///
/// The body runs on the test's thread (`Runtime::block_on` of a two-worker runtime), so the
/// [`Running`] methods that wait for the child (`wait_line`, `wait_exit`) block it while tasks
/// spawned by the body go on; the runtime, and so those tasks, live until the process has
/// exited. The body sends the signal that ends the process; a body that needs to look at the
/// exit before it returns (or hold something open until then) calls [`Running::wait_exit`].
///
/// ```ignore
/// let (sent, exit) = with_child(&[("PODCYCLE_SHUTDOWN_DELAY", "2s")], |child| async move {
///     assert_eq!(support::status(child.app, "/hello").await, 200);
///     child.signal("TERM")
/// });
/// assert_eq!(exit.code, 0, "{}", exit.output);
/// assert!(exit.at - sent >= Duration::from_secs(2));
/// ```
pub fn with_child<T, F, Fut>(env: &[(&str, &str)], test: F) -> (T, Exit)
where
    F: FnOnce(Running) -> Fut,
    Fut: Future<Output = T>,
{
    Child::spawn(env).run(test)
}

impl Child {
    /// [`with_child`] for a child already started (e.g. by [`Child::spawn_with_fd_limit`]).
    pub fn run<T, F, Fut>(mut self, test: F) -> (T, Exit)
    where
        F: FnOnce(Running) -> Fut,
        Fut: Future<Output = T>,
    {
        let admin = self.wait_admin();
        let app = self.wait_app();
        let running = Running {
            admin,
            app,
            child: Arc::new(Mutex::new(self)),
            exit: Arc::new(Mutex::new(None)),
        };
        let rt = rt();
        let value = rt.block_on(test(running.clone()));
        let exit = running.wait_exit();
        drop(rt);
        (value, exit)
    }
}

impl Child {
    /// Waits for a process that ends on its own (a refused configuration, a failed warm-up)
    /// to exit, within [`SOON`], and collects the rest of its output.
    pub fn exited(mut self) -> Exit {
        let (status, at) = self.wait_exit(SOON);
        let output = self.drain_output(Duration::from_secs(1));
        Exit {
            code: code(status),
            at,
            output,
        }
    }
}

/// How the server under test exited.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The exit code (a death by signal fails the test, naming the signal).
    pub code: i32,
    /// When the exit was seen (polled every 5 ms).
    pub at: Instant,
    /// Everything the process wrote, stdout and stderr (`stderr: ` lines).
    pub output: String,
}

/// The server under test while a [`with_child`] body runs: its addresses, and the
/// [`Child`] methods a body uses, through `&self` so that the handle can be cloned.
#[derive(Clone)]
pub struct Running {
    /// The admin listener's address (`ADMIN <addr>`).
    pub admin: SocketAddr,
    /// The application listener's address (`APP <addr>`).
    pub app: SocketAddr,
    child: Arc<Mutex<Child>>,
    exit: Arc<Mutex<Option<Exit>>>,
}

impl Running {
    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Child::signal`]: sends `sig` (`TERM`, `INT`, ...); returns an instant taken just
    /// before.
    pub fn signal(&self, sig: &str) -> Instant {
        self.child().signal(sig)
    }

    /// [`Child::wait_line`] within [`SOON`]: the rest of the first line containing `prefix`.
    pub fn wait_line(&self, prefix: &str) -> String {
        self.child().wait_line(prefix, SOON)
    }

    /// [`Child::try_exit`].
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.child().try_exit()
    }

    /// [`Child::output`]: what the process wrote so far (as far as it has been read).
    pub fn output(&self) -> String {
        self.child().output()
    }

    /// [`Child::pid`].
    pub fn pid(&self) -> u32 {
        self.child().pid()
    }

    /// Waits for the process to exit, within [`SOON`] (killing it and failing the test
    /// after that), then collects the rest of its output. Later calls, and the one
    /// [`with_child`] makes after the body, return the same [`Exit`].
    pub fn wait_exit(&self) -> Exit {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(exit) = exit.as_ref() {
            return exit.clone();
        }
        let mut child = self.child();
        let (status, at) = child.wait_exit(SOON);
        let output = child.drain_output(Duration::from_secs(1));
        exit.insert(Exit {
            code: code(status),
            at,
            output,
        })
        .clone()
    }
}
