//! The check that a [`MetricsLayer`](super::MetricsLayer) sits inside the router.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Warns once when a [`MetricsLayer`](super::MetricsLayer) sits outside the router: then no request carries a
/// `MatchedPath`, and every one is recorded as `http_route="unmatched"`. The sign: a request
/// without a matched route that was answered with something other than 404 (inside the
/// router, those are the fallback's 404s). Only the first [`PlacementCheck::CHECKED`]
/// unmatched requests are looked at, and none once a matched one was seen: one relaxed load
/// per request after that.
///
/// It also warns once when the serving stack records a request nobody named although the
/// application names routes ([`PlacementCheck::unnamed_answered`]): a handler from
/// `axum::routing` among [`crate::routing`] ones.
#[derive(Debug, Default)]
pub(crate) struct PlacementCheck {
    unmatched: AtomicU32,
    done: AtomicBool,
    unnamed_warned: AtomicBool,
}

impl PlacementCheck {
    const CHECKED: u32 = 64;

    /// A request had a matched route: the layer is inside the router.
    #[inline]
    pub(super) fn matched(&self) {
        if !self.done.load(Ordering::Relaxed) {
            self.done.store(true, Ordering::Relaxed);
        }
    }

    /// Whether this unmatched request's status should be looked at.
    #[inline]
    pub(super) fn watching(&self) -> bool {
        if self.done.load(Ordering::Relaxed) {
            return false;
        }
        if self.unmatched.fetch_add(1, Ordering::Relaxed) >= Self::CHECKED {
            self.done.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The serving stack records a request answered with `status` (0: no answer) that no
    /// named handler or layer saw, while the application names routes: not a 404 (the
    /// router's fallback), it was most likely served by a handler without a name. Called only
    /// for such requests.
    #[cold]
    pub(super) fn unnamed_answered(&self, status: u16) {
        if !matches!(status, 0 | 404) && !self.unnamed_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                status,
                "a request was answered without its route being named, and is recorded as \
                 http_route=\"unmatched\": its handler seems to come from axum::routing (or \
                 a MethodRouter method such as .post(..)) rather than podcycle::routing; use \
                 podcycle::routing's functions (or podcycle::routing::named) for every \
                 handler, or add lifecycle.metrics().layer() with Router::layer. A fallback \
                 that answers other than 404 also shows this"
            );
        }
    }

    pub(super) fn unmatched_answered(&self, status: http::StatusCode) {
        if status != http::StatusCode::NOT_FOUND && !self.done.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                status = status.as_u16(),
                "MetricsLayer saw a request answered without a matched route: it seems to sit \
                 outside the router, where axum's MatchedPath is not visible, so every request \
                 is recorded as http_route=\"unmatched\"; add it with Router::layer (or give it \
                 a route_fn). A fallback that answers other than 404 also shows this"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placement_check_warns_once_and_stops_looking() {
        let check = PlacementCheck::default();
        assert!(check.watching());
        check.unmatched_answered(http::StatusCode::NOT_FOUND);
        assert!(
            !check.done.load(Ordering::Relaxed),
            "a 404 is the router's fallback"
        );
        check.unmatched_answered(http::StatusCode::OK);
        assert!(
            check.done.load(Ordering::Relaxed),
            "a 200 without a route: outside"
        );
        assert!(!check.watching());

        let inside = PlacementCheck::default();
        inside.matched();
        assert!(!inside.watching(), "a matched route ends the check");

        let named = PlacementCheck::default();
        named.unnamed_answered(404);
        named.unnamed_answered(0);
        assert!(
            !named.unnamed_warned.load(Ordering::Relaxed),
            "the fallback's 404, an unanswered request: no warning"
        );
        named.unnamed_answered(200);
        assert!(
            named.unnamed_warned.load(Ordering::Relaxed),
            "a handler without a name"
        );
        assert!(named.watching(), "a check of its own");

        let quiet = PlacementCheck::default();
        for _ in 0..PlacementCheck::CHECKED {
            assert!(quiet.watching());
        }
        assert!(!quiet.watching(), "bounded");
    }
}
