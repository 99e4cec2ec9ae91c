#![doc = include_str!("docs/crate.md")]
#![forbid(unsafe_code)]

mod admin;
mod checks;
mod config;
mod error;
mod lifecycle;
pub mod metrics;
mod phase;
pub mod probes;
mod serve;
mod shutdown;
mod state;
mod warmup;
mod watchdog;

pub use checks::{CheckResult, Probe};
pub use config::{Config, ConfigError, OnWarmupFailure, StopAccepting, GRACE_MARGIN};
pub use error::Error;
pub use lifecycle::Lifecycle;
pub use metrics::{Metrics, MetricsLayer};
pub use phase::Phase;
pub use probes::Probes;
pub use serve::BoxError;
pub use shutdown::Outcome;
pub use state::ShutdownReason;
pub use warmup::Warmup;
