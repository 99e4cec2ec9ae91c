//! The application listener during warm-up: bound early (a port conflict fails at once), it
//! answers every request at once with `503 Service Unavailable`, `Retry-After: 1` and (HTTP/1)
//! `Connection: close`, instead of leaving it to wait in the backlog until the warm-ups end (a
//! client with a timeout saw a hang, ~2 s for the chatbot). No load balancer sends traffic to
//! an unready pod; this is for the clients that call the pod directly (a port-forward, a test,
//! a developer's curl), which learn at once to come back.
//!
//! Not on the request path of a serving process: this loop ends when the warm-ups do.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections answered at once during warm-up; further ones wait in the backlog.
const WARMING_MAX_CONNECTIONS: usize = 64;

/// How long a connection answered during warm-up may stay open (an HTTP/2 client may send
/// several requests on it), and how long it is given to close once the warm-ups end.
const WARMING_CONNECTION_LIFE: Duration = Duration::from_secs(5);
const WARMING_CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Answers `503` on `listener` until dropped (when the warm-ups end, or startup stops). The
/// connections it accepted are then closed politely within [`WARMING_CLOSE_LINGER`].
pub(crate) async fn answer_while_warming(
    listener: &TcpListener,
    header_read_timeout: Duration,
) -> std::convert::Infallible {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout.min(WARMING_CONNECTION_LIFE));
    let builder = Arc::new(builder);
    let limit = Arc::new(Semaphore::new(WARMING_MAX_CONNECTIONS));
    let done = CancellationToken::new();
    let _done = done.clone().drop_guard();
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            continue; // never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: the serving loop counts these.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (builder, done) = (builder.clone(), done.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(|req: Request<Incoming>| {
                std::future::ready(Ok::<_, Infallible>(warming_up(req.version())))
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = done.cancelled() => {}
                _ = tokio::time::sleep(WARMING_CONNECTION_LIFE) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(WARMING_CLOSE_LINGER, conn).await;
        });
    }
}

/// `503` with `Retry-After: 1`, and `Connection: close` on HTTP/1.
fn warming_up(version: Version) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(
        b"warming up: not serving yet, retry shortly\n",
    )));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = res.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if version < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
