//! The drain: streams that observe draining end cleanly; what outlives the drain deadline is
//! cut at delay + drain, with the forced exit code.

mod support;

use std::time::Duration;

use support::{client, code, rt, Child, SOON};

#[test]
#[ignore = "the server under test, run by the other tests in a child process"]
fn child() {
    support::child::main();
}

#[test]
fn an_sse_stream_that_observes_draining_ends_with_a_final_event() {
    let mut child = Child::spawn(&[
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "10s"),
    ]);
    child.wait_admin();
    let app = child.wait_app();
    let rt = rt();
    let stream = rt.spawn(async move { client::stream(app, "/stream?n=1000&ms=50").await });
    child.wait_line("START /stream", SOON);
    let sent = child.signal("TERM");
    let (text, ended) = rt.block_on(stream).unwrap();
    ended.expect("the stream ends cleanly, not cut");
    assert!(text.contains("data: tick 0"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("event: reconnect\ndata: server draining"),
        "last event tells the client to reconnect: {text}"
    );
    let (status, exited) = child.wait_exit(SOON);
    assert_eq!(code(status), 0);
    assert!(
        exited - sent < Duration::from_secs(5),
        "exit long before the drain deadline"
    );
}

#[test]
fn a_stream_that_ignores_draining_is_cut_at_the_deadline_with_the_forced_exit_code() {
    let mut child = Child::spawn(&[
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "1s"),
    ]);
    child.wait_admin();
    let app = child.wait_app();
    let rt = rt();
    let stream =
        rt.spawn(async move { client::stream(app, "/stream-ignoring-drain?n=1000&ms=50").await });
    child.wait_line("START /stream-ignoring-drain", SOON);
    let sent = child.signal("TERM");
    let (status, exited) = child.wait_exit(SOON);
    assert_eq!(
        code(status),
        4,
        "{}",
        child.drain_output(Duration::from_secs(1))
    );
    let took = exited - sent;
    assert!(
        took >= Duration::from_millis(1300),
        "cut before delay + drain: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1300) + Duration::from_secs(2),
        "{took:?}"
    );
    let (text, ended) = rt.block_on(stream).unwrap();
    assert!(text.contains("data: tick"), "{text}");
    assert!(
        ended.is_err(),
        "the stream was cut, and the client can tell"
    );
    let out = child.drain_output(Duration::from_secs(1));
    assert!(out.contains("OUTCOME 4"), "{out}");
}

#[test]
fn a_request_slower_than_the_deadline_exits_at_delay_plus_drain() {
    let mut child = Child::spawn(&[
        ("PODCYCLE_SHUTDOWN_DELAY", "500ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "1500ms"),
        ("PODCYCLE_HOOK_TIMEOUT", "1s"),
    ]);
    child.wait_admin();
    let app = child.wait_app();
    let rt = rt();
    let slow = rt.spawn(async move { client::get(app, "/slow?ms=60000").await });
    child.wait_line("START /slow", SOON);
    let sent = child.signal("TERM");
    let (status, exited) = child.wait_exit(SOON);
    let took = exited - sent;
    assert_eq!(code(status), 4);
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(
        took < Duration::from_secs(4),
        "delay + drain + 2 s slack: {took:?}"
    );
    assert!(rt.block_on(slow).unwrap().is_err());
    let out = child.drain_output(Duration::from_secs(1));
    assert!(
        out.contains("HOOK done"),
        "hooks still run after a forced drain: {out}"
    );
}
