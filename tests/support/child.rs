//! The server under test, run inside the child process. Behaviour is chosen by env:
//! `TEST_WARMUP` = `ok:<duration>` | `fail` | `panic` (default `ok:0s`), `TEST_WORKERS`,
//! `TEST_NO_SUBSCRIBER` (set: no tracing subscriber), `TEST_TOWER` = `limit:<n>` | `shed:<n>`
//! (tower's `ConcurrencyLimit` around each route, alone (it queues) or behind `LoadShed`
//! (beyond the limit, `503`): the static limits admission control is compared with).
//! It prints `ADMIN <addr>`, `APP <addr>`, `PHASE <name>` and `START <path>` lines.

use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use axum::extract::Query;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use podcycle::Lifecycle;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn dur(s: &str) -> Duration {
    humantime::parse_duration(s).expect("test duration")
}

/// Runs the future `run` returns as the whole child process, on a multi-threaded runtime, and
/// exits with its outcome's exit code: never returns. For a test file whose server under test
/// is an application's own `run` (`support::child!("..", support::child::serve(|| app::run()))`).
pub fn serve<F>(run: impl FnOnce() -> F) -> !
where
    F: std::future::Future<Output = podcycle::Outcome>,
{
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt.block_on(run());
    std::process::exit(i32::from(outcome.exit_code()));
}

/// Entry point of the child process: never returns.
pub fn main() {
    if std::env::var_os("PODCYCLE_TEST_CHILD").is_none() {
        return;
    }
    // `TEST_NO_SUBSCRIBER=1`: a service that installs no tracing subscriber.
    if std::env::var_os("TEST_NO_SUBSCRIBER").is_none() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let workers: usize = std::env::var("TEST_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(run());
    std::process::exit(code);
}

#[derive(serde::Deserialize)]
struct Params {
    ms: Option<u64>,
    n: Option<u32>,
    bytes: Option<usize>,
}

async fn run() -> i32 {
    let lifecycle = match Lifecycle::from_env("0.0.0-test") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut phases = lifecycle.subscribe();
    tokio::spawn(async move {
        loop {
            let p = *phases.borrow_and_update();
            say(format!("PHASE {p}"));
            if phases.changed().await.is_err() {
                return;
            }
        }
    });
    let warmup = std::env::var("TEST_WARMUP").unwrap_or_else(|_| "ok:0s".into());
    let value = lifecycle.warmup("test-data", async move {
        match warmup.split_once(':') {
            Some(("ok", d)) => {
                tokio::time::sleep(dur(d)).await;
                Ok(42u32)
            }
            _ if warmup == "panic" => panic!("warm-up exploded"),
            _ => Err("could not load test data: file missing"),
        }
    });
    // After the warm-up is registered: a probe right after this line sees it running.
    say(format!("ADMIN {}", lifecycle.admin_addr().unwrap()));
    let l2 = lifecycle.clone();
    tokio::spawn(async move {
        // The listener is bound before warm-ups end; a stop during warm-up never serves.
        let mut phases = l2.subscribe();
        if phases
            .wait_for(|p| *p == podcycle::Phase::Serving)
            .await
            .is_err()
        {
            return;
        }
        if let Some(a) = l2.app_addr() {
            say(format!("APP {a}"));
        }
    });
    let hook_ms: u64 = std::env::var("TEST_HOOK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    lifecycle.on_shutdown("test-hook", async move {
        tokio::time::sleep(Duration::from_millis(hook_ms)).await;
        say("HOOK done".into());
    });

    let drain = lifecycle.clone();
    let drain2 = lifecycle.clone();
    let queue: &'static tokio::sync::Semaphore =
        Box::leak(Box::new(tokio::sync::Semaphore::new(2)));
    let app = Router::new()
        .route(
            "/hello",
            get(move || async move { format!("hello {}", value.get().copied().unwrap_or(0)) }),
        )
        .route(
            "/slow",
            get(|Query(p): Query<Params>| async move {
                say("START /slow".into());
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(1000))).await;
                "slow done"
            }),
        )
        .route(
            "/queued",
            get(move |Query(p): Query<Params>| async move {
                // A resource that serves two requests at a time, `ms` each: the latency of
                // the rest grows with the queue in front of it (an overloaded dependency).
                let _turn = queue.acquire().await;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(20))).await;
                "queued done"
            }),
        )
        .route(
            "/upload",
            axum::routing::post(|Query(p): Query<Params>, body: bytes::Bytes| async move {
                // Works on the body it has read for `ms` (no body read meanwhile).
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                format!("received {}", body.len())
            }),
        )
        .route(
            "/big",
            get(|Query(p): Query<Params>| async move {
                say("START /big".into());
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                "x".repeat(p.bytes.unwrap_or(1 << 20))
            }),
        )
        .route(
            "/block",
            get(|Query(p): Query<Params>| async move {
                say("START /block".into());
                std::thread::sleep(Duration::from_millis(p.ms.unwrap_or(1000)));
                "unblocked"
            }),
        )
        .route(
            "/stream",
            get(move |Query(p): Query<Params>| async move {
                say("START /stream".into());
                Sse::new(ticks(p, Some(drain.draining())))
            }),
        )
        .route(
            "/stream-ignoring-drain",
            get(move |Query(p): Query<Params>| async move {
                let _ = &drain2;
                say("START /stream-ignoring-drain".into());
                Sse::new(ticks(p, None::<std::future::Ready<()>>))
            }),
        );
    let outcome = match std::env::var("TEST_TOWER")
        .ok()
        .as_deref()
        .and_then(|t| t.split_once(':'))
    {
        Some(("limit", n)) => {
            let app = app.layer(tower::limit::ConcurrencyLimitLayer::new(n.parse().unwrap()));
            lifecycle.serve(app).await
        }
        Some(("shed", n)) => {
            let app = app.layer(
                tower::ServiceBuilder::new()
                    .layer(axum::error_handling::HandleErrorLayer::new(
                        |_: tower::BoxError| async { http::StatusCode::SERVICE_UNAVAILABLE },
                    ))
                    .load_shed()
                    .concurrency_limit(n.parse().unwrap()),
            );
            lifecycle.serve(app).await
        }
        _ => lifecycle.serve(app).await,
    };
    say(format!("OUTCOME {} {outcome}", outcome.exit_code()));
    i32::from(outcome.exit_code())
}

/// `n` events `ms` apart, then `event: done`; with a drain signal, ends early with
/// `event: reconnect` when draining starts.
fn ticks(
    p: Params,
    draining: Option<impl std::future::Future<Output = ()> + Send + 'static>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let n = p.n.unwrap_or(10);
    let every = Duration::from_millis(p.ms.unwrap_or(100));
    let draining = draining.map(Box::pin);
    stream::unfold(
        (0u32, draining, false),
        move |(i, mut draining, ended)| async move {
            if ended {
                return None;
            }
            if i >= n {
                return Some((
                    Ok(Event::default().event("done").data("complete")),
                    (i, draining, true),
                ));
            }
            let sleep = tokio::time::sleep(every);
            match draining.as_mut() {
                Some(d) => {
                    tokio::select! {
                        _ = sleep => {}
                        _ = d.as_mut() => {
                            return Some((Ok(Event::default().event("reconnect").data("server draining")), (i, None, true)));
                        }
                    }
                }
                None => sleep.await,
            }
            Some((
                Ok(Event::default().data(format!("tick {i}"))),
                (i + 1, draining, false),
            ))
        },
    )
}
