//! Panicking handlers under `Lifecycle::serve`: answered 500 (or, mid-body, cut short),
//! recorded with `error_type="panic"`, the active gauge balanced, and the process still serving.

use podcycle_test_support as support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use podcycle::{Config, Lifecycle, Outcome, Phase};
use support::client;

fn config() -> Config {
    Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
        .shutdown_delay(Duration::from_millis(50))
        .drain_timeout(Duration::from_millis(500))
        .handle_signals(false)
        .version("2.0.0")
}

fn app(lifecycle: &Lifecycle) -> Router {
    routes!(get).layer(lifecycle.metrics().layer())
}

/// The same routes named by `podcycle::routing`'s handlers instead of the layer.
fn named_app() -> Router {
    use podcycle::routing::get;
    routes!(get)
}

/// The application's routes, with `$get` from `axum::routing` or `podcycle::routing`.
macro_rules! routes {
    ($get:ident) => {
        Router::new()
            .route("/hello/{name}", $get(|| async { "hi" }))
            .route(
                "/panic/{id}",
                $get(|| async {
                    if true {
                        panic!("handler boom");
                    }
                    "unreachable"
                }),
            )
            .route(
                "/panic-body",
                $get(|| async {
                    // One chunk, then a panic while hyper polls for the second.
                    let s = futures_util::stream::unfold(0, |n| async move {
                        if n == 1 {
                            panic!("body boom");
                        }
                        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
                    });
                    axum::body::Body::from_stream(s)
                }),
            )
    };
}
use routes;

const ACTIVE_ZERO: &str =
    "http_server_active_requests{http_request_method=\"GET\",version=\"2.0.0\"} 0";

/// The `_count` sample of the request histogram with these labels (in podcycle's order).
fn count_line(route: &str, status: u16, error_type: &str) -> String {
    format!(
        "http_server_request_duration_seconds_count{{http_request_method=\"GET\",http_route=\"{route}\",http_response_status_code=\"{status}\",version=\"2.0.0\",error_type=\"{error_type}\"}}"
    )
}

/// Waits (bounded) until the metrics text has `count` for `line` and the gauge is back at 0:
/// the server records a cut-short body when it polls it, which the client cannot wait on.
async fn recorded(lifecycle: &Lifecycle, line: &str, count: u64) -> String {
    let want = format!("{line} {count}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = lifecycle.metrics().render();
        if text.contains(&want) && text.contains(ACTIVE_ZERO) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not recorded: {want}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start() -> (Lifecycle, tokio::task::JoinHandle<Outcome>, SocketAddr) {
    let lifecycle = Lifecycle::new(config()).unwrap();
    serve(lifecycle.clone(), app(&lifecycle)).await
}

async fn serve(
    lifecycle: Lifecycle,
    app: Router,
) -> (Lifecycle, tokio::task::JoinHandle<Outcome>, SocketAddr) {
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    (lifecycle, serving, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_answered_500_recorded_and_the_server_keeps_serving() {
    let (lifecycle, serving, addr) = start().await;

    for i in 1..=3 {
        let reply = client::get(addr, &format!("/panic/{i}")).await.unwrap();
        assert_eq!(reply.status, 500);
        assert_eq!(reply.body, "Internal Server Error\n");
        assert!(reply.closes(), "HTTP/1: Connection: close after a panic");
    }
    let text = recorded(&lifecycle, &count_line("/panic/{id}", 500, "panic"), 3).await;
    assert!(!text.contains("client_aborted"), "{text}");

    // Still serving, on a fresh connection and on a kept-alive one.
    let mut conn = client::Conn::open(addr).await.unwrap();
    for _ in 0..2 {
        let reply = conn.get("/hello/x").await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "hi"));
    }
    drop(conn);
    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_panics_mid_stream_is_cut_short_and_recorded() {
    let (lifecycle, serving, addr) = start().await;

    let (received, ended) = client::stream(addr, "/panic-body").await;
    assert!(ended.is_err(), "cut short, not ended cleanly: {received:?}");
    let text = recorded(&lifecycle, &count_line("/panic-body", 200, "panic"), 1).await;
    assert!(!text.contains("client_aborted"), "{text}");

    assert_eq!(client::get(addr, "/hello/y").await.unwrap().status, 200);
    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_panic_answers_500_or_resets_its_stream_and_the_connection_lives_on() {
    let (lifecycle, serving, addr) = start().await;
    let (mut sender, driver) = client::h2(addr).await;
    let get = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    let res = sender.send_request(get("/panic/1")).await.unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().get("connection").is_none(), "none on h2");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"Internal Server Error\n");

    // The reset may reach the client before it has read the response head.
    match sender.send_request(get("/panic-body")).await {
        Ok(res) => {
            assert_eq!(res.status(), 200);
            assert!(res.into_body().collect().await.is_err(), "stream reset");
        }
        Err(e) => assert!(format!("{e:?}").contains("Reset"), "{e:?}"),
    }

    // The same connection serves on.
    let res = sender.send_request(get("/hello/z")).await.unwrap();
    assert_eq!(res.status(), 200);
    recorded(&lifecycle, &count_line("/panic/{id}", 500, "panic"), 1).await;
    recorded(&lifecycle, &count_line("/panic-body", 200, "panic"), 1).await;

    drop(sender);
    lifecycle.shutdown();
    driver.await.unwrap().unwrap();
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
}

#[tokio::test]
async fn outside_lifecycle_serve_a_panic_unwinding_through_the_layer_is_recorded_as_panic() {
    // Not under `Lifecycle::serve`: the layer times the request itself, and does not catch
    // the panic; its timer, dropped by the unwinding, records it.
    let lifecycle = Lifecycle::new(config()).unwrap();
    let app = app(&lifecycle);
    let req = http::Request::get("/panic/7")
        .body(axum::body::Body::empty())
        .unwrap();
    let joined = tokio::spawn(tower::ServiceExt::oneshot(app, req)).await;
    assert!(joined.unwrap_err().is_panic());
    let text = lifecycle.metrics().render();
    assert!(
        text.contains(&format!("{} 1", count_line("/panic/{id}", 500, "panic"))),
        "{text}"
    );
    assert!(text.contains(ACTIVE_ZERO), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_handlers_record_panics_as_the_layer_does() {
    // No layer: the handlers name their routes; the serving stack catches, answers and
    // records the panics exactly as with the layer.
    let (lifecycle, serving, addr) = serve(Lifecycle::new(config()).unwrap(), named_app()).await;
    for i in 1..=2 {
        let reply = client::get(addr, &format!("/panic/{i}")).await.unwrap();
        assert_eq!(reply.status, 500);
        assert_eq!(reply.body, "Internal Server Error\n");
    }
    recorded(&lifecycle, &count_line("/panic/{id}", 500, "panic"), 2).await;
    let (received, ended) = client::stream(addr, "/panic-body").await;
    assert!(ended.is_err(), "cut short, not ended cleanly: {received:?}");
    let text = recorded(&lifecycle, &count_line("/panic-body", 200, "panic"), 1).await;
    assert!(!text.contains("client_aborted"), "{text}");
    assert!(!text.contains("unmatched"), "{text}");
    assert_eq!(client::get(addr, "/hello/y").await.unwrap().status, 200);
    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), Outcome::Drained);
}
