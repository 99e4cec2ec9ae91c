//! What the metrics know about gRPC (feature `grpc`): which requests are gRPC, their status
//! (`grpc-status`, in the response headers of a trailers-only response or in the trailers),
//! and the full method as their route.
//!
//! ```text
//! let call = GrpcCall::of(&req);                       // Some for HTTP/2 + application/grpc*
//! call.observe(res.headers());                         // trailers-only: status in the headers
//! call.observe(trailers);                              // or in the trailers
//! call.status                                          // 14: error_type="UNAVAILABLE"
//! ```
//!
//! The route: tonic's `Routes` give each service one axum route, `/pkg.Service/{*rest}`, so
//! the matched template does not tell the method. A gRPC request matched by such a template
//! is recorded under its path, `/pkg.Service/Method`, once it is answered with any status but
//! `UNIMPLEMENTED` (what tonic answers for a method the service does not have): only methods
//! that exist become routes, so a scanner cannot create series; past [`METHOD_LIMIT`]
//! methods, new ones keep the template.
//!
//! Resolving the method's route id is lock-free on the common path: each thread keeps a
//! cache (a [`U64Table`] keyed by a hash of the core, the template and the path, holding
//! the path to compare), and takes the core's lock only on a miss.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Version};

use super::routes::Routes;
use super::table::U64Table;

/// The status code tonic answers for a method the service does not have.
const UNIMPLEMENTED: u8 = 12;

/// At most this many methods become routes of their own (a service has tens).
pub(crate) const METHOD_LIMIT: usize = 1024;

/// A gRPC request being timed: its path and the status seen so far (0: none, or `OK`).
#[derive(Debug)]
pub(crate) struct GrpcCall {
    path: Option<PathAndQuery>,
    pub(crate) status: u8,
}

impl GrpcCall {
    /// `Some` when `req` is a gRPC request: HTTP/2 with a `content-type` of
    /// `application/grpc` (or `application/grpc+proto` and the like). An HTTP/1 request
    /// costs one comparison.
    #[inline]
    pub(crate) fn of<B>(req: &Request<B>) -> Option<GrpcCall> {
        if req.version() != Version::HTTP_2 {
            return None;
        }
        let grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        grpc.then(|| GrpcCall {
            path: req.uri().path_and_query().cloned(),
            status: 0,
        })
    }

    /// Takes the status from `grpc-status` in `headers` (response headers or trailers), if
    /// there. A value that is not a status code 1 to 16 counts as `UNKNOWN` (2).
    pub(crate) fn observe(&mut self, headers: &HeaderMap) {
        if let Some(v) = headers.get("grpc-status") {
            self.status = match v.to_str().ok().and_then(|s| s.parse::<u8>().ok()) {
                Some(0) => 0,
                Some(code @ 1..=16) => code,
                _ => 2,
            };
        }
    }

    /// The route id to record under: the method's own when `route` is a whole service's
    /// template and the method exists (see the module docs), else `route`.
    pub(crate) fn route(&self, route: u32, methods: &GrpcMethods, routes: &Routes) -> u32 {
        if self.status == UNIMPLEMENTED {
            return route;
        }
        match self.path.as_ref() {
            Some(path) => methods.route(route, path.path(), routes),
            None => route,
        }
    }
}

/// The gRPC methods of one metrics core that have a route id of their own.
#[derive(Debug)]
pub(crate) struct GrpcMethods {
    /// Tells this core's entries in the threads' caches from other cores' (never reused).
    core: u64,
    /// `(template, path)` to the route id: the source of truth, taken on a thread's miss.
    methods: Mutex<HashMap<(u32, Box<str>), u32>>,
}

impl Default for GrpcMethods {
    fn default() -> GrpcMethods {
        static NEXT_CORE: AtomicU64 = AtomicU64::new(0);
        GrpcMethods {
            core: NEXT_CORE.fetch_add(1, Ordering::Relaxed),
            methods: Mutex::default(),
        }
    }
}

/// One entry of a thread's cache: what the key was hashed from, and the answer.
struct Cached {
    core: u64,
    template: u32,
    path: Box<str>,
    route: u32,
}

/// A thread's cache holds at most this many entries, then starts over (entries of metrics
/// cores that are gone stay until then).
const CACHE_LIMIT: usize = 4 * METHOD_LIMIT;

thread_local! {
    static CACHE: RefCell<U64Table<Cached>> = RefCell::new(U64Table::new());
}

/// FNV-1a over the core, the template and the path: a few instructions per byte, and
/// never the table's empty key.
#[inline]
fn cache_key(core: u64, template: u32, path: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut h = 0xCBF2_9CE4_8422_2325_u64 ^ core.wrapping_mul(PRIME) ^ u64::from(template);
    for b in path.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h.min(u64::MAX - 1)
}

impl GrpcMethods {
    /// The route id of the method at `path` if `template` (the route id the request matched)
    /// is `/<service>/{*rest}` and `path` is `/<service>/<method>`; else `template`. From
    /// this thread's cache when it has the answer; else from [`Self::resolve`], cached.
    fn route(&self, template: u32, path: &str, routes: &Routes) -> u32 {
        let key = cache_key(self.core, template, path);
        let hit = CACHE
            .try_with(|cache| {
                let cache = cache.try_borrow().ok()?;
                let c = cache.get(key)?;
                (c.core == self.core && c.template == template && *c.path == *path)
                    .then_some(c.route)
            })
            .ok()
            .flatten();
        if let Some(route) = hit {
            return route;
        }
        let route = self.resolve(template, path, routes);
        let _ = CACHE.try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return;
            };
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            // On a key collision the older entry stays, and this one takes the lock each time.
            cache.insert(
                key,
                Cached {
                    core: self.core,
                    template,
                    path: path.into(),
                    route,
                },
            );
        });
        route
    }

    /// [`Self::route`] under the core's lock. A method refused for the limit is not
    /// remembered here, so a thread's cache may hold the template for it: the same answer
    /// every later call gets.
    fn resolve(&self, template: u32, path: &str, routes: &Routes) -> u32 {
        let mut methods = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = methods.get(&(template, Box::<str>::from(path))) {
            return *id;
        }
        let Some(name) = routes.name(template) else {
            return template;
        };
        let Some(service) = name.strip_suffix("{*rest}") else {
            return template;
        };
        let method_of_service = path
            .strip_prefix(service)
            .is_some_and(|m| !m.is_empty() && !m.contains('/'));
        if !method_of_service {
            return template;
        }
        if methods.len() >= METHOD_LIMIT {
            return template;
        }
        let id = routes.id(path);
        methods.insert((template, path.into()), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str, content_type: &str, version: Version) -> Option<GrpcCall> {
        let req = Request::builder()
            .version(version)
            .uri(path)
            .header(CONTENT_TYPE, content_type)
            .body(())
            .unwrap();
        GrpcCall::of(&req)
    }

    #[test]
    fn grpc_requests_are_http2_with_a_grpc_content_type() {
        assert!(call("/a.B/C", "application/grpc", Version::HTTP_2).is_some());
        assert!(call("/a.B/C", "application/grpc+proto", Version::HTTP_2).is_some());
        assert!(call("/a.B/C", "application/json", Version::HTTP_2).is_none());
        assert!(call("/a.B/C", "application/grpc", Version::HTTP_11).is_none());
    }

    #[test]
    fn the_status_comes_from_grpc_status() {
        let mut c = call("/a.B/C", "application/grpc", Version::HTTP_2).unwrap();
        let mut h = HeaderMap::new();
        c.observe(&h);
        assert_eq!(c.status, 0, "absent");
        h.insert("grpc-status", "14".parse().unwrap());
        c.observe(&h);
        assert_eq!(c.status, 14);
        h.insert("grpc-status", "0".parse().unwrap());
        c.observe(&h);
        assert_eq!(c.status, 0);
        h.insert("grpc-status", "99".parse().unwrap());
        c.observe(&h);
        assert_eq!(c.status, 2, "UNKNOWN");
    }

    #[test]
    fn only_methods_that_exist_of_a_matched_service_become_routes() {
        let routes = Routes::new();
        let methods = GrpcMethods::default();
        let service = routes.id("/a.B/{*rest}");
        let other = routes.id("/v1/chat");
        let mut c = call("/a.B/Ask", "application/grpc", Version::HTTP_2).unwrap();
        let ask = c.route(service, &methods, &routes);
        assert_ne!(ask, service);
        assert_eq!(routes.name(ask).as_deref(), Some("/a.B/Ask"));
        assert_eq!(c.route(service, &methods, &routes), ask, "interned once");
        c.status = UNIMPLEMENTED;
        assert_eq!(c.route(service, &methods, &routes), service);
        let c = call("/x.Y/Z", "application/grpc", Version::HTTP_2).unwrap();
        assert_eq!(
            c.route(other, &methods, &routes),
            other,
            "not a service template"
        );
        let c = call("/a.B/C/D", "application/grpc", Version::HTTP_2).unwrap();
        assert_eq!(
            c.route(service, &methods, &routes),
            service,
            "not one method"
        );
    }

    #[test]
    fn each_core_has_its_own_answers_on_one_thread() {
        let (routes_a, routes_b) = (Routes::new(), Routes::new());
        let (methods_a, methods_b) = (GrpcMethods::default(), GrpcMethods::default());
        routes_b.id("/taken/first");
        let (sa, sb) = (routes_a.id("/a.B/{*rest}"), routes_b.id("/a.B/{*rest}"));
        let c = call("/a.B/Ask", "application/grpc", Version::HTTP_2).unwrap();
        let a = c.route(sa, &methods_a, &routes_a);
        let b = c.route(sb, &methods_b, &routes_b);
        assert_eq!(routes_a.name(a).as_deref(), Some("/a.B/Ask"));
        assert_eq!(routes_b.name(b).as_deref(), Some("/a.B/Ask"));
        assert_ne!(a, b, "ids of different cores");
        for _ in 0..3 {
            assert_eq!(c.route(sa, &methods_a, &routes_a), a);
            assert_eq!(c.route(sb, &methods_b, &routes_b), b);
        }
    }

    #[test]
    fn past_the_limit_new_methods_keep_the_template_on_every_thread() {
        let routes = Routes::new();
        let methods = GrpcMethods::default();
        let service = routes.id("/a.B/{*rest}");
        for i in 0..METHOD_LIMIT {
            let c = call(&format!("/a.B/M{i}"), "application/grpc", Version::HTTP_2).unwrap();
            assert_ne!(c.route(service, &methods, &routes), service);
        }
        let late = call("/a.B/Late", "application/grpc", Version::HTTP_2).unwrap();
        assert_eq!(late.route(service, &methods, &routes), service);
        let first = call("/a.B/M0", "application/grpc", Version::HTTP_2).unwrap();
        let here = first.route(service, &methods, &routes);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(late.route(service, &methods, &routes), service);
                assert_eq!(first.route(service, &methods, &routes), here);
            });
        });
    }
}
