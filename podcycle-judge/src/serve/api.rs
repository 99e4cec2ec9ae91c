//! The judge's HTTP API, one analysis per request.
//!
//! * `GET /v1/judge?stable=V1&canary=V2[&interval=30s&max-duration=10m&cpu=true...]`
//!   (Argo Rollouts' Web provider): runs one judgement and answers `200`
//!   with `{"verdict": "pass" | "fail" | "inconclusive", "report": {...}}`.
//!   An AnalysisTemplate maps it with `jsonPath: "{$.verdict}"`,
//!   `successCondition: result == "pass"`, `failureCondition: result == "fail"`,
//!   so that an inconclusive verdict is an Inconclusive measurement.
//! * `POST /v1/flagger` with Flagger's webhook payload (`name`, `namespace`,
//!   `phase`, `metadata` holding the same options as strings): `200` on pass,
//!   `412` on fail, `503` when inconclusive; Flagger counts any non-2xx as a
//!   failed check, so no data is never a pass.
//! * `GET /healthz`: `200`, for anything that checks the application port itself (the
//!   kubelet's probes are on the admin listener).
//!
//! Query keys and metadata keys are the judge's option names without the
//! dashes (`max-duration`, `cpu-margin`); flags (`cpu`, `no-latency`) take
//! `true` or `false`. Connection options (`prometheus`, credentials,
//! headers) are the server's own and cannot be set by a request. A bad
//! request gets `400` with `{"error": "...", "field": "<key>"}`, for every key
//! (a key given twice, an unknown key, a value out of range, an `interval` under
//! 1 s, more than 1,000 looks, a malformed `selector`); beyond
//! `--max-concurrent` running analyses, `429`; once shutdown has started, `503`.
//! Each analysis ends by its `max-duration` (at most `--max-analysis-duration`)
//! plus the time of its last look.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::error::{ContextKind, ContextValue};
use podcycle::Phase;
use podcycle_judge::{self as judge, PrometheusConfig, PrometheusSource, Report, Verdict};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::cli;

/// Keys a request may set; every other key is refused by name.
const REQUEST_OPTIONS: &[&str] = &[
    "stable",
    "canary",
    "route",
    "selector",
    "interval",
    "max-duration",
    "min-requests",
    "alpha",
    "error-margin",
    "error-margin-relative",
    "latency-quantile",
    "latency-margin",
    "max-error-ratio",
    "max-p99",
    "cpu-margin",
    "max-memory-ratio",
];
/// Request keys that are flags: `true` or `false`.
const REQUEST_FLAGS: &[&str] = &["no-errors", "no-latency", "cpu"];

/// What every handler shares.
#[derive(Debug, Clone)]
pub(super) struct Service {
    /// The judge's options after `--`: every request's defaults.
    pub(super) defaults: Arc<Vec<String>>,
    /// One permit per running analysis.
    pub(super) slots: Arc<Semaphore>,
    /// `--max-concurrent`.
    pub(super) max_concurrent: u32,
    /// `--max-analysis-duration`.
    pub(super) max_duration: Duration,
    /// The lifecycle's phase: new analyses are refused once shutdown starts, running ones
    /// end when the drain starts.
    pub(super) phase: watch::Receiver<Phase>,
}

/// The routes; `/v1/*` behind the bearer token when there is one.
pub(super) fn router(service: Service, api_token: Option<String>) -> Router {
    let api = Router::new()
        .route("/v1/judge", get(argo))
        .route("/v1/flagger", post(flagger));
    let api = match api_token {
        Some(token) => super::auth::require(api, token),
        None => api,
    };
    api.route("/healthz", get(|| async { "ok\n" }))
        .with_state(service)
}

/// A request the judge cannot run: `400` naming the field (or another status).
#[derive(Debug)]
pub(super) struct BadRequest {
    field: Option<String>,
    message: String,
    status: StatusCode,
}

impl BadRequest {
    fn new(field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_owned),
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }

    /// Shutdown has started: retry on another replica.
    fn shutting_down() -> Self {
        Self {
            field: None,
            message: "the judge is shutting down; retry (another replica will answer)".to_owned(),
            status: StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "field": self.field });
        (self.status, Json(body)).into_response()
    }
}

impl Service {
    /// The defaults alone, with placeholder versions: their Prometheus configuration, or
    /// why they cannot make a judgement.
    pub(super) fn defaults_check(&self) -> Result<PrometheusConfig, String> {
        let probe = BTreeMap::from([
            ("stable".to_owned(), "stable".to_owned()),
            ("canary".to_owned(), "canary".to_owned()),
        ]);
        self.options(&probe)
            .map(|o| o.prometheus)
            .map_err(|e| e.message)
    }

    /// The judge's options for one request: the defaults, then `params`.
    fn options(&self, params: &BTreeMap<String, String>) -> Result<cli::CliOptions, BadRequest> {
        // The command's default max-duration (10m), within this server's limit.
        let cap = self.max_duration.min(Duration::from_secs(600));
        let mut argv = vec![
            "podcycle-judge".to_owned(),
            format!("--max-duration={}", humantime::format_duration(cap)),
        ];
        argv.extend(self.defaults.iter().cloned());
        for key in ["stable", "canary"] {
            if !params.contains_key(key) {
                return Err(BadRequest::new(Some(key), format!("{key} is required")));
            }
        }
        for (key, value) in params {
            if REQUEST_FLAGS.contains(&key.as_str()) {
                match value.as_str() {
                    "true" => argv.push(format!("--{key}")),
                    "false" => {}
                    _ => {
                        return Err(BadRequest::new(
                            Some(key),
                            format!("{key} takes true or false, got {value:?}"),
                        ))
                    }
                }
            } else if REQUEST_OPTIONS.contains(&key.as_str()) {
                argv.push(format!("--{key}={value}"));
            } else {
                return Err(BadRequest::new(
                    Some(key),
                    format!(
                        "unknown option {key:?}; a request may set {} and the flags {}",
                        REQUEST_OPTIONS.join(", "),
                        REQUEST_FLAGS.join(", ")
                    ),
                ));
            }
        }
        let options = cli::parse(argv).map_err(|e| {
            // The argument at fault; of several, the first this request set.
            let names: Vec<String> = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(v)) => v.iter().map(|a| option_name(a)).collect(),
                Some(other) => vec![option_name(&other.to_string())],
                None => Vec::new(),
            };
            let field = names
                .iter()
                .find(|n| params.contains_key(n.as_str()))
                .or(names.first())
                .cloned();
            let message = e.to_string();
            let message = message
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            BadRequest::new(field.as_deref(), message)
        })?;
        if options.run.max_duration > self.max_duration {
            return Err(BadRequest::new(
                Some("max-duration"),
                format!(
                    "max-duration {} is longer than this server allows ({})",
                    humantime::format_duration(options.run.max_duration),
                    humantime::format_duration(self.max_duration)
                ),
            ));
        }
        Ok(options)
    }

    /// Runs one judgement within its deadline, holding one of the slots; `503` once the
    /// drain starts.
    async fn judge(&self, params: BTreeMap<String, String>) -> Result<Report, BadRequest> {
        let options = self.options(&params)?;
        if *self.phase.borrow() >= Phase::Deregistering {
            return Err(BadRequest::shutting_down());
        }
        let _slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| BadRequest {
                field: None,
                message: format!(
                    "{} analyses are already running (--max-concurrent); retry later",
                    self.max_concurrent
                ),
                status: StatusCode::TOO_MANY_REQUESTS,
            })?;
        // The URL was checked at startup (no credentials, no query string), and a request
        // cannot change it: this message never holds a secret.
        let mut source = PrometheusSource::new(&options.prometheus).map_err(|e| BadRequest {
            field: None,
            message: e.to_string(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        })?;
        // The run ends by max-duration; a last look may take the query
        // timeout once per query.
        let deadline = options.run.max_duration + options.prometheus.timeout * 8;
        let run = judge::run(&options.run, &mut source, |_| {});
        let mut phase = self.phase.clone();
        let draining = async move {
            // A closed channel (no lifecycle) never drains.
            if phase.wait_for(|p| *p >= Phase::Draining).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let mut report = tokio::select! {
            result = tokio::time::timeout(deadline, run) => match result {
                Ok(Ok(report)) => report,
                Ok(Err(e)) => return Err(BadRequest::new(None, e.to_string())),
                Err(_) => {
                    return Err(BadRequest {
                        field: None,
                        message: "the analysis overran its deadline".to_owned(),
                        status: StatusCode::GATEWAY_TIMEOUT,
                    })
                }
            },
            () = draining => return Err(BadRequest::shutting_down()),
        };
        report.stable.version = Some(options.prometheus.stable.clone());
        report.canary.version = Some(options.prometheus.canary.clone());
        Ok(report)
    }
}

fn verdict_body(report: &Report) -> Value {
    let verdict = report.verdict.unwrap_or(Verdict::Inconclusive);
    json!({ "verdict": verdict, "report": report })
}

/// Argo Rollouts' Web provider: always `200` with the verdict, so that
/// the AnalysisTemplate's conditions decide (a non-2xx is an Error
/// measurement in Argo, not a Failed one).
async fn argo(
    State(service): State<Service>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, BadRequest> {
    let params = query_params(query.as_deref().unwrap_or(""))?;
    let report = service.judge(params).await?;
    Ok(Json(verdict_body(&report)))
}

/// The query string's keys and values; a key given twice is refused (which one would
/// count is a guess a caller should not have to make).
fn query_params(query: &str) -> Result<BTreeMap<String, String>, BadRequest> {
    let mut params = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if params.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(BadRequest::new(
                Some(&key),
                format!("{key} is given more than once"),
            ));
        }
    }
    Ok(params)
}

/// `interval` from `--interval <DURATION>` or `--interval=30s`.
fn option_name(arg: &str) -> String {
    let name = arg.trim_start_matches('-');
    name.split([' ', '=']).next().unwrap_or(name).to_owned()
}

/// Flagger's webhook payload; the options are in `metadata`.
#[derive(Debug, Deserialize)]
struct FlaggerPayload {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// Flagger's webhook: `200` pass, `412` fail, `503` inconclusive.
async fn flagger(State(service): State<Service>, body: axum::body::Bytes) -> Response {
    let payload: FlaggerPayload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            let field = (e.classify() == serde_json::error::Category::Data).then_some("metadata");
            return BadRequest::new(
                field,
                format!("the body is not a Flagger webhook payload: {e}"),
            )
            .into_response();
        }
    };
    let params: BTreeMap<String, String> = payload.metadata.into_iter().collect();
    match service.judge(params).await {
        Err(e) => e.into_response(),
        Ok(report) => {
            let status = match report.verdict.unwrap_or(Verdict::Inconclusive) {
                Verdict::Pass => StatusCode::OK,
                Verdict::Fail => StatusCode::PRECONDITION_FAILED,
                Verdict::Inconclusive => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut body = verdict_body(&report);
            body["canary_name"] = json!(payload.name);
            body["namespace"] = json!(payload.namespace);
            body["phase"] = json!(payload.phase);
            (status, Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(limit: u32) -> Service {
        Service {
            defaults: Arc::new(vec![
                "--prometheus".to_owned(),
                "http://127.0.0.1:9".to_owned(),
                "--interval=1s".to_owned(),
            ]),
            slots: Arc::new(Semaphore::new(limit as usize)),
            max_concurrent: limit,
            max_duration: Duration::from_secs(900),
            phase: watch::channel(Phase::Serving).1,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn requests_override_the_defaults() {
        let o = service(1)
            .options(&params(&[
                ("stable", "v1"),
                ("canary", "v2"),
                ("interval", "5s"),
                ("max-duration", "30s"),
                ("cpu", "true"),
                ("no-latency", "false"),
            ]))
            .unwrap();
        assert_eq!(o.prometheus.stable, "v1");
        assert_eq!(o.run.interval, Duration::from_secs(5));
        assert!(o.run.judge.cpu.is_some() && o.run.judge.latency.is_some());
        assert!(o.prometheus.resources);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let s = service(1);
        for (pairs, field) in [
            (&[("canary", "v2")][..], "stable"),
            (
                &[("stable", "v1"), ("canary", "v2"), ("intervall", "5s")],
                "intervall",
            ),
            (
                &[("stable", "v1"), ("canary", "v2"), ("interval", "fast")],
                "interval",
            ),
            (&[("stable", "v1"), ("canary", "v2"), ("cpu", "yes")], "cpu"),
            (
                &[
                    ("stable", "v1"),
                    ("canary", "v2"),
                    ("prometheus", "http://evil"),
                ],
                "prometheus",
            ),
            (
                &[("stable", "v1"), ("canary", "v2"), ("max-duration", "1h")],
                "max-duration",
            ),
            (
                &[("stable", "v1"), ("canary", "v2"), ("alpha", "2")],
                "alpha",
            ),
        ] {
            let e = s.options(&params(pairs)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{pairs:?}: {}", e.message);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn analyses_beyond_the_limit_get_429() {
        let s = service(1);
        let held = s.slots.clone().try_acquire_owned().unwrap();
        let e = s
            .judge(params(&[("stable", "v1"), ("canary", "v2")]))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        drop(held);
    }

    async fn post_flagger(body: &str) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let request = axum::http::Request::post("/v1/flagger")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        let response = router(service(1), None).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn flagger_webhook_never_answers_2xx_without_evidence() {
        // Prometheus unreachable: inconclusive after max-duration, a 503.
        let (status, body) = post_flagger(
            r#"{"name":"chatbot","namespace":"shop","phase":"Progressing","checksum":"x",
                "metadata":{"stable":"chatbot-primary","canary":"chatbot","interval":"1s",
                "max-duration":"1s"}}"#,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["verdict"], "inconclusive");
        assert_eq!(body["canary_name"], "chatbot");
        assert!(
            body["report"]["failed_reads"].as_u64().unwrap() >= 1,
            "{body}"
        );

        let (status, body) = post_flagger("{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) =
            post_flagger(r#"{"metadata":{"stable":"a","canary":"b","margin":"1"}}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "margin");
        let (status, body) =
            post_flagger(r#"{"metadata":{"stable":"a","canary":"b","cpu":true}}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "metadata", "{body}");
    }

    /// A GET through the router; the status and the JSON body.
    async fn get_judge(service: Service, pairs: &[(&str, &str)]) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                query.append_pair(k, v);
            }
            query.finish()
        };
        let request = axum::http::Request::get(format!("/v1/judge?{query}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router(service, None).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A Prometheus that answers every query with an empty vector and counts them.
    async fn counting_prometheus() -> (String, Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        let count = Arc::new(AtomicU64::new(0));
        let app = Router::new().route(
            "/api/v1/query",
            get({
                let count = count.clone();
                move || async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    Json(json!({"status": "success", "data": {"resultType": "vector", "result": []}}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, count)
    }

    /// Issue 23 row 7, the attack: `GET /v1/judge?interval=1ms` made 40,000 Prometheus
    /// queries in 10 s. Now a 400 naming `interval`, answered at once, with no query sent;
    /// and more looks than the cap a 400 naming the field the request set.
    #[tokio::test]
    async fn a_request_cannot_make_the_judge_flood_prometheus() {
        use std::sync::atomic::Ordering;
        let (url, queries) = counting_prometheus().await;
        let mut s = service(4);
        s.defaults = Arc::new(vec!["--prometheus".to_owned(), url]);
        s.max_duration = Duration::from_secs(3600);
        for (pairs, field) in [
            (&[("interval", "1ms")][..], "interval"),
            (
                &[("interval", "999ms"), ("max-duration", "10s")],
                "interval",
            ),
            (
                &[("interval", "1s"), ("max-duration", "20m")],
                "max-duration",
            ),
            (
                &[("max-duration", "1h"), ("interval", "2s")],
                "max-duration",
            ),
        ] {
            let pairs: Vec<_> = [("stable", "v1"), ("canary", "v2")]
                .iter()
                .chain(pairs)
                .copied()
                .collect();
            let (status, body) =
                tokio::time::timeout(Duration::from_secs(5), get_judge(s.clone(), &pairs))
                    .await
                    .unwrap_or_else(|_| panic!("{pairs:?}: not refused at once"));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{pairs:?}: {body}");
            assert_eq!(body["field"], field, "{pairs:?}: {body}");
        }
        assert_eq!(queries.load(Ordering::Relaxed), 0);
    }

    /// Issue 23 row 10: a malformed selector got `500` with `"field": null`; and every
    /// other parameter a request can set, given a bad value, is a `400` naming it.
    #[tokio::test]
    async fn every_bad_parameter_is_a_400_naming_it() {
        let bad: &[(&str, &str)] = &[
            ("stable", ""),
            ("canary", " "),
            ("route", ""),
            ("selector", "namespace=shop"),
            ("selector", "x\"}) or vector(1) or up{x=\""),
            ("interval", "soon"),
            ("interval", "1ms"),
            ("max-duration", "0s"),
            ("max-duration", "2h"),
            ("min-requests", "-1"),
            ("alpha", "1"),
            ("error-margin", "2"),
            ("error-margin-relative", "-1"),
            ("latency-quantile", "95"),
            ("latency-margin", "51"),
            ("max-error-ratio", "x"),
            ("max-p99", "fast"),
            ("cpu-margin", "-0.1"),
            ("max-memory-ratio", "0"),
            ("no-errors", "yes"),
            ("no-latency", "1"),
            ("cpu", "on"),
            ("prometheus", "http://evil"),
            ("header", "X: y"),
            ("json", "/tmp/x"),
        ];
        for &(key, value) in bad {
            let pairs = [("stable", "v1"), ("canary", "v2"), (key, value)];
            let mut params: BTreeMap<_, _> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            params.insert(key.to_owned(), value.to_owned());
            let pairs: Vec<_> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (status, body) = get_judge(service(1), &pairs).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{key}={value:?}: {body}");
            assert_eq!(body["field"], key, "{key}={value:?}: {body}");
        }
        // Parameters wrong together: the field is the one the request set.
        for (pairs, field) in [
            (&[("stable", "v1"), ("canary", "v1")][..], "canary"),
            (
                &[("stable", "v1"), ("canary", "v2"), ("interval", "11m")],
                "interval",
            ),
            (
                &[
                    ("stable", "v1"),
                    ("canary", "v2"),
                    ("no-errors", "true"),
                    ("no-latency", "true"),
                ],
                "no-errors",
            ),
            (&[("canary", "v2")], "stable"),
            (
                &[
                    ("stable", "v1"),
                    ("canary", "v2"),
                    ("interval", "1m"),
                    ("interval", "1ms"),
                ],
                "interval",
            ),
        ] {
            let (status, body) = get_judge(service(1), pairs).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{pairs:?}: {body}");
            assert_eq!(body["field"], field, "{pairs:?}: {body}");
        }
    }

    #[tokio::test]
    async fn analyses_end_with_503_once_shutdown_starts() {
        let (tx, rx) = watch::channel(Phase::Serving);
        let mut s = service(1);
        s.defaults = Arc::new(vec![
            "--prometheus".to_owned(),
            "http://127.0.0.1:9".to_owned(),
        ]);
        s.phase = rx;
        let running = tokio::spawn(get_judge(s.clone(), &[("stable", "a"), ("canary", "b")]));
        tokio::task::yield_now().await;
        tx.send(Phase::Deregistering).unwrap();
        // A new analysis is refused during the propagation delay...
        let (status, body) = get_judge(s.clone(), &[("stable", "a"), ("canary", "b")]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        // ... and the running one ends when the drain starts.
        tx.send(Phase::Draining).unwrap();
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("ended by the drain")
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("shutting down"),
            "{body}"
        );
    }
}
