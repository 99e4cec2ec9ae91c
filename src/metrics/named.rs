//! Naming a request's route from inside the router without a `Router::layer` wrapper: what a
//! [`podcycle::routing`](crate::routing) handler does before it runs (see [`super::handoff`]).

use axum::extract::MatchedPath;
use http::Request;

use super::handoff::{self, Found};
use super::recorder::NamedBy;
use super::routes::RouteName;
use super::series::method_index;

/// Names the route of `req` (its `MatchedPath`, else `unmatched`) in the serving stack's
/// hand-off slot, if one is open, and counts the request active unless an outer
/// [`MetricsLayer`](super::MetricsLayer) named it already. No slot open (not under
/// [`Lifecycle::serve`](crate::Lifecycle::serve), or called from a spawned task): nothing.
#[inline]
pub(crate) fn name_route<B>(req: &Request<B>) {
    let Some((core, found)) = handoff::current() else {
        return;
    };
    let route = match req.extensions().get::<MatchedPath>() {
        Some(matched) => RouteName::Matched(matched),
        None => RouteName::Unmatched,
    };
    let id = core.start_by(
        method_index(req.method()),
        route,
        found == Found::Open,
        NamedBy::Handler,
    );
    handoff::name(core, id);
}

/// Marks the request being served as not to be recorded (a scrape of
/// [`Metrics::router`](super::Metrics::router)), unless an outer layer named it already (then
/// it is recorded under its route, as before).
pub(crate) fn unrecorded() {
    if let Some((core, Found::Open)) = handoff::current() {
        handoff::name(core, handoff::UNRECORDED);
    }
}
