//! What recording a request costs, and what rendering `/metrics` costs.
//!
//! ```sh
//! cargo bench --bench recording
//! ```
//!
//! - Per request: a trivial tower service (a `Full` body of 13 bytes) is called, its future
//!   polled and its body drained, bare and with each recorder. Run on one thread, and on two
//!   threads recording the *same* series at once (the contended case). Reported per request
//!   and per thread; the recorder's cost is the difference with the bare service.
//!   Recorders: podcycle's [`MetricsLayer`](podcycle::MetricsLayer); the `prometheus` crate
//!   (`HistogramVec` + `IntGaugeVec`, inline around the call, so a lower bound for a layer
//!   doing the same) with `with_label_values` per request and with cached label children;
//!   and `axum-prometheus`'s layer.
//! - Rendering at 1,000 series (10 methods x 100 status codes, recorded from two threads):
//!   podcycle's `render_http()` and `render()`, the `prometheus` crate's `TextEncoder` over an
//!   equivalent `HistogramVec`, and `axum-prometheus`'s `PrometheusHandle::render`.
//!
//! Worker threads are long-lived (like a runtime's workers). A markdown summary of the
//! medians is printed at the end.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::Full;
use podcycle::{Config, Lifecycle};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};
use tower::{Layer, Service};

/// podcycle's recording core (not public API: reached through the crate's `__bench` feature,
/// which this package's dev-dependency on itself turns on): what the serving stack does per
/// request once the layer has named the route, with and without its two clock reads.
use podcycle::metrics::__bench::Core;

const VERSION: &str = "1.2.3";
const ROUTE: &str = "/hello/{name}";
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PURGE",
];

// ---------------------------------------------------------------------------------------------
// The service under test and one request through it.

/// `GET /hello/world` -> 200 "Hello, world!"; `?s=NNN` answers with status NNN instead.
#[derive(Clone, Copy, Debug)]
struct Hello;

impl Service<Request<()>> for Hello {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let mut res = Response::new(Full::new(Bytes::from_static(b"Hello, world!")));
        if let Some(code) = req.uri().query().and_then(|q| q.strip_prefix("s=")) {
            if let Some(s) = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
                *res.status_mut() = s;
            }
        }
        ready(Ok(res))
    }
}

/// Calls `svc`, polls the response future and drains the body; returns the status.
#[inline]
fn drive<S, B>(svc: &mut S, req: Request<()>) -> StatusCode
where
    S: Service<Request<()>, Response = Response<B>>,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(res)) = pin!(svc.call(req)).poll(&mut cx) else {
        panic!("the trivial service is always ready and never fails");
    };
    let status = res.status();
    let mut body = pin!(res.into_body());
    for _ in 0..4 {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(frame)) => {
                black_box(frame.is_ok());
            }
            _ => break,
        }
    }
    status
}

fn hello_request(uri: &Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    req
}

fn request(method: &str, uri: &Uri) -> Request<()> {
    let mut req = hello_request(uri);
    *req.method_mut() = Method::from_bytes(method.as_bytes()).expect("valid method");
    req
}

/// The OpenTelemetry method label, as podcycle normalizes it (so the comparison is fair).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

fn podcycle_lifecycle(rt: &tokio::runtime::Runtime) -> Lifecycle {
    podcycle_lifecycle_with(rt, false)
}

/// A lifecycle as [`podcycle_lifecycle`], with native histograms on or off.
fn podcycle_lifecycle_with(rt: &tokio::runtime::Runtime, native: bool) -> Lifecycle {
    let _enter = rt.enter();
    Lifecycle::new(
        Config::default()
            .addr("127.0.0.1:0".parse().expect("address"))
            .admin_addr(None)
            .handle_signals(false)
            .version(VERSION)
            .native_histograms(native),
    )
    .expect("lifecycle")
}

fn podcycle_route(_: &Method, _: &str) -> Option<&'static str> {
    Some(ROUTE)
}

// ---------------------------------------------------------------------------------------------
// The `prometheus` crate, as users wire it by hand.

#[derive(Clone)]
struct Prom {
    registry: Registry,
    duration: HistogramVec,
    active: IntGaugeVec,
}

impl Prom {
    fn new() -> Prom {
        let labels = [("version".to_owned(), VERSION.to_owned())].into();
        let registry = Registry::new_custom(None, Some(labels)).expect("registry");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests.",
            )
            .buckets(podcycle::metrics::DEFAULT_BUCKETS.to_vec()),
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        )
        .expect("histogram");
        let active = IntGaugeVec::new(
            Opts::new(
                "http_server_active_requests",
                "Number of active HTTP server requests.",
            ),
            &["http_request_method"],
        )
        .expect("gauge");
        registry
            .register(Box::new(duration.clone()))
            .expect("register");
        registry
            .register(Box::new(active.clone()))
            .expect("register");
        Prom {
            registry,
            duration,
            active,
        }
    }

    /// One request, looking both label children up (`with_label_values` twice).
    #[inline]
    fn record_lookup(&self, svc: &mut Hello, req: Request<()>) {
        let method = method_label(req.method());
        let active = self.active.with_label_values(&[method]);
        active.inc();
        let started = Instant::now();
        let status = drive(svc, req);
        self.duration
            .with_label_values(&[method, ROUTE, status.as_str()])
            .observe(started.elapsed().as_secs_f64());
        active.dec();
    }

    fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256 * 1024);
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode");
        buf
    }
}

// ---------------------------------------------------------------------------------------------
// Long-lived worker threads, so that per-thread state (podcycle's shards, thread-local caches)
// is created once, as on a runtime's workers.

type Job = Box<dyn FnOnce() + Send>;

struct Workers {
    txs: Vec<mpsc::Sender<Job>>,
}

impl Workers {
    fn new(n: usize) -> Workers {
        let txs = (0..n)
            .map(|i| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("bench-worker-{i}"))
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    })
                    .expect("spawn worker");
                tx
            })
            .collect();
        Workers { txs }
    }

    /// Runs `iters` calls of a fresh `make()` closure on each of the first `threads` workers,
    /// all started together; returns the wall time from the common start to the last finish,
    /// and whether another process took a CPU from a worker meanwhile.
    fn run<F, W>(&self, threads: usize, iters: u64, make: &F) -> (Duration, bool)
    where
        F: Fn() -> W,
        W: FnMut() + Send + 'static,
    {
        let barrier = Arc::new(Barrier::new(threads));
        let (done_tx, done_rx) = mpsc::channel();
        for tx in &self.txs[..threads] {
            let mut work = make();
            let barrier = barrier.clone();
            let done = done_tx.clone();
            tx.send(Box::new(move || {
                barrier.wait();
                let waited = run_delay_ns();
                let start = Instant::now();
                for _ in 0..iters {
                    work();
                }
                let end = Instant::now();
                let _ = done.send((start, end, run_delay_ns().saturating_sub(waited)));
            }))
            .expect("worker alive");
        }
        drop(done_tx);
        let spans: Vec<(Instant, Instant, u64)> = done_rx.iter().collect();
        assert_eq!(spans.len(), threads, "a worker panicked");
        let start = spans.iter().map(|s| s.0).min().expect("spans");
        let end = spans.iter().map(|s| s.1).max().expect("spans");
        let took = end - start;
        let disturbed = spans.iter().any(|s| disturbed(s.2, took));
        (took, disturbed)
    }
}

/// Time this thread has spent runnable but waiting for a CPU, in ns (Linux schedstat; 0 where
/// it is not available). It grows when another process takes the CPU.
fn run_delay_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A batch is disturbed when its threads waited for a CPU more than 2% of its duration.
fn disturbed(waited_ns: u64, took: Duration) -> bool {
    waited_ns as f64 > took.as_nanos() as f64 * 0.02
}

// ---------------------------------------------------------------------------------------------
// Medians for the summary: every measured batch's ns per iteration, keyed by benchmark.

static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());
static DISTURBED: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn stash(key: &str, iters: u64, took: Duration, disturbed: bool) {
    // Criterion's first, tiny batches say little: keep batches of at least 1 ms.
    if took >= Duration::from_millis(1) {
        let to = if disturbed { &DISTURBED } else { &SAMPLES };
        to.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .push(took.as_nanos() as f64 / iters as f64);
    }
}

/// Median ns per iteration over the undisturbed batches (over all of them when fewer than 5
/// were undisturbed), and how many batches were disturbed.
fn median(key: &str) -> Option<f64> {
    let clean = SAMPLES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
        .unwrap_or_default();
    let noisy = DISTURBED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
        .unwrap_or_default();
    let mut v = if clean.len() >= 5 {
        clean
    } else {
        clean.into_iter().chain(noisy).collect()
    };
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn disturbed_share(key: &str) -> (usize, usize) {
    let count = |m: &Mutex<BTreeMap<String, Vec<f64>>>| {
        m.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map_or(0, Vec::len)
    };
    let bad = count(&DISTURBED);
    (bad, bad + count(&SAMPLES))
}

// ---------------------------------------------------------------------------------------------

fn per_request(c: &mut Criterion, rt: &tokio::runtime::Runtime, workers: &Workers) {
    let uri = Uri::from_static("/hello/world");
    let lifecycle = podcycle_lifecycle(rt);
    let podcycle = lifecycle
        .metrics()
        .layer()
        .route_fn(podcycle_route)
        .layer(Hello);
    let prom = Prom::new();
    let cached = {
        let h = prom
            .duration
            .with_label_values(&["GET", ROUTE, StatusCode::OK.as_str()]);
        let a = prom.active.with_label_values(&["GET"]);
        (h, a)
    };
    let axum_prometheus = axum_prometheus_layer().layer(Hello);
    let core = Core::new(VERSION, podcycle::metrics::DEFAULT_BUCKETS);

    let mut group = c.benchmark_group("per_request");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for threads in [1usize, 2] {
        macro_rules! case {
            ($name:expr, $make:expr) => {{
                let key = format!("{}/{}t", $name, threads);
                let make = $make;
                group.bench_function(&key, |b| {
                    b.iter_custom(|iters| {
                        let (took, disturbed) = workers.run(threads, iters, &make);
                        stash(&key, iters, took, disturbed);
                        took
                    })
                });
            }};
        }
        case!("clock", || {
            move || {
                let started = Instant::now();
                black_box(started.elapsed());
            }
        });
        case!("clock_tsc", || {
            let clock = quanta::Clock::new();
            move || {
                let started = clock.raw();
                black_box(clock.delta_as_nanos(started, clock.raw()));
            }
        });
        // Control: each thread records into a core of its own, so nothing at all is shared; if
        // this slows down with two threads as much as `core` does, the slowdown is the two CPUs
        // (e.g. siblings on the host), not contention.
        case!("core_own", || {
            let core = Core::new(VERSION, podcycle::metrics::DEFAULT_BUCKETS);
            move || {
                let route = core.start(0, ROUTE);
                core.observe(0, route, 200, black_box(2_000_000));
            }
        });
        case!("core", || {
            move || {
                let route = core.start(0, ROUTE);
                core.observe(0, route, 200, black_box(2_000_000));
            }
        });
        // `core` with native histogram buckets too (`PODCYCLE_NATIVE_HISTOGRAMS=true`).
        case!("core_native", || {
            let core = Core::with_native(VERSION, podcycle::metrics::DEFAULT_BUCKETS, true);
            move || {
                let route = core.start(0, ROUTE);
                core.observe(0, route, 200, black_box(2_000_000));
            }
        });
        case!("core_clocked", || {
            move || {
                let started = core.now();
                let route = core.start(0, ROUTE);
                core.finish(0, route, 200, started);
            }
        });
        case!("bare", || {
            let (mut svc, uri) = (Hello, uri.clone());
            move || {
                black_box(drive(&mut svc, hello_request(&uri)));
            }
        });
        case!("podcycle", || {
            let (mut svc, uri) = (podcycle.clone(), uri.clone());
            move || {
                black_box(drive(&mut svc, hello_request(&uri)));
            }
        });
        case!("prometheus_lookup", || {
            let (mut svc, uri, prom) = (Hello, uri.clone(), prom.clone());
            move || prom.record_lookup(&mut svc, hello_request(&uri))
        });
        case!("prometheus_cached", || {
            let (mut svc, uri, (hist, active)) = (Hello, uri.clone(), cached.clone());
            move || {
                active.inc();
                let started = Instant::now();
                black_box(drive(&mut svc, hello_request(&uri)));
                hist.observe(started.elapsed().as_secs_f64());
                active.dec();
            }
        });
        case!("axum_prometheus", || {
            let (mut svc, uri) = (axum_prometheus.clone(), uri.clone());
            move || {
                black_box(drive(&mut svc, hello_request(&uri)));
            }
        });
    }
    group.finish();
    // Drop the samples axum-prometheus buffered (its upkeep runs every 5 s).
    black_box(metrics_handle().render().len());
    drop(lifecycle);
}

/// 10 methods x 100 status codes through `svc`, from each of the two workers.
fn thousand_series<S, B>(workers: &Workers, svc: S)
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send + 'static,
    B: Body,
{
    workers.run(2, 1, &|| {
        let mut svc = svc.clone();
        move || {
            for method in METHODS {
                for code in 200..300 {
                    let uri: Uri = format!("/hello/world?s={code}").parse().expect("uri");
                    drive(&mut svc, request(method, &uri));
                }
            }
        }
    });
}

fn rendering(c: &mut Criterion, rt: &tokio::runtime::Runtime, workers: &Workers) -> Vec<String> {
    let lifecycle = podcycle_lifecycle(rt);
    thousand_series(
        workers,
        lifecycle
            .metrics()
            .layer()
            .route_fn(podcycle_route)
            .layer(Hello),
    );
    let series = lifecycle.metrics().http_series_count();
    assert_eq!(series, 1000, "podcycle fixture");
    let native = podcycle_lifecycle_with(rt, true);
    thousand_series(
        workers,
        native
            .metrics()
            .layer()
            .route_fn(podcycle_route)
            .layer(Hello),
    );
    assert_eq!(native.metrics().http_series_count(), 1000, "native fixture");

    let prom = Prom::new();
    workers.run(2, 1, &|| {
        let prom = prom.clone();
        move || {
            for method in METHODS {
                for code in 200..300u16 {
                    let code = code.to_string();
                    let m = method_label(&Method::from_bytes(method.as_bytes()).expect("method"));
                    prom.duration
                        .with_label_values(&[m, ROUTE, &code])
                        .observe(0.001);
                }
            }
        }
    });

    // The process-wide recorder installed in `main`: its layer records into it.
    thousand_series(workers, axum_prometheus_layer().layer(Hello));
    let handle = metrics_handle();

    let mut sizes = Vec::new();
    let mut group = c.benchmark_group("render_1000_series");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    let mut case = |name: &str, render: &dyn Fn() -> usize| {
        sizes.push(format!("{name}={}", render()));
        let key = format!("render/{name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let waited = run_delay_ns();
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(render());
                }
                let took = start.elapsed();
                let waited = run_delay_ns().saturating_sub(waited);
                stash(&key, iters, took, disturbed(waited, took));
                took
            })
        });
    };
    case("podcycle_render_http", &|| {
        lifecycle.metrics().render_http().len()
    });
    case("podcycle_render", &|| lifecycle.metrics().render().len());
    // What Prometheus asks for by default: the text rewritten as OpenMetrics (no exemplars
    // here: no request was sampled).
    case("podcycle_render_openmetrics", &|| {
        lifecycle.metrics().render_openmetrics().len()
    });
    case("podcycle_render_protobuf", &|| {
        lifecycle.metrics().render_protobuf().len()
    });
    // With native histograms on: the text format (which skips the native cells) and the
    // protobuf exposition (which sums them and encodes spans and deltas).
    case("podcycle_native_render_http", &|| {
        native.metrics().render_http().len()
    });
    case("podcycle_native_render_protobuf", &|| {
        native.metrics().render_protobuf().len()
    });
    case("prometheus_text_encoder", &|| prom.render().len());
    case("axum_prometheus", &|| handle.render().len());
    group.finish();
    sizes
}

/// The `axum-prometheus` layer and handle. The first call installs the process-wide recorder
/// (a second `pair()` would panic), so both come from one place.
fn axum_prometheus_parts() -> &'static (
    axum_prometheus::PrometheusMetricLayer<'static>,
    axum_prometheus::metrics_exporter_prometheus::PrometheusHandle,
) {
    static PARTS: std::sync::OnceLock<(
        axum_prometheus::PrometheusMetricLayer<'static>,
        axum_prometheus::metrics_exporter_prometheus::PrometheusHandle,
    )> = std::sync::OnceLock::new();
    PARTS.get_or_init(axum_prometheus::PrometheusMetricLayer::pair)
}

fn axum_prometheus_layer() -> axum_prometheus::PrometheusMetricLayer<'static> {
    axum_prometheus_parts().0.clone()
}

fn metrics_handle() -> axum_prometheus::metrics_exporter_prometheus::PrometheusHandle {
    axum_prometheus_parts().1.clone()
}

fn fmt_ns(ns: Option<f64>) -> String {
    ns.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn fmt_diff(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", a - b),
        _ => "-".into(),
    }
}

fn fmt_disturbed(key: &str) -> String {
    let (bad, all) = disturbed_share(key);
    format!("{bad}/{all}")
}

fn summary(sizes: &[String]) {
    println!();
    println!("## Per-request recording cost (ns per request per thread)");
    println!();
    println!(
        "Medians of criterion's batches, leaving out batches in which a worker waited for a CPU \
         more than 2% of the time (another process took it; counted in the last column) when at \
         least 5 others remain. Recorder cost = the row minus the bare service."
    );
    println!();
    println!("| recorder | 1 thread | recorder cost, 1 thread | 2 threads, same series | recorder cost, 2 threads | disturbed batches (1 / 2 threads) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let bare1 = median("bare/1t");
    let bare2 = median("bare/2t");
    for (name, label) in [
        (
            "clock",
            "two clock reads alone (`Instant::now` + `elapsed`)",
        ),
        (
            "clock_tsc",
            "two time-stamp counter reads (`quanta`, what podcycle uses)",
        ),
    ] {
        let (k1, k2) = (format!("{name}/1t"), format!("{name}/2t"));
        println!(
            "| reference: {label} | {} | | {} | | {} / {} |",
            fmt_ns(median(&k1)),
            fmt_ns(median(&k2)),
            fmt_disturbed(&k1),
            fmt_disturbed(&k2)
        );
    }
    for (name, label) in [
        (
            "core",
            "podcycle recording alone (route id, active gauge, histogram; no clock)",
        ),
        (
            "core_own",
            "control: the same, each thread on a metrics core of its own (nothing shared)",
        ),
        (
            "core_native",
            "the same with native histogram buckets too (`PODCYCLE_NATIVE_HISTOGRAMS`)",
        ),
        (
            "core_clocked",
            "podcycle recording with its two clock reads (what `Lifecycle::serve` adds)",
        ),
    ] {
        let (k1, k2) = (format!("{name}/1t"), format!("{name}/2t"));
        println!(
            "| {label} | {} | {} | {} | {} | {} / {} |",
            fmt_ns(median(&k1)),
            fmt_ns(median(&k1)),
            fmt_ns(median(&k2)),
            fmt_ns(median(&k2)),
            fmt_disturbed(&k1),
            fmt_disturbed(&k2)
        );
    }
    for (name, label) in [
        ("bare", "none (bare service)"),
        (
            "podcycle",
            "podcycle `MetricsLayer` on its own (outside `Lifecycle::serve`: wraps the body)",
        ),
        (
            "prometheus_lookup",
            "`prometheus`, `with_label_values` per request",
        ),
        ("prometheus_cached", "`prometheus`, cached label children"),
        ("axum_prometheus", "`axum-prometheus` layer"),
    ] {
        let (k1, k2) = (format!("{name}/1t"), format!("{name}/2t"));
        let (one, two) = (median(&k1), median(&k2));
        println!(
            "| {label} | {} | {} | {} | {} | {} / {} |",
            fmt_ns(one),
            fmt_diff(one, bare1),
            fmt_ns(two),
            fmt_diff(two, bare2),
            fmt_disturbed(&k1),
            fmt_disturbed(&k2)
        );
    }
    println!();
    println!("## Rendering 1,000 histogram series (18 buckets each)");
    println!();
    println!("| renderer | time per render (µs) | output bytes | disturbed batches |");
    println!("|---|---:|---:|---:|");
    for s in sizes {
        let (name, bytes) = s.split_once('=').unwrap_or((s, "-"));
        let key = format!("render/{name}");
        let us = median(&key).map(|ns| ns / 1000.0);
        println!(
            "| {name} | {} | {bytes} | {} |",
            us.map_or_else(|| "-".into(), |v| format!("{v:.0}")),
            fmt_disturbed(&key)
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let workers = Workers::new(2);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    {
        // `pair()` spawns an upkeep task on the runtime and installs the process-wide recorder.
        let _enter = rt.enter();
        axum_prometheus_parts();
    }
    per_request(&mut c, &rt, &workers);
    let sizes = rendering(&mut c, &rt, &workers);
    c.final_summary();
    summary(&sizes);
}
