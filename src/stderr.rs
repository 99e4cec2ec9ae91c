//! A service without a `tracing` subscriber still hears from podcycle: its startup line, its
//! phase changes, signals and warnings (an unknown `PODCYCLE_*` variable) go to stderr, one
//! plain line each, prefixed `podcycle: `. With a subscriber installed (any global default,
//! e.g. `podcycle::logging::init()`), they are `tracing` events only and nothing is printed.

use std::io::Write;

/// Prints `line()` on stderr when no global `tracing` subscriber is installed; the line is
/// built only then. A closed stderr (the terminal went away) is ignored, not a panic.
pub(crate) fn unless_subscribed(line: impl FnOnce() -> String) {
    if !tracing::dispatcher::has_been_set() {
        let _ = writeln!(std::io::stderr().lock(), "podcycle: {}", line());
    }
}
