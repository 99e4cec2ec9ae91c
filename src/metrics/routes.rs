//! Route interning: each route template gets a small id once, and the request path carries
//! the id (in a [`SeriesKey`](super::series::SeriesKey)) instead of the string.
//!
//! ```text
//! let routes = Routes::new();
//! let id = routes.id("/hello/{name}");      // the first time: under a lock, once per shard
//! assert_eq!(routes.name(id).as_deref(), Some("/hello/{name}"));
//! assert_eq!(routes.name(UNMATCHED_ID).as_deref(), Some(UNMATCHED_ROUTE));
//! ```
//!
//! Shards cache ids by the template's address ([`RouteName::addr`]), so a route is not hashed
//! or compared per request.

use std::sync::{Arc, Mutex};

use super::series::ROUTE_LIMIT;

pub use super::schema::UNMATCHED_ROUTE;

/// The route id of [`UNMATCHED_ROUTE`]: the first one.
pub(crate) const UNMATCHED_ID: u32 = 0;

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
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            RouteName::Static(s) => Some(s),
            RouteName::Matched(m) => Some(m.as_str()),
            RouteName::Unmatched => None,
        }
    }

    /// The template's address, what a shard caches route ids by; 0 for [`RouteName::Unmatched`].
    #[inline]
    pub(crate) fn addr(&self) -> u64 {
        match self {
            RouteName::Static(s) => s.as_ptr() as u64,
            RouteName::Matched(m) => m.as_str().as_ptr() as u64,
            RouteName::Unmatched => 0,
        }
    }

    /// What a shard's cache must hold to keep the template at its address.
    pub(crate) fn keep_alive(&self) -> Option<axum::extract::MatchedPath> {
        match self {
            RouteName::Matched(m) => Some((*m).clone()),
            _ => None,
        }
    }
}

/// The route templates of one metrics core, by id.
#[derive(Debug)]
pub(crate) struct Routes(Mutex<Vec<Arc<str>>>);

impl Routes {
    pub(crate) fn new() -> Routes {
        Routes(Mutex::new(vec![Arc::from(UNMATCHED_ROUTE)]))
    }

    /// The id of `route`, interned if new. Past [`ROUTE_LIMIT`] templates (millions, where a
    /// router has tens) new ones count as [`UNMATCHED_ROUTE`] rather than overflow the key.
    pub(crate) fn id(&self, route: &str) -> u32 {
        let mut routes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match routes.iter().position(|r| &**r == route) {
            Some(i) => i as u32,
            None if routes.len() >= ROUTE_LIMIT as usize => UNMATCHED_ID,
            None => {
                routes.push(Arc::from(route));
                (routes.len() - 1) as u32
            }
        }
    }

    /// The template of the route `id`.
    pub(crate) fn name(&self, id: u32) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id as usize)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_interned_once() {
        let routes = Routes::new();
        let a = routes.id("/a");
        assert_eq!(routes.id("/b"), a + 1);
        assert_eq!(routes.id("/a"), a);
        assert_eq!(routes.name(a).as_deref(), Some("/a"));
        assert_eq!(routes.name(UNMATCHED_ID).as_deref(), Some(UNMATCHED_ROUTE));
        assert_eq!(routes.name(99), None);
    }
}
