//! gRPC in the metrics (feature `grpc`), with hand-made gRPC responses so that each way a
//! status travels is covered: in the trailers after messages, in the headers of a
//! trailers-only response, or absent (OK). The route is the full method when a whole
//! service is one route (`/pkg.Service/{*rest}`, as tonic's `Routes` make it), and unknown
//! methods (UNIMPLEMENTED) stay under the service's template. HTTP/1 requests and other
//! content types are HTTP as before. Under `lifecycle.serve` and with the layer alone.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use podcycle::Lifecycle;
use podcycle_test_support::in_process_config as config;

/// `/grpc.test.Svc/{method}`: `Ok` answers a message and `grpc-status: 0` in the trailers,
/// `Unavailable` a message and `14` in the trailers, `Internal` a trailers-only `13`, and
/// anything else a trailers-only `12` (UNIMPLEMENTED), as tonic does.
async fn svc(Path(method): Path<String>) -> Response<Body> {
    let trailers = |code: &str| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", code.parse().unwrap());
        t
    };
    let streamed = |code: &'static str| {
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers(code))),
        ];
        Response::builder()
            .header("content-type", "application/grpc")
            .body(Body::new(StreamBody::new(stream::iter(frames))))
            .unwrap()
    };
    let trailers_only = |code: &str| {
        Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", code)
            .body(Body::empty())
            .unwrap()
    };
    match method.as_str() {
        "Ok" => streamed("0"),
        "Unavailable" => streamed("14"),
        "Internal" => trailers_only("13"),
        _ => trailers_only("12"),
    }
}

fn app(lifecycle: &Lifecycle) -> Router {
    Router::new()
        .route("/grpc.test.Svc/{*rest}", any(svc))
        .route("/plain", get(|| async { "plain" }))
        .layer(lifecycle.metrics().layer())
}

async fn h2_call(addr: SocketAddr, path: &str, content_type: &str) -> HeaderMap {
    let (mut sender, _driver) = podcycle_test_support::client::h2(addr).await;
    let req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let mut headers = res.headers().clone();
    let collected = res.into_body().collect().await.unwrap();
    if let Some(t) = collected.trailers() {
        headers.extend(t.clone());
    }
    headers
}

fn count(metrics: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains(&format!("{labels}}}"))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn line(route: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| format!(",error_type=\"{e}\""));
    format!("http_request_method=\"POST\",http_route=\"{route}\",http_response_status_code=\"200\",version=\"9.9.9\"{error}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_statuses_and_methods_are_recorded_under_lifecycle_serve() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let serving = tokio::spawn(lifecycle.clone().serve(app(&lifecycle)));
    lifecycle.reached(podcycle::Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    let grpc = "application/grpc";
    let h = h2_call(addr, "/grpc.test.Svc/Ok", grpc).await;
    assert_eq!(h.get("grpc-status").unwrap(), "0");
    let h = h2_call(addr, "/grpc.test.Svc/Unavailable", grpc).await;
    assert_eq!(h.get("grpc-status").unwrap(), "14");
    h2_call(addr, "/grpc.test.Svc/Internal", "application/grpc+proto").await;
    for i in 0..3 {
        h2_call(addr, &format!("/grpc.test.Svc/Scan{i}"), grpc).await;
    }
    // Not gRPC: a JSON body over HTTP/2 is HTTP, whatever its answer says.
    h2_call(addr, "/grpc.test.Svc/Unavailable", "application/json").await;

    let metrics = lifecycle.metrics().render();
    assert_eq!(
        count(&metrics, &line("/grpc.test.Svc/Ok", None)),
        1,
        "{metrics}"
    );
    assert_eq!(
        count(
            &metrics,
            &line("/grpc.test.Svc/Unavailable", Some("UNAVAILABLE"))
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        count(&metrics, &line("/grpc.test.Svc/Internal", Some("INTERNAL"))),
        1,
        "{metrics}"
    );
    assert_eq!(
        count(
            &metrics,
            &line("/grpc.test.Svc/{*rest}", Some("UNIMPLEMENTED"))
        ),
        3,
        "{metrics}"
    );
    assert!(
        !metrics.contains("Scan"),
        "unknown methods get no route: {metrics}"
    );
    assert_eq!(
        count(&metrics, &line("/grpc.test.Svc/{*rest}", None)),
        1,
        "the JSON call: {metrics}"
    );

    lifecycle.shutdown();
    assert_eq!(serving.await.unwrap(), podcycle::Outcome::Drained);
}

#[tokio::test]
async fn the_layer_alone_records_grpc_statuses_too() {
    use tower::ServiceExt;
    let lifecycle = Lifecycle::new(config()).unwrap();
    let app = app(&lifecycle);
    let call = |path: &str| {
        Request::post(path)
            .version(http::Version::HTTP_2)
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .unwrap()
    };
    let res = app
        .clone()
        .oneshot(call("/grpc.test.Svc/Unavailable"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let res = app
        .clone()
        .oneshot(call("/grpc.test.Svc/Internal"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let metrics = lifecycle.metrics().render();
    assert_eq!(
        count(
            &metrics,
            &line("/grpc.test.Svc/Unavailable", Some("UNAVAILABLE"))
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        count(&metrics, &line("/grpc.test.Svc/Internal", Some("INTERNAL"))),
        1,
        "{metrics}"
    );
}
