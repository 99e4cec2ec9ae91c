//! A service without a `tracing` subscriber still hears from podcycle: its startup line, its
//! phase changes, signals and warnings (an unknown `PODCYCLE_*` variable) go to stderr, one
//! plain line each, prefixed `podcycle: `. With a subscriber installed (any global default,
//! e.g. `podcycle::logging::init()`), they are `tracing` events only and nothing is printed.

/// Prints `line()` on stderr when no global `tracing` subscriber is installed; the line is
/// built only then.
pub(crate) fn unless_subscribed(line: impl FnOnce() -> String) {
    if !tracing::dispatcher::has_been_set() {
        let line = format!("podcycle: {}\n", line());
        // `eprint!`, which a test harness captures (a direct write to the stream would not),
        // but a stderr that fails (EIO: the terminal went away) must not panic the caller, the
        // signal handler among them.
        let _ = std::panic::catch_unwind(move || eprint!("{line}"));
    }
}
