//! Errors that stop a lifecycle from starting, and the boxed error of services and bodies.

use std::fmt;

use crate::config::ConfigError;

/// Boxed error type used for service and body errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a [`Lifecycle`](crate::Lifecycle) could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; the message names the variable and the value.
    Config(ConfigError),
    /// The admin listener could not be bound, or signal handlers could not be installed.
    Io(std::io::Error),
    /// The lifecycle was created outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "podcycle configuration: {e}"),
            Error::Io(e) => write!(f, "podcycle: {e}"),
            Error::NoRuntime => f.write_str(
                "podcycle: Lifecycle must be created inside a tokio runtime (e.g. in #[tokio::main])",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::NoRuntime => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}
