//! Metrics: bounded cardinality, incomplete requests told apart, admin traffic not counted,
//! independent instances, and output that `promtool check metrics` accepts.

use podcycle_test_support as support;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use podcycle::{Config, Lifecycle, Outcome, Phase};
use support::client;
use tower::ServiceExt;

fn config() -> Config {
    Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
        .shutdown_delay(Duration::from_millis(50))
        .drain_timeout(Duration::from_millis(500))
        .handle_signals(false)
        .version("2.0.0")
        .metric_label("track", "canary")
}

fn app(lifecycle: &Lifecycle) -> Router {
    Router::new()
        .route("/hello/{name}", get(|| async { "hi" }))
        .route("/v1/chat", post(|| async { "answer" }))
        .route(
            "/boom",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/forever",
            get(|| async {
                let s = futures_util::stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")), ()))
                });
                axum::body::Body::from_stream(s)
            }),
        )
        .layer(lifecycle.metrics().layer())
}

/// Distinct values of `label` among histogram `_count` lines.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .filter_map(|l| {
            let start = l.find(&format!("{label}=\""))? + label.len() + 2;
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_owned())
        })
        .collect()
}

/// Whether `text` has a sample of `name` with exactly these labels (in any order) and `value`.
fn has_sample(text: &str, name: &str, labels: &[(&str, &str)], value: &str) -> bool {
    text.lines().any(|l| {
        let Some(rest) = l.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            return false;
        };
        let Some((set, v)) = rest.rsplit_once("} ") else {
            return false;
        };
        let mut got: Vec<&str> = set.split(',').collect();
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        got.sort_unstable();
        want.sort_unstable();
        v == value && got == want
    })
}

fn req(method: &str, path: &str) -> http::Request<axum::body::Body> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// SplitMix64: deterministic pseudo-random numbers without a dependency.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_paths_and_methods_add_one_route_value_and_no_more() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let app = app(&lifecycle);
    for (m, p) in [
        ("GET", "/hello/ann"),
        ("POST", "/v1/chat"),
        ("GET", "/boom"),
    ] {
        app.clone().oneshot(req(m, p)).await.unwrap();
    }
    let before = lifecycle.metrics().render();
    let routes_before = label_values(&before, "http_route");
    let series_before = lifecycle.metrics().http_series_count();
    assert_eq!(routes_before.len(), 3);

    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "PURGE", "FOO", "BREW", "SEARCH", "M-SEARCH",
    ];
    let mut seed = 42u64;
    for i in 0..100_000u32 {
        let r = next(&mut seed);
        let method = methods[(r % methods.len() as u64) as usize];
        let path = format!("/{:x}/{}/{i}", r, r >> 40);
        let res = app.clone().oneshot(req(method, &path)).await.unwrap();
        assert_eq!(res.status(), 404);
    }
    let after = lifecycle.metrics().render();
    let routes_after = label_values(&after, "http_route");
    let new: Vec<_> = routes_after.difference(&routes_before).collect();
    assert_eq!(new, vec!["unmatched"], "exactly one new route value");
    let methods_seen = label_values(&after, "http_request_method");
    assert!(methods_seen.contains("_OTHER"));
    assert!(!methods_seen.contains("PURGE") && !methods_seen.contains("BREW"));
    // At most one series per standard method + _OTHER for the single unmatched route.
    let added = lifecycle.metrics().http_series_count() - series_before;
    assert!(added <= 6, "series added: {added}");
}

/// The `_count` and `_sum` of the histogram series whose labels contain `labels`.
fn count_and_sum(text: &str, labels: &str) -> (u64, f64) {
    let pick = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    (
        pick("http_server_request_duration_seconds_count{") as u64,
        pick("http_server_request_duration_seconds_sum{"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_requests_are_recorded_once_with_the_innermost_route_until_their_body_ends() {
    // Under `Lifecycle::serve` the serving stack times requests and the layer only names the
    // route: nested layers must not count twice, and a stream is timed to its last chunk.
    let lifecycle = Lifecycle::new(config()).unwrap();
    let api = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .layer(lifecycle.metrics().layer());
    let app = Router::new()
        .route(
            "/slow-stream",
            get(|| async {
                let s = futures_util::stream::unfold(0, |n| async move {
                    if n == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")),
                        n + 1,
                    ))
                });
                axum::body::Body::from_stream(s)
            }),
        )
        .nest("/api", api)
        .layer(lifecycle.metrics().layer());
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();

    let mut conn = client::Conn::open(addr).await.unwrap();
    for _ in 0..10 {
        assert_eq!(conn.get("/api/items/7").await.unwrap().status, 200);
    }
    assert_eq!(conn.get("/nope").await.unwrap().status, 404);
    let streamed = conn.get("/slow-stream").await.unwrap();
    assert_eq!(streamed.body, "xxx");

    let text = lifecycle.metrics().render();
    let routes = label_values(&text, "http_route");
    let expected: BTreeSet<String> = ["/api/items/{id}", "/slow-stream", "unmatched"]
        .map(String::from)
        .into();
    assert_eq!(routes, expected, "{text}");
    let (items, _) = count_and_sum(&text, "http_route=\"/api/items/{id}\"");
    assert_eq!(items, 10, "each request once, not once per layer: {text}");
    let (unmatched, _) = count_and_sum(
        &text,
        "http_route=\"unmatched\",http_response_status_code=\"404\"",
    );
    assert_eq!(unmatched, 1, "{text}");
    let (streams, seconds) = count_and_sum(&text, "http_route=\"/slow-stream\"");
    assert_eq!(streams, 1, "{text}");
    assert!(
        seconds >= 0.45,
        "timed to the end of the body (3 x 150 ms), not to the headers: {seconds}"
    );
    assert!(
        text.contains("http_server_active_requests{http_request_method=\"GET\",version=\"2.0.0\",track=\"canary\"} 0"),
        "{text}"
    );
    drop(conn);
    lifecycle.shutdown();
    assert!(matches!(serving.await.unwrap(), Outcome::Drained));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_to_a_service_that_returns_a_body_is_not_counted_as_aborted() {
    // hyper sends no body for HEAD and may drop it unpolled; a non-axum service may still
    // return one. The request completed: it must not be recorded as `client_aborted`.
    let lifecycle = Lifecycle::new(config()).unwrap();
    let svc = tower::service_fn(|_req: http::Request<axum::body::Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"a body"),
        )))
    });
    let app = tower::Layer::layer(
        &lifecycle.metrics().layer().route_fn(|_, _| Some("/any")),
        svc,
    );
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("response within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    drop(tcp);

    // Once the connection is gone, whatever was going to be recorded has been.
    let mut text = String::new();
    for _ in 0..200 {
        text = lifecycle.metrics().render();
        if text.contains("http_server_request_duration_seconds_count{http_request_method=\"HEAD\"")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (completed, _) = count_and_sum(
        &text,
        "http_request_method=\"HEAD\",http_route=\"/any\",http_response_status_code=\"200\",version=\"2.0.0\",track=\"canary\"}",
    );
    assert_eq!(completed, 1, "{text}");
    assert!(!text.contains("client_aborted"), "{text}");
    lifecycle.shutdown();
    assert!(matches!(serving.await.unwrap(), Outcome::Drained));
}

#[tokio::test]
async fn routers_built_and_dropped_one_after_another_keep_their_routes_apart() {
    // Route templates are cached by address. Each router allocates its own templates and frees
    // them when dropped, so the allocator may hand a later router's template the same address:
    // the cache must never mistake one route for another.
    let lifecycle = Lifecycle::new(config()).unwrap();
    for i in 0..30 {
        let app = Router::new()
            .route(&format!("/r{}/{{x}}", i % 3), get(|| async { "r" }))
            .layer(lifecycle.metrics().layer());
        let res = app
            .oneshot(req("GET", &format!("/r{}/y", i % 3)))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    }
    let text = lifecycle.metrics().render();
    for r in 0..3 {
        let (count, _) = count_and_sum(&text, &format!("http_route=\"/r{r}/{{x}}\""));
        assert_eq!(count, 10, "/r{r}/{{x}}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_aborts_and_drain_deadline_cuts_are_told_apart() {
    let lifecycle = Lifecycle::new(config()).unwrap();
    let serving = tokio::spawn(lifecycle.clone().serve(app(&lifecycle)));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    let admin = lifecycle.admin_addr().unwrap();

    assert_eq!(client::get(addr, "/boom").await.unwrap().status, 500);
    for _ in 0..3 {
        assert_eq!(client::get(addr, "/hello/x").await.unwrap().status, 200);
    }
    // Probe and metrics traffic on the admin listener is not application traffic.
    for _ in 0..5 {
        client::get(admin, "/readyz").await.unwrap();
        client::get(admin, "/metrics").await.unwrap();
    }
    // A client that goes away mid-body.
    {
        let mut c = client::Conn::open(addr).await.unwrap();
        let t = tokio::time::timeout(Duration::from_millis(100), c.get("/forever")).await;
        assert!(t.is_err());
    }
    let text = client::get(admin, "/metrics").await.unwrap().body;
    assert!(text.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/boom\",http_response_status_code=\"500\",version=\"2.0.0\",track=\"canary\",error_type=\"500\"} 1"), "{text}");
    assert!(text.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/hello/{name}\",http_response_status_code=\"200\",version=\"2.0.0\",track=\"canary\"} 3"), "{text}");
    let routes = label_values(&text, "http_route");
    assert!(
        !routes
            .iter()
            .any(|r| r.contains("readyz") || r.contains("metrics")),
        "{routes:?}"
    );

    // Wait for the aborted request to be recorded (the server notices the close).
    let mut aborted = false;
    for _ in 0..200 {
        let t = lifecycle.metrics().render();
        if t.contains("http_route=\"/forever\",http_response_status_code=\"200\",version=\"2.0.0\",track=\"canary\",error_type=\"client_aborted\"} 1") {
            aborted = true;
            assert!(t.contains("http_server_active_requests{http_request_method=\"GET\",version=\"2.0.0\",track=\"canary\"} 0"), "{t}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(aborted, "client abort recorded");

    // A stream still running at the drain deadline.
    let cut = tokio::spawn(async move { client::stream(addr, "/forever").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    lifecycle.shutdown();
    assert!(matches!(
        serving.await.unwrap(),
        Outcome::DrainTimedOut { connections: 1 }
    ));
    assert!(cut.await.unwrap().1.is_err());
    let text = lifecycle.metrics().render();
    assert!(text.contains("error_type=\"drain_deadline\"} 1"), "{text}");
    let labels = [("version", "2.0.0"), ("track", "canary")];
    assert!(
        has_sample(
            &text,
            "podcycle_connections_force_closed_total",
            &labels,
            "1"
        ),
        "{text}"
    );
    assert!(
        has_sample(&text, "podcycle_build_info", &labels, "1"),
        "{text}"
    );
    let stopped = [
        ("phase", "stopped"),
        ("version", "2.0.0"),
        ("track", "canary"),
    ];
    assert!(has_sample(&text, "podcycle_phase", &stopped, "1"), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("podcycle_shutdown_step_duration_seconds{")
                && l.contains("step=\"drain\"")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lifecycles_keep_separate_metrics_and_user_metrics_share_the_registry() {
    let a = Lifecycle::new(config().version("a").admin_addr(None)).unwrap();
    let b = Lifecycle::new(config().version("b").admin_addr(None)).unwrap();
    let (app_a, app_b) = (app(&a), app(&b));
    for (app, m, p) in [(&app_a, "GET", "/hello/x"), (&app_b, "POST", "/v1/chat")] {
        let res = app.clone().oneshot(req(m, p)).await.unwrap();
        // Read the body to its end, as a server does: the request completes then.
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap();
    }
    let answers = prometheus::IntCounter::new("chatbot_answers_total", "Answers given.").unwrap();
    a.metrics()
        .registry()
        .register(Box::new(answers.clone()))
        .unwrap();
    answers.inc();
    let (ta, tb) = (a.metrics().render(), b.metrics().render());
    assert!(ta.contains("http_route=\"/hello/{name}\""));
    assert!(!ta.contains("http_route=\"/v1/chat\""));
    assert!(tb.contains("http_route=\"/v1/chat\""));
    let labels = [("version", "a"), ("track", "canary")];
    assert!(
        has_sample(&ta, "chatbot_answers_total", &labels, "1"),
        "{ta}"
    );
    assert!(!tb.contains("chatbot_answers_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_output() {
    let Some(promtool) = support::tool("promtool") else {
        return;
    };
    let lifecycle = Lifecycle::new(config()).unwrap();
    lifecycle.readiness_check("db", || async { Ok::<(), String>(()) });
    lifecycle
        .warmup("kb", async { Ok::<_, String>(()) })
        .wait()
        .await;
    let app = app(&lifecycle);
    for (m, p) in [
        ("GET", "/hello/a"),
        ("POST", "/v1/chat"),
        ("GET", "/boom"),
        ("PURGE", "/x"),
    ] {
        app.clone().oneshot(req(m, p)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = lifecycle.metrics().render();
    // The process and runtime families are part of what promtool checks.
    let mut families = vec![
        "podcycle_runtime_workers",
        "podcycle_runtime_alive_tasks",
        "podcycle_runtime_global_queue_depth",
        "podcycle_runtime_scheduling_lag_seconds",
        // The termination families: lag seen, connections closed idle, and requests after
        // unready by connection.
        "podcycle_shutdown_last_new_connection_seconds",
        "podcycle_connections_closed_idle_total",
        "podcycle_requests_after_unready_total",
    ];
    if cfg!(target_has_atomic = "64") {
        families.extend([
            "podcycle_runtime_busy_seconds_total",
            "podcycle_runtime_parks_total",
        ]);
    }
    if std::fs::metadata("/proc/self/stat").is_ok() {
        families.extend([
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_threads",
            "process_start_time_seconds",
        ]);
    }
    for c in ["new", "reused"] {
        let series = format!("podcycle_requests_after_unready_total{{connection=\"{c}\",");
        assert!(text.contains(&series), "{series}:\n{text}");
    }
    for family in families {
        assert!(
            text.contains(&format!("\n# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed:\n{findings}\n{text}");
    assert!(findings.trim().is_empty(), "promtool findings:\n{findings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_metrics_are_also_a_prometheus_collector() {
    let lifecycle = Lifecycle::new(config().admin_addr(None)).unwrap();
    let app = app(&lifecycle);
    for (m, p) in [("GET", "/hello/a"), ("GET", "/boom")] {
        let res = app.clone().oneshot(req(m, p)).await.unwrap();
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap();
    }
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(lifecycle.metrics().http_collector()))
        .unwrap();
    let mut buf = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut buf,
    )
    .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let fast = lifecycle.metrics().render_http();
    // The same samples as the fast renderer, label order aside.
    for line in fast
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
    {
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        let labels: Vec<(&str, &str)> = name_labels
            .trim_start_matches("http_server_request_duration_seconds_count{")
            .trim_end_matches('}')
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k, v.trim_matches('"'))
            })
            .collect();
        assert!(
            has_sample(
                &text,
                "http_server_request_duration_seconds_count",
                &labels,
                value
            ),
            "{line} missing from:\n{text}"
        );
    }
    assert!(text.contains("error_type=\"500\""), "{text}");
}

/// One request over a fresh HTTP/1.1 connection (`Connection: close`): its status, once the
/// server has closed the connection (the response, body and all, is recorded by then).
async fn send(addr: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("response within 10 s")
        .unwrap();
    let line = String::from_utf8_lossy(&out);
    line.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line}"))
}

/// The request histogram's `_count` lines and the active gauge's lines of `text`.
fn request_lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                || l.starts_with("http_server_active_requests{")
        })
        .map(String::from)
        .collect()
}

/// Serves `app` under `lifecycle`, sends each request in turn, and returns the request lines
/// of the metrics once the lifecycle has stopped.
async fn serve_and_send(
    lifecycle: Lifecycle,
    app: Router,
    requests: &[(&str, &str, u16)],
) -> BTreeSet<String> {
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    for (method, path, status) in requests {
        assert_eq!(send(addr, method, path).await, *status, "{method} {path}");
    }
    lifecycle.shutdown();
    assert!(matches!(serving.await.unwrap(), Outcome::Drained));
    request_lines(&lifecycle.metrics().render())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_handlers_record_exactly_what_the_layer_records() {
    // The same application twice: routes named by `podcycle::routing`'s handlers (no
    // `Router::layer`), and by the metrics layer. Same series, same counts, same gauge.
    let requests = [
        ("GET", "/hello/ann", 200),
        ("GET", "/hello/bob", 200),
        ("HEAD", "/hello/ann", 200),
        ("POST", "/v1/chat", 200),
        ("GET", "/boom", 500),
        ("GET", "/empty", 204),
        ("GET", "/api/items/7", 200),
        ("POST", "/api/items/7", 201),
        ("GET", "/nope", 404),
        ("PURGE", "/also/nope", 404),
    ];
    let named = {
        use podcycle::routing::{get, named, post};
        let api = Router::new().route(
            "/items/{id}",
            get(|| async { "item" }).post(named(|| async { (http::StatusCode::CREATED, "added") })),
        );
        Router::new()
            .route("/hello/{name}", get(|| async { "hi" }))
            .route("/v1/chat", post(|| async { "answer" }))
            .route(
                "/boom",
                get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route("/empty", get(|| async { http::StatusCode::NO_CONTENT }))
            .nest("/api", api)
    };
    let by_handlers = serve_and_send(Lifecycle::new(config()).unwrap(), named, &requests).await;

    let lifecycle = Lifecycle::new(config()).unwrap();
    let api = Router::new()
        .route(
            "/items/{id}",
            get(|| async { "item" }).post(|| async { (http::StatusCode::CREATED, "added") }),
        )
        .layer(lifecycle.metrics().layer());
    let layered = Router::new()
        .route("/hello/{name}", get(|| async { "hi" }))
        .route("/v1/chat", post(|| async { "answer" }))
        .route(
            "/boom",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/empty", get(|| async { http::StatusCode::NO_CONTENT }))
        .nest("/api", api)
        .layer(lifecycle.metrics().layer());
    let by_layer = serve_and_send(lifecycle, layered, &requests).await;

    assert_eq!(by_handlers, by_layer);
    // And what that is, spelled out for a few.
    for line in [
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/hello/{name}\",http_response_status_code=\"200\",version=\"2.0.0\",track=\"canary\"} 2",
        "http_server_request_duration_seconds_count{http_request_method=\"HEAD\",http_route=\"/hello/{name}\",http_response_status_code=\"200\",version=\"2.0.0\",track=\"canary\"} 1",
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/boom\",http_response_status_code=\"500\",version=\"2.0.0\",track=\"canary\",error_type=\"500\"} 1",
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/api/items/{id}\",http_response_status_code=\"201\",version=\"2.0.0\",track=\"canary\"} 1",
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"unmatched\",http_response_status_code=\"404\",version=\"2.0.0\",track=\"canary\"} 1",
        "http_server_request_duration_seconds_count{http_request_method=\"_OTHER\",http_route=\"unmatched\",http_response_status_code=\"404\",version=\"2.0.0\",track=\"canary\"} 1",
        "http_server_active_requests{http_request_method=\"GET\",version=\"2.0.0\",track=\"canary\"} 0",
    ] {
        assert!(by_handlers.contains(line), "{line} in {by_handlers:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_named_handler_sees_counts_as_unmatched_once_routes_are_named() {
    // A service that names no route records nothing (as before it had metrics); once it has
    // named one, a request no named handler saw (the fallback's 404, a handler from
    // `axum::routing`) is recorded as `unmatched`, with its status.
    let lifecycle = Lifecycle::new(config()).unwrap();
    let app = Router::new()
        .route("/named", podcycle::routing::get(|| async { "named" }))
        .route("/plain", get(|| async { "plain" }));
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();

    assert_eq!(send(addr, "GET", "/plain").await, 200);
    assert_eq!(send(addr, "GET", "/nope").await, 404);
    let text = lifecycle.metrics().render();
    assert_eq!(label_values(&text, "http_route"), BTreeSet::new(), "{text}");

    assert_eq!(send(addr, "GET", "/named").await, 200);
    assert_eq!(send(addr, "GET", "/plain").await, 200);
    assert_eq!(send(addr, "GET", "/nope").await, 404);
    let text = lifecycle.metrics().render();
    let unmatched = |status: &str| {
        count_and_sum(
            &text,
            &format!("http_route=\"unmatched\",http_response_status_code=\"{status}\""),
        )
        .0
    };
    assert_eq!((unmatched("200"), unmatched("404")), (1, 1), "{text}");
    assert_eq!(count_and_sum(&text, "http_route=\"/named\"").0, 1, "{text}");
    assert!(
        text.contains("http_server_active_requests{http_request_method=\"GET\",version=\"2.0.0\",track=\"canary\"} 0"),
        "{text}"
    );
    lifecycle.shutdown();
    assert!(matches!(serving.await.unwrap(), Outcome::Drained));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_handlers_under_an_outer_layer_record_each_request_once_with_the_inner_route() {
    // Moving to named handlers one router at a time: an outer layer may stay.
    let lifecycle = Lifecycle::new(config()).unwrap();
    let api = Router::new().route("/items/{id}", podcycle::routing::get(|| async { "item" }));
    let app = Router::new()
        .nest("/api", api)
        .layer(lifecycle.metrics().layer());
    let serving = tokio::spawn(lifecycle.clone().serve(app));
    lifecycle.reached(Phase::Serving).await;
    let addr = lifecycle.app_addr().unwrap();
    for _ in 0..3 {
        assert_eq!(send(addr, "GET", "/api/items/1").await, 200);
    }
    let text = lifecycle.metrics().render();
    assert_eq!(
        count_and_sum(&text, "http_route=\"/api/items/{id}\"").0,
        3,
        "{text}"
    );
    assert!(
        text.contains("http_server_active_requests{http_request_method=\"GET\",version=\"2.0.0\",track=\"canary\"} 0"),
        "counted active once: {text}"
    );
    lifecycle.shutdown();
    assert!(matches!(serving.await.unwrap(), Outcome::Drained));
}

#[tokio::test]
async fn outside_lifecycle_serve_named_handlers_answer_and_record_nothing() {
    // No serving stack polls the request: nothing to name the route to. The layer is the way
    // there (it times requests itself).
    let lifecycle = Lifecycle::new(config()).unwrap();
    let app = Router::new().route("/hello/{name}", podcycle::routing::get(|| async { "hi" }));
    let res = app.oneshot(req("GET", "/hello/x")).await.unwrap();
    assert_eq!(res.status(), 200);
    axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    let text = lifecycle.metrics().render();
    assert_eq!(label_values(&text, "http_route"), BTreeSet::new(), "{text}");
}
