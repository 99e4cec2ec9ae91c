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
//! | `LOG_FORMAT` | `text` | `text`: one human line per event; `json`: one JSON object per line (`timestamp`, `level`, `target`, `fields`, and `trace_id` and `span_id` inside a traced request), for log collectors |
//! | `RUST_LOG` | `info` | a `tracing_subscriber::EnvFilter` directive, e.g. `info,podcycle=debug` |
//!
//! ANSI colour is used only when stdout is a terminal (`std::io::IsTerminal`), so a container's
//! log file never holds escape codes.
//!
//! A JSON line logged inside a sampled request's span (a handler's own events and spans
//! included, see [`crate::trace`]) carries the request's `trace_id` and `span_id` at the top
//! level, the field names Loki, Tempo and Grafana link logs and traces by.

use std::fmt;
use std::io::IsTerminal;

use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
    let result = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stdout)
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => json_subscriber(filter, std::io::stdout)
            .try_init()
            .map_err(Into::into),
    };
    result.map_err(|_| LoggingError::AlreadyInitialised)
}

/// The JSON subscriber: tracing-subscriber's JSON lines, with the trace ids of the span
/// they are logged in at the top level.
fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(filter)
        .with(TraceIds)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(writer)
                .event_format(TraceJson(tracing_subscriber::fmt::format().json())),
        )
}

/// The `trace_id` and `span_id` fields of a span that has both (podcycle's request span),
/// kept in its extensions for the JSON lines of the events inside it.
#[derive(Clone, Debug)]
struct SpanTrace {
    trace_id: String,
    span_id: String,
}

/// Keeps [`SpanTrace`] for each new span with `trace_id` and `span_id` fields.
struct TraceIds;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TraceIds {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let fields = attrs.metadata().fields();
        if fields.field("trace_id").is_none() || fields.field("span_id").is_none() {
            return;
        }
        let mut visit = IdVisitor::default();
        attrs.record(&mut visit);
        if let (Some(trace_id), Some(span_id), Some(span)) =
            (visit.trace_id, visit.span_id, ctx.span(id))
        {
            span.extensions_mut()
                .insert(SpanTrace { trace_id, span_id });
        }
    }
}

#[derive(Default)]
struct IdVisitor {
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl tracing::field::Visit for IdVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "trace_id" => self.trace_id = Some(value.to_owned()),
            "span_id" => self.span_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        match field.name() {
            "trace_id" => self.trace_id = Some(format!("{value:?}")),
            "span_id" => self.span_id = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// tracing-subscriber's JSON line, with `"trace_id"` and `"span_id"` first when the event
/// is inside a span that has them (the innermost such).
struct TraceJson(Format<Json>);

impl<S> FormatEvent<S, JsonFields> for TraceJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<SpanTrace>().cloned())
        });
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let rest = line.strip_prefix('{').ok_or(fmt::Error)?;
        write!(
            writer,
            "{{\"trace_id\":{},\"span_id\":{},{rest}",
            serde_json::Value::from(ids.trace_id),
            serde_json::Value::from(ids.span_id),
        )
    }
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

    /// A writer into a shared buffer, for reading the lines back.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Lines {
        type Writer = Lines;
        fn make_writer(&'w self) -> Lines {
            self.clone()
        }
    }

    #[test]
    fn json_lines_in_a_traced_request_carry_its_ids_at_the_top_level() {
        let lines = Lines::default();
        let subscriber = json_subscriber(EnvFilter::new("info"), lines.clone());
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let span_id = "00f067aa0ba902b7";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before");
            // As podcycle's request span is made (crate::trace), with a handler's span inside.
            let request = tracing::info_span!(
                target: "podcycle::request",
                "request",
                trace_id = %trace,
                span_id = %span_id,
            );
            let _r = request.enter();
            let handler = tracing::info_span!("handler", user = "ann");
            let _h = handler.enter();
            tracing::info!(answer = 42, "inside");
        });
        let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let parsed: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(parsed.len(), 2, "{out}");
        assert!(
            parsed[0].get("trace_id").is_none(),
            "outside a request: {out}"
        );
        assert_eq!(parsed[1]["trace_id"], trace, "{out}");
        assert_eq!(parsed[1]["span_id"], span_id, "{out}");
        assert_eq!(parsed[1]["fields"]["message"], "inside");
        assert_eq!(parsed[1]["fields"]["answer"], 42);
        assert_eq!(
            parsed[1]["span"]["name"], "handler",
            "the usual fields kept: {out}"
        );
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        assert!(filter(None).is_ok());
        assert!(filter(Some("info,podcycle=debug")).is_ok());
        let e = filter(Some("info,=[")).unwrap_err().to_string();
        assert!(e.starts_with("invalid RUST_LOG=\"info,=[\""), "{e}");
    }
}
