//! The chatbot's gRPC service and health service called by a client written by others:
//! Python's `grpcio` and `grpcio-health-checking` (`tests/grpc_client.py`). The client checks
//! SERVING, a failing RPC's `error_type` on /metrics, then sends SIGTERM with a Watch and a
//! server stream open: NOT_SERVING at once, RPCs still answered during the delay, the stream
//! ends with its last message and OK; the chatbot exits 0.
//!
//! The Python with those packages: `PODCYCLE_GRPC_PYTHON`, else `target/grpc-venv/bin/python`
//! in the workspace (`.ci/run` creates it). Missing: the test fails, as for any missing tool,
//! unless `PODCYCLE_SKIP_MISSING_TOOLS=1` (then it says SKIPPED; never in CI).

use podcycle_test_support as support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{client, code, Child, SOON};

support::child!(
    "the chatbot, run by the other tests in a child process",
    support::child::serve(|| chatbot::run(chatbot::Mode::Podcycle))
);

/// The Python that has grpcio and grpcio-health-checking, or `None` when skipping (after
/// saying why); fails the test otherwise.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("PODCYCLE_GRPC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/grpc-venv/bin/python")
        });
    let usable = Command::new(&python)
        .args(["-c", "import grpc, grpc_health.v1.health_pb2"])
        .status()
        .is_ok_and(|s| s.success());
    if usable {
        return Some(python);
    }
    support::missing_tool(
        &format!("{} has no grpcio", python.display()),
        "python3 -m venv target/grpc-venv && target/grpc-venv/bin/pip install grpcio \
         grpcio-health-checking (as .ci/run does)",
    );
    None
}

#[test]
fn python_grpcio_sees_the_whole_lifecycle() {
    let Some(python) = python() else { return };
    let app = format!("127.0.0.1:{}", support::free_port());
    let admin = format!("127.0.0.1:{}", support::free_port());
    let mut bot = Child::spawn(&[
        ("PODCYCLE_ADDR", app.as_str()),
        ("PODCYCLE_ADMIN_ADDR", admin.as_str()),
        ("PODCYCLE_SHUTDOWN_DELAY", "1s"),
        ("CHATBOT_WARMUP_DELAY", "0s"),
        ("CHATBOT_TOKEN_DELAY", "200ms"),
    ]);
    let rt = support::rt();
    let deadline = Instant::now() + SOON * 3;
    rt.block_on(async {
        let admin = admin.parse().unwrap();
        while !client::get(admin, "/readyz")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            assert!(Instant::now() < deadline, "the chatbot never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_client.py");
    let out = Command::new(&python)
        .arg(script)
        .args([&app, &admin, &bot.pid().to_string()])
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("PASSED"),
        "the Python client failed:\n{stdout}\n{stderr}\nchatbot:\n{}",
        bot.output()
    );
    let (status, _) = bot.wait_exit(SOON);
    assert_eq!(code(status), 0, "{}", bot.output());
}
