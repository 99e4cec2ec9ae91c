//! `grpc.health.v1.Health` on the admin listener (feature `grpc`), called with tonic's client:
//! the overall service follows readiness and turns NOT_SERVING the moment shutdown starts,
//! per-check names follow their checks, and `Watch` streams each change.
//! (`examples/chatbot/tests/grpc_python.rs` calls it with Python's grpcio as well.)

use podcycle_test_support as support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use podcycle::{Check, Lifecycle, Phase};
use support::{in_process_config as config, SOON};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn client(admin: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{admin}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn check(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Code> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_watch_follow_readiness_and_the_checks() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let db_up = Arc::new(AtomicBool::new(true));
    let up = db_up.clone();
    lifecycle.check(Check::readiness("db", move || {
        let ok = up.load(Ordering::Relaxed);
        async move {
            if ok {
                Ok(())
            } else {
                Err("db down")
            }
        }
    }));
    let mut health = client(admin).await;
    // Before serving: not ready, but alive.
    assert_eq!(check(&mut health, "").await, Ok(ServingStatus::NotServing));
    assert_eq!(
        check(&mut health, "livez").await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut health, "no-such-service").await,
        Err(tonic::Code::NotFound)
    );

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::NotServing);

    let serving = tokio::spawn(lifecycle.clone().serve(axum::Router::new()));
    let next = tokio::time::timeout(SOON, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::Serving, "ready once serving");
    assert_eq!(check(&mut health, "").await, Ok(ServingStatus::Serving));
    assert_eq!(check(&mut health, "db").await, Ok(ServingStatus::Serving));
    assert_eq!(
        check(&mut health, "readyz").await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut health, "startupz").await,
        Ok(ServingStatus::Serving)
    );

    // A failing check: its own name and the overall service turn NOT_SERVING.
    db_up.store(false, Ordering::Relaxed);
    let next = tokio::time::timeout(SOON, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    assert_eq!(
        check(&mut health, "db").await,
        Ok(ServingStatus::NotServing)
    );
    db_up.store(true, Ordering::Relaxed);
    let next = tokio::time::timeout(SOON, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);

    // Shutdown: NOT_SERVING at once, while liveness stays SERVING.
    let asked = Instant::now();
    lifecycle.shutdown();
    let next = tokio::time::timeout(SOON, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(next.status(), ServingStatus::NotServing);
    assert_eq!(
        lifecycle.phase(),
        Phase::Deregistering,
        "seen during the delay ({took:?})"
    );
    assert_eq!(
        check(&mut health, "livez").await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut health, "shutdown").await,
        Ok(ServingStatus::NotServing)
    );
    eprintln!("Watch saw NOT_SERVING {took:?} after shutdown was requested");
    let outcome = tokio::time::timeout(SOON, serving).await.unwrap().unwrap();
    assert_eq!(outcome.exit_code(), 0);
}
