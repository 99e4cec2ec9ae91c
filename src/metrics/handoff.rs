//! The route hand-off between what names a request's route inside the router (a
//! [`podcycle::routing`](crate::routing) handler, a [`MetricsLayer`](super::MetricsLayer)) and
//! podcycle's serving stack outside it.
//!
//! Only code inside the router knows the route template (axum's `MatchedPath`), but the
//! serving stack already wraps every request and response body to count it in flight. So,
//! under [`Lifecycle::serve`](crate::Lifecycle::serve), the serving stack times and records the
//! request, and the code inside only names its route: while the serving stack polls the
//! request's future it opens a thread-local slot for its metrics core; a named handler or a
//! layer, called synchronously inside that poll, resolves the route to an id with that core
//! and writes it into the slot. When no slot is open (another server, a call from a spawned
//! task), a named handler names nothing and a layer records the request itself.

use std::cell::Cell;

use super::recorder::HttpMetrics;

/// What the slot holds: the core it is open for (`None`: closed) and the route id once named.
#[derive(Clone, Copy)]
struct Slot {
    owner: Option<&'static HttpMetrics>,
    route: u32,
}

/// No route named yet.
pub(crate) const NO_ROUTE: u32 = u32::MAX;

/// Named "not to be recorded" (the scrapes of [`Metrics::router`](super::Metrics::router)).
pub(crate) const UNRECORDED: u32 = u32::MAX - 1;

const CLOSED: Slot = Slot {
    owner: None,
    route: NO_ROUTE,
};

thread_local! {
    static SLOT: Cell<Slot> = const { Cell::new(CLOSED) };
}

/// Runs `poll` with the slot open for the metrics core `owner`; returns its result and the
/// route named meanwhile, if any. Nests: the previous slot is restored.
#[inline]
pub(crate) fn open<R>(owner: &'static HttpMetrics, poll: impl FnOnce() -> R) -> (R, Option<u32>) {
    let previous = SLOT.replace(Slot {
        owner: Some(owner),
        route: NO_ROUTE,
    });
    let result = poll();
    let named = SLOT.replace(previous);
    let route = (named.route != NO_ROUTE).then_some(named.route);
    (result, route)
}

/// What a layer or a named handler finds when it is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No slot open (for this core): a layer records the request itself, a named handler
    /// names nothing.
    Closed,
    /// Open and unnamed: name the route and count the request active.
    Open,
    /// Already named by an outer layer (a nested router): the inner, more specific route wins,
    /// but the request is already counted active.
    Named,
}

impl Found {
    fn of(slot: Slot) -> Found {
        if slot.route == NO_ROUTE {
            Found::Open
        } else {
            Found::Named
        }
    }
}

/// Looks at the slot for the metrics core `owner` (a layer's).
#[inline]
pub(crate) fn find(owner: &'static HttpMetrics) -> Found {
    let slot = SLOT.get();
    match slot.owner {
        Some(open) if std::ptr::eq(open, owner) => Found::of(slot),
        _ => Found::Closed,
    }
}

/// The core the slot is open for, if any, and what it holds (a named handler's look: it has
/// no core of its own).
#[inline]
pub(crate) fn current() -> Option<(&'static HttpMetrics, Found)> {
    let slot = SLOT.get();
    Some((slot.owner?, Found::of(slot)))
}

/// Names the route in the open slot (call only after [`find`] or [`current`] said it is
/// open for `owner`).
#[inline]
pub(crate) fn name(owner: &'static HttpMetrics, route: u32) {
    SLOT.set(Slot {
        owner: Some(owner),
        route,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DEFAULT_BUCKETS;

    fn core() -> &'static HttpMetrics {
        HttpMetrics::leak(
            "1",
            &[],
            DEFAULT_BUCKETS,
            false,
            tokio_util::sync::CancellationToken::new(),
        )
    }

    #[test]
    fn a_layer_names_the_route_only_in_a_slot_open_for_its_core() {
        let (a, b) = (core(), core());
        assert_eq!(find(a), Found::Closed);
        assert!(current().is_none());
        let ((), named) = open(a, || {
            assert_eq!(find(b), Found::Closed, "another lifecycle's layer");
            assert_eq!(find(a), Found::Open);
            assert!(matches!(current(), Some((c, Found::Open)) if std::ptr::eq(c, a)));
            name(a, 3);
            assert_eq!(find(a), Found::Named);
            assert!(matches!(current(), Some((_, Found::Named))));
            name(a, 4);
        });
        assert_eq!(named, Some(4), "the innermost name wins");
        assert_eq!(find(a), Found::Closed, "closed after the poll");
        assert!(current().is_none());
        let ((), named) = open(a, || {});
        assert_eq!(named, None, "nothing named");
    }

    #[test]
    fn slots_nest() {
        let (a, b) = (core(), core());
        let ((), outer) = open(a, || {
            let ((), inner) = open(b, || name(b, 9));
            assert_eq!(inner, Some(9));
            assert_eq!(find(a), Found::Open, "the outer slot is back");
            name(a, 5);
        });
        assert_eq!(outer, Some(5));
    }
}
