//! The standard gRPC health service, `grpc.health.v1.Health` (Check and Watch), served on the
//! admin listener beside the HTTP probes and answering from the same health model (feature
//! `grpc`). Kubernetes' `grpc:` probes call it.
//!
//! ```text
//! $ grpcurl -plaintext -d '{"service":""}' localhost:9090 grpc.health.v1.Health/Check
//! {"status": "SERVING"}        # NOT_SERVING from the moment of SIGTERM, as /readyz
//! ```
//!
//! | service name | SERVING when |
//! |---|---|
//! | `""` (the whole server) | `/readyz` passes |
//! | `readyz`, `livez`, `startupz` | that probe passes |
//! | a check's name, `warmup/<name>`, `serving`, `shutdown`, `watchdog` | that line of `/readyz` or `/livez` passes |
//!
//! Statuses are kept by [`tonic_health`]'s reporter, updated by one task on the admin thread
//! at every event of the health model (phase, warm-ups, checks, the serving switch), so a
//! `Watch` sees a change as soon as it happens, and once a second for the watchdog line,
//! which changes with time alone. Unknown service names get `NOT_FOUND` (tonic-health's
//! answer, for `Watch` too, where the protocol suggests a `SERVICE_UNKNOWN` message).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::health::{Endpoint, Health};

/// The path prefix of the health service's methods.
const PATH_PREFIX: &str = "/grpc.health.v1.Health/";

/// How often statuses are re-evaluated without an event (the watchdog line has none).
const REFRESH: Duration = Duration::from_secs(1);

/// The health service of one lifecycle: the server half answers RPCs, the reporter half is
/// kept current by [`GrpcHealth::follow`].
#[derive(Clone, Debug)]
pub(crate) struct GrpcHealth {
    reporter: HealthReporter,
    server: HealthServer<HealthService>,
}

impl GrpcHealth {
    /// A health service showing the current state of `health`.
    pub(crate) async fn new(health: &Health) -> GrpcHealth {
        let reporter = HealthReporter::new();
        let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let this = GrpcHealth { reporter, server };
        this.report(health, &mut BTreeMap::new()).await;
        this
    }

    /// Whether `req` is for this service (by its path: gRPC clients always send it).
    #[inline]
    pub(crate) fn is_for<B>(req: &Request<B>) -> bool {
        req.uri().path().starts_with(PATH_PREFIX)
    }

    /// Whether `req` opens a `Watch` stream (a long-lived request: the admin listener caps them).
    #[inline]
    pub(crate) fn is_watch<B>(req: &Request<B>) -> bool {
        req.uri()
            .path()
            .strip_prefix(PATH_PREFIX)
            .is_some_and(|method| method == "Watch")
    }

    /// The service answering `Check` and `Watch`.
    pub(crate) fn server(&self) -> HealthServer<HealthService> {
        self.server.clone()
    }

    /// Keeps the statuses current with `health` until the future is dropped.
    pub(crate) async fn follow(self, health: Arc<Health>) {
        let mut changes = health.subscribe();
        let mut last = BTreeMap::new();
        self.report(&health, &mut last).await;
        loop {
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(REFRESH) => {}
            }
            self.report(&health, &mut last).await;
        }
    }

    /// Sets every status that differs from `last` (a `Watch` sees each change once).
    async fn report(&self, health: &Health, last: &mut BTreeMap<String, ServingStatus>) {
        for (name, status) in statuses(health) {
            if last.get(&name) != Some(&status) {
                self.reporter.set_service_status(&name, status).await;
                last.insert(name, status);
            }
        }
    }
}

/// Every service name and its status, from one look at the health model per probe.
fn statuses(health: &Health) -> BTreeMap<String, ServingStatus> {
    let serving = |ok: bool| {
        if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let mut out = BTreeMap::new();
    for endpoint in [Endpoint::Readyz, Endpoint::Livez, Endpoint::Startupz] {
        let lines = health.report(endpoint);
        let passes = lines.iter().all(|l| !l.gating || l.result.is_ok());
        if endpoint == Endpoint::Readyz {
            out.insert(String::new(), serving(passes));
        }
        out.insert(endpoint.as_str().to_owned(), serving(passes));
        for line in lines.into_iter().filter(|l| l.name != "ping") {
            let ok = line.result.is_ok();
            // A name on two probes (a warm-up) is serving only where it passes on both.
            let entry = out.entry(line.name).or_insert(ServingStatus::Serving);
            if !ok {
                *entry = ServingStatus::NotServing;
            }
        }
    }
    out
}
