//! axum's routing functions, with each handler naming its route for the metrics: the fast way
//! to record `http_route` under [`Lifecycle::serve`](crate::Lifecycle::serve).
//!
//! [`get`], [`post`], [`put`], [`delete`], [`patch`], [`head`], [`options`], [`trace`],
//! [`any`] and [`on`] take the same handlers and return the same [`MethodRouter`] as
//! `axum::routing`'s; only the import changes, and `.layer(lifecycle.metrics().layer())`
//! goes away. Each wraps its handler in [`Named`], which, when called, names the request's
//! route template (axum's `MatchedPath`) to the serving stack, which times and records the
//! request (`http_server_request_duration_seconds`, `http_server_active_requests`, every
//! label, panics and aborts exactly as with [`MetricsLayer`](crate::MetricsLayer)). axum
//! boxes the handler once, as it does without any layer: `Router::layer` instead wraps every
//! route in one more boxed service and future, which costs more per request than recording
//! it (see the metrics guide, `docs/metrics.md`).
//!
//! # Example
//! ```no_run
//! use podcycle::routing::{get, named, post};
//!
//! # async fn run() -> Result<(), podcycle::Error> {
//! let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
//! let app = axum::Router::new()
//!     // http_route="/hello/{name}"
//!     .route("/hello/{name}", get(|| async { "hi" }))
//!     // A MethodRouter's own methods take axum's handlers: wrap them with `named`.
//!     .route("/items", get(|| async { "[]" }).post(named(|| async { "added" })))
//!     .nest("/api", axum::Router::new().route("/chat", post(|| async { "answer" })));
//! lifecycle.serve(app).await;
//! # Ok(()) }
//! ```
//!
//! # What is recorded
//! - A request whose handler is [`Named`]: with its route template; in a nested router, the
//!   full one (`/api/chat` above). An outer `MetricsLayer` may stay: the request is still
//!   recorded once, with the innermost route.
//! - A request no named handler sees (the router's fallback `404`, a handler from
//!   `axum::routing`): recorded as `http_route="unmatched"` (with its status), once the
//!   application has named any route, so that a service that names no routes at all records
//!   nothing. Such a request is counted in `http_server_active_requests` only as it ends,
//!   not while it runs. A non-`404` answer without a name is logged once as a warning: it is
//!   most likely a handler from `axum::routing` among these.
//! - Only under `Lifecycle::serve` (its serving stack does the timing): with `axum::serve`
//!   or another server, and for tower services (tonic's, `route_service`), use
//!   [`Metrics::layer`](crate::metrics::Metrics::layer), the general way.
//!
//! Without the `metrics` feature these are axum's functions: the handlers name nothing.

use std::fmt;

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};

/// A handler that names its route for the metrics before it runs (see the [module
/// docs](self)). Made by this module's functions, or by [`named`] for a [`MethodRouter`]'s own
/// methods (`get(a).post(named(b))`).
#[derive(Clone, Copy)]
pub struct Named<H>(H);

impl<H> fmt::Debug for Named<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named").finish_non_exhaustive()
    }
}

impl<H, T, S> Handler<T, S> for Named<H>
where
    H: Handler<T, S>,
{
    type Future = H::Future;

    /// Names the route of `req` to the serving stack (one thread-local look when no serving
    /// stack is recording), then calls the handler.
    #[inline]
    fn call(self, req: axum::extract::Request, state: S) -> Self::Future {
        #[cfg(feature = "metrics")]
        crate::metrics::name_route(&req);
        self.0.call(req, state)
    }
}

/// `handler`, naming its route for the metrics: for a [`MethodRouter`]'s own methods, which
/// take any handler (`get(a).post(named(b))`), and for `Router::route_service` and the like
/// through `Handler::with_state`.
pub fn named<H>(handler: H) -> Named<H> {
    Named(handler)
}

macro_rules! named_fn {
    ($name:ident, $method:literal) => {
        #[doc = concat!("Routes `", $method, "` requests to `handler`, which names its route: `axum::routing::", stringify!($name), "` with a [`Named`] handler.")]
        pub fn $name<H, T, S>(handler: H) -> MethodRouter<S>
        where
            H: Handler<T, S>,
            T: 'static,
            S: Clone + Send + Sync + 'static,
        {
            axum::routing::$name(Named(handler))
        }
    };
}

named_fn!(get, "GET");
named_fn!(post, "POST");
named_fn!(put, "PUT");
named_fn!(delete, "DELETE");
named_fn!(patch, "PATCH");
named_fn!(head, "HEAD");
named_fn!(options, "OPTIONS");
named_fn!(trace, "TRACE");

/// Routes requests of every method to `handler`, which names its route: `axum::routing::any`
/// with a [`Named`] handler.
pub fn any<H, T, S>(handler: H) -> MethodRouter<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::any(Named(handler))
}

/// Routes requests matching `filter` to `handler`, which names its route:
/// `axum::routing::on` with a [`Named`] handler.
pub fn on<H, T, S>(filter: MethodFilter, handler: H) -> MethodRouter<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::on(filter, Named(handler))
}
