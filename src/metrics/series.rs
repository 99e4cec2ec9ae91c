//! Series keys and label sets: what tells one `http_server_request_duration_seconds` series
//! from another, packed for the recording path and spelled out for the renderers.
//!
//! ```text
//! let key = SeriesKey { method: method_index(&Method::GET), route: 3, status: 200, error: Incomplete::No };
//! assert_eq!(SeriesKey::unpack(key.pack()), key);
//! ```
//!
//! # The packed key's bit budget
//!
//! | bits | field | values |
//! |---|---|---|
//! | 0..5 | `error` ([`Incomplete`]: how it ended, or its gRPC status) | 21 of 32 |
//! | 5..9 | `method` ([`method_index`]) | 10 of 16 |
//! | 9..19 | `status` | 0 (no response) and 100..=999 of 1,024 |
//! | 19..41 | `route` (an interned route id) | 2^22 (4M) route templates |
//! | 41..64 | free | 23 bits for more labels |
//!
//! A new label takes its bits from the free range and a field here; the per-thread tables,
//! the shards and the renderers carry the key without looking inside. The free bits are 0, so
//! no packed key is ever all ones (the per-thread table's empty key).

use std::fmt::Write as _;

use super::schema::{
    ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, VERSION,
};
use http::Method;

/// The `http_request_method` values, by [`method_index`].
pub(crate) const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];
pub(crate) const METHOD_COUNT: usize = METHODS.len();

/// [`method_index`] of `HEAD`.
pub(crate) const HEAD_INDEX: u8 = 1;

/// The OpenTelemetry method index: known methods, everything else `_OTHER`.
#[inline]
pub(crate) fn method_index(m: &Method) -> u8 {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// Why a request did not complete normally; the `error_type` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Incomplete {
    /// Completed; `error_type` is the status code for 5xx, absent otherwise.
    No = 0,
    /// The client went away (or the response was dropped) before the body ended.
    ClientAborted = 1,
    /// The response body failed.
    BodyError = 2,
    /// The drain deadline closed the connection under the request.
    DrainDeadline = 3,
    /// The handler (its response future or body) panicked.
    Panic = 4,
    // Completed gRPC calls with a status other than OK, 1 to 16: `error_type` is its name.
    /// gRPC `CANCELLED`.
    GrpcCancelled = 5,
    /// gRPC `UNKNOWN`.
    GrpcUnknown = 6,
    /// gRPC `INVALID_ARGUMENT`.
    GrpcInvalidArgument = 7,
    /// gRPC `DEADLINE_EXCEEDED`.
    GrpcDeadlineExceeded = 8,
    /// gRPC `NOT_FOUND`.
    GrpcNotFound = 9,
    /// gRPC `ALREADY_EXISTS`.
    GrpcAlreadyExists = 10,
    /// gRPC `PERMISSION_DENIED`.
    GrpcPermissionDenied = 11,
    /// gRPC `RESOURCE_EXHAUSTED`.
    GrpcResourceExhausted = 12,
    /// gRPC `FAILED_PRECONDITION`.
    GrpcFailedPrecondition = 13,
    /// gRPC `ABORTED`.
    GrpcAborted = 14,
    /// gRPC `OUT_OF_RANGE`.
    GrpcOutOfRange = 15,
    /// gRPC `UNIMPLEMENTED`.
    GrpcUnimplemented = 16,
    /// gRPC `INTERNAL`.
    GrpcInternal = 17,
    /// gRPC `UNAVAILABLE`.
    GrpcUnavailable = 18,
    /// gRPC `DATA_LOSS`.
    GrpcDataLoss = 19,
    /// gRPC `UNAUTHENTICATED`.
    GrpcUnauthenticated = 20,
}

/// The first gRPC value of [`Incomplete`]: gRPC status code 1.
const GRPC_FIRST: u8 = Incomplete::GrpcCancelled as u8;

/// The names of the gRPC status codes 1 to 16, as `error_type` spells them.
const GRPC_STATUS_NAMES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl Incomplete {
    /// Every value, by its number.
    const ALL: [Incomplete; 21] = [
        Incomplete::No,
        Incomplete::ClientAborted,
        Incomplete::BodyError,
        Incomplete::DrainDeadline,
        Incomplete::Panic,
        Incomplete::GrpcCancelled,
        Incomplete::GrpcUnknown,
        Incomplete::GrpcInvalidArgument,
        Incomplete::GrpcDeadlineExceeded,
        Incomplete::GrpcNotFound,
        Incomplete::GrpcAlreadyExists,
        Incomplete::GrpcPermissionDenied,
        Incomplete::GrpcResourceExhausted,
        Incomplete::GrpcFailedPrecondition,
        Incomplete::GrpcAborted,
        Incomplete::GrpcOutOfRange,
        Incomplete::GrpcUnimplemented,
        Incomplete::GrpcInternal,
        Incomplete::GrpcUnavailable,
        Incomplete::GrpcDataLoss,
        Incomplete::GrpcUnauthenticated,
    ];

    /// A completed gRPC call with status `code` (1 to 16; anything else is `UNKNOWN`).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn grpc(code: u8) -> Incomplete {
        let code = if (1..=16).contains(&code) { code } else { 2 };
        Incomplete::ALL[usize::from(GRPC_FIRST + code - 1)]
    }

    fn label(self) -> &'static str {
        match self {
            Incomplete::No => "",
            Incomplete::ClientAborted => "client_aborted",
            Incomplete::BodyError => "body_error",
            Incomplete::DrainDeadline => "drain_deadline",
            Incomplete::Panic => "panic",
            grpc => GRPC_STATUS_NAMES[usize::from(grpc as u8 - GRPC_FIRST)],
        }
    }
}

/// The labels of one series, as the request path knows them. See the module docs for how
/// [`SeriesKey::pack`] lays them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    /// [`method_index`] of the request's method.
    pub(crate) method: u8,
    /// The interned route id (see [`super::routes`]).
    pub(crate) route: u32,
    /// The response status code; 0 when the request ended without a response.
    pub(crate) status: u16,
    /// How the request ended.
    pub(crate) error: Incomplete,
}

const ERROR_SHIFT: u32 = 0;
const ERROR_BITS: u32 = 5;
const METHOD_SHIFT: u32 = ERROR_SHIFT + ERROR_BITS;
const METHOD_BITS: u32 = 4;
const STATUS_SHIFT: u32 = METHOD_SHIFT + METHOD_BITS;
const STATUS_BITS: u32 = 10;
const ROUTE_SHIFT: u32 = STATUS_SHIFT + STATUS_BITS;
const ROUTE_BITS: u32 = 22;
/// The first bit no field uses; everything from here up is free.
const USED_BITS: u32 = ROUTE_SHIFT + ROUTE_BITS;

/// The number of route ids a key can carry (see [`super::routes::Routes`]).
pub(crate) const ROUTE_LIMIT: u32 = 1 << ROUTE_BITS;

const fn mask(bits: u32) -> u64 {
    (1 << bits) - 1
}

// The budget adds up, and leaves at least 8 bits for another label.
const _: () = assert!(USED_BITS + 8 <= 64);
const _: () = assert!(METHOD_COUNT as u64 <= mask(METHOD_BITS) + 1);
const _: () = assert!(Incomplete::ALL.len() as u64 <= mask(ERROR_BITS) + 1);
const _: () = assert!(999 <= mask(STATUS_BITS));

impl SeriesKey {
    /// The key as one `u64`, for the per-thread tables. Status codes above 999 (which `http`
    /// does not produce) and route ids past [`ROUTE_LIMIT`] (which the interner does not hand
    /// out) would be truncated.
    #[inline]
    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.route) & mask(ROUTE_BITS)) << ROUTE_SHIFT
            | (u64::from(self.status) & mask(STATUS_BITS)) << STATUS_SHIFT
            | (u64::from(self.method) & mask(METHOD_BITS)) << METHOD_SHIFT
            | (self.error as u64) << ERROR_SHIFT
    }

    /// The key [`SeriesKey::pack`] packed.
    pub(crate) fn unpack(packed: u64) -> SeriesKey {
        let field = |shift: u32, bits: u32| (packed >> shift) & mask(bits);
        SeriesKey {
            method: field(METHOD_SHIFT, METHOD_BITS) as u8,
            route: field(ROUTE_SHIFT, ROUTE_BITS) as u32,
            status: field(STATUS_SHIFT, STATUS_BITS) as u16,
            error: Incomplete::ALL[field(ERROR_SHIFT, ERROR_BITS) as usize % Incomplete::ALL.len()],
        }
    }
}

/// The labels every series of one lifecycle carries: `version` and the constant labels.
#[derive(Debug)]
pub(crate) struct CommonLabels {
    pub(crate) version: String,
    /// `version`'s value, escaped for the text format.
    pub(crate) version_escaped: String,
    /// The constant labels, sorted by name.
    pub(crate) constant: Vec<(String, String)>,
    /// `,name="value"` for each constant label, escaped.
    pub(crate) constant_escaped: String,
}

impl CommonLabels {
    pub(crate) fn new(version: &str, constant: &[(String, String)]) -> CommonLabels {
        let mut constant_escaped = String::new();
        for (k, v) in constant {
            let _ = write!(constant_escaped, ",{k}=\"{}\"", escape_label(v));
        }
        CommonLabels {
            version: version.to_owned(),
            version_escaped: escape_label(version),
            constant: constant.to_vec(),
            constant_escaped,
        }
    }
}

/// One series' labels, made once when the series is created.
#[derive(Debug)]
pub(crate) struct LabelSet {
    /// Pre-escaped `{name="value",...` (without the closing brace) for the text renderer.
    pub(crate) text: String,
    /// The same labels, unescaped and without the constant labels, for the `prometheus`
    /// Collector.
    pub(crate) pairs: Vec<(&'static str, String)>,
}

impl LabelSet {
    /// The labels of the series `key`, whose route id names `route`.
    pub(crate) fn new(key: SeriesKey, route: &str, common: &CommonLabels) -> LabelSet {
        let mut pairs: Vec<(&'static str, String)> = vec![
            (
                HTTP_REQUEST_METHOD,
                METHODS[usize::from(key.method) % METHOD_COUNT].to_owned(),
            ),
            (HTTP_ROUTE, route.to_owned()),
        ];
        if key.status != 0 {
            pairs.push((HTTP_RESPONSE_STATUS_CODE, key.status.to_string()));
        }
        pairs.push((VERSION, common.version.clone()));
        match key.error {
            Incomplete::No if key.status >= 500 => pairs.push((ERROR_TYPE, key.status.to_string())),
            Incomplete::No => {}
            other => pairs.push((ERROR_TYPE, other.label().to_owned())),
        }
        let mut text = String::from("{");
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let _ = write!(text, "{k}=\"{}\"", escape_label(v));
            if *k == VERSION {
                text.push_str(&common.constant_escaped);
            }
        }
        LabelSet { text, pairs }
    }
}

/// `v` escaped for a label value in the Prometheus text format.
pub(crate) fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_packing_and_leave_the_high_bits_free() {
        for key in [
            SeriesKey {
                method: 0,
                route: 0,
                status: 0,
                error: Incomplete::No,
            },
            SeriesKey {
                method: 9,
                route: ROUTE_LIMIT - 1,
                status: 999,
                error: Incomplete::DrainDeadline,
            },
            SeriesKey {
                method: 2,
                route: 17,
                status: 503,
                error: Incomplete::BodyError,
            },
            SeriesKey {
                method: 0,
                route: 5,
                status: 500,
                error: Incomplete::Panic,
            },
        ] {
            let packed = key.pack();
            assert_eq!(SeriesKey::unpack(packed), key);
            assert_eq!(packed >> USED_BITS, 0, "{packed:#x}");
            assert_ne!(packed, u64::MAX);
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_label_set_names_5xx_and_incomplete_requests() {
        let common = CommonLabels::new("1.2.3", &[("track".into(), "canary".into())]);
        let key = SeriesKey {
            method: 2,
            route: 1,
            status: 503,
            error: Incomplete::No,
        };
        let labels = LabelSet::new(key, "/x", &common);
        assert_eq!(
            labels.text,
            "{http_request_method=\"POST\",http_route=\"/x\",http_response_status_code=\"503\",version=\"1.2.3\",track=\"canary\",error_type=\"503\""
        );
        let aborted = SeriesKey {
            status: 0,
            error: Incomplete::ClientAborted,
            ..key
        };
        let labels = LabelSet::new(aborted, "/x", &common);
        assert!(labels
            .pairs
            .contains(&("error_type", "client_aborted".to_owned())));
        assert!(!labels.text.contains("http_response_status_code"));
        let panicked = SeriesKey {
            status: 500,
            error: Incomplete::Panic,
            ..key
        };
        let labels = LabelSet::new(panicked, "/x", &common);
        assert!(
            labels.text.ends_with(",error_type=\"panic\""),
            "{}",
            labels.text
        );
    }

    #[test]
    fn grpc_statuses_are_named_and_packed() {
        assert_eq!(Incomplete::grpc(1).label(), "CANCELLED");
        assert_eq!(Incomplete::grpc(14).label(), "UNAVAILABLE");
        assert_eq!(Incomplete::grpc(16).label(), "UNAUTHENTICATED");
        assert_eq!(Incomplete::grpc(0).label(), "UNKNOWN", "not an error code");
        let key = SeriesKey {
            method: 2,
            route: 3,
            status: 200,
            error: Incomplete::grpc(13),
        };
        assert_eq!(SeriesKey::unpack(key.pack()), key);
        let labels = LabelSet::new(key, "/a.B/C", &CommonLabels::new("1", &[]));
        assert!(
            labels.text.ends_with(",error_type=\"INTERNAL\""),
            "{}",
            labels.text
        );
    }

    #[test]
    fn methods_outside_the_standard_set_collapse() {
        assert_eq!(method_index(&Method::from_bytes(b"PURGE").unwrap()), 9);
        assert_eq!(METHODS[9], "_OTHER");
        assert_eq!(method_index(&Method::PATCH), 8);
        assert_eq!(method_index(&Method::HEAD), HEAD_INDEX);
    }
}
