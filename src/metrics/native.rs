//! Native (exponential) histogram buckets for `http_server_request_duration_seconds`: where a
//! request's duration lands on the request path, and the spans and deltas Prometheus reads at
//! the scrape (`PODCYCLE_NATIVE_HISTOGRAMS=true`).
//!
//! ```text
//! cells[native_at + native::cell(nanos)] += 1             // the request path: no lock, no allocation
//! let h = native::Native::from_cells(&totals[native_at..]);    // the scrape
//! (h.schema, h.zero_count, h.spans, h.deltas)             // io.prometheus.client.Histogram fields
//! ```
//!
//! Buckets follow Prometheus' exponential schema: at schema `s`, bucket `k` counts the
//! observations in `(2^((k-1)/2^s), 2^(k/2^s)]` seconds. Each series records at
//! [`SCHEMA`] 3 (8 buckets per power of two, bounds 9% apart) into a fixed window of
//! [`BUCKETS`] cells covering `(2^-20 s, 2^12 s]` (about 1 µs to 68 minutes): bounded memory,
//! allocated with the series, never grown. Durations at or below [`ZERO_THRESHOLD`] count in
//! the zero bucket; longer than the window, in its last bucket. When a series has more than
//! [`MAX_BUCKETS`] populated buckets at a scrape, its resolution is halved (schema 2, 1, ...)
//! until it fits, as client_golang's `NativeHistogramMaxBucketNumber` does.
//!
//! The bucket of a duration is found as client_golang finds it (`math.Frexp` and a search
//! in the schema's bounds), on the `f64` bits: the exponent field, then the mantissa's top
//! 8 bits in a 256-byte table and one comparison with the next bound. A dozen instructions
//! after the division, no branch on the data.

/// The schema recorded at: 8 buckets per power of two.
pub(crate) const SCHEMA: i32 = 3;
/// The smallest power of two (seconds) the window reaches above: `2^-20` s, about 0.95 µs.
const MIN_EXP: i32 = -20;
/// The largest power of two (seconds) the window reaches: `2^12` s, about 68 minutes.
const MAX_EXP: i32 = 12;
/// Buckets per power of two at [`SCHEMA`].
const PER_OCTAVE: i32 = 1 << SCHEMA;
/// The key (bucket index at [`SCHEMA`]) of the window's first bucket.
const FIRST_KEY: i32 = MIN_EXP * PER_OCTAVE + 1;
/// Buckets in the window.
pub(crate) const BUCKETS: usize = ((MAX_EXP - MIN_EXP) * PER_OCTAVE) as usize;
/// Cells per series: the zero bucket, then the window's buckets.
pub(crate) const CELLS: usize = 1 + BUCKETS;
/// The zero bucket's upper bound in seconds: `2^-20`.
pub(crate) const ZERO_THRESHOLD: f64 = 1.0 / (1u64 << -MIN_EXP) as f64;
/// The most populated buckets a series exposes before its resolution is halved.
pub(crate) const MAX_BUCKETS: usize = 160;

const MANTISSA: u64 = (1 << 52) - 1;

/// The mantissa bits of schema 3's bounds within a power of two, `2^(k/8) / 2` for `k` in
/// 0..8 (client_golang's `nativeHistogramBounds[3]`, the same literals).
const BOUNDS: [u64; 8] = [
    0.5f64.to_bits() & MANTISSA,
    0.5452538663326288f64.to_bits() & MANTISSA,
    0.5946035575013605f64.to_bits() & MANTISSA,
    0.6484197773255048f64.to_bits() & MANTISSA,
    0.7071067811865475f64.to_bits() & MANTISSA,
    0.7711054127039704f64.to_bits() & MANTISSA,
    0.8408964152537144f64.to_bits() & MANTISSA,
    0.9170040432046711f64.to_bits() & MANTISSA,
];

/// For each slot of 1/256 of a power of two (the mantissa's top 8 bits), how many of
/// [`BOUNDS`] lie below the slot's start. Bounds are at least 9% of a power of two apart, so a
/// slot holds at most one: the next bound, `BOUNDS[BELOW[slot]]`, decides the rest.
const BELOW: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut slot = 0;
    while slot < 256 {
        let start = (slot as u64) << 44;
        let mut below = 0;
        let mut k = 0;
        while k < BOUNDS.len() {
            if BOUNDS[k] < start {
                below += 1;
            }
            k += 1;
        }
        table[slot] = below;
        slot += 1;
    }
    table
};

/// [`BOUNDS`], padded with bounds no mantissa exceeds (indexed with `& 15`: no bounds check).
const NEXT: [u64; 16] = {
    let mut next = [u64::MAX; 16];
    let mut k = 0;
    while k < BOUNDS.len() {
        next[k] = BOUNDS[k];
        k += 1;
    }
    next
};

/// The bucket key of `seconds` (positive, normal) at [`SCHEMA`]: `frexp`, then the first
/// bound not below the fraction, as client_golang's `findBucket` (a table lookup and one
/// comparison instead of its binary search).
#[inline]
fn key(seconds: f64) -> i32 {
    let bits = seconds.to_bits();
    // frexp: seconds = frac * 2^exp with frac in [0.5, 1).
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let m = bits & MANTISSA;
    // The first bound >= frac: how many bounds are below it.
    let below = BELOW[(m >> 44) as usize];
    let below = i32::from(below) + i32::from(m > NEXT[usize::from(below) & 15]);
    below + (exp - 1) * PER_OCTAVE
}

/// The cell of a duration of `nanos`: 0 for the zero bucket, `1 + i` for the window's bucket
/// `i`.
#[inline]
pub(crate) fn cell(nanos: u64) -> usize {
    // Through i64: a shorter conversion than from u64 (durations stay far below 2^63 ns).
    let seconds = nanos.min(i64::MAX as u64) as i64 as f64 / 1e9;
    if seconds <= ZERO_THRESHOLD {
        return 0;
    }
    let i = (key(seconds) - FIRST_KEY).clamp(0, BUCKETS as i32 - 1);
    1 + i as usize
}

/// The upper bound in seconds of bucket `key` at `schema`: `2^(key / 2^schema)`.
#[cfg(test)]
pub(crate) fn upper_bound(schema: i32, key: i32) -> f64 {
    (f64::from(key) / f64::from(1 << schema)).exp2()
}

/// One run of consecutive buckets: `offset` from the end of the previous span (from key 0
/// for the first), `length` buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) offset: i32,
    pub(crate) length: u32,
}

/// One series' native histogram, as Prometheus' protobuf `Histogram` carries it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Native {
    pub(crate) schema: i32,
    pub(crate) zero_count: u64,
    /// Spans of the positive buckets (durations are never negative).
    pub(crate) spans: Vec<Span>,
    /// Each positive bucket's count minus the previous one's (the first: its count).
    pub(crate) deltas: Vec<i64>,
}

impl Native {
    /// The native histogram of a series' summed cells (`cells[0]` the zero bucket, then the
    /// window), at [`SCHEMA`] or coarser so that at most [`MAX_BUCKETS`] buckets are populated.
    pub(crate) fn from_cells(cells: &[u64]) -> Native {
        let zero_count = cells[0];
        let mut buckets: Vec<(i32, u64)> = cells[1..CELLS]
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(i, c)| (FIRST_KEY + i as i32, *c))
            .collect();
        let mut schema = SCHEMA;
        while buckets.len() > MAX_BUCKETS && schema > -4 {
            // Halve the resolution: bucket k at schema s-1 is buckets 2k-1 and 2k at s.
            schema -= 1;
            let mut merged: Vec<(i32, u64)> = Vec::with_capacity(buckets.len() / 2 + 1);
            for (k, c) in buckets {
                let k = (k + 1) >> 1;
                match merged.last_mut() {
                    Some((last, n)) if *last == k => *n += c,
                    _ => merged.push((k, c)),
                }
            }
            buckets = merged;
        }
        let mut spans: Vec<Span> = Vec::new();
        let mut deltas = Vec::with_capacity(buckets.len());
        let mut previous = 0i64;
        let mut next_key = 0i32;
        for (i, (k, c)) in buckets.iter().enumerate() {
            let gap = k - next_key;
            if i > 0 && gap <= 2 {
                // A gap of 1 or 2 empty buckets costs less as zero deltas than as a new span.
                for _ in 0..gap {
                    deltas.push(-previous);
                    previous = 0;
                }
                if let Some(last) = spans.last_mut() {
                    last.length += gap as u32 + 1;
                }
            } else {
                spans.push(Span {
                    offset: gap,
                    length: 1,
                });
            }
            let c = *c as i64;
            deltas.push(c - previous);
            previous = c;
            next_key = k + 1;
        }
        Native {
            schema,
            zero_count,
            spans,
            deltas,
        }
    }

    /// `(upper bound in seconds, count)` of every populated bucket, the zero bucket first
    /// (for tests and readers that want the distribution back).
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out = vec![(ZERO_THRESHOLD, self.zero_count)];
        let mut key = 0;
        let mut count = 0i64;
        let mut deltas = self.deltas.iter();
        for span in &self.spans {
            key += span.offset;
            for _ in 0..span.length {
                count += deltas.next().copied().unwrap_or(0);
                if count != 0 {
                    out.push((upper_bound(self.schema, key), count as u64));
                }
                key += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// client_golang's reference: `frexp` and a search in the bounds, in plain `f64` math.
    fn reference_key(seconds: f64) -> i32 {
        let exp = seconds.log2().floor() as i32 + 1;
        let frac = seconds / 2f64.powi(exp);
        let (frac, exp) = if frac >= 1.0 {
            (frac / 2.0, exp + 1)
        } else if frac < 0.5 {
            (frac * 2.0, exp - 1)
        } else {
            (frac, exp)
        };
        let bounds = [
            0.5,
            0.5452538663326288,
            0.5946035575013605,
            0.6484197773255048,
            0.7071067811865475,
            0.7711054127039704,
            0.8408964152537144,
            0.9170040432046711,
        ];
        let i = bounds.iter().position(|b| *b >= frac).unwrap_or(8) as i32;
        i + (exp - 1) * 8
    }

    #[test]
    fn a_duration_lands_in_the_bucket_whose_bounds_hold_it() {
        for nanos in [
            1_000u64,
            1_001,
            7_777,
            999_999,
            1_000_000,
            1_953_125, // 2^-9 s exactly: the upper bound of its bucket, inclusive
            3_000_000,
            250_000_000,
            300_000_000,
            330_000_000,
            500_000_000, // 2^-1 s exactly
            1_000_000_000,
            1_090_507_733,
            12_345_678_901,
        ] {
            let s = nanos as f64 / 1e9;
            let k = key(s);
            assert_eq!(k, reference_key(s), "{nanos} ns");
            assert!(
                upper_bound(SCHEMA, k - 1) < s,
                "{nanos} ns above bucket {k}'s lower bound"
            );
            assert!(
                s <= upper_bound(SCHEMA, k) * (1.0 + 1e-12),
                "{nanos} ns within bucket {k}"
            );
            assert_eq!(cell(nanos), 1 + (k - FIRST_KEY) as usize);
        }
        assert_eq!(key(0.5), -8, "2^-1 s is bucket -8's upper bound");
        assert_eq!(key(1.0), 0, "1 s is bucket 0's upper bound");
        assert_eq!(key(1.0000001), 1);
    }

    #[test]
    fn the_table_lookup_agrees_with_the_search_everywhere() {
        // Every bound of the window, and its neighbours just below and above.
        for k in FIRST_KEY..FIRST_KEY + BUCKETS as i32 {
            let b = upper_bound(SCHEMA, k);
            for s in [b, b * (1.0 - 1e-12), b * (1.0 + 1e-12)] {
                assert_eq!(key(s), reference_key(s), "{s} s near bucket {k}'s bound");
            }
        }
        // And durations in nanoseconds, spread over the window.
        let mut nanos = 954u64;
        while nanos < 4_000_000_000_000 {
            let s = nanos as f64 / 1e9;
            assert_eq!(key(s), reference_key(s), "{nanos} ns");
            nanos += nanos / 97 + 1;
        }
    }

    #[test]
    fn the_window_is_bounded_at_both_ends() {
        assert_eq!(cell(0), 0, "zero bucket");
        assert_eq!(cell(953), 0, "under 2^-20 s: zero bucket");
        assert_eq!(cell(954), 1, "just over 2^-20 s: the first bucket");
        assert_eq!(
            cell(4096 * 1_000_000_000),
            BUCKETS,
            "2^12 s: the last bucket"
        );
        assert_eq!(
            cell(u64::MAX),
            BUCKETS,
            "beyond the window: the last bucket"
        );
    }

    #[test]
    fn spans_and_deltas_encode_the_counts() {
        let mut cells = vec![0u64; CELLS];
        cells[0] = 2;
        let at = |nanos: u64| cell(nanos);
        cells[at(1_000_000)] += 3; // 1 ms
        cells[at(1_100_000)] += 1; // the next bucket
        cells[at(1_300_000)] += 4; // two buckets on: one empty between
        cells[at(500_000_000)] += 5; // far away: a new span
        let h = Native::from_cells(&cells);
        assert_eq!(h.schema, 3);
        assert_eq!(h.zero_count, 2);
        let k1 = key(0.001);
        assert_eq!(
            h.spans,
            [
                Span {
                    offset: k1,
                    length: 4
                },
                Span {
                    offset: key(0.5) - (k1 + 4),
                    length: 1
                }
            ]
        );
        assert_eq!(h.deltas, [3, -2, -1, 4, 1], "1.2 ms's bucket empty");
        let b = h.buckets();
        assert_eq!(b[0], (ZERO_THRESHOLD, 2));
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 15);
        assert_eq!(b.last().unwrap(), &(0.5, 5));
    }

    #[test]
    fn resolution_halves_past_the_bucket_limit() {
        let mut cells = vec![0u64; CELLS];
        for c in cells.iter_mut().skip(1).step_by(1).take(200) {
            *c = 1;
        }
        let h = Native::from_cells(&cells);
        assert_eq!(
            h.schema, 2,
            "200 buckets at schema 3 become 100 at schema 2"
        );
        let total: u64 = h.buckets().iter().map(|(_, c)| c).sum();
        assert_eq!(total, 200, "no count lost");
        assert!(h.deltas.len() <= MAX_BUCKETS);
        // Bucket k at schema 2 holds buckets 2k-1 and 2k at schema 3: the same upper bound.
        let top = h.buckets().last().unwrap().0;
        assert_eq!(top, upper_bound(3, FIRST_KEY + 199));
    }
}
