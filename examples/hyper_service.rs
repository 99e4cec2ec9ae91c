//! podcycle without an axum `Router`: a plain `tower::service_fn`, served by `lifecycle.serve`.
//! The request body is `axum::body::Body` (hyper's body, watched for the minimum body rate);
//! the response body any `http_body::Body`. Probes, the SIGTERM drain and metrics work the same; the metrics layer
//! is given a `route_fn` since there is no axum router to name routes.
//!
//! ```text
//! cargo run --example hyper_service
//! curl -s localhost:8080/hello; curl -s localhost:9090/metrics | grep http_route
//! ```
#![forbid(unsafe_code)]

use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use podcycle::{Lifecycle, Outcome};
use tower::ServiceBuilder;

/// The route template of a request, for the `http_route` label (`None`: unmatched).
fn route(_: &Method, path: &str) -> Option<&'static str> {
    match path {
        "/hello" => Some("/hello"),
        _ => None,
    }
}

async fn handle(req: Request<axum::body::Body>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/hello") => (StatusCode::OK, "hello from a plain hyper service\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    Ok(res)
}

#[tokio::main]
async fn main() -> Outcome {
    // Colour only on a terminal: `cargo run --example ... > file` gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let lifecycle = match Lifecycle::from_env(env!("CARGO_PKG_VERSION")) {
        Ok(lifecycle) => lifecycle,
        Err(e) => return e.into(),
    };
    let service = ServiceBuilder::new()
        .layer(lifecycle.metrics().layer().route_fn(route))
        .service(tower::service_fn(handle));
    lifecycle.serve(service).await
}
