//! Reading both arms' counters from a Prometheus server's HTTP API.
//!
//! Each look runs six instant queries (`/api/v1/query`), all evaluated at
//! the same timestamp, against the raw series of podcycle's
//! `http_server_request_duration_seconds` histogram and its admission control's
//! `podcycle_requests_shed_total` counter:
//!
//! ```text
//! http_server_request_duration_seconds_count{version="<arm>"[,http_route="<route>"][,<selector>]}
//! http_server_request_duration_seconds_bucket{version="<arm>",error_type=""[,...]}
//! podcycle_requests_shed_total{version="<arm>"[,<selector>]}
//! ```
//!
//! Requests are the sum of `_count`, errors the `_count` series whose
//! `error_type` label is set, latency the `_bucket` series of successful
//! requests summed per `le`, shed requests the sum of the shed counter (a request is shed
//! before it is routed, so the route does not narrow it; a service without admission
//! control has no such series and sheds nothing). Series are followed one by one: a series that
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
