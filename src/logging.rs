//! Logs fit for Kubernetes, in one call (feature `logging`): text or JSON lines on stdout,
//! filtered by `RUST_LOG`, colour only on a terminal.
//!
//! # Example
//! ```no_run
//! #[tokio::main]
//! async fn main() -> Result<podcycle::Outcome, podcycle::Error> {
//!     podcycle::logging::init()?; // e.g. LOG_FORMAT=xml: one readable line, exit code 1
//!     let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
//!     Ok(lifecycle.serve(axum::Router::new()).await)
//! }
//! ```
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LOG_FORMAT` | `text` | `text`: one human line per event; `json`: one JSON object per line (`timestamp`, `level`, `target`, `fields`), for log collectors |
//! | `RUST_LOG` | `info` | a `tracing_subscriber::EnvFilter` directive, e.g. `info,podcycle=debug` |
//!
//! ANSI colour is used only when stdout is a terminal (`std::io::IsTerminal`), so a container's
//! log file never holds escape codes.

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json` (any case); `None` when unset means `text`.
    fn parse(value: Option<&str>) -> Result<LogFormat, LoggingError> {
        match value.map(str::trim) {
            None | Some("") => Ok(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            Some(v) => Err(LoggingError::InvalidFormat(v.to_owned())),
        }
    }
}

/// Why logging could not be set up. Its `Debug` is its message (as [`crate::Error`]'s), so
/// `main` returning it prints a readable line; `{:#?}` shows the structure. It converts into
/// [`crate::Error`], so `podcycle::logging::init()?` works in
/// `main() -> Result<Outcome, podcycle::Error>`.
#[non_exhaustive]
pub enum LoggingError {
    /// `LOG_FORMAT` is neither `text` nor `json`.
    InvalidFormat(String),
    /// `RUST_LOG` is not a valid filter.
    InvalidFilter {
        /// The value found.
        value: String,
        /// The parser's message.
        error: String,
    },
    /// A global `tracing` subscriber was already installed (call `init` once, first).
    AlreadyInitialised,
}

impl fmt::Debug for LoggingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(self, f);
        }
        match self {
            LoggingError::InvalidFormat(v) => f.debug_tuple("InvalidFormat").field(v).finish(),
            LoggingError::InvalidFilter { value, error } => f
                .debug_struct("InvalidFilter")
                .field("value", value)
                .field("error", error)
                .finish(),
            LoggingError::AlreadyInitialised => f.write_str("AlreadyInitialised"),
        }
    }
}

impl fmt::Display for LoggingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggingError::InvalidFormat(v) => {
                write!(f, "invalid LOG_FORMAT={v:?}: expected `json` or `text`")
            }
            LoggingError::InvalidFilter { value, error } => write!(
                f,
                "invalid RUST_LOG={value:?}: {error} (expected e.g. `info` or `info,podcycle=debug`)"
            ),
            LoggingError::AlreadyInitialised => f.write_str(
                "a tracing subscriber is already installed: call podcycle::logging::init once, before any other",
            ),
        }
    }
}

impl std::error::Error for LoggingError {}

/// Installs a global `tracing` subscriber writing to stdout, as `LOG_FORMAT` (`text` or
/// `json`) and `RUST_LOG` (default `info`) say; colour only when stdout is a terminal.
///
/// Call it once, first thing in `main`. An invalid variable is an error, not a silent default.
pub fn init() -> Result<(), LoggingError> {
    let format = LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref())?;
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    result.map_err(|_| LoggingError::AlreadyInitialised)
}

fn filter(value: Option<&str>) -> Result<EnvFilter, LoggingError> {
    match value.map(str::trim) {
        None | Some("") => Ok(EnvFilter::new("info")),
        Some(v) => EnvFilter::try_new(v).map_err(|e| LoggingError::InvalidFilter {
            value: v.to_owned(),
            error: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_text_json_or_an_error_naming_the_variable() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("JSON")).unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse(Some("text")).unwrap(), LogFormat::Text);
        let e = LogFormat::parse(Some("xml")).unwrap_err().to_string();
        assert_eq!(e, "invalid LOG_FORMAT=\"xml\": expected `json` or `text`");
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        assert!(filter(None).is_ok());
        assert!(filter(Some("info,podcycle=debug")).is_ok());
        let e = filter(Some("info,=[")).unwrap_err().to_string();
        assert!(e.starts_with("invalid RUST_LOG=\"info,=[\""), "{e}");
    }
}
