//! Probe endpoints in the kube-apiserver style: `/livez`, `/readyz`, `/startupz`, each with
//! per-check sub-paths (`/readyz/<check>`), `?verbose` and `?exclude=<check>` (repeatable).
//! Text by default, JSON with `Accept: application/json`; 200 when passing, 503 when not.
//!
//! Probes answer from state that is already known (the phase, warm-up status, the last result
//! of each check); they never wait on a dependency.
//!
//! # Example: probes on the application port
//! ```no_run
//! # async fn run() -> Result<(), podcycle::Error> {
//! let lifecycle = podcycle::Lifecycle::from_env(env!("CARGO_PKG_VERSION"))?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .merge(lifecycle.probes().router());
//! lifecycle.serve(app).await;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::health::{Endpoint, Health, Line};

/// The probe endpoints as a tower `Service`, for mounting on an application router.
/// Obtain one with [`Lifecycle::probes`](crate::Lifecycle::probes).
#[derive(Clone, Debug)]
pub struct Probes {
    pub(crate) health: Arc<Health>,
}

impl Probes {
    /// An axum router serving `/livez`, `/readyz`, `/startupz` and their sub-paths.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let mut router = axum::Router::new();
        for endpoint in ["livez", "readyz", "startupz"] {
            router = router
                .route_service(&format!("/{endpoint}"), self.clone())
                .route_service(&format!("/{endpoint}/{{*check}}"), self.clone());
        }
        router
    }

    /// Answers one probe request (any path not a probe gets 404).
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        respond(&self.health, req)
    }
}

impl<B> tower::Service<Request<B>> for Probes {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(respond(&self.health, &req)))
    }
}

/// The most `?exclude=` parameters one probe request may carry; more get `400 Bad Request`
/// (a probe with hundreds of exclusions is an attack, not a configuration).
pub const MAX_EXCLUDES: usize = 64;

pub(crate) fn respond<B>(health: &Health, req: &Request<B>) -> Response<Full<Bytes>> {
    let json = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json,
            "method not allowed\n".into(),
            None,
        );
    }
    let path = req.uri().path();
    let (endpoint, sub) = match split_path(path) {
        Some(x) => x,
        None => return reply(StatusCode::NOT_FOUND, json, "not found\n".into(), None),
    };
    let mut verbose = false;
    let mut exclude: Vec<String> = Vec::new();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*k {
            "verbose" => verbose = v != "false" && v != "0",
            "exclude" => exclude.push(v.into_owned()),
            _ => {}
        }
    }
    if exclude.len() > MAX_EXCLUDES {
        return reply(
            StatusCode::BAD_REQUEST,
            json,
            format!(
                "too many exclude parameters: {} (at most {MAX_EXCLUDES})\n",
                exclude.len()
            ),
            None,
        );
    }
    let all = health.report(endpoint);
    if let Some(check) = sub {
        let check = percent_encoding::percent_decode_str(check).decode_utf8_lossy();
        return match all.iter().find(|l| l.name == check) {
            None => reply(
                StatusCode::NOT_FOUND,
                json,
                format!("no check named {check:?} in /{}\n", endpoint.as_str()),
                None,
            ),
            Some(l) => {
                let (status, text) = match &l.result {
                    Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                    Err(e) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("internal server error: {e}\n"),
                    ),
                };
                reply(
                    status,
                    json,
                    text,
                    Some((endpoint, std::slice::from_ref(l), &[])),
                )
            }
        };
    }
    // Sets, so that many excludes cost linear time, not quadratic.
    let names: HashSet<&str> = all.iter().map(|l| l.name.as_str()).collect();
    let excluded: HashSet<&str> = exclude.iter().map(String::as_str).collect();
    let unmatched: Vec<String> = exclude
        .iter()
        .filter(|e| !names.contains(e.as_str()))
        .cloned()
        .collect();
    let included: Vec<Line> = all
        .iter()
        .filter(|l| !excluded.contains(l.name.as_str()))
        .cloned()
        .collect();
    let ok = included.iter().all(|l| !l.gating || l.result.is_ok());
    let mut text = String::new();
    if verbose || !ok {
        for l in &included {
            match (&l.result, l.gating) {
                (Ok(()), _) => {
                    let _ = writeln!(text, "[+]{} ok", l.name);
                }
                (Err(e), true) => {
                    let _ = writeln!(text, "[-]{} failed: {e}", l.name);
                }
                (Err(e), false) => {
                    let _ = writeln!(text, "[-]{} failed (not gating): {e}", l.name);
                }
            }
        }
        for e in &exclude {
            if names.contains(e.as_str()) {
                let _ = writeln!(text, "[+]{e} excluded: ok");
            }
        }
        if !unmatched.is_empty() {
            let _ = writeln!(
                text,
                "warn: some checks cannot be excluded: no matches for {}",
                unmatched
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        let _ = writeln!(
            text,
            "{} check {}",
            endpoint.as_str(),
            if ok { "passed" } else { "failed" }
        );
    } else {
        text.push_str("ok\n");
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, json, text, Some((endpoint, &included, &unmatched)))
}

fn reply(
    status: StatusCode,
    json: bool,
    text: String,
    detail: Option<(Endpoint, &[Line], &[String])>,
) -> Response<Full<Bytes>> {
    let (body, content_type) = if json {
        let value = match detail {
            Some((endpoint, lines, unmatched)) => serde_json::json!({
                "probe": endpoint.as_str(),
                "status": if status == StatusCode::OK { "ok" } else { "failed" },
                "checks": lines.iter().map(|l| serde_json::json!({
                    "name": l.name,
                    "ok": l.result.is_ok(),
                    "gating": l.gating,
                    "reason": l.result.as_ref().err(),
                })).collect::<Vec<_>>(),
                "unmatched_excludes": unmatched,
            }),
            None => serde_json::json!({ "error": text.trim_end() }),
        };
        (Bytes::from(value.to_string()), "application/json")
    } else {
        (Bytes::from(text), "text/plain; charset=utf-8")
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn split_path(path: &str) -> Option<(Endpoint, Option<&str>)> {
    let trimmed = path.strip_prefix('/')?;
    let (head, rest) = match trimmed.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (trimmed, None),
    };
    let endpoint = match head {
        "livez" => Endpoint::Livez,
        "readyz" => Endpoint::Readyz,
        "startupz" => Endpoint::Startupz,
        _ => return None,
    };
    Some((endpoint, rest.filter(|r| !r.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path("/readyz"), Some((Endpoint::Readyz, None)));
        assert_eq!(split_path("/readyz/"), Some((Endpoint::Readyz, None)));
        assert_eq!(
            split_path("/readyz/warmup/kb"),
            Some((Endpoint::Readyz, Some("warmup/kb")))
        );
        assert_eq!(split_path("/metrics"), None);
        assert_eq!(split_path("/readyzz"), None);
    }
}
