//! The application port is bound before warm-ups end: a port conflict fails at once, not after
//! the warm-up. Both listeners' bind errors name their setting and address in one format, and
//! the two listeners on one port are a configuration error before anything is bound.

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
        Outcome::Failed(e) => assert!(
            e.starts_with(&format!(
                "cannot bind the application listener PODCYCLE_ADDR={}: ",
                taken.local_addr().unwrap()
            )),
            "{e}"
        ),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(warmup.get().is_none(), "the warm-up was cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_port_in_use_names_its_setting_in_the_same_format() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Lifecycle::new(support::in_process_config().admin_addr(Some(addr))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "podcycle: cannot bind the admin listener PODCYCLE_ADMIN_ADDR={addr}: "
        )),
        "{msg}"
    );
    assert!(msg.contains("in use"), "{msg}");
}

/// Issue 29 item 4: both listeners on one port were only found out by the second bind
/// ("Address already in use", naming neither variable). Now it is a configuration error, in
/// code and from the environment, and nothing is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_and_admin_listeners_on_one_port_are_refused_naming_both_variables() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = support::in_process_config()
        .addr(free)
        .admin_addr(Some(free));
    let err = Lifecycle::new(config).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "podcycle configuration: PODCYCLE_ADDR={free} and PODCYCLE_ADMIN_ADDR={free} use the same port"
        )),
        "{msg}"
    );
    // Nothing was bound: the port is still free.
    drop(std::net::TcpListener::bind(free).expect("the clash is found before binding"));
}
