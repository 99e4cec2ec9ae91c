//! W3C trace context on the application listener: a request's `traceparent` reaches its
//! handler (`TraceContext`) and the request's span, in which the handler's events are logged;
//! malformed headers start a new trace; sampled requests leave an exemplar that `/metrics`
//! serves in the OpenMetrics text format when asked for it, and only then.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use podcycle::{Config, Lifecycle, Outcome, Phase, TraceContext};
use podcycle_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// What the test subscriber saw: each event's message with the `trace_id` of the request
/// span it was logged in, and the fields of each closed request span.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<(String, Option<String>)>,
    spans: Vec<BTreeMap<String, String>>,
}

/// The fields of a `request` span, kept in its extensions.
struct Fields(BTreeMap<String, String>);

struct FieldVisitor<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Capture(Arc<Mutex<Seen>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "request" {
            return;
        }
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        ctx.span(id)
            .unwrap()
            .extensions_mut()
            .insert(Fields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut ext = span.extensions_mut();
        if let Some(Fields(fields)) = ext.get_mut::<Fields>() {
            values.record(&mut FieldVisitor(fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldVisitor(&mut fields));
        let trace_id = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|s| s.extensions().get::<Fields>()?.0.get("trace_id").cloned())
        });
        let message = fields.remove("message").unwrap_or_default();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .push((message, trace_id));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span.extensions().get::<Fields>().map(|f| f.0.clone());
        if let Some(fields) = fields {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .spans
                .push(fields);
        }
    }
}

/// The process-wide test subscriber (one per test binary).
fn seen() -> Arc<Mutex<Seen>> {
    static SEEN: OnceLock<Arc<Mutex<Seen>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Seen::default()));
        tracing_subscriber::registry()
            .with(Capture(seen.clone()))
            .try_init()
            .expect("the only subscriber of this test binary");
        seen
    })
    .clone()
}

/// A handler that logs one event (naming `tag`) and answers what it sees of the trace:
/// `trace_id span_id parent sampled traceparent`, or `none`.
async fn whoami(
    axum::extract::Path(tag): axum::extract::Path<String>,
    trace: Option<Extension<TraceContext>>,
) -> String {
    tracing::info!("handler {tag}");
    match trace {
        None => "none".into(),
        Some(Extension(cx)) => format!(
            "{} {} {} {} {}",
            cx.trace_id(),
            cx.span_id(),
            cx.parent_span_id()
                .map_or("-".to_owned(), |p| p.to_string()),
            cx.is_sampled(),
            cx.traceparent().to_str().unwrap(),
        ),
    }
}

async fn serve(config: Config) -> (Lifecycle, tokio::task::JoinHandle<Outcome>) {
    seen();
    let lifecycle = Lifecycle::new(config).unwrap();
    let app = Router::new()
        .route("/who/{tag}", get(whoami))
        .layer(lifecycle.metrics().layer());
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    (lifecycle, serving)
}

async fn stop(lifecycle: Lifecycle, serving: tokio::task::JoinHandle<Outcome>) {
    lifecycle.shutdown();
    assert!(matches!(serving.await.unwrap(), Outcome::Drained));
}

/// One HTTP/1.1 GET with extra `headers`: the status, the response headers (lowercase
/// names) and the body.
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(support::SOON, s.read_to_end(&mut out))
        .await
        .expect("the response within the bound")
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head, body)
}

/// A chunked HTTP/1.1 body's data.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

fn config() -> Config {
    support::in_process_config().drain_timeout(Duration::from_secs(2))
}

/// Serves with [`config`], sends one `GET path` with `headers`, answered 200, and shuts down
/// (drained): the body.
async fn one_request(path: &str, headers: &[(&str, &str)]) -> String {
    let (lifecycle, serving) = serve(config()).await;
    let (status, _, body) = get_with(lifecycle.app_addr().unwrap(), path, headers).await;
    assert_eq!(status, 200, "{body}");
    stop(lifecycle, serving).await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_reaches_the_handler_and_the_request_span_its_log_lines_join() {
    let trace = "11f7651916cd43dd8448eb211c80319c";
    let body = one_request(
        "/who/joined",
        &[
            ("traceparent", &format!("00-{trace}-{PARENT}-01")),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    let parts: Vec<&str> = body.split(' ').collect();
    assert_eq!(parts.len(), 5, "{body}");
    assert_eq!(parts[0], trace, "the caller's trace");
    assert_ne!(parts[1], PARENT, "a span of its own");
    assert_eq!(parts[2], PARENT, "the caller's span is the parent");
    assert_eq!(parts[3], "true");
    assert_eq!(
        parts[4],
        format!("00-{trace}-{}-01", parts[1]),
        "outgoing calls are children of this request's span"
    );
    let seen = seen();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        seen.events
            .iter()
            .any(|(m, t)| m == "handler joined" && t.as_deref() == Some(trace)),
        "the handler's event is inside the request span: {:?}",
        seen.events
    );
    let span = seen
        .spans
        .iter()
        .find(|s| s.get("trace_id").map(String::as_str) == Some(trace))
        .unwrap_or_else(|| panic!("a request span closed: {:?}", seen.spans));
    assert_eq!(span["span_id"], parts[1]);
    assert_eq!(span["http.request.method"], "GET");
    assert_eq!(span["http.route"], "/who/{tag}");
    assert_eq!(span["http.response.status_code"], "200");
    assert_eq!(span["version"], "9.9.9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_traceparent_is_passed_on_without_a_span() {
    let trace = "22f7651916cd43dd8448eb211c80319c";
    let body = one_request(
        "/who/unsampled",
        &[("traceparent", &format!("00-{trace}-{PARENT}-00"))],
    )
    .await;
    assert!(body.starts_with(&format!("{trace} ")), "{body}");
    assert!(body.ends_with("-00"), "passed on unsampled: {body}");
    let seen = seen();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        seen.events
            .iter()
            .any(|(m, t)| m == "handler unsampled" && t.is_none()),
        "{:?}",
        seen.events
    );
}

/// The W3C test suite's kinds of malformed `traceparent`: never an error, the request is
/// served; with sampling off nothing is traced, with sampling on a new trace starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_is_ignored_and_a_new_trace_starts() {
    let bad = [
        format!("ff-{TRACE}-{PARENT}-01"),
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        format!("00-{TRACE}-{PARENT}-01-extra"),
        format!("00_{TRACE}_{PARENT}_01"),
        format!("00-{TRACE}-{PARENT}"),
        "garbage".to_owned(),
    ];
    for (ratio, traced) in [(0.0, false), (1.0, true)] {
        let (lifecycle, serving) = serve(config().trace_sampling(ratio)).await;
        let addr = lifecycle.app_addr().unwrap();
        for value in &bad {
            let (status, _, body) =
                get_with(addr, "/who/bad", &[("traceparent", value.as_str())]).await;
            assert_eq!(status, 200, "{value}");
            if traced {
                let parts: Vec<&str> = body.split(' ').collect();
                assert_eq!(parts.len(), 5, "{value}: {body}");
                assert_ne!(parts[0], TRACE, "a new trace for {value}");
                assert_eq!(parts[2], "-", "no parent for {value}");
                assert_eq!(parts[3], "true");
            } else {
                assert_eq!(body, "none", "{value}");
            }
        }
        // Without a header: the same.
        let (_, _, body) = get_with(addr, "/who/none", &[]).await;
        assert_eq!(body != "none", traced, "{body}");
        stop(lifecycle, serving).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_request_is_an_exemplar_served_in_openmetrics_only_when_asked() {
    let (lifecycle, serving) = serve(config()).await;
    let addr = lifecycle.app_addr().unwrap();
    let admin = lifecycle.admin_addr().unwrap();
    let sampled = "33f7651916cd43dd8448eb211c80319c";
    let unsampled = "44f7651916cd43dd8448eb211c80319c";
    for (trace, flags) in [(sampled, "01"), (unsampled, "00")] {
        let tp = format!("00-{trace}-{PARENT}-{flags}");
        let (status, _, _) = get_with(addr, "/who/ex", &[("traceparent", &tp)]).await;
        assert_eq!(status, 200);
    }
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, head, om) = get_with(admin, "/metrics", &[("accept", prometheus_accept)]).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let exemplar_line = om
        .lines()
        .find(|l| l.contains(&format!("# {{trace_id=\"{sampled}\"}}")))
        .unwrap_or_else(|| panic!("the sampled request's exemplar: {om}"));
    assert!(
        exemplar_line.starts_with("http_server_request_duration_seconds_bucket{")
            && exemplar_line.contains("http_route=\"/who/{tag}\"")
            && exemplar_line.contains("version=\"9.9.9\""),
        "{exemplar_line}"
    );
    assert!(
        !om.contains(unsampled),
        "no exemplar for an unsampled request"
    );
    assert!(
        om.contains("# TYPE podcycle_connections_force_closed counter\n"),
        "counter families named without _total: {om}"
    );

    let (_, head, text) = get_with(admin, "/metrics", &[]).await;
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        !text.contains("# EOF") && !text.contains("trace_id"),
        "{text}"
    );
    assert!(text.contains("# TYPE podcycle_connections_force_closed_total counter\n"));
    stop(lifecycle, serving).await;
}

/// HTTP/2 (what gRPC rides on): the same header, the same context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_carry_the_trace_context_too() {
    use http_body_util::{BodyExt, Empty};
    let (lifecycle, serving) = serve(config()).await;
    let addr = lifecycle.app_addr().unwrap();
    let (mut sender, conn) = support::client::h2::<Empty<bytes::Bytes>>(addr).await;
    let trace = "55f7651916cd43dd8448eb211c80319c";
    let req = http::Request::get(format!("http://{addr}/who/h2"))
        .header("traceparent", format!("00-{trace}-{PARENT}-01"))
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).starts_with(&format!("{trace} ")),
        "{body:?}"
    );
    drop(sender);
    let _ = conn.await;
    stop(lifecycle, serving).await;
}
