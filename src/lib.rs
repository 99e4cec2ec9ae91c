#![doc = include_str!("docs/crate.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Layers, top to bottom: a module imports only from the layers below it, never from its own
// layer or above, so no two modules import each other (checked by tests/layering.rs, which
// also holds the README's Layout to this list):
//   lifecycle
//   serve, admin, routing
//   metrics, shutdown, probes, watchdog, grpc_health, stream_drain
//   health
//   state, warmup, checks, error, env_check, recorder
//   phase, connections, counters, panic, logging, until, lag, stderr
//   admission
//   config
mod admin;
mod admission;
mod checks;
mod config;
mod connections;
mod counters;
mod env_check;
mod error;
#[cfg(feature = "grpc")]
mod grpc_health;
mod health;
mod lag;
mod lifecycle;
#[cfg(feature = "logging")]
#[cfg_attr(docsrs, doc(cfg(feature = "logging")))]
pub mod logging;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod panic;
mod phase;
pub mod probes;
mod recorder;
pub mod routing;
mod serve;
mod shutdown;
mod state;
mod stderr;
mod stream_drain;
mod until;
mod warmup;
mod watchdog;

pub use checks::Check;
pub use config::{
    Admission, Config, ConfigError, OnWarmupFailure, ShedStatus, StopAccepting, DEFAULT_BUCKETS,
    DEFAULT_SHUTDOWN_QUIET, GRACE_MARGIN, KUBERNETES_GRACE_PERIOD, MAX_DURATION,
    MIN_WATCHDOG_STALL,
};
pub use error::{BoxError, Error};
pub use lifecycle::Lifecycle;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::{Metrics, MetricsLayer};
pub use phase::Phase;
pub use probes::Probes;
pub use shutdown::Outcome;
pub use state::ShutdownReason;
pub use until::{until, Until};
pub use warmup::Warmup;

/// The README's Rust snippets, compiled as doc tests (`cargo test --doc`) so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The guides' Rust snippets (`docs/*.md`, linked from the README), compiled likewise.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../docs/shutdown.md")]
    struct Shutdown;
    #[doc = include_str!("../docs/limits.md")]
    struct Limits;
    #[doc = include_str!("../docs/long-lived-connections.md")]
    struct LongLivedConnections;
    #[doc = include_str!("../docs/probes.md")]
    struct Probes;
    #[doc = include_str!("../docs/metrics.md")]
    struct Metrics;
    #[doc = include_str!("../docs/grpc.md")]
    struct Grpc;
    #[doc = include_str!("../docs/drill.md")]
    struct Drill;
    #[doc = include_str!("../docs/judge.md")]
    struct Judge;
    #[doc = include_str!("../docs/testing.md")]
    struct Testing;
}
