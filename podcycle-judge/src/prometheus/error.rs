//! Why a look at Prometheus failed.

use std::fmt;
use std::time::Duration;

/// Why a look at Prometheus failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PrometheusError {
    /// The configuration cannot work (bad URL, label name, header).
    Config(String),
    /// The server could not be reached or the response not read.
    Transport(String),
    /// No response within the query timeout.
    Timeout(Duration),
    /// The server answered a status other than 200.
    Status {
        /// HTTP status code.
        status: u16,
        /// Prometheus' `error` field, or the start of the body.
        message: String,
    },
    /// The server answered `"status": "error"`.
    Api {
        /// Prometheus' `errorType` (`bad_data`, `timeout`, ...).
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// The body is not the JSON of an instant query.
    Decode(String),
    /// The query gave a result type other than `vector` or `scalar`.
    UnexpectedResultType(String),
}

impl fmt::Display for PrometheusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrometheusError::Config(m) => write!(f, "invalid Prometheus configuration: {m}"),
            PrometheusError::Transport(m) => write!(
                f,
                "cannot reach Prometheus: {m} (check --prometheus and the network path)"
            ),
            PrometheusError::Timeout(d) => write!(
                f,
                "Prometheus did not answer within {d:?} (raise --query-timeout or narrow --selector)"
            ),
            PrometheusError::Status { status, message } => {
                write!(f, "Prometheus answered HTTP {status}: {message}")
            }
            PrometheusError::Api {
                error_type,
                message,
            } => write!(f, "Prometheus query error ({error_type}): {message}"),
            PrometheusError::Decode(m) => write!(
                f,
                "unexpected response from Prometheus: {m} (is --prometheus a Prometheus API?)"
            ),
            PrometheusError::UnexpectedResultType(t) => write!(
                f,
                "Prometheus returned a {t} result where an instant vector was expected"
            ),
        }
    }
}

impl std::error::Error for PrometheusError {}
