//! `podcycle-judge serve`: the judge as an HTTP service, one analysis per
//! request, for Argo Rollouts' Web metric provider and Flagger's webhooks,
//! run under podcycle's own [`Lifecycle`].
//!
//! ```text
//! podcycle-judge serve --listen 0.0.0.0:8080 --max-concurrent 4 --max-analysis-duration 15m \
//!     -- --prometheus http://prometheus.monitoring:9090 [any judge option as a default]
//! ```
//!
//! The requests it answers are in [`api`]. What podcycle adds, as for any service built on
//! it (every `PODCYCLE_*` variable applies; `--listen` is `PODCYCLE_ADDR`):
//!
//! * an admin listener (`PODCYCLE_ADMIN_ADDR`, default `0.0.0.0:9090`) with `/livez`,
//!   `/readyz`, `/startupz` and `/metrics` (the judge's own RED metrics, by route);
//! * readiness only once Prometheus has answered a first query (warm-up `prometheus`), then a
//!   non-gating readiness check `prometheus` that reports (in `/readyz?verbose` and
//!   `podcycle_check_status`) whether it still answers, without taking the judge out of its
//!   Service: an unreachable Prometheus is an inconclusive judgement, not an unready judge;
//! * the application listener's limits: a connection cap derived from `ulimit -n`
//!   (`PODCYCLE_MAX_CONNECTIONS`), header-read and idle timeouts
//!   (`PODCYCLE_HEADER_READ_TIMEOUT`, `PODCYCLE_IDLE_TIMEOUT`), a minimum body rate;
//! * SIGTERM: readiness off, new analyses refused with `503` during the propagation delay,
//!   analyses still running when the listener closes answered `503` (retry on another
//!   replica: Argo counts an Error measurement and measures again, Flagger a failed check and
//!   checks again), then exit with podcycle's exit code.
//!
//! `--api-token-file` makes `/v1/*` require `Authorization: Bearer <token>` (for clusters
//! without a NetworkPolicy in front of the judge); the probes, `/metrics` and `/healthz`
//! stay open, as the kubelet and Prometheus need them.

mod api;
mod auth;

use std::net::SocketAddr;
use std::process::{ExitCode, Termination};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use podcycle::{Check, Lifecycle, Phase};
use podcycle_judge::{PrometheusConfig, PrometheusSource};
use tokio::sync::Semaphore;

use crate::cli::{self, USAGE_ERROR};

/// The command line of `podcycle-judge serve`.
#[derive(Debug, Parser)]
#[command(
    name = "podcycle-judge serve",
    bin_name = "podcycle-judge serve",
    about = "Run judgements on request: an Argo Rollouts Web metric provider (GET /v1/judge) \
             and a Flagger webhook (POST /v1/flagger), under podcycle's lifecycle (probes and \
             /metrics on PODCYCLE_ADMIN_ADDR, default 0.0.0.0:9090; SIGTERM drain).",
    after_help = "After '--': the judge's options used as every request's defaults; \
                  --prometheus is required, --stable and --canary come from each request.\n\
                  Every PODCYCLE_* variable applies (PODCYCLE_ADMIN_ADDR, PODCYCLE_GRACE_PERIOD, \
                  PODCYCLE_HEADER_READ_TIMEOUT, ...).\n\
                  Exit status: podcycle's (0 drained, 1 failed, 3 warm-up failed, 4 drain timed \
                  out, 5 hooks timed out); 64 usage error."
)]
pub(crate) struct ServeArgs {
    /// Address to listen on (the same as PODCYCLE_ADDR; default 0.0.0.0:8080)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Analyses running at once; more get 429
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrent: u32,
    /// Longest max-duration a request may ask for
    #[arg(long, value_name = "DURATION", default_value = "15m",
          value_parser = cli::positive_duration)]
    max_analysis_duration: Duration,
    /// Require 'Authorization: Bearer <token>' on /v1/*, with the token read from PATH
    /// (probes, /metrics and /healthz stay open)
    #[arg(long, value_name = "PATH", env = "PODCYCLE_JUDGE_API_TOKEN_FILE")]
    api_token_file: Option<std::path::PathBuf>,
    /// The judge's options (after '--')
    #[arg(last = true, value_name = "JUDGE OPTIONS")]
    defaults: Vec<String>,
}

/// How long the warm-up waits between two questions to Prometheus.
const PROMETHEUS_RETRY: Duration = Duration::from_secs(2);

/// Parses `args` (after `serve`), checks the defaults, and serves until SIGTERM. Returns the
/// exit code: podcycle's [`Outcome`](podcycle::Outcome), or [`USAGE_ERROR`].
pub(crate) fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let args = match ServeArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE_ERROR } else { 0 });
        }
    };
    let usage = |message: String| {
        eprintln!("podcycle-judge serve: {message}");
        ExitCode::from(USAGE_ERROR)
    };
    let api_token = match args
        .api_token_file
        .as_deref()
        .map(auth::read_token)
        .transpose()
    {
        Ok(token) => token,
        Err(e) => return usage(e),
    };
    // Until the lifecycle exists (below), a phase that never changes.
    let mut service = api::Service {
        defaults: Arc::new(args.defaults),
        slots: Arc::new(Semaphore::new(args.max_concurrent as usize)),
        max_concurrent: args.max_concurrent,
        max_duration: args.max_analysis_duration,
        phase: tokio::sync::watch::channel(Phase::Starting).1,
    };
    // The defaults must make a valid judgement with some versions, and a working client.
    let prometheus = match service.defaults_check() {
        Ok(prometheus) => prometheus,
        Err(message) => return usage(format!("invalid judge options after '--': {message}")),
    };
    let probe = match PrometheusSource::new(&prometheus) {
        Ok(source) => source,
        Err(e) => return usage(format!("invalid judge options after '--': {e}")),
    };
    // `--listen` is PODCYCLE_ADDR. Set before any thread starts, so that podcycle reads one
    // configuration (and warns about unknown PODCYCLE_* variables) as for any service.
    if let Some(listen) = args.listen {
        std::env::set_var("PODCYCLE_ADDR", listen.to_string());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podcycle-judge serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if let Err(e) = podcycle::logging::init() {
            return usage(e.to_string());
        }
        let lifecycle = match Lifecycle::from_env(env!("CARGO_PKG_VERSION")) {
            Ok(lifecycle) => lifecycle,
            Err(podcycle::Error::Config(e)) => return usage(e.to_string()),
            Err(e) => {
                eprintln!("podcycle-judge serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        wire_prometheus(&lifecycle, &prometheus, probe);
        service.phase = lifecycle.subscribe();
        tracing::info!(
            url = %prometheus.url,
            max_concurrent = service.max_concurrent,
            max_analysis_duration = %humantime::format_duration(service.max_duration),
            api_token = api_token.is_some(),
            "podcycle-judge serve: starting"
        );
        let app = api::router(service, api_token).layer(lifecycle.metrics().layer());
        lifecycle.serve(app).await.report()
    })
}

/// The warm-up that holds readiness until Prometheus answers a first query, and the
/// non-gating check that reports whether it still does.
fn wire_prometheus(lifecycle: &Lifecycle, config: &PrometheusConfig, source: PrometheusSource) {
    let source = Arc::new(source);
    let url = config.url.clone();
    lifecycle.warmup("prometheus", {
        let source = source.clone();
        async move {
            let mut failures = 0u32;
            loop {
                match reachable(&source).await {
                    Ok(()) => return Ok::<_, String>(()),
                    Err(e) => {
                        failures += 1;
                        // The first failure and then one in ten: a missing Prometheus is
                        // visible without flooding the log.
                        if failures % 10 == 1 {
                            tracing::warn!(%url, error = %e, failures, "Prometheus does not answer yet; not ready");
                        }
                        tokio::time::sleep(PROMETHEUS_RETRY).await;
                    }
                }
            }
        }
    });
    lifecycle.check(
        Check::readiness("prometheus", move || {
            let source = source.clone();
            async move { reachable(&source).await }
        })
        .gating(false),
    );
}

/// One instant query (`1`): does Prometheus answer its query API?
async fn reachable(source: &PrometheusSource) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    source
        .query("1", now)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
