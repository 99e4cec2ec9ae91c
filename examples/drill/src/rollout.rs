//! One drill run: HAProxy, version A replicas, load, the rollout to version B, the report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::haproxy::{self, Haproxy, HaproxyConfig, Slot};
use super::load::{Load, LoadConfig};
use super::replicas::{free_port, Replica, ReplicaEnv, ReplicaRecord};
use super::report::{self, RunReport, Windows};
use super::websockets::WsLoad;
use super::{Clock, Events, Options, Strategy, VERSION_A, VERSION_B};
use crate::grpc::{GrpcLoad, GrpcPace};

/// Bound on a replica becoming ready (process start, warm-up).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Bound on HAProxy seeing an enabled replica UP.
const UP_WITHIN: Duration = Duration::from_secs(10);

/// Runs one drill and returns its report. HAProxy and every replica are stopped on return,
/// error or not (their handles kill on drop).
pub async fn run(opts: &Options) -> Result<RunReport, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let machine = report::Machine::now();
    let clock = Clock(Instant::now());
    let events = Events::new(clock);
    let haproxy = Haproxy::start(
        &opts.haproxy,
        &opts.dir,
        &HaproxyConfig {
            slots: opts.replicas * 2,
            check_interval: opts.check_interval,
            frontend_port: free_port()?,
            grpc_frontend_port: if opts.grpc > 0 {
                Some(free_port()?)
            } else {
                None
            },
        },
    )
    .await?;
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn(watch(
        haproxy.socket().to_owned(),
        events.clone(),
        watching.clone(),
    ));
    let fleet = Fleet {
        opts,
        haproxy: &haproxy,
        clock,
        events: events.clone(),
        env: ReplicaEnv {
            mode: opts.mode,
            warmup_delay: opts.warmup_delay,
            shutdown_delay: opts.shutdown_delay,
            drain_timeout: opts.drain_timeout,
            token_delay: opts.token_delay,
            stream_close_spread: opts.stream_close_spread,
            extra: Vec::new(),
        },
    };
    let result = drive(&fleet, &haproxy, &events, clock).await;
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.await;
    let (samples, stats, windows, records) = result?;
    let servers = haproxy.stat().await.unwrap_or_default();
    let log_path = haproxy.log_path().to_owned();
    haproxy.stop().await;
    let log = haproxy::read_log(&log_path);
    Ok(report::build(
        opts,
        samples,
        stats,
        windows,
        records,
        events.snapshot(),
        log,
        servers,
        report::Machine::now().since(&machine),
    ))
}

type Driven = (
    Vec<super::load::Sample>,
    super::load::LoadStats,
    Windows,
    Vec<ReplicaRecord>,
);

async fn drive(
    fleet: &Fleet<'_>,
    haproxy: &Haproxy,
    events: &Events,
    clock: Clock,
) -> Result<Driven, String> {
    let opts = fleet.opts;
    let n = opts.replicas;
    // Version A, everywhere in the blue backend, before any load.
    let mut old = Vec::new();
    for i in 0..n {
        old.push(fleet.launch(
            &format!("A{}", i + 1),
            VERSION_A,
            Slot {
                backend: "blue",
                server: i + 1,
            },
        )?);
    }
    for r in join_all(old.iter_mut().map(|r| fleet.bring_up(r, 100))).await {
        r?;
    }

    let load = Load::start(
        LoadConfig {
            target: haproxy.addr,
            rate: opts.rate,
            connections: opts.connections,
            max_connections: 2048,
            stream_every: opts.stream_every,
            timeout: Duration::from_secs(15),
            stream_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(900),
        },
        clock.0,
    );
    let websockets = WsLoad::start(haproxy.addr, opts.websockets, opts.ws_every, clock.0);
    let grpc = haproxy.grpc_addr.map(|addr| {
        let pace = GrpcPace {
            every: opts.grpc_every,
            stream_every: 8,
            max_in_flight: 64,
            timeout: Duration::from_secs(15),
        };
        GrpcLoad::start(addr, opts.grpc, pace)
    });
    let load_start = events.push("load-start", "", format!("{} req/s", opts.rate));
    tokio::time::sleep(opts.before).await;
    let rollout_start = events.push("rollout-start", "", opts.strategy.name().to_owned());
    let (mut records, new) = match opts.strategy {
        Strategy::Rolling => rolling(fleet, old, Vec::new()).await?,
        Strategy::BlueGreen => blue_green(fleet, old).await?,
        Strategy::Canary => canary(fleet, old).await?,
    };
    let rollout_end = events.push("rollout-end", "", String::new());
    tokio::time::sleep(opts.after).await;
    let load_stop = events.push("load-stop", "", String::new());
    let (samples, mut stats) = load.stop().await?;
    stats.websockets = websockets.stop().await;
    if let Some(grpc) = grpc {
        stats.grpc = grpc.stop().await;
    }

    // Version B is stopped too, after the load, so every replica's exit is known.
    let cleaned = join_all(new.into_iter().map(|mut r| {
        r.record.cleanup = true;
        fleet.take_down(r)
    }))
    .await;
    for r in cleaned {
        records.push(r?);
    }
    let windows = Windows {
        load_start,
        rollout_start,
        rollout_end,
        load_stop,
    };
    Ok((samples, stats, windows, records))
}

/// B replaces A one replica at a time: new one up and in the load balancer, then SIGTERM an
/// old one and wait for it to exit (maxSurge 1, maxUnavailable 0). `new` holds B replicas that
/// are already up (the canary), which replace the first old ones.
async fn rolling(
    fleet: &Fleet<'_>,
    old: Vec<Replica>,
    mut new: Vec<Replica>,
) -> Result<(Vec<ReplicaRecord>, Vec<Replica>), String> {
    let n = fleet.opts.replicas;
    let mut records = Vec::new();
    for (i, a) in old.into_iter().enumerate() {
        if i >= new.len() {
            let mut b = fleet.launch(
                &format!("B{}", i + 1),
                VERSION_B,
                Slot {
                    backend: "blue",
                    server: n + i + 1,
                },
            )?;
            fleet.bring_up(&mut b, 100).await?;
            new.push(b);
        }
        records.push(fleet.take_down(a).await?);
    }
    Ok((records, new))
}

/// All of B up in the green backend, one atomic switch of HAProxy's backend, then all of A
/// terminated at once.
async fn blue_green(
    fleet: &Fleet<'_>,
    old: Vec<Replica>,
) -> Result<(Vec<ReplicaRecord>, Vec<Replica>), String> {
    let mut new = Vec::new();
    for i in 0..fleet.opts.replicas {
        new.push(fleet.launch(
            &format!("B{}", i + 1),
            VERSION_B,
            Slot {
                backend: "green",
                server: i + 1,
            },
        )?);
    }
    for r in join_all(new.iter_mut().map(|r| fleet.bring_up(r, 100))).await {
        r?;
    }
    fleet.haproxy.switch("green").await?;
    fleet
        .events
        .push("switch", "", "HAProxy backend blue → green".into());
    let mut records = Vec::new();
    for r in join_all(old.into_iter().map(|a| fleet.take_down(a))).await {
        records.push(r?);
    }
    Ok((records, new))
}

/// HAProxy weight of one canary among `n` stable replicas of weight 100 for `percent` of the
/// traffic.
pub fn canary_weight(n: usize, percent: u32) -> u32 {
    let p = f64::from(percent.clamp(1, 99)) / 100.0;
    ((100.0 * n as f64 * p / (1.0 - p)).round() as u32).clamp(1, 256)
}

/// One B replica at a small weight, held, promoted to full weight, then the rest the rolling way.
async fn canary(
    fleet: &Fleet<'_>,
    old: Vec<Replica>,
) -> Result<(Vec<ReplicaRecord>, Vec<Replica>), String> {
    let opts = fleet.opts;
    let weight = canary_weight(opts.replicas, opts.canary_percent);
    let mut b = fleet.launch(
        "B1",
        VERSION_B,
        Slot {
            backend: "blue",
            server: opts.replicas + 1,
        },
    )?;
    fleet.bring_up(&mut b, weight).await?;
    fleet.events.push(
        "canary",
        "B1",
        format!("weight {weight} ≈ {}%", opts.canary_percent),
    );
    tokio::time::sleep(opts.canary_hold).await;
    fleet.haproxy.set_weight(b.slot, 100).await?;
    fleet
        .events
        .push("promote", "B1", "weight 100; replacing the rest".into());
    rolling(fleet, old, vec![b]).await
}

/// Starts, readies and stops replicas, recording what happened.
struct Fleet<'a> {
    opts: &'a Options,
    haproxy: &'a Haproxy,
    clock: Clock,
    events: Events,
    env: ReplicaEnv,
}

impl Fleet<'_> {
    fn launch(&self, name: &str, version: &str, slot: Slot) -> Result<Replica, String> {
        let r = Replica::spawn(
            &self.opts.replica,
            &self.env,
            &self.opts.dir,
            name,
            version,
            slot,
            self.clock.now(),
        )?;
        self.events.push(
            "start",
            name,
            format!(
                "{version} pid {} app :{} admin :{} → {slot}",
                r.record.pid, r.record.app_port, r.record.admin_port
            ),
        );
        Ok(r)
    }

    /// Ready by its own probe, then published in HAProxy and seen UP there.
    async fn bring_up(&self, r: &mut Replica, weight: u32) -> Result<(), String> {
        r.wait_ready(READY_WITHIN).await?;
        r.record.ready = Some(self.events.push("ready", r.name(), String::new()));
        self.haproxy
            .attach(r.slot, r.record.app_port, r.record.admin_port, weight)
            .await?;
        self.haproxy.wait_up(r.slot, UP_WITHIN).await?;
        r.record.in_lb = Some(self.events.push(
            "in-lb",
            r.name(),
            format!("{} UP, weight {weight}", r.slot),
        ));
        Ok(())
    }

    /// SIGTERM, wait for the exit (bounded), then remove the slot from HAProxy once its health
    /// check has taken it out: HAProxy learns of the termination only through `/readyz` (as
    /// kube-proxy learns of it only with a lag), whether the process is still there or not.
    async fn take_down(&self, mut r: Replica) -> Result<ReplicaRecord, String> {
        // Timestamped just before kill(1) runs: starting it can take a while on a loaded
        // machine, and SIGTERM-to-exit must not be undercounted.
        let sent = self.events.push("sigterm", r.name(), String::new());
        r.record.sigterm = Some(sent);
        r.sigterm().await?;
        let within = self.opts.shutdown_delay + self.opts.drain_timeout + Duration::from_secs(10);
        let (code, exit) = r.wait_exit(within).await;
        let exited = self.events.push("exit", r.name(), exit.clone());
        r.record.exited = Some(exited);
        r.record.exit_code = code;
        r.record.exit = Some(exit);
        r.record.shutdown_seconds = Some(exited - sent);
        let within = self.opts.check_interval * 4 + Duration::from_secs(2);
        if !self.haproxy.wait_down(r.slot, within).await? {
            self.events.push(
                "note",
                r.name(),
                format!("HAProxy still had {} UP {within:?} after the exit", r.slot),
            );
        }
        self.haproxy.detach(r.slot).await?;
        Ok(r.record)
    }
}

/// Polls `show servers state` every 50 ms and records every change of a slot's state as an
/// `lb-up` / `lb-down` / `lb-maint` / `lb-drain` event, until `running` turns false.
async fn watch(socket: PathBuf, events: Events, running: Arc<AtomicBool>) {
    let mut last: std::collections::HashMap<String, &'static str> = Default::default();
    while running.load(Ordering::Relaxed) {
        if let Ok(out) = haproxy::command(&socket, "show servers state").await {
            // The gRPC backends' servers track these: the same events.
            for s in haproxy::parse_states(&out)
                .into_iter()
                .filter(|s| !s.slot.contains("-grpc/"))
            {
                let label = s.label();
                let before = last.insert(s.slot.clone(), label);
                if before.is_some() && before != Some(label) {
                    let kind = match label {
                        "UP" => "lb-up",
                        "DOWN" => "lb-down",
                        "MAINT" => "lb-maint",
                        "DRAIN" => "lb-drain",
                        _ => "lb-other",
                    };
                    events.push(kind, &s.slot, label.to_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::canary_weight;

    #[test]
    fn canary_weight_gives_the_share() {
        // 3 × 100 stable + 33 canary: 33 / 333 ≈ 10 %.
        assert_eq!(canary_weight(3, 10), 33);
        assert_eq!(canary_weight(2, 50), 200);
        assert_eq!(canary_weight(1, 1), 1);
    }
}
