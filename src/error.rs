//! Errors that stop a lifecycle from starting, and the boxed error of services and bodies.

use std::fmt;

use crate::config::ConfigError;

/// Boxed error type used for service and body errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a [`Lifecycle`](crate::Lifecycle) could not start.
///
/// Its `Debug` output is the human message (as `anyhow`'s is), so `main` returning
/// `Result<Outcome, Error>` prints `Error: podcycle configuration: invalid PODCYCLE_DRAIN_TIMEOUT="20z": ...`
/// and exits with code 1; `{:#?}` shows the structure. Or convert it into an [`Outcome`](crate::Outcome)
/// (exit code 1) with `into()`:
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> podcycle::Outcome {
///     let lifecycle = match podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION")) {
///         Ok(lifecycle) => lifecycle,
///         Err(e) => return e.into(), // prints the message, exits 1
///     };
///     lifecycle.serve(axum::Router::new()).await
/// }
/// ```
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; the message names the variable and the value.
    Config(ConfigError),
    /// The admin listener could not be bound, or signal handlers could not be installed.
    Io(std::io::Error),
    /// The lifecycle was created outside a tokio runtime.
    NoRuntime,
    /// [`logging::init`](crate::logging::init) failed (feature `logging`), so that
    /// `podcycle::logging::init()?` works in `main() -> Result<Outcome, podcycle::Error>`.
    #[cfg(feature = "logging")]
    #[cfg_attr(docsrs, doc(cfg(feature = "logging")))]
    Logging(crate::logging::LoggingError),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            match self {
                Error::Config(e) => f.debug_tuple("Config").field(e).finish(),
                Error::Io(e) => f.debug_tuple("Io").field(e).finish(),
                Error::NoRuntime => f.write_str("NoRuntime"),
                #[cfg(feature = "logging")]
                Error::Logging(e) => f.debug_tuple("Logging").field(e).finish(),
            }
        } else {
            fmt::Display::fmt(self, f)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "podcycle configuration: {e}"),
            Error::Io(e) => write!(f, "podcycle: {e}"),
            Error::NoRuntime => f.write_str(
                "podcycle: Lifecycle must be created inside a tokio runtime (e.g. in #[tokio::main])",
            ),
            #[cfg(feature = "logging")]
            Error::Logging(e) => write!(f, "podcycle logging: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::NoRuntime => None,
            #[cfg(feature = "logging")]
            Error::Logging(e) => Some(e),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

#[cfg(feature = "logging")]
#[cfg_attr(docsrs, doc(cfg(feature = "logging")))]
impl From<crate::logging::LoggingError> for Error {
    fn from(e: crate::logging::LoggingError) -> Self {
        Error::Logging(e)
    }
}

/// The one format of a listener that cannot be bound, naming its setting and address:
/// `cannot bind the admin listener PODCYCLE_ADMIN_ADDR=0.0.0.0:9090: Address already in use`.
pub(crate) fn bind_error(
    listener: &str,
    var: &str,
    addr: std::net::SocketAddr,
    e: std::io::Error,
) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("cannot bind the {listener} listener {var}={addr}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_the_message_so_main_prints_it() {
        let e = Error::from(ConfigError::InvalidEnv {
            var: "PODCYCLE_DRAIN_TIMEOUT",
            value: "20z".into(),
            expected: "a duration",
        });
        let debug = format!("{e:?}");
        assert_eq!(debug, e.to_string());
        assert_eq!(
            debug,
            "podcycle configuration: invalid PODCYCLE_DRAIN_TIMEOUT=\"20z\": expected a duration"
        );
        assert!(format!("{e:#?}").contains("InvalidEnv"));
    }

    /// Issue 29 item 1: `podcycle::logging::init()?` in `main() -> Result<Outcome, Error>`,
    /// and what `main` prints is the message.
    #[cfg(feature = "logging")]
    #[test]
    fn a_logging_error_converts_and_prints_its_message() {
        fn main_like() -> Result<(), Error> {
            Err(crate::logging::LoggingError::InvalidFormat("xml".into()))?;
            Ok(())
        }
        let e = main_like().unwrap_err();
        assert_eq!(
            format!("{e:?}"),
            "podcycle logging: invalid LOG_FORMAT=\"xml\": expected `json` or `text`"
        );
        let inner = crate::logging::LoggingError::InvalidFormat("xml".into());
        assert_eq!(format!("{inner:?}"), inner.to_string());
        assert!(format!("{inner:#?}").contains("InvalidFormat"));
    }
}
