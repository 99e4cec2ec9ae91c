//! Keep-alive clients across a shutdown: the connection is handed back politely with
//! `Connection: close`, never reset under a request, never truncated.

use podcycle_test_support as support;

use std::time::{Duration, Instant};

use support::{client, with_child};

support::child!();

#[test]
fn a_keep_alive_client_sending_across_shutdown_gets_connection_close_and_no_error() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "500ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "5s"),
    ];
    let ((), exit) = with_child(&env, |child| async move {
        let app = child.app;
        // Several clients, each on one connection, sending back to back (with small pauses of
        // different lengths so some are idle exactly when draining starts).
        let clients: Vec<_> = (0..4u64)
            .map(|i| {
                tokio::spawn(async move {
                    let mut conn = client::Conn::open(app).await.unwrap();
                    let mut served = 0u32;
                    let deadline = Instant::now() + Duration::from_secs(8);
                    loop {
                        let reply = conn.get("/hello").await?;
                        if reply.status != 200 || reply.body != "hello 42" {
                            return Err(format!("bad reply {reply:?}"));
                        }
                        served += 1;
                        if reply.closes() {
                            conn.finished().await?;
                            return Ok(served);
                        }
                        if Instant::now() > deadline {
                            return Err(format!(
                                "never got Connection: close after {served} requests"
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(i * 7)).await;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        child.signal("TERM");
        for c in clients {
            let served = c.await.unwrap().expect("no reset, no truncation");
            assert!(served > 1);
        }
    });
    assert_eq!(exit.code, 0);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_when_draining_starts() {
    let env = [
        ("PODCYCLE_SHUTDOWN_DELAY", "300ms"),
        ("PODCYCLE_DRAIN_TIMEOUT", "20s"),
    ];
    let ((sent, closed), exit) = with_child(&env, |child| async move {
        let mut conn = client::Conn::open(child.app).await.unwrap();
        let r = conn.get("/hello").await.unwrap();
        assert!(!r.closes(), "no Connection: close while serving normally");
        let sent = child.signal("TERM");
        // The idle connection must not hold the drain open until the 20 s deadline.
        child.wait_exit();
        (sent, conn.is_closed() || conn.finished().await.is_ok())
    });
    assert_eq!(exit.code, 0);
    assert!(
        exit.at - sent < Duration::from_secs(5),
        "idle connection delayed exit"
    );
    assert!(closed);
}
