//! New trace and span ids: random, never all zero, from a per-thread generator (SplitMix64
//! seeded from the standard library's random hasher keys), no lock and no system call.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use super::context::{SpanId, TraceId};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// The next 64 random bits of this thread's generator (SplitMix64).
fn next() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A new random trace id.
pub(crate) fn trace_id() -> TraceId {
    loop {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&next().to_be_bytes());
        b[8..].copy_from_slice(&next().to_be_bytes());
        if let Some(id) = TraceId::from_bytes(b) {
            return id;
        }
    }
}

/// A new random span id.
pub(crate) fn span_id() -> SpanId {
    loop {
        if let Some(id) = SpanId::from_bytes(next().to_be_bytes()) {
            return id;
        }
    }
}
