//! [`PrometheusSource`]: one look runs the instant queries over HTTP(S), all evaluated at
//! the same timestamp, and turns the answers into a [`Snapshot`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::client::{connector, Connector};
use super::counters::{counter_total, mean, to_count, ArmTracker, CounterTracker};
use super::query::query_string;
use super::{parse_query_response, PrometheusConfig, PrometheusError, QueryResult, Sample};
use crate::run::SnapshotSource;
use crate::snapshot::Snapshot;

/// Largest response body accepted from Prometheus.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// A [`SnapshotSource`] reading a Prometheus server over HTTP or HTTPS.
#[derive(Debug)]
pub struct PrometheusSource {
    client: Client<Connector, Empty<Bytes>>,
    endpoint: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    queries: [String; 4],
    shed_queries: [String; 2],
    resource_queries: Option<[String; 4]>,
    stable: ArmTracker,
    canary: ArmTracker,
    stable_shed: CounterTracker,
    canary_shed: CounterTracker,
    stable_cpu: CounterTracker,
    canary_cpu: CounterTracker,
}

impl PrometheusSource {
    /// Checks `config` and prepares the client; no request is sent yet.
    pub fn new(config: &PrometheusConfig) -> Result<Self, PrometheusError> {
        let https = PrometheusConfig::check_url(&config.url)?;
        let url = config.url.trim().trim_end_matches('/');
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| PrometheusError::Config(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| PrometheusError::Config(format!("invalid value for header {name}")))?;
            headers.push((name, value));
        }
        let client = Client::builder(TokioExecutor::new())
            .build(connector(https, config.ca_file.as_deref())?);
        Ok(Self {
            client,
            endpoint: format!("{url}/api/v1/query"),
            headers,
            timeout: config.timeout,
            queries: config.queries()?,
            shed_queries: config.shed_queries()?,
            resource_queries: if config.resources {
                Some(config.resource_queries()?)
            } else {
                None
            },
            stable: ArmTracker::default(),
            canary: ArmTracker::default(),
            stable_shed: CounterTracker::default(),
            canary_shed: CounterTracker::default(),
            stable_cpu: CounterTracker::default(),
            canary_cpu: CounterTracker::default(),
        })
    }

    /// The PromQL queries of one look (the request counters, the shed counters; then the
    /// resource queries when they are read).
    pub fn queries(&self) -> Vec<&String> {
        self.queries
            .iter()
            .chain(&self.shed_queries)
            .chain(self.resource_queries.iter().flatten())
            .collect()
    }

    /// Runs one instant query evaluated at `time` (Unix seconds).
    pub async fn query(&self, promql: &str, time: f64) -> Result<QueryResult, PrometheusError> {
        let uri = format!("{}?{}", self.endpoint, query_string(promql, time));
        let mut request = Request::get(uri.as_str());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| PrometheusError::Config(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| PrometheusError::Transport(error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| PrometheusError::Transport(format!("reading the body: {e}")))?
                .to_bytes();
            Ok::<_, PrometheusError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PrometheusError::Timeout(self.timeout))??;
        parse_query_response(status, &body)
    }

    async fn vector(&self, promql: &str, time: f64) -> Result<Vec<Sample>, PrometheusError> {
        match self.query(promql, time).await? {
            QueryResult::Vector(samples) => Ok(samples),
            QueryResult::Scalar(_) => Err(PrometheusError::UnexpectedResultType("scalar".into())),
        }
    }
}
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl SnapshotSource for PrometheusSource {
    type Error = PrometheusError;

    async fn snapshot(&mut self) -> Result<Snapshot, PrometheusError> {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // All results first: a failed look leaves the trackers as they were.
        let [q0, q1, q2, q3] = &self.queries;
        let stable_counts = self.vector(q0, time).await?;
        let stable_buckets = self.vector(q1, time).await?;
        let canary_counts = self.vector(q2, time).await?;
        let canary_buckets = self.vector(q3, time).await?;
        let [s0, s1] = &self.shed_queries;
        let stable_shed = self.vector(s0, time).await?;
        let canary_shed = self.vector(s1, time).await?;
        let resources = match &self.resource_queries {
            Some([r0, r1, r2, r3]) => Some((
                self.vector(r0, time).await?,
                self.vector(r1, time).await?,
                self.vector(r2, time).await?,
                self.vector(r3, time).await?,
            )),
            None => None,
        };
        let mut stable = self.stable.update(&stable_counts, &stable_buckets);
        let mut canary = self.canary.update(&canary_counts, &canary_buckets);
        // No series (admission control off): nothing shed, the arm judged as before.
        stable.shed = to_count(counter_total(&mut self.stable_shed, &stable_shed));
        canary.shed = to_count(counter_total(&mut self.canary_shed, &canary_shed));
        if let Some((stable_cpu, stable_rss, canary_cpu, canary_rss)) = resources {
            stable.cpu_seconds = counter_total(&mut self.stable_cpu, &stable_cpu);
            stable.resident_memory_bytes = mean(&stable_rss);
            canary.cpu_seconds = counter_total(&mut self.canary_cpu, &canary_cpu);
            canary.resident_memory_bytes = mean(&canary_rss);
        }
        Ok(Snapshot { stable, canary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Histogram;

    /// A loopback HTTP server answering instant queries from `answer(query,
    /// look)`, where a look is six consecutive requests.
    async fn mock(
        answer: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> std::net::SocketAddr {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(answer);
        let served = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let target = head.split_whitespace().nth(1).unwrap_or("");
                    let params = target.split_once('?').map_or("", |(_, q)| q);
                    let query = form_urlencoded::parse(params.as_bytes())
                        .find_map(|(k, v)| (k == "query").then(|| v.into_owned()))
                        .unwrap_or_default();
                    let look = served.fetch_add(1, Ordering::SeqCst) / 6;
                    let (status, body) = answer(&query, look);
                    if status == 0 {
                        // Never answer.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn vector(series: &[(&str, f64)]) -> String {
        let items: Vec<String> = series
            .iter()
            .map(|(labels, v)| format!(r#"{{"metric":{{{labels}}},"value":[1,"{v}"]}}"#))
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        )
    }

    #[tokio::test]
    async fn reads_increments_from_a_server() {
        let addr = mock(|query, look| {
            let look = look as f64;
            let canary = query.contains("version=\"v2\"");
            let errors = if canary { 20.0 } else { 2.0 };
            let body = if query.starts_with("podcycle_requests_shed_total") {
                // No admission control: no series.
                vector(&[])
            } else if query.contains("_count{") {
                vector(&[
                    (r#""pod":"a""#, 500.0 + 1000.0 * look),
                    (r#""pod":"a","error_type":"500""#, 7.0 + errors * look),
                ])
            } else {
                assert!(query.contains("error_type=\"\""), "{query}");
                vector(&[
                    (r#""pod":"a","le":"0.1""#, 400.0 + 900.0 * look),
                    (r#""pod":"a","le":"+Inf""#, 480.0 + 1000.0 * look),
                ])
            };
            (200, body)
        })
        .await;
        let config = PrometheusConfig::new(format!("http://{addr}/"), "v1", "v2");
        let mut source = PrometheusSource::new(&config).unwrap();
        // The baseline: every counter at zero.
        let first = source.snapshot().await.unwrap();
        let zero = Histogram::from_cumulative([(0.1, 0), (f64::INFINITY, 0)]);
        assert_eq!((first.stable.requests, first.canary.errors), (0, 0));
        assert_eq!(
            (&first.stable.latency, &first.canary.latency),
            (&zero, &zero)
        );
        let second = source.snapshot().await.unwrap();
        assert_eq!(second.stable.requests, 1002);
        assert_eq!(second.stable.errors, 2);
        assert_eq!(second.canary.requests, 1020);
        assert_eq!(second.canary.errors, 20);
        assert_eq!(second.canary.latency.count_le(0.1), Some(900));
        assert_eq!(second.canary.latency.total(), 1000);
        assert_eq!((second.stable.shed, second.canary.shed), (0, 0));
    }

    #[tokio::test]
    async fn reads_each_arms_shed_counter_with_the_arms_selector_and_no_route() {
        let addr = mock(|query, look| {
            let body = if let Some(matchers) = query.strip_prefix("podcycle_requests_shed_total") {
                // The arm and the selector, not the route: a shed request was never routed.
                assert!(!matchers.contains("http_route"), "{query}");
                assert!(matchers.contains(r#"namespace="shop""#), "{query}");
                let n = look as f64;
                if matchers.contains(r#"version="v2""#) {
                    // Two canary pods; pod b restarts before the third look.
                    let b = if look < 2 { 100.0 + 10.0 * n } else { 4.0 };
                    vector(&[(r#""pod":"a""#, 50.0 + 30.0 * n), (r#""pod":"b""#, b)])
                } else {
                    vector(&[(r#""pod":"c""#, 7.0 + n)])
                }
            } else if query.contains("_count{") {
                vector(&[(r#""pod":"a""#, 1000.0 * look as f64)])
            } else {
                vector(&[(r#""pod":"a","le":"+Inf""#, 1000.0 * look as f64)])
            };
            (200, body)
        })
        .await;
        let mut config = PrometheusConfig::new(format!("http://{addr}"), "v1", "v2");
        config.route = Some("/v1/chat".to_owned());
        config.selector = Some(r#"namespace="shop""#.to_owned());
        let mut source = PrometheusSource::new(&config).unwrap();
        assert!(source
            .queries()
            .iter()
            .any(|q| q.starts_with("podcycle_requests_shed_total{version=\"v1\"")));
        let first = source.snapshot().await.unwrap();
        assert_eq!((first.stable.shed, first.canary.shed), (0, 0));
        let second = source.snapshot().await.unwrap();
        assert_eq!((second.stable.shed, second.canary.shed), (1, 40));
        // Pod b's counter went from 110 to 4: a reset, its 4 count in full.
        let third = source.snapshot().await.unwrap();
        assert_eq!((third.stable.shed, third.canary.shed), (2, 74));
        assert_eq!(third.canary.requests, 2000);
    }

    /// A vector of native histogram samples: labels, then `(upper bound, count)`
    /// per bucket.
    fn native_vector(series: &[(&str, &[(f64, u64)])]) -> String {
        let items: Vec<String> = series
            .iter()
            .map(|(labels, buckets)| {
                let count: u64 = buckets.iter().map(|(_, n)| n).sum();
                let b: Vec<String> = buckets
                    .iter()
                    .map(|(upper, n)| format!(r#"[0,"{}","{upper}","{n}"]"#, upper / 1.09))
                    .collect();
                format!(
                    r#"{{"metric":{{{labels}}},"histogram":[1,{{"count":"{count}","sum":"1","buckets":[{}]}}]}}"#,
                    b.join(",")
                )
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        )
    }

    #[tokio::test]
    async fn reads_native_histograms_at_their_resolution() {
        // Prometheus scraping podcycle's native histograms has no `_count` or
        // `_bucket` series: the queries' `or` finds the native series. Bucket
        // bounds 2^(k/8); a bucket first populated after the baseline (the
        // canary's 2^(-14/8)) counts only what it gained.
        let (b15, b14) = ((-15f64 / 8.0).exp2(), (-14f64 / 8.0).exp2());
        let addr = mock(move |query, look| {
            assert!(
                query.starts_with("podcycle_requests_shed_total")
                    || query.contains(" or http_server_request_duration_seconds{"),
                "{query}"
            );
            let canary = query.contains("version=\"v2\"");
            let n = look as u64;
            let body = if query.starts_with("podcycle_requests_shed_total") {
                vector(&[])
            } else if query.contains("_count{") {
                native_vector(&[
                    (r#""pod":"a""#, &[(b15, 1000 + 95 * n), (b14, 5 * n)]),
                    (r#""pod":"a","error_type":"500""#, &[(b15, 3)]),
                ])
            } else if canary {
                native_vector(&[(r#""pod":"a""#, &[(b15, 1000 + 90 * n), (b14, 10 * n)])])
            } else {
                native_vector(&[(r#""pod":"a""#, &[(b15, 1000 + 95 * n), (b14, 5 * n)])])
            };
            (200, body)
        })
        .await;
        let config = PrometheusConfig::new(format!("http://{addr}/"), "v1", "v2");
        let mut source = PrometheusSource::new(&config).unwrap();
        let first = source.snapshot().await.unwrap();
        assert_eq!(first.canary.latency.total(), 0);
        let second = source.snapshot().await.unwrap();
        assert_eq!(second.stable.requests, 100);
        assert_eq!(second.stable.latency.total(), 100);
        assert_eq!(second.stable.latency.count_le(b15), Some(95));
        assert_eq!(second.canary.latency.count_le(b15), Some(90));
        assert_eq!(second.canary.latency.total(), 100);
        // Classic bounds are there too, counted from the native buckets below them.
        assert_eq!(second.canary.latency.count_le(0.25), Some(0));
        assert_eq!(second.canary.latency.count_le(0.5), Some(100));
    }

    #[tokio::test]
    async fn server_errors_become_prometheus_errors() {
        let addr = mock(|_, _| {
            (
                503,
                r#"{"status":"error","errorType":"unavailable","error":"too many queries"}"#
                    .to_owned(),
            )
        })
        .await;
        let mut source =
            PrometheusSource::new(&PrometheusConfig::new(format!("http://{addr}"), "a", "b"))
                .unwrap();
        let err = source.snapshot().await.unwrap_err();
        assert_eq!(
            err,
            PrometheusError::Status {
                status: 503,
                message: "unavailable: too many queries".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn silent_servers_time_out_and_closed_ports_fail() {
        let addr = mock(|_, _| (0, String::new())).await;
        let mut config = PrometheusConfig::new(format!("http://{addr}"), "a", "b");
        config.timeout = Duration::from_millis(200);
        let mut source = PrometheusSource::new(&config).unwrap();
        assert_eq!(
            source.snapshot().await.unwrap_err(),
            PrometheusError::Timeout(Duration::from_millis(200))
        );

        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = PrometheusConfig::new(format!("http://127.0.0.1:{port}"), "a", "b");
        let mut source = PrometheusSource::new(&config).unwrap();
        let err = source.snapshot().await.unwrap_err();
        assert!(matches!(err, PrometheusError::Transport(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("cannot reach Prometheus"),
            "{err}"
        );
    }

    /// An https server with a fresh self-signed certificate for
    /// `localhost`, answering every query with one sample; returns its
    /// port and the certificate's PEM.
    #[cfg(feature = "tls")]
    async fn https_mock() -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;

        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let auth = String::from_utf8_lossy(&head).contains("x-scope-orgid: t1");
                    let body = vector(&[(r#""pod":"a""#, if auth { 7.0 } else { 0.0 })]);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, key.cert.pem())
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn speaks_https_with_a_trusted_ca_and_refuses_an_unknown_one() {
        let (port, pem) = https_mock().await;
        let dir = std::env::temp_dir().join(format!("judge-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, pem).unwrap();

        let mut config = PrometheusConfig::new(format!("https://localhost:{port}"), "a", "b");
        config.headers = vec![("X-Scope-OrgID".to_owned(), "t1".to_owned())];
        config.ca_file = Some(ca.clone());
        let source = PrometheusSource::new(&config).unwrap();
        let QueryResult::Vector(samples) = source.query("up", 1.0).await.unwrap() else {
            panic!("not a vector");
        };
        // The header reached the server over TLS.
        assert_eq!(samples[0].value, 7.0);

        // The system's roots do not know a fresh self-signed certificate.
        config.ca_file = None;
        match PrometheusSource::new(&config) {
            Ok(source) => {
                let err = source.query("up", 1.0).await.unwrap_err();
                assert!(matches!(err, PrometheusError::Transport(_)), "{err:?}");
            }
            // A machine without any CA bundle.
            Err(e) => assert!(e.to_string().contains("--ca-file"), "{e}"),
        }

        // A CA file that is not PEM is a configuration error naming it.
        std::fs::write(&ca, "not a certificate").unwrap();
        config.ca_file = Some(ca);
        let err = PrometheusSource::new(&config).unwrap_err();
        assert!(err.to_string().contains("--ca-file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
