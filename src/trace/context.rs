//! The W3C trace context headers (<https://www.w3.org/TR/trace-context/>): `traceparent`
//! parsed by the spec's rules (version `00`, later versions by its forward-compatible rule),
//! `tracestate` checked and passed on, and the [`TraceContext`] a request carries to its
//! handler.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `traceparent` header (a `HeaderName`: looked up without parsing the name).
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A trace id: 16 bytes, never all zero, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A span id: 8 bytes, never all zero, written as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// A trace id from `bytes`; `None` if all zero (invalid in W3C trace context).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<TraceId> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    /// The last 8 bytes as a number: what ratio sampling compares.
    pub(crate) fn low(self) -> u64 {
        u64::from_be_bytes(self.0[8..].try_into().expect("8 bytes"))
    }
}

impl SpanId {
    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// A span id from `bytes`; `None` if all zero (invalid in W3C trace context).
    pub fn from_bytes(bytes: [u8; 8]) -> Option<SpanId> {
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    f.write_str(std::str::from_utf8(&buf[..2 * bytes.len()]).expect("hex is ASCII"))
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The trace a request belongs to, in its extensions for the handler (`Extension<TraceContext>`
/// in axum, `request.extensions().get::<TraceContext>()` in tonic): its trace id, the span id
/// podcycle gave the request, the caller's span id, the sampling decision and the caller's
/// `tracestate`. [`TraceContext::traceparent`] is the header for outgoing calls (see
/// `docs/tracing.md`).
///
/// Present when the request came with a valid `traceparent`, or started a sampled trace of
/// its own (`PODCYCLE_TRACE_SAMPLING`); absent otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    sampled: bool,
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The trace's id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The id of this request's span (the parent of the spans of outgoing calls).
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span id, from its `traceparent`; `None` when this request started the
    /// trace.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// Whether the trace is sampled (recorded): the `sampled` flag passed on.
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The `traceparent` for an outgoing call made on this request's behalf: version `00`,
    /// this trace, this request's span as the parent, the sampling flag.
    pub fn traceparent(&self) -> HeaderValue {
        let value = format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        );
        HeaderValue::try_from(value).expect("hex and dashes are a valid header value")
    }

    /// The caller's `tracestate` (its members joined by `,`), to pass on unchanged; `None` if
    /// it sent none or an invalid one.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// A context continuing `parent` with the new span `span_id`.
    pub(crate) fn child(parent: Parent, span_id: SpanId, tracestate: Option<HeaderValue>) -> Self {
        TraceContext {
            trace_id: parent.trace_id,
            span_id,
            parent_id: Some(parent.span_id),
            sampled: parent.sampled,
            tracestate,
        }
    }

    /// A new trace `trace_id` started by this request, whose span is `span_id`.
    pub(crate) fn root(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Self {
        TraceContext {
            trace_id,
            span_id,
            parent_id: None,
            sampled,
            tracestate: None,
        }
    }
}

/// A valid `traceparent`: the caller's trace, span and sampling flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) sampled: bool,
}

/// The `traceparent` of `headers`, if exactly one is present and valid.
pub(crate) fn parent(headers: &HeaderMap) -> Option<Parent> {
    let mut all = headers.get_all(TRACEPARENT).iter();
    let value = all.next()?;
    if all.next().is_some() {
        // Two `traceparent` headers: which one is meant is unknown; a new trace starts.
        return None;
    }
    parse_traceparent(value.as_bytes())
}

/// Parses a `traceparent` value: `version-traceid-parentid-flags`, lowercase hex.
///
/// Version `00` is exactly 55 characters. A later version (not `ff`) is read as `00` is, its
/// first 55 characters, provided any more begin with `-` (the spec's forward-compatible rule).
/// An all-zero trace or parent id is invalid. Surrounding spaces and tabs are ignored.
pub(crate) fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let value = value.trim_ascii();
    if value.len() < 55 {
        return None;
    }
    let version = hex::<1>(&value[0..2])?[0];
    match version {
        0xff => return None,
        0x00 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex::<16>(&value[3..35])?)?;
    let span_id = SpanId::from_bytes(hex::<8>(&value[36..52])?)?;
    let flags = hex::<1>(&value[53..55])?[0];
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 0x01 == 1,
    })
}

/// `2 * N` lowercase hex digits as `N` bytes; `None` for anything else (uppercase included).
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// The most list members a `tracestate` may have.
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// The `tracestate` of `headers` (several headers are one list, joined by `,`), checked by
/// the spec's rules: at most 32 members, valid keys, each key once, valid values; empty
/// members dropped. `None` if absent or invalid (an invalid one is not passed on).
pub(crate) fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut members: Vec<&str> = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    for value in headers.get_all(TRACESTATE) {
        let value = value.to_str().ok()?;
        for member in value.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, val) = member.split_once('=')?;
            if !valid_key(key) || !valid_value(val) || keys.contains(&key) {
                return None;
            }
            keys.push(key);
            members.push(member);
            if members.len() > TRACESTATE_MAX_MEMBERS {
                return None;
            }
        }
    }
    if members.is_empty() {
        return None;
    }
    HeaderValue::try_from(members.join(",")).ok()
}

/// A `tracestate` key: `simple-key` or `tenant-id@system-id`.
fn valid_key(key: &str) -> bool {
    let rest = |s: &str| {
        s.bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    let first_alnum = |s: &str| matches!(s.bytes().next(), Some(b'a'..=b'z' | b'0'..=b'9'));
    match key.split_once('@') {
        None => key.len() <= 256 && first_alnum(key) && rest(key),
        Some((tenant, system)) => {
            tenant.len() <= 241
                && first_alnum(tenant)
                && rest(tenant)
                && system.len() <= 14
                && matches!(system.bytes().next(), Some(b'a'..=b'z'))
                && rest(system)
        }
    }
}

/// A `tracestate` value: up to 256 printable ASCII characters but `,` and `=`, not ending
/// in a space.
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn valid() -> String {
        format!("00-{TRACE}-{SPAN}-01")
    }

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = parse_traceparent(valid().as_bytes()).expect("valid");
        assert_eq!(p.trace_id.to_string(), TRACE);
        assert_eq!(p.span_id.to_string(), SPAN);
        assert!(p.sampled);
        let p = parse_traceparent(format!("00-{TRACE}-{SPAN}-00").as_bytes()).unwrap();
        assert!(!p.sampled);
        // Unknown flags are ignored; only `sampled` counts.
        let p = parse_traceparent(format!("00-{TRACE}-{SPAN}-fe").as_bytes()).unwrap();
        assert!(!p.sampled);
        // Surrounding whitespace is ignored.
        assert!(parse_traceparent(format!(" \t{}\t ", valid()).as_bytes()).is_some());
    }

    #[test]
    fn later_versions_are_read_by_the_forward_compatible_rule() {
        for (value, ok) in [
            (format!("01-{TRACE}-{SPAN}-01"), true),
            (format!("cc-{TRACE}-{SPAN}-01-what-the-future-holds"), true),
            (format!("cc-{TRACE}-{SPAN}-01-"), true),
            (format!("cc-{TRACE}-{SPAN}-01.what"), false),
            (format!("cc-{TRACE}-{SPAN}-0"), false),
        ] {
            assert_eq!(parse_traceparent(value.as_bytes()).is_some(), ok, "{value}");
        }
    }

    /// The W3C test suite's invalid `traceparent` cases (test/test.py:
    /// `test_traceparent_*`): each is ignored, so that a new trace starts.
    #[test]
    fn the_w3c_invalid_cases_are_rejected() {
        let zeros_trace = "0".repeat(32);
        let zeros_span = "0".repeat(16);
        let cases: Vec<(&str, String)> = vec![
            ("version ff", format!("ff-{TRACE}-{SPAN}-01")),
            ("version not hex", format!("0x-{TRACE}-{SPAN}-01")),
            ("version uppercase", format!("0A-{TRACE}-{SPAN}-01")),
            ("version too short", format!("0-{TRACE}-{SPAN}-01")),
            ("version too long", format!("000-{TRACE}-{SPAN}-01")),
            (
                "version 00 with more after it",
                format!("00-{TRACE}-{SPAN}-01-"),
            ),
            (
                "version 00 with a suffix",
                format!("00-{TRACE}-{SPAN}-01-what-the-future-holds"),
            ),
            ("trace id all zero", format!("00-{zeros_trace}-{SPAN}-01")),
            (
                "trace id uppercase",
                format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            ),
            (
                "trace id not hex",
                format!("00-{}-{SPAN}-01", "g".repeat(32)),
            ),
            (
                "trace id too short",
                format!("00-{}-{SPAN}-01", &TRACE[1..]),
            ),
            ("trace id too long", format!("00-{TRACE}0-{SPAN}-01")),
            ("parent id all zero", format!("00-{TRACE}-{zeros_span}-01")),
            (
                "parent id uppercase",
                format!("00-{TRACE}-{}-01", SPAN.to_uppercase()),
            ),
            (
                "parent id not hex",
                format!("00-{TRACE}-{}-01", "z".repeat(16)),
            ),
            (
                "parent id too short",
                format!("00-{TRACE}-{}-01", &SPAN[1..]),
            ),
            ("parent id too long", format!("00-{TRACE}-{SPAN}0-01")),
            ("flags not hex", format!("00-{TRACE}-{SPAN}-0g")),
            ("flags uppercase", format!("00-{TRACE}-{SPAN}-0A")),
            ("flags too short", format!("00-{TRACE}-{SPAN}-1")),
            ("flags too long", format!("00-{TRACE}-{SPAN}-011")),
            ("separator underscore", format!("00_{TRACE}_{SPAN}_01")),
            ("separator missing", format!("00{TRACE}{SPAN}01")),
            (
                "separator dot in a later version",
                format!("01.{TRACE}-{SPAN}-01"),
            ),
            ("empty", String::new()),
            ("spaces only", "   ".into()),
            ("inner space", format!("00-{TRACE} -{SPAN}-01")),
            ("non-ASCII", format!("00-{}é-{SPAN}-01", &TRACE[..30])),
        ];
        for (what, value) in cases {
            assert_eq!(
                parse_traceparent(value.as_bytes()),
                None,
                "{what}: {value:?}"
            );
        }
    }

    #[test]
    fn two_traceparent_headers_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, valid().parse().unwrap());
        assert!(parent(&headers).is_some());
        headers.append(TRACEPARENT, valid().parse().unwrap());
        assert_eq!(parent(&headers), None);
    }

    #[test]
    fn tracestate_is_passed_on_when_valid_only() {
        let state = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(TRACESTATE, v.parse().unwrap());
            }
            tracestate(&headers).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(state(&["foo=1,bar=2"]).as_deref(), Some("foo=1,bar=2"));
        assert_eq!(state(&["foo=1", "bar=2"]).as_deref(), Some("foo=1,bar=2"));
        assert_eq!(
            state(&[" foo=1 ,, bar=2\t"]).as_deref(),
            Some("foo=1,bar=2")
        );
        assert_eq!(state(&["tenant@sys=x"]).as_deref(), Some("tenant@sys=x"));
        assert_eq!(state(&[]), None);
        assert_eq!(state(&[""]), None);
        for bad in [
            "foo=1,foo=2",
            "Foo=1",
            "foo",
            "foo=",
            "foo=a=b",
            "@sys=1",
            "t@9sys=1",
            "foo=1 ,=2",
        ] {
            assert_eq!(state(&[bad]), None, "{bad}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(state(&[&many.join(",")]), None, "33 members");
        assert!(state(&[&many[..32].join(",")]).is_some(), "32 members");
    }

    #[test]
    fn traceparent_out_names_this_span() {
        let parent = parse_traceparent(valid().as_bytes()).unwrap();
        let span = SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let cx = TraceContext::child(parent, span, None);
        assert_eq!(
            cx.traceparent(),
            format!("00-{TRACE}-0102030405060708-01").as_str()
        );
        assert_eq!(cx.parent_span_id().unwrap().to_string(), SPAN);
    }
}
