//! The smallest podcycle service: one warm-up, one readiness check, RED metrics, and a graceful
//! SIGTERM drain. The app listens on :8080; probes and `/metrics` on the admin port, :9090.
//!
//! ```text
//! cargo run --example minimal
//! curl -s localhost:9090/readyz?verbose; curl -s localhost:8080/; curl -s localhost:9090/metrics
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use axum::Router;
// axum's `get`, its handler naming the route (`http_route="/"`) for the metrics.
use podcycle::routing::get;
use podcycle::{Lifecycle, Outcome};

#[tokio::main]
async fn main() -> Outcome {
    // Colour only on a terminal: `cargo run --example ... > file` gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    // Probes and signal handling start here, before any warm-up.
    // A bad PODCYCLE_* value ends here with one readable line and exit code 1.
    let lifecycle = match Lifecycle::from_env(env!("CARGO_PKG_VERSION")) {
        Ok(lifecycle) => lifecycle,
        Err(e) => return e.into(),
    };
    // /readyz (and serving) wait for every warm-up: here a greeting that takes a moment to load.
    let greeting = lifecycle.warmup("greeting", async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, std::convert::Infallible>(String::from("hello from podcycle\n"))
    });
    // Then /readyz fails whenever this check does (before the warm-up ends, it waits anyway).
    let loaded = greeting.clone();
    lifecycle.readiness_check("greeting-not-empty", move || {
        let ok = loaded.get().is_none_or(|g| !g.is_empty());
        async move { ok.then_some(()).ok_or("no greeting") }
    });
    let app = Router::new().route(
        "/",
        get(move || async move { greeting.get().cloned().unwrap_or_default() }),
    );
    // Returns after SIGTERM once drained; its exit code says how the process ended.
    lifecycle.serve(app).await
}
