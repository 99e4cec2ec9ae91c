//! A real Prometheus server (Debian's `/usr/bin/prometheus`) for the tests that check what
//! Prometheus makes of our exposition: started on a free loopback port with its configuration
//! and data in a temp dir of its own, killed and the dir removed on drop.
//!
//! ```no_run
//! # async fn example(target: std::net::SocketAddr) {
//! use podcycle_test_support::{self as support, prometheus::Prometheus, SOON};
//!
//! let Some(bin) = support::tool("prometheus") else { return };
//! let prom = Prometheus::start(&bin, "app", &[target], &["--enable-feature=native-histograms"]);
//! prom.wait_until("up{job=\"app\"}", |v| v == Some(1.0), SOON).await;
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{client, free_port, wait_ok, SOON};

/// How often Prometheus scrapes its targets (its timeout is 900 ms).
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A Prometheus child process on loopback; killed, and its temp dir removed, on drop.
#[derive(Debug)]
pub struct Prometheus {
    proc: std::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `bin` (from [`crate::tool`]`("prometheus")`) scraping `targets`' `/metrics` as
    /// job `job` every [`SCRAPE_INTERVAL`], with `flags` (e.g.
    /// `--enable-feature=exemplar-storage`) on its command line. It returns at once: queries
    /// fail until Prometheus listens (see [`Prometheus::ready`]).
    pub fn start(bin: &Path, job: &str, targets: &[SocketAddr], flags: &[&str]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        Prometheus::start_with(bin, &config, flags)
    }

    /// Starts `bin` with `config`, a whole `prometheus.yml` (rule files, target labels, other
    /// intervals), and the command-line `flags`; as [`Prometheus::start`] otherwise.
    pub fn start_with(bin: &Path, config: &str, flags: &[&str]) -> Prometheus {
        // A dir per server: tests in one process may run several at once.
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "podcycle-prometheus-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proc = Command::new(bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus { proc, addr, dir }
    }

    /// Its HTTP listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`, as the judge's `--prometheus` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `/-/ready` answers 200; fails the test after 3 × [`SOON`].
    pub async fn ready(&self) {
        wait_ok(self.addr, "/-/ready", SOON * 3).await;
    }

    /// The samples of an instant query (`data.result`), or the error: no answer, or an answer
    /// that is not `success` (its body).
    pub async fn query_result(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let q: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let reply = client::get(self.addr, &format!("/api/v1/query?query={q}")).await?;
        let mut json: serde_json::Value =
            serde_json::from_str(&reply.body).map_err(|e| e.to_string())?;
        if json["status"] != "success" {
            return Err(reply.body);
        }
        match json["data"]["result"].take() {
            serde_json::Value::Array(samples) => Ok(samples),
            _ => Err(reply.body),
        }
    }

    /// The value of an instant query's first sample, if any (`None` for no sample, or for a
    /// native histogram sample, which has no `value`).
    pub async fn query(&self, promql: &str) -> Result<Option<f64>, String> {
        Ok(self
            .query_result(promql)
            .await?
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    }

    /// Waits until the first sample of `promql` satisfies `done` (an error answer counts as no
    /// sample), asking every 250 ms; fails the test with the last answer after `within`.
    /// Returns the value that satisfied it.
    pub async fn wait_until(
        &self,
        promql: &str,
        done: impl Fn(Option<f64>) -> bool,
        within: Duration,
    ) -> Option<f64> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.query(promql).await;
            if let Ok(v) = got {
                if done(v) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{promql} did not reach the awaited value within {within:?}; last answer {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
