//! The application port is bound before warm-ups end: a port conflict fails at once, not after
//! the warm-up.

use std::time::Duration;

use podcycle::{Lifecycle, Outcome};
use podcycle_test_support as support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_fails_at_once_not_after_the_warm_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lifecycle =
        Lifecycle::new(support::in_process_config().addr(taken.local_addr().unwrap())).unwrap();
    let warmup = lifecycle.warmup("slow", async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, String>(())
    });
    let outcome =
        tokio::time::timeout(Duration::from_secs(2), lifecycle.serve(axum::Router::new()))
            .await
            .expect("the bind error comes before the 5 s warm-up ends");
    match outcome {
        Outcome::Failed(e) => assert!(e.starts_with("binding 127.0.0.1:"), "{e}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(warmup.get().is_none(), "the warm-up was cancelled");
}
