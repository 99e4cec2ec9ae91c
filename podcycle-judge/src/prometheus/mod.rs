//! Reading both arms' counters from a Prometheus server's HTTP API.
//!
//! Each look runs four instant queries (`/api/v1/query`), all evaluated at
//! the same timestamp, against the raw series of podcycle's
//! `http_server_request_duration_seconds` histogram:
//!
//! ```text
//! http_server_request_duration_seconds_count{version="<arm>"[,http_route="<route>"][,<selector>]}
//! http_server_request_duration_seconds_bucket{version="<arm>",error_type=""[,...]}
//! ```
//!
//! Requests are the sum of `_count`, errors the `_count` series whose
//! `error_type` label is set, latency the `_bucket` series of successful
//! requests summed per `le`. Series are followed one by one: a series that
//! goes down was reset (its pod restarted) and its new value is the
//! increment; a series first seen after the first look started after it and
//! counts in full. So the snapshots are monotone counts since the first look.
//!
//! By concern: `query` builds the PromQL from a [`PrometheusConfig`], `response` parses the
//! API's answers, `counters` follows counter series across looks, `client` makes the HTTP or
//! HTTPS connector, and `source` runs the looks as a [`SnapshotSource`](crate::SnapshotSource);
//! `error` says why a look failed.

mod client;
mod counters;
mod error;
mod query;
mod response;
mod source;

pub use error::PrometheusError;
pub use query::PrometheusConfig;
pub use response::{parse_query_response, QueryResult, Sample};
pub use source::PrometheusSource;
