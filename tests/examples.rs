//! The examples a new user runs first, run as they would run them.

use podcycle_test_support as support;

use std::path::PathBuf;
use std::time::Duration;

use support::{code, Child, SOON};

/// `target/<profile>/examples/<name>`, which `cargo test` builds beside this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

/// Issue 29 item 1: `cargo run --example minimal > file` wrote ANSI colour codes into the file.
#[test]
fn the_minimal_example_writes_no_colour_codes_when_its_output_is_not_a_terminal() {
    for name in ["minimal", "hyper_service"] {
        let path = example(name);
        let mut child = Child::spawn_binary(path.to_str().unwrap(), &[]);
        child.wait_line("application listener bound", SOON);
        child.wait_line("serving", SOON);
        child.signal("INT");
        let (status, _) = child.wait_exit(SOON);
        let out = child.drain_output(Duration::from_secs(1));
        assert_eq!(code(status), 0, "{name}: {out}");
        assert!(out.contains("podcycle phase"), "{name}: {out}");
        assert!(!out.contains('\u{1b}'), "{name} wrote escape codes:\n{out}");
    }
}
