//! The per-thread lookup table of the recording path: `u64` keys (a route template's address,
//! a packed series key) to values, by open addressing.
//!
//! A hit is one multiply, one shift and, almost always, one compare: about a third of the
//! instructions of a `HashMap` lookup, which probes a group of control bytes first. Entries are
//! never removed one by one (the caches only grow, or start over with [`U64Table::clear`]), so
//! linear probing needs no tombstones. The table stays at most half full.

/// The key no entry has: neither a template address nor a packed series key can be all ones.
const EMPTY: u64 = u64::MAX;

/// 2^64 / φ: Fibonacci hashing spreads aligned addresses and packed keys over the top bits.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// The initial number of slots (a power of two).
const INITIAL_SLOTS: usize = 16;

struct Slot<V> {
    key: u64,
    value: Option<V>,
}

/// A map from `u64` to `V` for a thread's caches: fast hits, no removal, no `EMPTY` key.
pub(crate) struct U64Table<V> {
    slots: Box<[Slot<V>]>,
    /// `64 - log2(slots.len())`: the hash's top bits index the slots.
    shift: u32,
    len: usize,
}

impl<V> U64Table<V> {
    pub(crate) fn new() -> U64Table<V> {
        U64Table {
            slots: Self::empty_slots(INITIAL_SLOTS),
            shift: 64 - INITIAL_SLOTS.trailing_zeros(),
            len: 0,
        }
    }

    fn empty_slots(n: usize) -> Box<[Slot<V>]> {
        (0..n)
            .map(|_| Slot {
                key: EMPTY,
                value: None,
            })
            .collect()
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(SPREAD) >> self.shift) as usize
    }

    /// The value for `key`.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let slot = self.slots.get(i)?;
            if slot.key == key {
                return slot.value.as_ref();
            }
            if slot.key == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts `value` for `key` unless `key` has one; returns the value now held.
    pub(crate) fn insert(&mut self, key: u64, value: V) -> &V {
        debug_assert_ne!(key, EMPTY, "the empty key");
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i].key != EMPTY && self.slots[i].key != key {
            i = (i + 1) & mask;
        }
        let slot = &mut self.slots[i];
        if slot.key == EMPTY {
            slot.key = key;
            self.len += 1;
        }
        // A keyed slot always holds its value: this only fills the slot just keyed.
        slot.value.get_or_insert(value)
    }

    fn grow(&mut self) {
        let bigger = Self::empty_slots(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, bigger);
        self.shift -= 1;
        self.len = 0;
        for slot in old.into_vec() {
            if let Some(value) = slot.value {
                self.insert(slot.key, value);
            }
        }
    }

    /// How many entries the table holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Removes every entry (keeping the slots).
    pub(crate) fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.key = EMPTY;
            slot.value = None;
        }
        self.len = 0;
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.slots
            .iter()
            .filter_map(|s| Some((s.key, s.value.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn agrees_with_a_hash_map_through_growth_and_clear() {
        let mut table = U64Table::new();
        let mut reference = HashMap::new();
        // Aligned addresses, packed series keys, small integers, colliding high bits.
        let keys = (0..3_000u64)
            .map(|i| 0x7f00_0000_1000 + i * 64)
            .chain((0..500u64).map(|i| (i % 7) << 32 | (200 + i) << 16 | (i % 10) << 8 | (i % 4)))
            .chain(0..100)
            .chain((0..100u64).map(|i| i << 58));
        for (n, key) in keys.enumerate() {
            let held = *table.insert(key, n);
            let expected = *reference.entry(key).or_insert(n);
            assert_eq!(held, expected, "insert keeps the first value of {key:#x}");
        }
        assert_eq!(table.len(), reference.len());
        for (key, value) in &reference {
            assert_eq!(table.get(*key), Some(value), "{key:#x}");
        }
        assert_eq!(table.get(0x7f00_0000_1000 + 3_000 * 64), None);
        assert_eq!(table.iter().count(), reference.len());
        assert!(table.iter().all(|(k, v)| reference.get(&k) == Some(v)));
        table.clear();
        assert_eq!(table.len(), 0);
        assert_eq!(table.get(5), None);
        assert_eq!(*table.insert(5, 1), 1);
        assert_eq!(table.get(5), Some(&1));
    }
}
