//! The route hand-off between the metrics layer inside the router and podcycle's serving
//! stack outside it.
//!
//! Only the layer inside the router knows the route template (axum's `MatchedPath`), but the
//! serving stack already wraps every request and response body to count it in flight. So,
//! under [`Lifecycle::serve`](crate::Lifecycle::serve), the serving stack times and records the
//! request, and the layer only names its route: while the serving stack polls the request's
//! future it opens a thread-local slot; the layer, called synchronously inside that poll,
//! writes the route id into it and passes the response through with its body unwrapped (so
//! axum does not box it again). When no slot is open (another server, a layer called from
//! a spawned task), the layer records the request itself.

use std::cell::Cell;

/// What the slot holds: the core it is open for (0 = closed) and the route id once named.
#[derive(Clone, Copy)]
struct Slot {
    owner: usize,
    route: u32,
}

/// No route named yet.
pub(crate) const NO_ROUTE: u32 = u32::MAX;

const CLOSED: Slot = Slot {
    owner: 0,
    route: NO_ROUTE,
};

thread_local! {
    static SLOT: Cell<Slot> = const { Cell::new(CLOSED) };
}

/// Runs `poll` with the slot open for the metrics core `owner`; returns its result and the
/// route a layer of that core named meanwhile, if any. Nests: the previous slot is restored.
#[inline]
pub(crate) fn open<R>(owner: usize, poll: impl FnOnce() -> R) -> (R, Option<u32>) {
    let previous = SLOT.replace(Slot {
        owner,
        route: NO_ROUTE,
    });
    let result = poll();
    let named = SLOT.replace(previous);
    let route = (named.route != NO_ROUTE).then_some(named.route);
    (result, route)
}

/// What the layer finds when it is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No slot open for this core: the layer records the request itself.
    Closed,
    /// Open and unnamed: the layer names the route and counts the request active.
    Open,
    /// Already named by an outer layer (a nested router): the inner, more specific route wins,
    /// but the request is already counted active.
    Named,
}

/// Looks at the slot for the metrics core `owner`.
#[inline]
pub(crate) fn find(owner: usize) -> Found {
    let slot = SLOT.get();
    if slot.owner != owner {
        Found::Closed
    } else if slot.route == NO_ROUTE {
        Found::Open
    } else {
        Found::Named
    }
}

/// Names the route in the open slot (call only after [`find`] said it is open for `owner`).
#[inline]
pub(crate) fn name(owner: usize, route: u32) {
    SLOT.set(Slot { owner, route });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_names_the_route_only_in_a_slot_open_for_its_core() {
        assert_eq!(find(7), Found::Closed);
        let ((), named) = open(7, || {
            assert_eq!(find(8), Found::Closed, "another lifecycle's layer");
            assert_eq!(find(7), Found::Open);
            name(7, 3);
            assert_eq!(find(7), Found::Named);
            name(7, 4);
        });
        assert_eq!(named, Some(4), "the innermost layer's route wins");
        assert_eq!(find(7), Found::Closed, "closed after the poll");
        let ((), named) = open(7, || {});
        assert_eq!(named, None, "no layer ran");
    }

    #[test]
    fn slots_nest() {
        let ((), outer) = open(1, || {
            let ((), inner) = open(2, || name(2, 9));
            assert_eq!(inner, Some(9));
            assert_eq!(find(1), Found::Open, "the outer slot is back");
            name(1, 5);
        });
        assert_eq!(outer, Some(5));
    }
}
