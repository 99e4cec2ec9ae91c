//! Per-thread shards of the histogram cells and active-request counts, the series they sum
//! into, and their retirement when a thread exits.
//!
//! ```text
//! with_current(core_id, |shard| shard.series.get(key.pack()))   // the request path: no lock
//!     .or_else(|| with_shard(core_id, store, |shard| /* create cells, under the store's lock */))
//! store.series()  // the scrape: every series, each summed over its shards (Series::totals)
//! ```
//!
//! Each thread that records gets its own shard of cells; only that thread writes them (plain
//! relaxed load + store, no read-modify-write), and the scrape sums shards. A thread finds its
//! cells through its own caches ([`U64Table`]s keyed by route address and packed series key),
//! so the request path takes no lock, allocates nothing and touches no shared cache line. When
//! the thread exits, its counts are folded into each series' retired totals, so thread churn
//! does not grow the store.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxBuildHasher;

use super::native;
use super::series::{LabelSet, SeriesKey, METHOD_COUNT};
use super::table::U64Table;

/// Counters that one thread writes, alone on their cache lines (128 bytes: adjacent lines
/// are fetched in pairs), so that another thread's counters next to them in memory cannot slow
/// their writes down (false sharing: 29 -> 54 ns per request with two threads before this).
#[derive(Debug)]
#[repr(align(128))]
struct Line([AtomicU64; 16]);

/// One series' cells in one shard. Written only by the shard's thread.
#[derive(Debug)]
pub(crate) struct Cells {
    /// `count`, `sum_nanos`, then one counter per bucket; with native histograms, from the
    /// next line on the zero bucket and the native buckets (see [`super::native`]).
    lines: Box<[Line]>,
    /// The cell of the native zero bucket; 0 without native histograms.
    native_at: usize,
}

/// The first cell of the native buckets in a series of `buckets` classic buckets: the line
/// after them.
pub(crate) fn native_at(buckets: usize) -> usize {
    (buckets + 2).div_ceil(16) * 16
}

/// Cells per series (padding included), for `buckets` classic buckets and native histograms
/// or not.
fn cell_count(buckets: usize, native: bool) -> usize {
    native_at(buckets)
        + if native {
            native::CELLS.div_ceil(16) * 16
        } else {
            0
        }
}

impl Cells {
    fn new(buckets: usize, native: bool) -> Cells {
        let lines = cell_count(buckets, native) / 16;
        Cells {
            lines: (0..lines)
                .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            native_at: if native { native_at(buckets) } else { 0 },
        }
    }

    #[inline]
    fn cell(&self, i: usize) -> &AtomicU64 {
        &self.lines[i / 16].0[i % 16]
    }

    #[inline]
    fn count(&self) -> &AtomicU64 {
        self.cell(0)
    }

    #[inline]
    fn sum_nanos(&self) -> &AtomicU64 {
        self.cell(1)
    }

    #[inline]
    fn bucket(&self, i: usize) -> &AtomicU64 {
        self.cell(i + 2)
    }

    /// One observation of `nanos`, by the shard's own thread (the only writer).
    #[inline]
    pub(crate) fn observe(&self, bounds_nanos: &[u64], nanos: u64) {
        bump(self.count(), 1);
        bump(self.sum_nanos(), nanos);
        bump(self.bucket(bucket_index(bounds_nanos, nanos)), 1);
        if self.native_at != 0 {
            self.observe_native(nanos);
        }
    }

    /// The native bucket of one observation, by the shard's own thread. Out of line, so that
    /// the request path inlined around [`Cells::observe`] stays as small as without it.
    #[inline(never)]
    fn observe_native(&self, nanos: u64) {
        bump(self.cell(self.native_at + native::cell(nanos)), 1);
    }

    /// One observation of `nanos` by any thread (into a series' shared totals).
    fn add(&self, bounds_nanos: &[u64], nanos: u64) {
        self.count().fetch_add(1, Ordering::Relaxed);
        self.sum_nanos().fetch_add(nanos, Ordering::Relaxed);
        self.bucket(bucket_index(bounds_nanos, nanos))
            .fetch_add(1, Ordering::Relaxed);
        if self.native_at != 0 {
            self.cell(self.native_at + native::cell(nanos))
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds these cells into `totals` (laid out as the cells are: count, sum, buckets, padding).
    #[inline]
    fn add_to(&self, totals: &mut [u64]) {
        for (t, line) in totals.chunks_exact_mut(16).zip(self.lines.iter()) {
            for (t, cell) in t.iter_mut().zip(line.0.iter()) {
                *t = t.wrapping_add(cell.load(Ordering::Relaxed));
            }
        }
    }

    /// Adds `other` into these cells (which any thread may do, under the series lock).
    fn absorb(&self, other: &Cells) {
        for (a, b) in self.lines.iter().zip(other.lines.iter()) {
            for (a, b) in a.0.iter().zip(b.0.iter()) {
                a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}

/// The bucket of `nanos`: the first bound not below it, or the `+Inf` bucket. Scanned from the
/// low end, where most requests land (one or two compares), rather than by binary search.
#[inline]
fn bucket_index(bounds_nanos: &[u64], nanos: u64) -> usize {
    bounds_nanos
        .iter()
        .position(|b| nanos <= *b)
        .unwrap_or(bounds_nanos.len())
}

#[inline]
fn bump(cell: &AtomicU64, by: u64) {
    // Single writer: a load and a store are enough, and cheaper than a locked add.
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// One thread's active-request counts per method, alone on their cache lines (see [`Line`]).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct ActiveCounts([AtomicI64; METHOD_COUNT]);

impl ActiveCounts {
    /// Moves `method`'s count by `delta` (only the shard's own thread writes it).
    #[inline]
    pub(crate) fn add(&self, method: u8, delta: i64) {
        let a = &self.0[usize::from(method)];
        a.store(a.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }
}

/// One series: its labels, and its cells in every shard that recorded it.
#[derive(Debug)]
pub(crate) struct Series {
    /// Counts of shards whose threads have exited.
    retired: Cells,
    pub(crate) labels: LabelSet,
    shards: Vec<Arc<Cells>>,
}

impl Series {
    /// This series' totals over all shards into `totals` (from [`Store::totals_buffer`]):
    /// count, sum in nanoseconds, then each bucket's own (not cumulative) count; the native
    /// buckets too if `totals` is long enough to hold them (a renderer that does not read
    /// them passes a shorter buffer and skips their sum).
    pub(crate) fn totals(&self, totals: &mut [u64]) {
        totals.fill(0);
        self.retired.add_to(totals);
        for shard in &self.shards {
            shard.add_to(totals);
        }
    }
}

/// Every series by key.
pub(crate) type SeriesMap = HashMap<SeriesKey, Series, FxBuildHasher>;

/// What the shards of one metrics core sum into: the series and the active counts, with what
/// exited threads left behind.
#[derive(Debug)]
pub(crate) struct Store {
    /// Histogram buckets per series, `+Inf` included.
    buckets: usize,
    /// Whether series record native histogram buckets too.
    native: bool,
    series: Mutex<SeriesMap>,
    active: Mutex<Vec<Arc<ActiveCounts>>>,
    /// Active counts of exited threads, and of requests recorded without a shard.
    retired_active: [AtomicI64; METHOD_COUNT],
}

impl Store {
    /// A store for series of `buckets` histogram buckets (`+Inf` included), with native
    /// histogram buckets or not.
    pub(crate) fn new(buckets: usize, native: bool) -> Store {
        Store {
            buckets,
            native,
            series: Mutex::new(HashMap::default()),
            active: Mutex::new(Vec::new()),
            retired_active: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }

    /// Every series, locked (recording threads still write their cells meanwhile).
    pub(crate) fn series(&self) -> MutexGuard<'_, SeriesMap> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer for [`Series::totals`]: one slot per cell, padding included; the slots past
    /// the buckets stay 0. With `native` (and a store that records them), long enough for the
    /// native buckets, which then start at [`Store::native_at`].
    pub(crate) fn totals_buffer(&self, native: bool) -> Vec<u64> {
        vec![0; cell_count(self.buckets, native && self.native)]
    }

    /// Where the native buckets start in a [`Store::totals_buffer`]; `None` if the store
    /// does not record them.
    pub(crate) fn native_at(&self) -> Option<usize> {
        self.native.then(|| native_at(self.buckets))
    }

    /// Active requests per method, over all threads.
    pub(crate) fn active_totals(&self) -> [i64; METHOD_COUNT] {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        std::array::from_fn(|m| {
            active
                .iter()
                .map(|a| a.0[m].load(Ordering::Relaxed))
                .sum::<i64>()
                + self.retired_active[m].load(Ordering::Relaxed)
        })
    }

    /// Moves `method`'s active count by `delta` without a shard (the thread is exiting).
    pub(crate) fn add_active_unsharded(&self, method: u8, delta: i64) {
        self.retired_active[usize::from(method)].fetch_add(delta, Ordering::Relaxed);
    }

    /// A new shard's cells for the series `key`, added to the series (created with `labels`
    /// if new).
    #[cold]
    pub(crate) fn new_cells(
        &self,
        key: SeriesKey,
        labels: impl FnOnce() -> LabelSet,
    ) -> Arc<Cells> {
        let cells = Arc::new(Cells::new(self.buckets, self.native));
        let mut series = self.series();
        self.entry(&mut series, key, labels)
            .shards
            .push(cells.clone());
        cells
    }

    /// One observation into the series' shared totals, without a shard (the thread is
    /// exiting, or recording re-entered), under the series lock.
    #[cold]
    pub(crate) fn observe_unsharded(
        &self,
        key: SeriesKey,
        labels: impl FnOnce() -> LabelSet,
        bounds_nanos: &[u64],
        nanos: u64,
    ) {
        let mut series = self.series();
        self.entry(&mut series, key, labels)
            .retired
            .add(bounds_nanos, nanos);
    }

    fn entry<'s>(
        &self,
        series: &'s mut SeriesMap,
        key: SeriesKey,
        labels: impl FnOnce() -> LabelSet,
    ) -> &'s mut Series {
        series.entry(key).or_insert_with(|| Series {
            retired: Cells::new(self.buckets, self.native),
            labels: labels(),
            shards: Vec::new(),
        })
    }

    /// How many live shards (threads that recorded and have not exited) the store counts,
    /// by active counts or by cells of any series, whichever is more.
    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        let series = self.series().values().map(|s| s.shards.len()).max();
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner()).len();
        active.max(series.unwrap_or(0))
    }

    /// Folds an exiting thread's shard into the retired totals.
    fn retire(&self, shard: &LocalShard) {
        let mut series = self.series();
        for (key, cells) in shard.series.iter() {
            if let Some(s) = series.get_mut(&SeriesKey::unpack(key)) {
                s.retired.absorb(cells);
                s.shards.retain(|c| !Arc::ptr_eq(c, cells));
            }
        }
        drop(series);
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = active.iter().position(|a| Arc::ptr_eq(a, &shard.active)) {
            let gone = active.swap_remove(pos);
            for (r, g) in self.retired_active.iter().zip(gone.0.iter()) {
                r.fetch_add(g.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}

/// This thread's view of one metrics core's [`Store`].
pub(crate) struct LocalShard {
    /// The id of the metrics core.
    owner: usize,
    store: &'static Store,
    /// Route ids by the address of the template the layer saw (kept alive, see
    /// [`RouteName`](super::routes::RouteName)).
    pub(crate) routes: U64Table<(Option<axum::extract::MatchedPath>, u32)>,
    /// This thread's cells by packed series key.
    pub(crate) series: U64Table<Arc<Cells>>,
    pub(crate) active: Arc<ActiveCounts>,
}

impl Drop for LocalShard {
    fn drop(&mut self) {
        self.store.retire(self);
    }
}

/// This thread's shards, one per metrics core it has recorded for, and the one used last.
struct Shards {
    last: usize,
    list: Vec<LocalShard>,
}

thread_local! {
    static SHARDS: RefCell<Shards> = const { RefCell::new(Shards { last: 0, list: Vec::new() }) };
}

/// The request path: runs `f` on this thread's shard of the core `owner` if it is the shard
/// used last (`None` otherwise, or when `f` says so). Small, so that it inlines: no
/// allocation, nothing out of line.
#[inline]
pub(crate) fn with_current<R>(
    owner: usize,
    f: impl FnOnce(&mut LocalShard) -> Option<R>,
) -> Option<R> {
    SHARDS
        .try_with(move |cell| {
            let mut shards = cell.try_borrow_mut().ok()?;
            let last = shards.last;
            let shard = shards.list.get_mut(last).filter(|s| s.owner == owner)?;
            f(shard)
        })
        .ok()
        .flatten()
}

/// Runs `f` on this thread's shard of the core `owner` (whose shards sum into `store`),
/// creating it if needed; `None` only while the thread is exiting (its thread-locals are
/// gone) or re-entered from within `f`.
#[cold]
#[inline(never)]
pub(crate) fn with_shard<R>(
    owner: usize,
    store: &'static Store,
    f: impl FnOnce(&mut LocalShard) -> R,
) -> Option<R> {
    SHARDS
        .try_with(|cell| {
            let mut shards = cell.try_borrow_mut().ok()?;
            let shards = &mut *shards;
            let idx = match shards.list.iter().position(|s| s.owner == owner) {
                Some(i) => i,
                None => {
                    let active = Arc::new(ActiveCounts(std::array::from_fn(|_| AtomicI64::new(0))));
                    store
                        .active
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(active.clone());
                    shards.list.push(LocalShard {
                        owner,
                        store,
                        routes: U64Table::new(),
                        series: U64Table::new(),
                        active,
                    });
                    shards.list.len() - 1
                }
            };
            shards.last = idx;
            Some(f(&mut shards.list[idx]))
        })
        .ok()
        .flatten()
}
