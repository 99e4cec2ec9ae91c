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

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::checks::Probe;
use crate::phase::Phase;
use crate::state::Shared;
use crate::warmup::WarmupStatus;

/// The probe endpoints as a tower `Service`, for mounting on an application router.
/// Obtain one with [`Lifecycle::probes`](crate::Lifecycle::probes).
#[derive(Clone, Debug)]
pub struct Probes {
    pub(crate) shared: Arc<Shared>,
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
        respond(&self.shared, req)
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
        ready(Ok(respond(&self.shared, &req)))
    }
}

/// One named check and its current result, as a probe reports it.
struct Line {
    name: String,
    result: Result<(), String>,
}

fn lines(shared: &Shared, endpoint: Endpoint) -> Vec<Line> {
    let mut out = vec![Line {
        name: "ping".into(),
        result: Ok(()),
    }];
    if endpoint != Endpoint::Livez {
        for w in shared.warmups.entries() {
            out.push(Line {
                name: format!("warmup/{}", w.name),
                result: match w.status() {
                    WarmupStatus::Done(_) => Ok(()),
                    WarmupStatus::Running => Err("still running".into()),
                    WarmupStatus::Failed(e) => Err(format!("failed: {e}")),
                },
            });
        }
    }
    match endpoint {
        Endpoint::Startupz => {}
        Endpoint::Readyz => {
            for c in shared.checks.of(Probe::Readiness) {
                out.push(Line {
                    name: c.name.clone(),
                    result: c.result(),
                });
            }
            let phase = shared.phase();
            out.push(Line {
                name: "shutdown".into(),
                result: if phase.is_shutting_down() {
                    Err(format!("process is shutting down (phase {phase})"))
                } else if phase == Phase::Starting {
                    Err("not serving yet".into())
                } else {
                    Ok(())
                },
            });
        }
        Endpoint::Livez => {
            let stall = shared.stalled_for();
            out.push(Line {
                name: "watchdog".into(),
                result: if stall > shared.config.watchdog_stall {
                    Err(format!(
                        "application runtime made no progress for {}",
                        crate::config::fmt_duration(std::time::Duration::from_millis(
                            stall.as_millis() as u64
                        ))
                    ))
                } else {
                    Ok(())
                },
            });
            for c in shared.checks.of(Probe::Liveness) {
                out.push(Line {
                    name: c.name.clone(),
                    result: c.result(),
                });
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Livez,
    Readyz,
    Startupz,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
            Endpoint::Startupz => "startupz",
        }
    }
}

pub(crate) fn respond<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
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
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "verbose" => verbose = v != "false" && v != "0",
            "exclude" => exclude.push(percent_decode(v)),
            _ => {}
        }
    }
    let all = lines(shared, endpoint);
    if let Some(check) = sub {
        let check = percent_decode(check);
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
    let unmatched: Vec<String> = exclude
        .iter()
        .filter(|e| !all.iter().any(|l| &&l.name == e))
        .cloned()
        .collect();
    let included: Vec<Line> = all
        .into_iter()
        .filter(|l| !exclude.contains(&l.name))
        .collect();
    let ok = included.iter().all(|l| l.result.is_ok());
    let mut text = String::new();
    if verbose || !ok {
        for l in &included {
            match &l.result {
                Ok(()) => {
                    let _ = writeln!(text, "[+]{} ok", l.name);
                }
                Err(e) => {
                    let _ = writeln!(text, "[-]{} failed: {e}", l.name);
                }
            }
        }
        for e in &exclude {
            if !unmatched.contains(e) {
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

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("warmup%2Fkb"), "warmup/kb");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("x%2"), "x%2");
        assert_eq!(percent_decode("db"), "db");
    }

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
