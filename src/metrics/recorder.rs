//! The HTTP RED metrics core of one lifecycle: the clock, the request path's `start` and
//! `observe`, and what they record into (routes, shards, series).
//!
//! ```text
//! let core = HttpMetrics::leak("1.2.3", &[], DEFAULT_BUCKETS, native, force_closing);
//! let started = core.now();                                      // first clock read
//! let route = core.start(method, RouteName::Static("/hello/{name}"), true);  // active +1
//! core.finish(SeriesKey { method, route, status: 200, error: Incomplete::No }, started);
//! let mut out = String::new();
//! core.render(&mut out);                                         // the scrape
//! ```
//!
//! Both halves of the request path have a small inlined fast path (this thread's current
//! shard knows the route, or the series) and a `#[cold]` one that creates what is missing.
//! Requests are timed with the CPU's time-stamp counter where it is invariant (`quanta`),
//! half the cost of two `Instant::now` calls on a VM. See [`super::shard`] for how the cells
//! are written without contention and [`super::render`] for the scrape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::exemplars::Exemplar;
use super::render::Renderer;
use super::routes::{RouteName, Routes, UNMATCHED_ID, UNMATCHED_ROUTE};
use super::series::{CommonLabels, LabelSet, SeriesKey};
use super::shard::{self, Store};
use crate::trace::TraceId;

pub use crate::config::DEFAULT_BUCKETS;

/// Route ids a shard caches before starting over (each entry may keep a template alive).
const ROUTE_CACHE_LIMIT: usize = 4096;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// What named a request's route: which [`HttpMetrics::start_by`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NamedBy {
    /// A [`MetricsLayer`](super::MetricsLayer) (and the core's own uses).
    Layer,
    /// A [`crate::routing`] handler.
    Handler,
}

/// The metrics core of one lifecycle. Leaked on creation (one per lifecycle) so that the
/// request path holds a `&'static` and never touches a shared reference count.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    id: usize,
    bounds_nanos: Box<[u64]>,
    labels: CommonLabels,
    routes: Routes,
    store: Store,
    renderer: Renderer,
    pub(crate) force_closing: tokio_util::sync::CancellationToken,
    /// Set the first time a [`crate::routing`] handler resolves a route template (not
    /// `unmatched`) to an id: the application names its routes with handlers, so from then on
    /// the serving stack records a request nobody named as `unmatched` (see
    /// [`HttpMetrics::names_routes`]). Written and read on cold paths only: a route's first
    /// resolution on a shard, a request nobody named.
    names_routes: AtomicBool,
    /// Warns once when a layer of this core looks like it sits outside the router.
    pub(crate) placement: super::placement::PlacementCheck,
    clock: quanta::Clock,
    /// The latest sampled request of each series and bucket (OpenMetrics exemplars).
    exemplars: super::exemplars::Exemplars,
    /// gRPC methods with a route of their own (feature `grpc`).
    #[cfg(feature = "grpc")]
    grpc_methods: super::grpc::GrpcMethods,
}

impl HttpMetrics {
    /// Creates and leaks a metrics core.
    pub(crate) fn leak(
        version: &str,
        const_labels: &[(String, String)],
        buckets: &[f64],
        native: bool,
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
        Box::leak(Box::new(HttpMetrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            renderer: Renderer::new(&bounds, &bounds_nanos),
            store: Store::new(bounds_nanos.len() + 1, native),
            bounds_nanos,
            labels: CommonLabels::new(version, const_labels),
            routes: Routes::new(),
            force_closing,
            names_routes: AtomicBool::new(false),
            placement: super::placement::PlacementCheck::default(),
            clock: quanta::Clock::new(),
            exemplars: Default::default(),
            #[cfg(feature = "grpc")]
            grpc_methods: Default::default(),
        }))
    }

    /// The route id to record the gRPC request `call`, matched as `route`, under (see
    /// [`super::grpc`]).
    #[cfg(feature = "grpc")]
    pub(crate) fn grpc_route(&self, route: u32, call: &super::grpc::GrpcCall) -> u32 {
        call.route(route, &self.grpc_methods, &self.routes)
    }

    /// The template of the route `id`, for log lines (takes a lock: not for the request path).
    pub(crate) fn route_name(&self, id: u32) -> Option<std::sync::Arc<str>> {
        self.routes.name(id)
    }

    /// Whether a [`crate::routing`] handler has named a route of this core (not `unmatched`)
    /// so far: then the application names its routes with handlers, and a request nobody
    /// named is one its router did not match (the fallback's 404) or a handler without a name
    /// (a plain `axum::routing` one). Read only for such requests. (A service whose routes a
    /// [`MetricsLayer`](super::MetricsLayer) names records only what the layer sees, as
    /// before: routes added after `Router::layer` stay unrecorded.)
    #[inline]
    pub(crate) fn names_routes(&self) -> bool {
        self.names_routes.load(Ordering::Relaxed)
    }

    /// A raw timestamp for [`HttpMetrics::finish`] (one clock read).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.raw()
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
        self.start_by(method, route, count_active, NamedBy::Layer)
    }

    /// [`HttpMetrics::start`] for a route named `by` a layer or a [`crate::routing`] handler
    /// (which teaches the core that the application names routes: see `names_routes`).
    /// Always inlined: its fast path is a few instructions, and `by` a constant at each call.
    #[inline(always)]
    pub(crate) fn start_by(
        &'static self,
        method: u8,
        route: RouteName<'_>,
        count_active: bool,
        by: NamedBy,
    ) -> u32 {
        // The fast path: this thread's shard of this core is the one used last and knows the
        // route. Kept small (no closure calls, nothing that allocates) so that it inlines.
        let addr = route.addr();
        let hit = shard::with_current(self.id, move |shard| {
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
            Some(route) => route,
            None => self.start_cold(method, route, count_active, by),
        }
    }

    #[cold]
    #[inline(never)]
    fn start_cold(
        &'static self,
        method: u8,
        route: RouteName<'_>,
        count_active: bool,
        by: NamedBy,
    ) -> u32 {
        if by == NamedBy::Handler && route.name().is_some() {
            self.learn_names_routes();
        }
        let resolved = shard::with_shard(self.id, &self.store, |shard| {
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
            let id = self.routes.id(name);
            shard.routes.insert(addr, (route.keep_alive(), id));
            id
        });
        resolved.unwrap_or_else(|| {
            // No shard (the thread is exiting, or recording re-entered): count into the shared
            // totals.
            if count_active {
                self.store.add_active_unsharded(method, 1);
            }
            route
                .name()
                .map_or(UNMATCHED_ID, |name| self.routes.id(name))
        })
    }

    /// A handler named a route template: the application names routes (see `names_routes`).
    fn learn_names_routes(&self) {
        if !self.names_routes.load(Ordering::Relaxed) {
            self.names_routes.store(true, Ordering::Relaxed);
        }
    }

    /// Request end, for a request that started at `started` (from [`HttpMetrics::now`]): the
    /// second clock read, one histogram observation, and the active count back down.
    #[inline]
    pub(crate) fn finish(&'static self, key: SeriesKey, started: u64) {
        let nanos = self.clock.delta_as_nanos(started, self.clock.raw());
        self.observe(key, nanos);
    }

    /// [`HttpMetrics::finish`] for a sampled request of the trace `trace_id`: also the
    /// exemplar of the bucket it falls in.
    #[cold]
    #[inline(never)]
    pub(crate) fn finish_sampled(&'static self, key: SeriesKey, started: u64, trace_id: TraceId) {
        let nanos = self.clock.delta_as_nanos(started, self.clock.raw());
        self.observe(key, nanos);
        self.exemplars
            .record(key, &self.bounds_nanos, nanos, trace_id);
    }

    /// The exemplars by series labels (as [`LabelSet::text`] renders them): `(bucket index,
    /// exemplar)`.
    pub(crate) fn exemplars(&self) -> HashMap<String, Vec<(usize, Exemplar)>> {
        let by_key = self.exemplars.by_series();
        if by_key.is_empty() {
            return HashMap::new();
        }
        let series = self.store.series();
        by_key
            .into_iter()
            .filter_map(|(key, e)| Some((series.get(&key)?.labels.text.clone(), e)))
            .collect()
    }

    /// One histogram observation of `nanos` into the series `key`, and the active count of
    /// `key.method` back down.
    #[inline]
    pub(crate) fn observe(&'static self, key: SeriesKey, nanos: u64) {
        let packed = key.pack();
        let bounds = &self.bounds_nanos;
        // The fast path, as in `start`: this thread's current shard has the series.
        let hit = shard::with_current(self.id, move |shard| {
            let cells = shard.series.get(packed)?;
            cells.observe(bounds, nanos);
            shard.active.add(key.method, -1);
            Some(())
        });
        if hit.is_none() {
            self.observe_cold(key, nanos);
        }
    }

    #[cold]
    #[inline(never)]
    fn observe_cold(&'static self, key: SeriesKey, nanos: u64) {
        let bounds = &self.bounds_nanos;
        let packed = key.pack();
        let done = shard::with_shard(self.id, &self.store, |shard| {
            let cells = match shard.series.get(packed) {
                Some(c) => c,
                None => {
                    let c = self.store.new_cells(key, || self.label_set(key));
                    shard.series.insert(packed, c)
                }
            };
            cells.observe(bounds, nanos);
            shard.active.add(key.method, -1);
        });
        if done.is_none() {
            // No shard (the thread is exiting, or recording re-entered): record into the
            // series' shared totals, under its lock.
            self.store
                .observe_unsharded(key, || self.label_set(key), bounds, nanos);
            self.store.add_active_unsharded(key.method, -1);
        }
    }

    /// The labels of a new series.
    fn label_set(&self, key: SeriesKey) -> LabelSet {
        let route = self
            .routes
            .name(key.route)
            .unwrap_or_else(|| Arc::from(UNMATCHED_ROUTE));
        LabelSet::new(key, &route, &self.labels)
    }

    /// The number of histogram series (label sets) recorded so far.
    pub(crate) fn series_count(&self) -> usize {
        self.store.series().len()
    }

    /// Renders both HTTP metric families in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        self.renderer.text(out, &self.store, &self.labels);
    }

    /// Appends both HTTP metric families to `out` in the Prometheus protobuf exposition
    /// (length-delimited `MetricFamily` messages), native histogram fields included when
    /// recorded.
    pub(crate) fn render_protobuf(&self, out: &mut Vec<u8>) {
        super::protobuf::http_families(out, &self.renderer, &self.store, &self.labels);
    }

    /// Both HTTP metric families as `prometheus` protobuf models, for
    /// [`prometheus::core::Collector`].
    pub(crate) fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.renderer.families(&self.store, &self.labels)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::metrics::series::Incomplete;

    fn core() -> &'static HttpMetrics {
        HttpMetrics::leak(
            "1.2.3",
            &[("track".into(), "canary".into())],
            DEFAULT_BUCKETS,
            false,
            tokio_util::sync::CancellationToken::new(),
        )
    }

    fn ms(n: u64) -> u64 {
        n * 1_000_000
    }

    fn key(method: u8, route: u32, status: u16, error: Incomplete) -> SeriesKey {
        SeriesKey {
            method,
            route,
            status,
            error,
        }
    }

    #[test]
    fn observations_land_in_the_right_bucket_and_render_cumulatively() {
        let m = core();
        let r = m.start(0, RouteName::Static("/hello/{name}"), true);
        m.observe(key(0, r, 200, Incomplete::No), ms(3));
        let r = m.start(0, RouteName::Static("/hello/{name}"), true);
        m.observe(key(0, r, 200, Incomplete::No), ms(30));
        let r = m.start(2, RouteName::Unmatched, true);
        m.observe(key(2, r, 503, Incomplete::No), ms(200_000));
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
        std::thread::spawn(move || m.observe(key(2, r, 200, Incomplete::ClientAborted), 0))
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
                m.observe(key(0, r, 200, Incomplete::No), ms(1));
                let _left_active = m.start(2, RouteName::Static("/t"), true);
            })
            .join()
            .unwrap();
        }
        assert!(
            m.store.shard_count() <= 1,
            "exited threads' shards are gone"
        );
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
                    .observe(key(2, self.1, 200, Incomplete::ClientAborted), ms(1));
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
            out.contains("http_server_active_requests{http_request_method=\"POST\",version=\"1.2.3\",track=\"canary\"} 0\n"),
            "active back to 0: {out}"
        );
    }

    #[test]
    fn a_series_added_after_a_render_is_in_the_next_one_in_label_order() {
        let m = core();
        let r = m.start(0, RouteName::Static("/b"), true);
        m.observe(key(0, r, 200, Incomplete::No), 1_000);
        let mut first = String::new();
        m.render(&mut first);
        assert!(!first.contains("http_route=\"/a\""));
        let r = m.start(0, RouteName::Static("/a"), true);
        m.observe(key(0, r, 200, Incomplete::No), 1_000);
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
}
