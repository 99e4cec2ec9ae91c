//! The drill's report: counts by outcome and version, latency percentiles before, during and
//! after the rollout, each replica's timeline, HAProxy's view; printed as tables, written as
//! JSON, drawn as an SVG chart (by hand: no plotting crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::haproxy::LogSummary;
use super::load::{Kind, LoadStats, Outcome, Sample, StreamEnd};
use super::replicas::ReplicaRecord;
use super::{Event, Options};

/// Width of a chart bucket, seconds.
pub const BUCKET: f64 = 0.25;

/// Machine-wide counters that explain a bad run on a shared machine: CPU pressure (PSI), CPU
/// stolen by the hypervisor, and the kernel's TCP listen-queue overflows and SYN retransmits
/// (for the whole network namespace, not only the drill).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// Seconds some runnable task waited for a CPU (`/proc/pressure/cpu`, "some" total).
    pub cpu_pressure_seconds: f64,
    /// Seconds of CPU stolen by the hypervisor (`/proc/stat`).
    pub cpu_steal_seconds: f64,
    /// `TcpExt` counters from `/proc/net/netstat`.
    pub listen_overflows: u64,
    /// `ListenDrops` from `TcpExt`.
    pub listen_drops: u64,
    /// `TCPSynRetrans` from `TcpExt`.
    pub syn_retransmits: u64,
}

impl Machine {
    /// The counters now (zeros where the kernel does not have them).
    pub fn now() -> Machine {
        let mut m = Machine::default();
        if let Ok(psi) = std::fs::read_to_string("/proc/pressure/cpu") {
            if let Some(total) = psi
                .lines()
                .find(|l| l.starts_with("some"))
                .and_then(|l| l.split("total=").nth(1))
                .and_then(|t| t.trim().parse::<f64>().ok())
            {
                m.cpu_pressure_seconds = total / 1e6;
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            if let Some(steal) = stat
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(8))
                .and_then(|v| v.parse::<f64>().ok())
            {
                m.cpu_steal_seconds = steal / 100.0;
            }
        }
        if let Ok(netstat) = std::fs::read_to_string("/proc/net/netstat") {
            let rows: Vec<&str> = netstat
                .lines()
                .filter(|l| l.starts_with("TcpExt:"))
                .collect();
            if let [names, values] = rows[..] {
                for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
                    let v = v.parse().unwrap_or(0);
                    match k {
                        "ListenOverflows" => m.listen_overflows = v,
                        "ListenDrops" => m.listen_drops = v,
                        "TCPSynRetrans" => m.syn_retransmits = v,
                        _ => {}
                    }
                }
            }
        }
        m
    }

    /// What changed since `before`.
    pub fn since(&self, before: &Machine) -> Machine {
        Machine {
            cpu_pressure_seconds: round3(self.cpu_pressure_seconds - before.cpu_pressure_seconds),
            cpu_steal_seconds: round3(self.cpu_steal_seconds - before.cpu_steal_seconds),
            listen_overflows: self
                .listen_overflows
                .saturating_sub(before.listen_overflows),
            listen_drops: self.listen_drops.saturating_sub(before.listen_drops),
            syn_retransmits: self.syn_retransmits.saturating_sub(before.syn_retransmits),
        }
    }
}

/// The drill's phases on its clock, seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Windows {
    /// Load started.
    pub load_start: f64,
    /// The rollout started.
    pub rollout_start: f64,
    /// The rollout ended.
    pub rollout_end: f64,
    /// Load stopped.
    pub load_stop: f64,
}

/// The settings a run used.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Replicas of each version.
    pub replicas: usize,
    /// Requests per second.
    pub rate: f64,
    /// Keep-alive connections of the generator.
    pub connections: usize,
    /// Every n-th request is a stream (0: none).
    pub stream_every: u64,
    /// Steady load before the rollout.
    pub before_seconds: f64,
    /// Steady load after the rollout.
    pub after_seconds: f64,
    /// Canary at its small weight before promotion.
    pub canary_hold_seconds: f64,
    /// The canary's share of traffic, percent.
    pub canary_percent: u32,
    /// HAProxy's health check interval.
    pub check_interval_ms: u128,
    /// `PODCYCLE_SHUTDOWN_DELAY` of the replicas.
    pub shutdown_delay_ms: u128,
    /// `PODCYCLE_DRAIN_TIMEOUT` of the replicas.
    pub drain_timeout_ms: u128,
    /// `CHATBOT_WARMUP_DELAY` of the replicas.
    pub warmup_delay_ms: u128,
    /// `CHATBOT_TOKEN_DELAY` of the replicas.
    pub token_delay_ms: u128,
    /// Long-lived WebSocket sessions alongside the load.
    pub websockets: usize,
    /// gRPC clients alongside the load.
    pub grpc: usize,
    /// `PODCYCLE_STREAM_CLOSE_SPREAD` of the replicas, when set.
    pub stream_close_spread_ms: Option<u128>,
}

/// Latency percentiles of successful `POST /v1/chat` requests, milliseconds, measured from
/// each request's due time.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Requests measured.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// Streams by how they ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Streams {
    /// Streams started or attempted.
    pub total: u64,
    /// Ended with `event: done`.
    pub done: u64,
    /// Ended with `event: reconnect` (the replica was draining): a clean end.
    pub reconnect: u64,
    /// Started but cut before a final event.
    pub truncated: u64,
    /// Failed before they started (5xx, reset, ...).
    pub failed_to_start: u64,
}

/// One failed request, for evidence.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// When it was due, on the drill's clock.
    pub t: f64,
    /// `chat` or `stream`.
    pub kind: &'static str,
    /// Its outcome's name.
    pub outcome: &'static str,
    /// HTTP status, 0 when there was none.
    pub status: u16,
    /// `x-served-by`: HAProxy's `backend/server`.
    pub served_by: Option<String>,
    /// What the client saw.
    pub error: String,
}

/// Requests per chart bucket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    /// Width of a bucket, seconds.
    pub bucket_seconds: f64,
    /// Drill-clock time of the first bucket.
    pub start: f64,
    /// Successful responses per bucket, by version.
    pub ok_by_version: BTreeMap<String, Vec<u32>>,
    /// Failed requests per bucket of the time they failed, by version (`none` when HAProxy had
    /// no server to pick).
    pub failed_by_version: BTreeMap<String, Vec<u32>>,
    /// Failed requests per bucket of the time they failed.
    pub failed: Vec<u32>,
}

/// One run, everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// `rolling`, `blue-green` or `canary`.
    pub strategy: &'static str,
    /// `podcycle`, `plain` or `graceful`.
    pub mode: &'static str,
    /// Run number (1-based).
    pub run: usize,
    /// The settings the run used.
    pub settings: Settings,
    /// The drill's phases.
    pub windows: Windows,
    /// Requests sent.
    pub requests: u64,
    /// Requests sent that did not succeed, every kind.
    pub failed: u64,
    /// Requests the generator could not send (out of connections after a machine stall): not
    /// failures of the servers, but the run did not apply its full load.
    pub not_sent: u64,
    /// Requests by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Outcomes by version: `x-app-version`, or for HAProxy's own errors the version of the
    /// replica it had picked (`x-served-by`); `none` when it had none.
    pub by_version: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Streams by how they ended.
    pub streams: Streams,
    /// `before`, `during`, `after` the rollout.
    pub latency_ms: BTreeMap<&'static str, Percentiles>,
    /// Every replica, old and new.
    pub replicas: Vec<ReplicaRecord>,
    /// What happened, in time order.
    pub events: Vec<Event>,
    /// The first 100 failures.
    pub failures: Vec<Failure>,
    /// HAProxy's log of failed requests and server state changes.
    pub haproxy_log: LogSummary,
    /// HAProxy's counters per backend and server (`show stat`, selected columns).
    pub haproxy_stats: Vec<BTreeMap<String, String>>,
    /// What the load generator did.
    pub generator: LoadStats,
    /// Requests per chart bucket.
    pub timeline: Timeline,
    /// `/proc/loadavg` at the end of the run (the machine may be shared).
    pub loadavg: String,
    /// Machine-wide counters over the run.
    pub machine: Machine,
}

/// The load generator's worst dispatch lag beyond which a run counts as stalled: the machine
/// (another tenant, the hypervisor) held the generator up, so the run did not apply its load as
/// scheduled and says little about the servers.
pub const STALL_LAG_SECONDS: f64 = 0.25;

impl RunReport {
    /// Whether the machine stalled during the run: the generator could not send part of its load,
    /// or was itself held up longer than [`STALL_LAG_SECONDS`]. Judged from the generator's own
    /// timing, not from the servers' answers.
    pub fn machine_stalled(&self) -> bool {
        self.not_sent > 0 || self.generator.max_dispatch_lag > STALL_LAG_SECONDS
    }

    /// Whether every replica the rollout stopped, and every cleanup, exited 0.
    pub fn all_exited_zero(&self) -> bool {
        self.replicas.iter().all(|r| r.exit_code == Some(0))
    }

    /// Replicas stopped by the rollout (not the cleanup at the end).
    pub fn rolled(&self) -> impl Iterator<Item = &ReplicaRecord> {
        self.replicas.iter().filter(|r| !r.cleanup)
    }
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i] * 1000.0 * 100.0).round() / 100.0
    };
    Percentiles {
        count: v.len(),
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    }
}

const STAT_COLUMNS: &[&str] = &[
    "pxname", "svname", "status", "stot", "econ", "eresp", "wretr", "wredis", "hrsp_2xx",
    "hrsp_5xx", "cli_abrt", "srv_abrt", "weight",
];

/// Builds the report of a run.
#[allow(clippy::too_many_arguments)]
pub fn build(
    opts: &Options,
    samples: Vec<Sample>,
    generator: LoadStats,
    windows: Windows,
    mut replicas: Vec<ReplicaRecord>,
    events: Vec<Event>,
    haproxy_log: LogSummary,
    stats: Vec<BTreeMap<String, String>>,
    machine: Machine,
) -> RunReport {
    let mut outcomes: BTreeMap<&'static str, u64> =
        Outcome::ALL.iter().map(|o| (o.key(), 0)).collect();
    let mut by_version: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut streams = Streams::default();
    let mut lat: [Vec<f64>; 3] = Default::default();
    let mut failures = Vec::new();
    // Whole buckets only: a partial last one would draw a false drop.
    let buckets = (((windows.load_stop - windows.load_start) / BUCKET).floor() as usize).max(1);
    let mut timeline = Timeline {
        bucket_seconds: BUCKET,
        start: windows.load_start,
        ok_by_version: BTreeMap::new(),
        failed_by_version: BTreeMap::new(),
        failed: vec![0; buckets],
    };
    let slot_version: BTreeMap<String, String> = replicas
        .iter()
        .map(|r| (r.slot.clone(), r.version.clone()))
        .collect();
    let mut failed_at: BTreeMap<String, u64> = BTreeMap::new();
    // Per slot: responses served and the end of the last one.
    let mut served: BTreeMap<String, (u64, Vec<f64>)> = BTreeMap::new();
    let mut sorted = samples;
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut not_sent = 0;
    for s in &sorted {
        *outcomes.entry(s.outcome.key()).or_default() += 1;
        if s.outcome == Outcome::Overload {
            not_sent += 1;
            continue;
        }
        let version = s
            .version
            .as_deref()
            .or_else(|| {
                s.served_by
                    .as_deref()
                    .and_then(|slot| slot_version.get(slot))
                    .map(String::as_str)
            })
            .unwrap_or("none")
            .to_owned();
        *by_version
            .entry(version.clone())
            .or_default()
            .entry(s.outcome.key())
            .or_default() += 1;
        if s.kind == Kind::Stream {
            streams.total += 1;
            match (s.outcome, s.stream_end) {
                (Outcome::Ok, Some(StreamEnd::Done)) => streams.done += 1,
                (Outcome::Ok, Some(StreamEnd::Reconnect)) => streams.reconnect += 1,
                (Outcome::Truncated, _) => streams.truncated += 1,
                _ => streams.failed_to_start += 1,
            }
        }
        if s.outcome == Outcome::Ok && s.kind == Kind::Chat {
            let w = if s.at < windows.rollout_start {
                0
            } else if s.at < windows.rollout_end {
                1
            } else {
                2
            };
            lat[w].push(s.latency);
        }
        let b = ((s.at - windows.load_start) / BUCKET).max(0.0) as usize;
        if s.outcome.is_failure() {
            if let Some(slot) = &s.served_by {
                *failed_at.entry(slot.to_string()).or_default() += 1;
            }
            // Charted when it failed (a cut stream fails long after it was sent).
            let b = ((s.end() - windows.load_start) / BUCKET).max(0.0) as usize;
            if b < buckets {
                timeline.failed[b] += 1;
                timeline
                    .failed_by_version
                    .entry(version)
                    .or_insert_with(|| vec![0; buckets])[b] += 1;
            }
            if failures.len() < 100 {
                failures.push(Failure {
                    t: round3(s.at),
                    kind: match s.kind {
                        Kind::Chat => "chat",
                        Kind::Stream => "stream",
                    },
                    outcome: s.outcome.key(),
                    status: s.status,
                    served_by: s.served_by.as_deref().map(str::to_owned),
                    error: s.error.as_deref().unwrap_or_default().to_owned(),
                });
            }
        } else if b < buckets {
            timeline
                .ok_by_version
                .entry(version)
                .or_insert_with(|| vec![0; buckets])[b] += 1;
        }
        if let (Some(slot), false) = (&s.served_by, s.outcome.is_failure()) {
            let e = served.entry(slot.to_string()).or_default();
            e.0 += 1;
            e.1.push(s.end());
        }
    }
    for r in &mut replicas {
        r.failed = failed_at.get(&r.slot).copied().unwrap_or(0);
        if let Some((n, ends)) = served.get(&r.slot) {
            r.served = *n;
            if let Some(sig) = r.sigterm {
                r.last_response_after_sigterm = ends
                    .iter()
                    .copied()
                    .filter(|t| *t >= sig)
                    .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
                    .map(|t| round3(t - sig));
            }
        }
        if let Some(sig) = r.sigterm {
            r.out_of_lb = events
                .iter()
                .find(|e| {
                    e.subject == r.slot && e.t >= sig && matches!(e.kind, "lb-down" | "lb-maint")
                })
                .map(|e| e.t);
            r.removal_lag_seconds = r.out_of_lb.map(|t| round3(t - sig));
        }
        r.shutdown_seconds = r.shutdown_seconds.map(round3);
    }
    let requests = sorted.len() as u64 - not_sent;
    let failed = requests - outcomes[Outcome::Ok.key()];
    let [before, during, after] = lat;
    let latency_ms = BTreeMap::from([
        ("before", percentiles(before)),
        ("during", percentiles(during)),
        ("after", percentiles(after)),
    ]);
    let haproxy_stats = stats
        .into_iter()
        .filter(|row| {
            row.get("svname").is_some_and(|s| s != "FRONTEND")
                && row.get("stot").is_some_and(|v| v != "0")
        })
        .map(|row| {
            row.into_iter()
                .filter(|(k, _)| STAT_COLUMNS.contains(&k.as_str()))
                .collect()
        })
        .collect();
    RunReport {
        strategy: opts.strategy.name(),
        mode: opts.mode.name(),
        run: opts.run,
        settings: Settings {
            replicas: opts.replicas,
            rate: opts.rate,
            connections: opts.connections,
            stream_every: opts.stream_every,
            before_seconds: opts.before.as_secs_f64(),
            after_seconds: opts.after.as_secs_f64(),
            canary_hold_seconds: opts.canary_hold.as_secs_f64(),
            canary_percent: opts.canary_percent,
            check_interval_ms: opts.check_interval.as_millis(),
            shutdown_delay_ms: opts.shutdown_delay.as_millis(),
            drain_timeout_ms: opts.drain_timeout.as_millis(),
            warmup_delay_ms: opts.warmup_delay.as_millis(),
            token_delay_ms: opts.token_delay.as_millis(),
            websockets: opts.websockets,
            grpc: opts.grpc,
            stream_close_spread_ms: opts.stream_close_spread.map(|d| d.as_millis()),
        },
        windows,
        requests,
        failed,
        not_sent,
        outcomes,
        by_version,
        streams,
        latency_ms,
        replicas,
        events,
        failures,
        haproxy_log,
        haproxy_stats,
        generator,
        timeline,
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        machine,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn secs(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}s"))
}

/// The printed report of one run.
pub fn text(r: &RunReport) -> String {
    let mut o = String::new();
    let w = &r.windows;
    let _ = writeln!(
        o,
        "── {} · {} · run {} · {} replicas · {} req/s over {} keep-alive connections · checks {} ms · delay {} ms",
        r.strategy,
        r.mode,
        r.run,
        r.settings.replicas,
        r.settings.rate,
        r.settings.connections,
        r.settings.check_interval_ms,
        r.settings.shutdown_delay_ms
    );
    let _ = writeln!(
        o,
        "   load {:.1}s (rollout {:.1}s); requests {}  ok {}  FAILED {}",
        w.load_stop - w.load_start,
        w.rollout_end - w.rollout_start,
        thousands(r.requests),
        thousands(r.outcomes["ok"]),
        thousands(r.failed)
    );
    if r.not_sent > 0 {
        let _ = writeln!(
            o,
            "   NOT SENT {}: the generator ran out of connections (the machine stalled); not server failures, but this run did not apply its load",
            thousands(r.not_sent)
        );
    }
    for o_ in Outcome::ALL.iter().filter(|o| o.is_failure()) {
        let n = r.outcomes[o_.key()];
        if n > 0 {
            let _ = writeln!(o, "     {:>6}  {:<20} {}", n, o_.key(), o_.meaning());
        }
    }
    let versions: Vec<String> = r
        .by_version
        .iter()
        .map(|(v, m)| {
            let total: u64 = m.values().sum();
            let failed = total - m.get("ok").copied().unwrap_or(0);
            format!("{v}: {} ({} failed)", thousands(total), failed)
        })
        .collect();
    let _ = writeln!(o, "   by version  {}", versions.join(" · "));
    let s = &r.streams;
    let _ = writeln!(
        o,
        "   streams {}: done {}, reconnect {} (clean), truncated {}, failed to start {}",
        s.total, s.done, s.reconnect, s.truncated, s.failed_to_start
    );
    let _ = writeln!(
        o,
        "   latency ms (POST /v1/chat, from due time)   p50     p95     p99     max      n"
    );
    for k in ["before", "during", "after"] {
        let p = &r.latency_ms[k];
        let _ = writeln!(
            o,
            "     {:<40} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7}",
            k, p.p50, p.p95, p.p99, p.max, p.count
        );
    }
    let _ = writeln!(
        o,
        "   replica  slot      version  SIGTERM→out-of-LB  SIGTERM→exit  last response after SIGTERM  served  failed  exit"
    );
    for rep in &r.replicas {
        let _ = writeln!(
            o,
            "     {:<6} {:<9} {:<8} {:>17} {:>13} {:>28} {:>7} {:>7}  {}{}",
            rep.name,
            rep.slot,
            rep.version,
            secs(rep.removal_lag_seconds),
            secs(rep.shutdown_seconds),
            secs(rep.last_response_after_sigterm),
            rep.served,
            rep.failed,
            rep.exit.as_deref().unwrap_or("-"),
            if rep.cleanup { " (after the load)" } else { "" }
        );
    }
    if !r.haproxy_log.failed_requests.is_empty() {
        let states: Vec<String> = r
            .haproxy_log
            .failed_requests
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            o,
            "   HAProxy log (status termination-state server): {}",
            states.join(", ")
        );
    }
    let m = &r.machine;
    let _ = writeln!(
        o,
        "   machine over the run: CPU pressure {:.1}s, CPU steal {:.1}s, TCP listen overflows {}, SYN retransmits {}",
        m.cpu_pressure_seconds, m.cpu_steal_seconds, m.listen_overflows, m.syn_retransmits
    );
    let g = &r.generator;
    if g.max_dispatch_lag > STALL_LAG_SECONDS {
        let _ = writeln!(
            o,
            "   WARNING: the load generator itself was held up {:.0} ms: the machine stalled during this run",
            g.max_dispatch_lag * 1000.0
        );
    }
    let rpc = &g.grpc;
    if rpc.sent > 0 {
        let secs = (r.windows.load_stop - r.windows.load_start).max(1e-3);
        let _ = writeln!(
            o,
            "   gRPC: {} RPCs sent ({:.0}/s) / {} OK / {} FAILED; streams {} ended with their final message of {} ({} reconnect); {} not sent (client at its in-flight limit); {} channels{}",
            rpc.sent,
            rpc.sent as f64 / secs,
            rpc.ok,
            rpc.failed,
            rpc.streams_final,
            rpc.streams,
            rpc.streams_reconnect,
            rpc.skipped,
            rpc.connections,
            if rpc.errors.is_empty() {
                String::new()
            } else {
                format!("; first failures: {:?}", rpc.errors)
            }
        );
    }
    let _ = writeln!(
        o,
        "   generator: {} connections opened (max {} open), max {} in flight, worst dispatch lag {:.1} ms, {} stale pooled connections; loadavg {}",
        g.connections_opened,
        g.max_open_connections,
        g.max_in_flight,
        g.max_dispatch_lag * 1000.0,
        g.stale_connections,
        r.loadavg
    );
    o
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The side-by-side table: one column per mode, summed over runs, for one strategy.
pub fn comparison(strategy: &str, reports: &[&RunReport]) -> String {
    let mut modes: Vec<&'static str> = Vec::new();
    for r in reports {
        if !modes.contains(&r.mode) {
            modes.push(r.mode);
        }
    }
    fn runs_of<'a>(
        reports: &'a [&'a RunReport],
        mode: &'a str,
    ) -> impl Iterator<Item = &'a RunReport> + 'a {
        reports.iter().copied().filter(move |r| r.mode == mode)
    }
    let of = |m: &'static str| runs_of(reports, m);
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let sum = |m: &'static str, f: &dyn Fn(&RunReport) -> u64| of(m).map(f).sum::<u64>();
    rows.push((
        "runs".into(),
        modes.iter().map(|m| of(m).count().to_string()).collect(),
    ));
    rows.push((
        "requests".into(),
        modes
            .iter()
            .map(|m| thousands(sum(m, &|r| r.requests)))
            .collect(),
    ));
    rows.push((
        "FAILED".into(),
        modes
            .iter()
            .map(|m| thousands(sum(m, &|r| r.failed)))
            .collect(),
    ));
    let not_sent: Vec<u64> = modes.iter().map(|m| sum(m, &|r| r.not_sent)).collect();
    if not_sent.iter().any(|n| *n > 0) {
        rows.push((
            "not sent (generator stalled)".into(),
            not_sent.iter().map(|n| thousands(*n)).collect(),
        ));
    }
    for o in Outcome::ALL.iter().filter(|o| o.is_failure()) {
        let k = o.key();
        let counts: Vec<u64> = modes.iter().map(|m| sum(m, &|r| r.outcomes[k])).collect();
        if counts.iter().any(|c| *c > 0) {
            rows.push((
                format!("  {k}"),
                counts.iter().map(|c| thousands(*c)).collect(),
            ));
        }
    }
    rows.push((
        "streams: truncated / reconnect".into(),
        modes
            .iter()
            .map(|m| {
                format!(
                    "{} / {}",
                    sum(m, &|r| r.streams.truncated),
                    sum(m, &|r| r.streams.reconnect)
                )
            })
            .collect(),
    ));
    rows.push((
        "websockets: 1001 / abnormal / peak reconnects per 100 ms".into(),
        modes
            .iter()
            .map(|m| {
                let peak = of(m)
                    .map(|r| r.generator.websockets.peak_reconnects_per_100ms)
                    .max()
                    .unwrap_or(0);
                format!(
                    "{} / {} / {peak}",
                    sum(m, &|r| r.generator.websockets.closed_going_away),
                    sum(m, &|r| r.generator.websockets.failures()),
                )
            })
            .collect(),
    ));
    if reports.iter().any(|r| r.generator.grpc.sent > 0) {
        rows.push((
            "gRPC: sent / OK / FAILED".into(),
            modes
                .iter()
                .map(|m| {
                    format!(
                        "{} / {} / {}",
                        thousands(sum(m, &|r| r.generator.grpc.sent)),
                        thousands(sum(m, &|r| r.generator.grpc.ok)),
                        thousands(sum(m, &|r| r.generator.grpc.failed)),
                    )
                })
                .collect(),
        ));
        rows.push((
            "gRPC streams: final message / of them reconnect".into(),
            modes
                .iter()
                .map(|m| {
                    format!(
                        "{} of {} / {}",
                        sum(m, &|r| r.generator.grpc.streams_final),
                        sum(m, &|r| r.generator.grpc.streams),
                        sum(m, &|r| r.generator.grpc.streams_reconnect),
                    )
                })
                .collect(),
        ));
    }
    let med = |m: &'static str, f: &dyn Fn(&ReplicaRecord) -> Option<f64>| {
        secs(median(
            of(m).flat_map(|r| r.rolled().filter_map(f)).collect(),
        ))
    };
    rows.push((
        "median SIGTERM→exit".into(),
        modes
            .iter()
            .map(|m| med(m, &|x| x.shutdown_seconds))
            .collect(),
    ));
    rows.push((
        "median SIGTERM→out of LB".into(),
        modes
            .iter()
            .map(|m| med(m, &|x| x.removal_lag_seconds))
            .collect(),
    ));
    rows.push((
        "exit codes".into(),
        modes
            .iter()
            .map(|m| {
                let mut codes: BTreeMap<String, usize> = BTreeMap::new();
                for r in of(m) {
                    for x in &r.replicas {
                        *codes
                            .entry(x.exit.clone().unwrap_or_else(|| "-".into()))
                            .or_default() += 1;
                    }
                }
                codes
                    .iter()
                    .map(|(c, n)| format!("{c}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
    ));
    rows.push((
        "p99 ms before/during/after".into(),
        modes
            .iter()
            .map(|m| {
                // The median run's p99: one run on a busy machine should not stand for all.
                let p99 = |k: &str| median(of(m).map(|r| r.latency_ms[k].p99).collect());
                format!(
                    "{:.0}/{:.0}/{:.0}",
                    p99("before").unwrap_or(0.0),
                    p99("during").unwrap_or(0.0),
                    p99("after").unwrap_or(0.0)
                )
            })
            .collect(),
    ));
    let width = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(String::len))
        .chain(modes.iter().map(|m| m.len()))
        .max()
        .unwrap_or(8)
        .max(8)
        + 2;
    let mut o = String::new();
    let first = reports.first();
    let _ = writeln!(
        o,
        "\n{strategy}: {} replicas, {} req/s{}",
        first.map_or(0, |r| r.settings.replicas),
        first.map_or(0.0, |r| r.settings.rate),
        first.map_or(String::new(), |r| format!(
            ", HAProxy checks every {} ms, no retries; podcycle delay {} ms",
            r.settings.check_interval_ms, r.settings.shutdown_delay_ms
        ))
    );
    let _ = write!(o, "{:<32}", "");
    for m in &modes {
        let _ = write!(o, "{m:>width$}");
    }
    o.push('\n');
    for (label, values) in rows {
        let _ = write!(o, "{label:<32}");
        for v in values {
            let _ = write!(o, "{v:>width$}");
        }
        o.push('\n');
    }
    for m in &modes {
        let per_run: Vec<String> = of(m).map(|r| r.failed.to_string()).collect();
        let _ = writeln!(o, "failed per run, {m:<10}      {}", per_run.join(" "));
    }
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Line colour of a version's successful requests: old blue, new green.
fn ok_color(version: &str) -> &'static str {
    match version {
        super::VERSION_A => "#1f77b4",
        super::VERSION_B => "#2ca02c",
        _ => "#9467bd",
    }
}

/// Bar colour of a version's failed requests: old dark red, new light red, none grey.
fn fail_color(version: &str) -> &'static str {
    match version {
        super::VERSION_A => "#d62728",
        super::VERSION_B => "#ff9896",
        "none" => "#7f7f7f",
        _ => "#e377c2",
    }
}

/// Which events the chart marks, their colour and label.
fn mark(e: &Event) -> Option<(&'static str, String)> {
    let s = &e.subject;
    Some(match e.kind {
        "start" => ("#999999", format!("{s} started")),
        "in-lb" => ("#2ca02c", format!("{s} ready, in LB")),
        "sigterm" => ("#d62728", format!("{s} SIGTERM")),
        "lb-down" | "lb-maint" => return None,
        "exit" => ("#8c564b", format!("{s} exited ({})", e.detail)),
        "switch" => ("#000000", "switch blue→green".into()),
        "canary" => ("#000000", format!("canary {s}")),
        "promote" => ("#000000", format!("promote {s}")),
        _ => return None,
    })
}

/// An SVG chart: one panel per run (stacked), each with successful requests/s per version,
/// failures per bucket, and the rollout's events as labelled vertical lines.
pub fn chart(title: &str, reports: &[&RunReport]) -> String {
    const W: f64 = 1100.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 24.0;
    const LABELS: f64 = 118.0;
    const PLOT: f64 = 170.0;
    const GAP: f64 = 10.0;
    const FAIL: f64 = 46.0;
    const AXIS: f64 = 34.0;
    let panel = 22.0 + LABELS + PLOT + GAP + FAIL + AXIS;
    let height = 34.0 + panel * reports.len() as f64 + 10.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    // One time scale for every panel, so they compare.
    let span = reports
        .iter()
        .map(|r| r.timeline.failed.len() as f64 * r.timeline.bucket_seconds)
        .fold(BUCKET, f64::max);
    for (pi, r) in reports.iter().enumerate() {
        let top = 34.0 + panel * pi as f64;
        let plot_top = top + 22.0 + LABELS;
        let plot_bottom = plot_top + PLOT;
        let fail_top = plot_bottom + GAP;
        let fail_bottom = fail_top + FAIL;
        let t0 = r.timeline.start;
        let x = |t: f64| LEFT + (t - t0).clamp(0.0, span) / span * (W - LEFT - RIGHT);
        let per_s = 1.0 / r.timeline.bucket_seconds;
        let max_rate = r
            .timeline
            .ok_by_version
            .values()
            .flat_map(|v| v.iter())
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * per_s;
        let ymax = nice(max_rate * 1.1);
        let y = |v: f64| plot_bottom - (v / ymax).min(1.0) * PLOT;
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{} — {}: {} requests, {} failed ({} truncated streams, {} clean reconnects)</text>"#,
            top + 16.0,
            esc(r.mode),
            esc(r.strategy),
            thousands(r.requests),
            thousands(r.failed),
            r.streams.truncated,
            r.streams.reconnect
        );
        // Axes and grid.
        for k in 0..=4 {
            let v = ymax * f64::from(k) / 4.0;
            let yy = y(v);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                v.round()
            );
        }
        let _ = writeln!(
            o,
            r##"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="#555">ok req/s</text>"##,
            (plot_top + plot_bottom) / 2.0,
            (plot_top + plot_bottom) / 2.0
        );
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT}" y="{plot_top:.1}" width="{:.1}" height="{PLOT}" fill="none" stroke="#999"/>"##,
            W - LEFT - RIGHT
        );
        // Rollout window.
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{plot_top:.1}" width="{:.1}" height="{PLOT}" fill="#fff4d6" opacity="0.6"/>"##,
            x(r.windows.rollout_start),
            (x(r.windows.rollout_end) - x(r.windows.rollout_start)).max(0.0)
        );
        // Requests per second, per version.
        for (vi, (version, counts)) in r.timeline.ok_by_version.iter().enumerate() {
            let pts: Vec<String> = counts
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    format!(
                        "{:.1},{:.1}",
                        x(t0 + (i as f64 + 0.5) * r.timeline.bucket_seconds),
                        y(f64::from(*c) * per_s)
                    )
                })
                .collect();
            let color = ok_color(version);
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
                pts.join(" ")
            );
            let _ = writeln!(
                o,
                r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{} ok/s</text>"#,
                W - RIGHT - 150.0 + 80.0 * vi as f64 - 80.0,
                plot_top + 10.0,
                W - RIGHT - 150.0 + 80.0 * vi as f64 - 64.0,
                plot_top + 14.0,
                esc(version)
            );
        }
        // Failures per bucket.
        let max_fail = r.timeline.failed.iter().copied().max().unwrap_or(0);
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT}" y="{fail_top:.1}" width="{:.1}" height="{FAIL}" fill="#fafafa" stroke="#999"/>"##,
            W - LEFT - RIGHT
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#d62728">failed</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#d62728" font-size="9">per {:.0} ms</text><text x="{:.1}" y="{:.1}" fill="#d62728" font-size="9">max {max_fail} per bucket</text>"##,
            LEFT - 6.0,
            fail_top + 18.0,
            LEFT - 6.0,
            fail_top + 30.0,
            r.timeline.bucket_seconds * 1000.0,
            LEFT + 4.0,
            fail_top + 10.0
        );
        let bw = (W - LEFT - RIGHT) * r.timeline.bucket_seconds / span;
        let unit = (FAIL - 4.0) / f64::from(max_fail.max(1));
        for (i, total) in r.timeline.failed.iter().enumerate() {
            if *total == 0 {
                continue;
            }
            // Stacked by version: the old version dark red, the new one light red, none grey.
            let mut base = fail_bottom;
            for (version, counts) in &r.timeline.failed_by_version {
                let c = counts.get(i).copied().unwrap_or(0);
                if c == 0 {
                    continue;
                }
                let h = f64::from(c) * unit;
                let color = fail_color(version);
                let _ = writeln!(
                    o,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"><title>{c} failed ({}) at {:.2}s</title></rect>"#,
                    LEFT + i as f64 * bw,
                    base - h,
                    bw.max(1.5),
                    esc(version),
                    i as f64 * r.timeline.bucket_seconds
                );
                base -= h;
            }
        }
        let legend: Vec<String> = r
            .timeline
            .failed_by_version
            .iter()
            .map(|(version, counts)| {
                let color = fail_color(version);
                format!(
                    r#"<tspan fill="{color}">■ {} ({})</tspan>"#,
                    esc(version),
                    counts.iter().sum::<u32>()
                )
            })
            .collect();
        if !legend.is_empty() {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10">failed by version: {}</text>"#,
                W - RIGHT - 4.0,
                fail_top + 12.0,
                legend.join(" ")
            );
        }
        if max_fail == 0 {
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#2ca02c">no failed request</text>"##,
                (LEFT + W - RIGHT) / 2.0,
                fail_top + FAIL / 2.0 + 4.0
            );
        }
        // Time axis: seconds since the load started.
        let step = if span > 60.0 {
            10.0
        } else if span > 20.0 {
            5.0
        } else {
            2.0
        };
        let mut t = 0.0;
        while t <= span + 1e-9 {
            let xx = x(t0 + t);
            let _ = writeln!(
                o,
                r##"<line x1="{xx:.1}" y1="{fail_bottom:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#999"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{t:.0}s</text>"##,
                fail_bottom + 4.0,
                fail_bottom + 16.0
            );
            t += step;
        }
        // Events.
        let mut last_label = f64::NEG_INFINITY;
        for e in &r.events {
            if e.t < r.windows.load_start || e.t > r.windows.load_stop {
                continue;
            }
            let Some((color, label)) = mark(e) else {
                continue;
            };
            let xx = x(e.t);
            let _ = writeln!(
                o,
                r#"<line x1="{xx:.1}" y1="{plot_top:.1}" x2="{xx:.1}" y2="{fail_bottom:.1}" stroke="{color}" stroke-dasharray="3,2" stroke-width="1"><title>{:.3}s {}</title></line>"#,
                e.t - t0,
                esc(&label)
            );
            let lx = xx.max(last_label + 10.0);
            last_label = lx;
            let _ = writeln!(
                o,
                r#"<text x="{lx:.1}" y="{:.1}" transform="rotate(-90 {lx:.1} {:.1})" fill="{color}" font-size="9">{}</text>"#,
                plot_top - 3.0,
                plot_top - 3.0,
                esc(&label)
            );
        }
    }
    o.push_str("</svg>\n");
    o
}

/// A round axis maximum at or above `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_formatting() {
        let p = percentiles((1..=100).map(|i| f64::from(i) / 1000.0).collect());
        assert_eq!(
            (p.p50, p.p95, p.p99, p.max, p.count),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert_eq!(thousands(98483), "98,483");
        assert_eq!(thousands(7), "7");
        assert_eq!(nice(2150.0), 2500.0);
    }
}
