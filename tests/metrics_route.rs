//! `Metrics::router`: `/metrics` on the application router, for a service whose admin
//! listener is off.

use axum::routing::get;
use http_body_util::BodyExt;
use podcycle::Lifecycle;
use podcycle_test_support as support;
use tower::ServiceExt;

/// `/hello` through the metrics layer, with the metrics router merged in.
fn hello_app(lifecycle: &Lifecycle) -> axum::Router {
    axum::Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(lifecycle.metrics().layer())
        .merge(lifecycle.metrics().router())
}

/// Sends `req` (with an empty body) to `app`.
async fn oneshot(
    app: axum::Router,
    req: http::request::Builder,
) -> http::Response<axum::body::Body> {
    app.oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap()
}

/// `GET /hello` on `app`, answered 200 and read to its end.
async fn hello(app: &axum::Router) {
    let hello = oneshot(app.clone(), http::Request::get("/hello")).await;
    assert_eq!(hello.status(), 200);
    hello.into_body().collect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_the_app_router_when_the_admin_port_is_off() {
    let lifecycle = Lifecycle::new(support::in_process_config().admin_addr(None)).unwrap();
    assert_eq!(lifecycle.admin_addr(), None);
    let app = hello_app(&lifecycle);
    hello(&app).await;
    let res = oneshot(app, http::Request::get("/metrics")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[http::header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("podcycle_build_info"), "{text}");
    assert!(
        text.contains("http_route=\"/hello\""),
        "the request through the layer is recorded:\n{text}"
    );
    assert!(
        !text.contains("http_route=\"/metrics\""),
        "scrapes are not recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_requests_exist_at_zero_for_every_method_from_the_start() {
    let lifecycle = Lifecycle::new(support::in_process_config().admin_addr(None)).unwrap();
    let text = lifecycle.metrics().render();
    for method in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
    ] {
        let line = format!(
            "http_server_active_requests{{http_request_method=\"{method}\",version=\"9.9.9\"}} 0\n"
        );
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_scrapes_on_the_app_router_are_not_recorded_with_named_handlers_or_the_layer() {
    for named in [true, false] {
        let lifecycle = Lifecycle::new(support::in_process_config().admin_addr(None)).unwrap();
        let app = if named {
            axum::Router::new().route("/hello", podcycle::routing::get(|| async { "hello" }))
        } else {
            axum::Router::new()
                .route("/hello", get(|| async { "hello" }))
                .layer(lifecycle.metrics().layer())
        }
        .merge(lifecycle.metrics().router());
        let serving = tokio::spawn(lifecycle.clone().serve(app));
        lifecycle.reached(podcycle::Phase::Serving).await;
        let addr = lifecycle.app_addr().unwrap();
        assert_eq!(
            support::client::get(addr, "/hello").await.unwrap().status,
            200
        );
        for _ in 0..3 {
            let scrape = support::client::get(addr, "/metrics").await.unwrap();
            assert_eq!(scrape.status, 200);
        }
        let text = support::client::get(addr, "/metrics").await.unwrap().body;
        let routes: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
            .collect();
        assert_eq!(routes.len(), 1, "named: {named}; {routes:#?}");
        assert!(
            routes[0].contains("http_route=\"/hello\"") && routes[0].ends_with(" 1"),
            "named: {named}; {routes:#?}"
        );
        lifecycle.shutdown();
        assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_asking_for_protobuf_gets_delimited_metric_families() {
    let lifecycle = Lifecycle::new(
        support::in_process_config()
            .admin_addr(None)
            .native_histograms(true),
    )
    .unwrap();
    let app = hello_app(&lifecycle);
    hello(&app).await;
    // What Prometheus 2.42 sends with `--enable-feature=native-histograms`.
    let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                  encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
    let res = oneshot(
        app,
        http::Request::get("/metrics").header(http::header::ACCEPT, accept),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[http::header::CONTENT_TYPE],
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    // The first family: a varint length, then field 1 (the name).
    let mut bytes = &body[..];
    let len = prost::encoding::decode_varint(&mut bytes).unwrap() as usize;
    assert!(len <= bytes.len());
    let name = b"http_server_request_duration_seconds";
    assert_eq!(bytes[0], 0x0a, "field 1, length-delimited");
    assert_eq!(&bytes[2..2 + name.len()], name);
    // Every family is there, each length-prefixed to the end of the body.
    let mut families = 0;
    let mut rest = &body[..];
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest).unwrap() as usize;
        rest = &rest[len..];
        families += 1;
    }
    assert!(families > 10, "the registry's families too: {families}");
    let text = lifecycle.metrics().render();
    assert!(
        text.starts_with("# HELP http_server_request_duration_seconds"),
        "the text format otherwise"
    );
}
