//! The HTTP RED metrics core: per-thread shards written without contention, summed and
//! rendered from pre-escaped label sets at scrape time.
//!
//! Each thread that records gets its own shard of cells; only that thread writes them (plain
//! relaxed load + store, no read-modify-write), and the scrape sums shards. A series is found
//! through a thread-local cache keyed by a packed `u64` (route id, method, status, error type),
//! so the request path takes no lock, allocates nothing and touches no shared cache line.
//! Route templates are cached by address (axum's `MatchedPath` and `route_fn`'s `&'static str`
//! keep theirs for the router's lifetime), checked against the cached copy, so a route is not
//! hashed per request. Requests are timed with the CPU's time-stamp counter where it is
//! invariant (`quanta`), half the cost of two `Instant::now` calls on a VM.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::Method;

use super::table::U64Table;

pub use crate::config::DEFAULT_BUCKETS;

/// The label value for requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The route id of [`UNMATCHED_ROUTE`]: the first one.
const UNMATCHED_ID: u32 = 0;

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];
pub(crate) const METHOD_COUNT: usize = METHODS.len();

/// [`method_index`] of `HEAD`.
const HEAD_INDEX: u8 = 1;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Incomplete {
    /// Completed; `error_type` is the status code for 5xx, absent otherwise.
    No = 0,
    ClientAborted = 1,
    BodyError = 2,
    DrainDeadline = 3,
}

impl Incomplete {
    fn label(self) -> &'static str {
        match self {
            Incomplete::No => "",
            Incomplete::ClientAborted => "client_aborted",
            Incomplete::BodyError => "body_error",
            Incomplete::DrainDeadline => "drain_deadline",
        }
    }
}

/// One request's measurement: started with one clock read, recorded exactly once with the
/// second, on [`Timer::record`] or, if dropped unfinished, as aborted. A timer whose route was
/// never named (see [`super::handoff`]) records nothing: no layer saw the request.
pub(crate) struct Timer {
    core: &'static HttpMetrics,
    started: u64,
    method: u8,
    pub(crate) route: u32,
    pub(crate) status: u16,
}

impl Timer {
    #[inline]
    pub(crate) fn start(core: &'static HttpMetrics, method: u8, route: u32) -> Timer {
        Timer {
            core,
            started: core.now(),
            method,
            route,
            status: 0,
        }
    }

    #[inline]
    pub(crate) fn core(&self) -> &'static HttpMetrics {
        self.core
    }

    /// Whether the response has no body on the wire (a `HEAD` request; 1xx, 204, 304), so that
    /// the server may drop the body without polling it.
    #[inline]
    pub(crate) fn bodiless(&self) -> bool {
        self.method == HEAD_INDEX || matches!(self.status, 100..=199 | 204 | 304)
    }

    #[inline]
    pub(crate) fn record(self, incomplete: Incomplete) {
        let this = std::mem::ManuallyDrop::new(self);
        this.finish(incomplete);
    }

    #[inline]
    fn finish(&self, incomplete: Incomplete) {
        if self.route == super::handoff::NO_ROUTE {
            return;
        }
        let incomplete =
            if incomplete == Incomplete::ClientAborted && self.core.force_closing.is_cancelled() {
                Incomplete::DrainDeadline
            } else {
                incomplete
            };
        self.core.finish(
            self.method,
            self.route,
            self.status,
            incomplete,
            self.started,
        );
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // Dropped without an explicit record: the future or body went away unfinished.
        self.finish(Incomplete::ClientAborted);
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("route", &self.route)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A fast hasher for the packed `u64` series keys and short route strings (FxHash).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
        let mut tail = 0u64;
        for (i, byte) in chunks.remainder().iter().enumerate() {
            tail |= u64::from(*byte) << (8 * i);
        }
        self.write_u64(tail ^ (bytes.len() as u64) << 56);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// Counters that one thread writes, alone on their cache lines (128 bytes: adjacent lines
/// are fetched in pairs), so that another thread's counters next to them in memory cannot slow
/// their writes down (false sharing: 29 -> 54 ns per request with two threads before this).
#[derive(Debug)]
#[repr(align(128))]
struct Line([AtomicU64; 16]);

/// One series' cells in one shard. Written only by the shard's thread.
#[derive(Debug)]
pub(crate) struct Cells {
    /// `count`, `sum_nanos`, then one counter per bucket.
    lines: Box<[Line]>,
}

impl Cells {
    fn new(buckets: usize) -> Cells {
        let lines = (buckets + 2).div_ceil(16);
        Cells {
            lines: (0..lines)
                .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
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
    fn observe(&self, bounds_nanos: &[u64], nanos: u64) {
        bump(self.count(), 1);
        bump(self.sum_nanos(), nanos);
        bump(self.bucket(bucket_index(bounds_nanos, nanos)), 1);
    }

    /// One observation of `nanos` by any thread (into a series' shared totals).
    fn add(&self, bounds_nanos: &[u64], nanos: u64) {
        self.count().fetch_add(1, Ordering::Relaxed);
        self.sum_nanos().fetch_add(nanos, Ordering::Relaxed);
        self.bucket(bucket_index(bounds_nanos, nanos))
            .fetch_add(1, Ordering::Relaxed);
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

impl Drop for LocalShard {
    fn drop(&mut self) {
        let core = self.core;
        let mut series = core.series.lock().unwrap_or_else(|e| e.into_inner());
        for (key, cells) in self.series.iter() {
            if let Some(s) = series.get_mut(&key) {
                s.retired.absorb(cells);
                s.shards.retain(|c| !Arc::ptr_eq(c, cells));
            }
        }
        drop(series);
        let mut active = core.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = active.iter().position(|a| Arc::ptr_eq(a, &self.active)) {
            let gone = active.swap_remove(pos);
            for (r, g) in core.retired_active.iter().zip(gone.iter()) {
                r.fetch_add(g.load(Ordering::Relaxed), Ordering::Relaxed);
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

/// The metrics core of one lifecycle. Leaked on creation (one per lifecycle) so that the
/// request path holds a `&'static` and never touches a shared reference count.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    id: usize,
    bounds_nanos: Box<[u64]>,
    bucket_labels: Box<[String]>,
    version: String,
    version_escaped: String,
    const_labels: Vec<(String, String)>,
    const_labels_escaped: String,
    /// Route templates by id; ids are what the request path carries.
    routes: Mutex<Vec<Arc<str>>>,
    series: Mutex<HashMap<u64, Series, FxBuild>>,
    active: Mutex<Vec<Arc<ActiveCounts>>>,
    retired_active: [AtomicI64; METHOD_COUNT],
    pub(crate) force_closing: tokio_util::sync::CancellationToken,
    /// Set once a layer exists: podcycle's serving stack times requests only then.
    pub(crate) layered: AtomicBool,
    /// Series keys in label order as of the last render, and how many series there were then
    /// (series are never removed, so an unchanged count means an unchanged order).
    render_order: Mutex<Vec<u64>>,
    /// The length of the last render, to size the next one's buffer at once.
    last_render_len: AtomicUsize,
    clock: quanta::Clock,
}

#[derive(Debug)]
struct Series {
    /// Counts of shards whose threads have exited.
    retired: Cells,
    /// Pre-escaped `{name="value",...` (without the closing brace) for the text renderer.
    labels: String,
    /// The same labels, unescaped, for the `prometheus` Collector.
    pairs: Vec<(&'static str, String)>,
    shards: Vec<Arc<Cells>>,
}

impl Series {
    /// This series' totals over all shards into `totals` (from [`HttpMetrics::totals_buffer`]):
    /// count, sum in nanoseconds, then each bucket's own (not cumulative) count.
    fn totals(&self, totals: &mut [u64]) {
        totals.fill(0);
        self.retired.add_to(totals);
        for shard in &self.shards {
            shard.add_to(totals);
        }
    }
}

/// This thread's view of one `HttpMetrics`. When the thread exits, its counts are folded
/// into the series' retired totals so that thread churn does not grow the registry.
struct LocalShard {
    owner: usize,
    core: &'static HttpMetrics,
    /// Route ids by the address of the template the layer saw (kept alive, see [`RouteName`]).
    routes: U64Table<(Option<axum::extract::MatchedPath>, u32)>,
    /// This thread's cells by packed series key (see [`HttpMetrics::observe`]).
    series: U64Table<Arc<Cells>>,
    active: Arc<ActiveCounts>,
}

/// One thread's active-request counts per method, alone on their cache lines (see [`Line`]).
#[derive(Debug)]
#[repr(align(128))]
struct ActiveCounts([AtomicI64; METHOD_COUNT]);

impl ActiveCounts {
    /// Moves `method`'s count by `delta` (only the shard's own thread writes it).
    #[inline]
    fn add(&self, method: u8, delta: i64) {
        let a = &self.0[usize::from(method)];
        a.store(a.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }
}

impl std::ops::Deref for ActiveCounts {
    type Target = [AtomicI64; METHOD_COUNT];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// This thread's shards, one per metrics core it has recorded for, and the one used last.
struct Shards {
    last: usize,
    list: Vec<LocalShard>,
}

impl Shards {
    /// The shard used last, if it belongs to the metrics core `owner`.
    #[inline]
    fn current(&mut self, owner: usize) -> Option<&mut LocalShard> {
        self.list.get_mut(self.last).filter(|s| s.owner == owner)
    }
}

thread_local! {
    static SHARDS: RefCell<Shards> = const { RefCell::new(Shards { last: 0, list: Vec::new() }) };
}

/// A route template as the layer saw it. Either kind stays at its address while a shard
/// caches it, so the address alone identifies it: a `&'static str` forever, a `MatchedPath`
/// because the cache keeps a clone of it (an `Arc<str>` shared with the router).
#[derive(Clone, Copy, Debug)]
pub(crate) enum RouteName<'a> {
    /// From a [`RouteFn`](super::RouteFn).
    Static(&'static str),
    /// axum's route template.
    Matched(&'a axum::extract::MatchedPath),
    /// No route matched.
    Unmatched,
}

impl RouteName<'_> {
    /// The template, if a route matched.
    fn name(&self) -> Option<&str> {
        match self {
            RouteName::Static(s) => Some(s),
            RouteName::Matched(m) => Some(m.as_str()),
            RouteName::Unmatched => None,
        }
    }

    /// The template's address, what a shard caches route ids by; 0 for [`RouteName::Unmatched`].
    #[inline]
    fn addr(&self) -> u64 {
        match self {
            RouteName::Static(s) => s.as_ptr() as u64,
            RouteName::Matched(m) => m.as_str().as_ptr() as u64,
            RouteName::Unmatched => 0,
        }
    }
}

/// Route ids a shard caches before starting over (each entry may keep a template alive).
const ROUTE_CACHE_LIMIT: usize = 4096;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

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

/// Writes `nanos` as seconds in exact decimal (`0.033`, `12`, `1.000000001`): two integers,
/// where formatting the `f64` quotient took as long as the rest of a series' lines.
fn push_seconds(out: &mut String, nanos: u64, num: &mut itoa::Buffer) {
    const NANOS_PER_SEC: u64 = 1_000_000_000;
    out.push_str(num.format(nanos / NANOS_PER_SEC));
    let mut frac = nanos % NANOS_PER_SEC;
    if frac != 0 {
        let mut digits = 9;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        let frac = num.format(frac);
        out.push('.');
        out.push_str(&"00000000"[..digits - frac.len()]);
        out.push_str(frac);
    }
}

fn format_float(f: f64) -> String {
    if f == f64::INFINITY {
        "+Inf".into()
    } else {
        // Shortest representation that round-trips; integers keep a decimal point.
        let s = format!("{f}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    }
}

impl HttpMetrics {
    /// Creates and leaks a metrics core.
    pub(crate) fn leak(
        version: &str,
        const_labels: &[(String, String)],
        buckets: &[f64],
        force_closing: tokio_util::sync::CancellationToken,
    ) -> &'static HttpMetrics {
        let mut bounds: Vec<f64> = buckets
            .iter()
            .copied()
            .filter(|b| b.is_finite() && *b > 0.0)
            .collect();
        bounds.sort_by(|a, b| a.total_cmp(b));
        bounds.dedup();
        let bounds_nanos = bounds
            .iter()
            .map(|b| (b * 1e9) as u64)
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let mut bucket_labels: Vec<String> = bounds
            .iter()
            .map(|b| format!(",le=\"{}\"}} ", format_float(*b)))
            .collect();
        bucket_labels.push(",le=\"+Inf\"} ".into());
        let mut const_labels_escaped = String::new();
        for (k, v) in const_labels {
            let _ = write!(const_labels_escaped, ",{k}=\"{}\"", escape_label(v));
        }
        Box::leak(Box::new(HttpMetrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            bounds_nanos,
            bucket_labels: bucket_labels.into_boxed_slice(),
            version: version.to_owned(),
            version_escaped: escape_label(version),
            const_labels: const_labels.to_vec(),
            const_labels_escaped,
            routes: Mutex::new(vec![Arc::from(UNMATCHED_ROUTE)]),
            series: Mutex::new(HashMap::default()),
            active: Mutex::new(Vec::new()),
            retired_active: std::array::from_fn(|_| AtomicI64::new(0)),
            force_closing,
            layered: AtomicBool::new(false),
            render_order: Mutex::new(Vec::new()),
            last_render_len: AtomicUsize::new(0),
            clock: quanta::Clock::new(),
        }))
    }

    /// This core's id: what the route hand-off matches on.
    #[inline]
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// A raw timestamp for [`HttpMetrics::finish`] (one clock read).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.raw()
    }

    /// Runs `f` on this thread's shard of this core, creating it if needed; `None` only while
    /// the thread is exiting (its thread-locals are gone) or re-entered from within `f`.
    #[cold]
    #[inline(never)]
    fn with_shard<R>(&'static self, f: impl FnOnce(&mut LocalShard) -> R) -> Option<R> {
        SHARDS
            .try_with(|cell| {
                let mut shards = cell.try_borrow_mut().ok()?;
                let shards = &mut *shards;
                let idx = match shards.list.iter().position(|s| s.owner == self.id) {
                    Some(i) => i,
                    None => {
                        let active: Arc<ActiveCounts> =
                            Arc::new(ActiveCounts(std::array::from_fn(|_| AtomicI64::new(0))));
                        self.active
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(active.clone());
                        shards.list.push(LocalShard {
                            owner: self.id,
                            core: self,
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

    /// Request start: resolves the route to an id and, when `count_active`, counts the request
    /// active (once per request: a nested router's layer resolves its route again).
    #[inline]
    pub(crate) fn start(
        &'static self,
        method: u8,
        route: RouteName<'_>,
        count_active: bool,
    ) -> u32 {
        // The fast path: this thread's shard of this core is the one used last and knows the
        // route. Kept small (no closure calls, nothing that allocates) so that it inlines.
        let addr = route.addr();
        let id = self.id;
        let hit = SHARDS.try_with(move |cell| {
            let mut shards = cell.try_borrow_mut().ok()?;
            let shard = shards.current(id)?;
            let route = if addr == 0 {
                UNMATCHED_ID
            } else {
                shard.routes.get(addr)?.1
            };
            if count_active {
                shard.active.add(method, 1);
            }
            Some(route)
        });
        match hit {
            Ok(Some(route)) => route,
            _ => self.start_cold(method, route, count_active),
        }
    }

    #[cold]
    #[inline(never)]
    fn start_cold(&'static self, method: u8, route: RouteName<'_>, count_active: bool) -> u32 {
        let resolved = self.with_shard(|shard| {
            if count_active {
                shard.active.add(method, 1);
            }
            let Some(name) = route.name() else {
                return UNMATCHED_ID;
            };
            let addr = route.addr();
            if let Some((_, id)) = shard.routes.get(addr) {
                return *id;
            }
            if shard.routes.len() >= ROUTE_CACHE_LIMIT {
                shard.routes.clear();
            }
            let id = self.route_id(name);
            let keep = match route {
                RouteName::Matched(m) => Some(m.clone()),
                _ => None,
            };
            shard.routes.insert(addr, (keep, id));
            id
        });
        resolved.unwrap_or_else(|| {
            // No shard (the thread is exiting, or recording re-entered): count into the shared
            // totals.
            if count_active {
                self.retired_active[usize::from(method)].fetch_add(1, Ordering::Relaxed);
            }
            route
                .name()
                .map_or(UNMATCHED_ID, |name| self.route_id(name))
        })
    }

    fn route_id(&self, route: &str) -> u32 {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        match routes.iter().position(|r| &**r == route) {
            Some(i) => i as u32,
            None => {
                routes.push(Arc::from(route));
                (routes.len() - 1) as u32
            }
        }
    }

    /// Request end, for a request that started at `started` (from [`HttpMetrics::now`]): the
    /// second clock read, one histogram observation, and the active count back down.
    #[inline]
    pub(crate) fn finish(
        &'static self,
        method: u8,
        route: u32,
        status: u16,
        incomplete: Incomplete,
        started: u64,
    ) {
        let nanos = self.clock.delta_as_nanos(started, self.clock.raw());
        self.observe(method, route, status, incomplete, nanos);
    }

    /// One histogram observation of `nanos`, and the active count back down.
    #[inline]
    pub(crate) fn observe(
        &'static self,
        method: u8,
        route: u32,
        status: u16,
        incomplete: Incomplete,
        nanos: u64,
    ) {
        let key = u64::from(route) << 32
            | u64::from(status) << 16
            | u64::from(method) << 8
            | incomplete as u64;
        let id = self.id;
        let bounds = &self.bounds_nanos;
        // The fast path, as in `start`: this thread's current shard has the series.
        let hit = SHARDS.try_with(move |cell| {
            let mut shards = cell.try_borrow_mut().ok()?;
            let shard = shards.current(id)?;
            let cells = shard.series.get(key)?;
            cells.observe(bounds, nanos);
            shard.active.add(method, -1);
            Some(())
        });
        if !matches!(hit, Ok(Some(()))) {
            self.observe_cold(key, method, route, status, incomplete, nanos);
        }
    }

    #[cold]
    #[inline(never)]
    fn observe_cold(
        &'static self,
        key: u64,
        method: u8,
        route: u32,
        status: u16,
        incomplete: Incomplete,
        nanos: u64,
    ) {
        let bounds = &self.bounds_nanos;
        let done = self.with_shard(|shard| {
            let cells = match shard.series.get(key) {
                Some(c) => c,
                None => {
                    let c = self.new_cells(key, method, route, status, incomplete);
                    shard.series.insert(key, c)
                }
            };
            cells.observe(bounds, nanos);
            shard.active.add(method, -1);
        });
        if done.is_none() {
            // No shard (the thread is exiting, or recording re-entered): record into the
            // series' shared totals, under its lock.
            let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            self.series_entry(&mut series, key, method, route, status, incomplete)
                .retired
                .add(bounds, nanos);
            drop(series);
            self.retired_active[usize::from(method)].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A new shard's cells for the series `key`, added to the series (created if new).
    #[cold]
    fn new_cells(
        &self,
        key: u64,
        method: u8,
        route: u32,
        status: u16,
        incomplete: Incomplete,
    ) -> Arc<Cells> {
        let cells = Arc::new(Cells::new(self.bounds_nanos.len() + 1));
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        self.series_entry(&mut series, key, method, route, status, incomplete)
            .shards
            .push(cells.clone());
        cells
    }

    /// The series `key`, created with its label sets if new.
    fn series_entry<'s>(
        &self,
        series: &'s mut HashMap<u64, Series, FxBuild>,
        key: u64,
        method: u8,
        route: u32,
        status: u16,
        incomplete: Incomplete,
    ) -> &'s mut Series {
        series.entry(key).or_insert_with(|| {
            let route_name = self
                .routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(route as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from(UNMATCHED_ROUTE));
            let mut pairs: Vec<(&'static str, String)> = vec![
                (
                    "http_request_method",
                    METHODS[usize::from(method)].to_owned(),
                ),
                ("http_route", route_name.to_string()),
            ];
            if status != 0 {
                pairs.push(("http_response_status_code", status.to_string()));
            }
            pairs.push(("version", self.version.clone()));
            match incomplete {
                Incomplete::No if status >= 500 => pairs.push(("error_type", status.to_string())),
                Incomplete::No => {}
                other => pairs.push(("error_type", other.label().to_owned())),
            }
            let mut labels = String::from("{");
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    labels.push(',');
                }
                let _ = write!(labels, "{k}=\"{}\"", escape_label(v));
                if *k == "version" {
                    labels.push_str(&self.const_labels_escaped);
                }
            }
            Series {
                retired: Cells::new(self.bounds_nanos.len() + 1),
                labels,
                pairs,
                shards: Vec::new(),
            }
        })
    }

    /// A buffer for [`Series::totals`]: one slot per cell, padding included; the slots past
    /// the buckets stay 0.
    fn totals_buffer(&self) -> Vec<u64> {
        vec![0; (self.bounds_nanos.len() + 3).div_ceil(16) * 16]
    }

    /// The number of histogram series (label sets) recorded so far.
    pub(crate) fn series_count(&self) -> usize {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Renders both HTTP metric families in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        out.reserve(self.last_render_len.load(Ordering::Relaxed) * 9 / 8);
        let started_at = out.len();
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut order = self.render_order.lock().unwrap_or_else(|e| e.into_inner());
        if order.len() != series.len() {
            order.clear();
            order.extend(series.keys().copied());
            order.sort_unstable_by(|a, b| series[a].labels.cmp(&series[b].labels));
        }
        let rows = order.iter().filter_map(|k| series.get(k));
        out.push_str(
            "# HELP http_server_request_duration_seconds Duration of HTTP server requests.\n\
             # TYPE http_server_request_duration_seconds histogram\n",
        );
        let mut totals = self.totals_buffer();
        let mut num = itoa::Buffer::new();
        let mut prefix = String::with_capacity(256);
        for s in rows {
            s.totals(&mut totals);
            let (count, sum, buckets) = (totals[0], totals[1], &totals[2..]);
            let mut cumulative = 0u64;
            prefix.clear();
            prefix.push_str("http_server_request_duration_seconds_bucket");
            prefix.push_str(&s.labels);
            for (label, b) in self.bucket_labels.iter().zip(buckets) {
                cumulative += b;
                out.push_str(&prefix);
                out.push_str(label);
                out.push_str(num.format(cumulative));
                out.push('\n');
            }
            out.push_str("http_server_request_duration_seconds_sum");
            out.push_str(&s.labels);
            out.push_str("} ");
            push_seconds(out, sum, &mut num);
            out.push('\n');
            out.push_str("http_server_request_duration_seconds_count");
            out.push_str(&s.labels);
            out.push_str("} ");
            out.push_str(num.format(count));
            out.push('\n');
        }
        drop(order);
        drop(series);
        out.push_str(
            "# HELP http_server_active_requests Number of active HTTP server requests.\n\
             # TYPE http_server_active_requests gauge\n",
        );
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        for (m, name) in METHODS.iter().enumerate() {
            let total: i64 = active
                .iter()
                .map(|a| a[m].load(Ordering::Relaxed))
                .sum::<i64>()
                + self.retired_active[m].load(Ordering::Relaxed);
            if total == 0 && m != 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "http_server_active_requests{{http_request_method=\"{name}\",version=\"{}\"{}}} {}",
                self.version_escaped,
                self.const_labels_escaped,
                total.max(0)
            );
        }
        drop(active);
        self.last_render_len
            .store(out.len() - started_at, Ordering::Relaxed);
    }
}

impl HttpMetrics {
    /// Both HTTP metric families as `prometheus` protobuf models, for [`prometheus::core::Collector`].
    pub(crate) fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{
            Bucket, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
        };
        let label = |k: &str, v: &str| {
            let mut l = LabelPair::default();
            l.set_name(k.to_owned());
            l.set_value(v.to_owned());
            l
        };
        let consts = |pairs: &mut Vec<LabelPair>| {
            for (k, v) in &self.const_labels {
                pairs.push(label(k, v));
            }
        };
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics = Vec::with_capacity(series.len());
        let mut totals = self.totals_buffer();
        for s in series.values() {
            let nb = self.bucket_labels.len();
            s.totals(&mut totals);
            let (count, sum, buckets) = (totals[0], totals[1], &totals[2..]);
            let mut cumulative = 0u64;
            let mut proto_buckets = Vec::with_capacity(nb - 1);
            for (i, b) in buckets.iter().take(nb - 1).enumerate() {
                cumulative += b;
                let mut bucket = Bucket::default();
                bucket.set_cumulative_count(cumulative);
                bucket.set_upper_bound(self.bounds_nanos[i] as f64 / 1e9);
                proto_buckets.push(bucket);
            }
            let mut h = Histogram::default();
            h.set_sample_count(count);
            h.set_sample_sum(sum as f64 / 1e9);
            h.set_bucket(proto_buckets);
            let mut pairs: Vec<LabelPair> = s.pairs.iter().map(|(k, v)| label(k, v)).collect();
            consts(&mut pairs);
            let mut m = Metric::default();
            m.set_label(pairs);
            m.set_histogram(h);
            metrics.push(m);
        }
        drop(series);
        let mut duration = MetricFamily::default();
        duration.set_name("http_server_request_duration_seconds".into());
        duration.set_help("Duration of HTTP server requests.".into());
        duration.set_field_type(MetricType::HISTOGRAM);
        duration.set_metric(metrics);

        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let mut gauges = Vec::new();
        for (i, name) in METHODS.iter().enumerate() {
            let total: i64 = active
                .iter()
                .map(|a| a[i].load(Ordering::Relaxed))
                .sum::<i64>()
                + self.retired_active[i].load(Ordering::Relaxed);
            if total == 0 && i != 0 {
                continue;
            }
            let mut pairs = vec![
                label("http_request_method", name),
                label("version", &self.version),
            ];
            consts(&mut pairs);
            let mut g = Gauge::default();
            g.set_value(total.max(0) as f64);
            let mut m = Metric::default();
            m.set_label(pairs);
            m.set_gauge(g);
            gauges.push(m);
        }
        let mut active_family = MetricFamily::default();
        active_family.set_name("http_server_active_requests".into());
        active_family.set_help("Number of active HTTP server requests.".into());
        active_family.set_field_type(MetricType::GAUGE);
        active_family.set_metric(gauges);
        vec![duration, active_family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> &'static HttpMetrics {
        HttpMetrics::leak(
            "1.2.3",
            &[("track".into(), "canary".into())],
            DEFAULT_BUCKETS,
            tokio_util::sync::CancellationToken::new(),
        )
    }

    fn ms(n: u64) -> u64 {
        n * 1_000_000
    }

    #[test]
    fn observations_land_in_the_right_bucket_and_render_cumulatively() {
        let m = core();
        let r = m.start(0, RouteName::Static("/hello/{name}"), true);
        m.observe(0, r, 200, Incomplete::No, ms(3));
        let r = m.start(0, RouteName::Static("/hello/{name}"), true);
        m.observe(0, r, 200, Incomplete::No, ms(30));
        let r = m.start(2, RouteName::Unmatched, true);
        m.observe(2, r, 503, Incomplete::No, ms(200_000));
        let mut out = String::new();
        m.render(&mut out);
        let base = "{http_request_method=\"GET\",http_route=\"/hello/{name}\",http_response_status_code=\"200\",version=\"1.2.3\",track=\"canary\"";
        assert!(
            out.contains(&format!(
                "http_server_request_duration_seconds_bucket{base},le=\"0.005\"}} 1\n"
            )),
            "{out}"
        );
        assert!(out.contains(&format!(
            "http_server_request_duration_seconds_bucket{base},le=\"0.025\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "http_server_request_duration_seconds_bucket{base},le=\"0.05\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "http_server_request_duration_seconds_bucket{base},le=\"+Inf\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "http_server_request_duration_seconds_count{base}}} 2\n"
        )));
        assert!(out.contains(&format!(
            "http_server_request_duration_seconds_sum{base}}} 0.033\n"
        )));
        assert!(out.contains("http_route=\"unmatched\",http_response_status_code=\"503\",version=\"1.2.3\",track=\"canary\",error_type=\"503\",le=\"120.0\"} 0\n"), "{out}");
        assert!(out.contains("error_type=\"503\",le=\"+Inf\"} 1\n"));
        assert!(out.contains("http_server_active_requests{http_request_method=\"GET\",version=\"1.2.3\",track=\"canary\"} 0\n"));
    }

    #[test]
    fn active_requests_balance_across_threads() {
        let m = core();
        let r = m.start(2, RouteName::Static("/x"), true);
        std::thread::spawn(move || m.observe(2, r, 200, Incomplete::ClientAborted, 0))
            .join()
            .unwrap();
        let _still_active = m.start(2, RouteName::Static("/x"), true);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("http_server_active_requests{http_request_method=\"POST\",version=\"1.2.3\",track=\"canary\"} 1\n"), "{out}");
        assert!(out.contains("error_type=\"client_aborted\""));
    }

    #[test]
    fn exited_threads_fold_into_retired_totals() {
        let m = core();
        for _ in 0..200 {
            std::thread::spawn(move || {
                let r = m.start(0, RouteName::Static("/t"), true);
                m.observe(0, r, 200, Incomplete::No, ms(1));
                let _left_active = m.start(2, RouteName::Static("/t"), true);
            })
            .join()
            .unwrap();
        }
        assert!(
            m.active.lock().unwrap().len() <= 1,
            "exited threads' shards are gone"
        );
        let series = m.series.lock().unwrap();
        assert!(series.values().all(|s| s.shards.is_empty()));
        drop(series);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("http_route=\"/t\",http_response_status_code=\"200\",version=\"1.2.3\",track=\"canary\"} 200\n"), "{out}");
        assert!(out.contains("http_server_active_requests{http_request_method=\"POST\",version=\"1.2.3\",track=\"canary\"} 200\n"), "{out}");
    }

    #[test]
    fn a_request_recorded_while_its_thread_exits_is_counted() {
        // A response body owned by a thread-local is dropped during thread exit, possibly after
        // this thread's shards are gone: the request still counts, and nothing panics.
        struct Late(&'static HttpMetrics, u32);
        impl Drop for Late {
            fn drop(&mut self) {
                self.0
                    .observe(2, self.1, 200, Incomplete::ClientAborted, ms(1));
            }
        }
        thread_local! {
            static LATE: RefCell<Option<Late>> = const { RefCell::new(None) };
        }
        let m = core();
        std::thread::spawn(move || {
            // Registered before the shards' thread-local, so destroyed after it.
            LATE.with(|_| {});
            let r = m.start(2, RouteName::Static("/late"), true);
            LATE.with(|l| *l.borrow_mut() = Some(Late(m, r)));
        })
        .join()
        .expect("no panic while the thread exits");
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("http_route=\"/late\",http_response_status_code=\"200\",version=\"1.2.3\",track=\"canary\",error_type=\"client_aborted\"} 1\n"),
            "{out}"
        );
        assert!(
            !out.contains("http_server_active_requests{http_request_method=\"POST\""),
            "active back to 0: {out}"
        );
    }

    #[test]
    fn a_series_added_after_a_render_is_in_the_next_one_in_label_order() {
        let m = core();
        let r = m.start(0, RouteName::Static("/b"), true);
        m.observe(0, r, 200, Incomplete::No, 1_000);
        let mut first = String::new();
        m.render(&mut first);
        assert!(!first.contains("http_route=\"/a\""));
        let r = m.start(0, RouteName::Static("/a"), true);
        m.observe(0, r, 200, Incomplete::No, 1_000);
        let mut second = String::new();
        m.render(&mut second);
        let a = second
            .find("http_route=\"/a\"")
            .expect("new series rendered");
        let b = second
            .find("http_route=\"/b\"")
            .expect("old series rendered");
        assert!(a < b, "sorted by labels: {second}");
    }

    #[test]
    fn seconds_are_written_as_exact_decimals() {
        let mut num = itoa::Buffer::new();
        for (nanos, text) in [
            (0, "0"),
            (33_000_000, "0.033"),
            (1, "0.000000001"),
            (1_000_000_000, "1"),
            (12_500_000_000, "12.5"),
            (1_000_000_001, "1.000000001"),
            (120_000_000_100, "120.0000001"),
            (u64::MAX, "18446744073.709551615"),
        ] {
            let mut out = String::new();
            push_seconds(&mut out, nanos, &mut num);
            assert_eq!(out, text);
            assert_eq!(out.parse::<f64>().ok(), Some(nanos as f64 / 1e9), "{text}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn methods_outside_the_standard_set_collapse() {
        assert_eq!(method_index(&Method::from_bytes(b"PURGE").unwrap()), 9);
        assert_eq!(METHODS[9], "_OTHER");
        assert_eq!(method_index(&Method::PATCH), 8);
    }
}
