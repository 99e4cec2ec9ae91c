//! HAProxy as the load balancer: a config written to the run's directory, the process started
//! as a child, and control through the runtime API on its admin socket.
//!
//! The admin socket lives in the temporary directory (a unix socket path must be short).
//! Two backends, `blue` and `green`, each with pre-declared server slots that start in
//! maintenance with a placeholder address. A replica joins by `set server <slot> addr ...`,
//! `check-port` (its admin port, where `/readyz` is) and `enable server` once the replica reports
//! ready itself (the endpoint appears when the pod is Ready, as in Kubernetes). It leaves by
//! failing its health check (`option httpchk GET /readyz`, `fall 1`): the removal lag is the
//! check interval. The frontend routes to the backend named in a map (`set map` switches
//! blue/green atomically). No retries, no redispatch: every failure reaches the client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server slot: `blue/s1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The backend: `blue` or `green`.
    pub backend: &'static str,
    /// 1-based.
    pub server: usize,
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s{}", self.backend, self.server)
    }
}

/// HAProxy's two backends: blue/green switches between them, the other strategies use blue.
pub const BACKENDS: [&str; 2] = ["blue", "green"];

/// One row of `show servers state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// `backend/server`.
    pub slot: String,
    /// 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op: u32,
    /// Bit mask; 0x01 forced maintenance, 0x08 forced drain.
    pub admin: u32,
    /// The server's current weight.
    pub weight: u32,
    /// 3 = passed.
    pub check_result: u32,
}

impl ServerState {
    /// `UP`, `DOWN`, `MAINT`, `DRAIN`, ...
    pub fn label(&self) -> &'static str {
        if self.admin & 0x01 != 0 {
            "MAINT"
        } else if self.admin & 0x08 != 0 {
            "DRAIN"
        } else {
            match self.op {
                0 => "DOWN",
                1 => "STARTING",
                2 => "UP",
                _ => "STOPPING",
            }
        }
    }
}

/// The HAProxy child process and its admin socket.
#[derive(Debug)]
pub struct Haproxy {
    child: tokio::process::Child,
    socket: PathBuf,
    map: PathBuf,
    log: PathBuf,
    /// The frontend clients connect to.
    pub addr: SocketAddr,
    /// The HTTP/2 frontend gRPC clients connect to, if configured.
    pub grpc_addr: Option<SocketAddr>,
}

/// Timings of the health checks and the proxy.
#[derive(Clone, Debug)]
pub struct HaproxyConfig {
    /// Server slots per backend.
    pub slots: usize,
    /// Health check interval (`inter`, with `fall 1 rise 1`).
    pub check_interval: Duration,
    /// The port of the frontend clients connect to.
    pub frontend_port: u16,
    /// The port of an HTTP/2 frontend for gRPC clients (`None`: no such frontend). Its
    /// backends, `blue-grpc` and `green-grpc`, speak HTTP/2 to the same replicas (`proto h2`)
    /// and `track` the servers of `blue` and `green`: same health, same maintenance.
    pub grpc_frontend_port: Option<u16>,
}

fn ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// The configuration file.
pub fn config_text(dir: &Path, socket: &Path, c: &HaproxyConfig) -> String {
    let map = dir.join("active.map");
    let mut text = format!(
        "# Written by the rollout drill.
global
    stats socket {socket} mode 600 level admin
    stats timeout 10s
    log stdout format raw local0 info
    maxconn 8000

defaults
    mode http
    log global
    # Log only what went wrong: 5xx, aborts, timeouts (with HAProxy's termination state).
    option dontlog-normal
    # Tc=-1: the connection to the server never completed; %bc/%sc: backend/server connections.
    log-format \"DRILL %t %b/%s %ST %tsc Tw=%Tw Tc=%Tc Tr=%Tr Ta=%Ta conns=%ac/%fc/%bc/%sc %{{+Q}}r\"
    option http-keep-alive
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout check 1s
    # No retries and no redispatch: a failed request is a failed request.
    retries 0
    no option redispatch
    default-server inter {inter}ms fastinter {inter}ms downinter {inter}ms fall 1 rise 1 weight 100

frontend fe
    bind 127.0.0.1:{port}
    use_backend %[str(active),map({map},blue)]
    # On every response, HAProxy's own errors included: which server it picked.
    http-after-response set-header x-served-by %b/%s
",
        socket = socket.display(),
        map = map.display(),
        inter = ms(c.check_interval),
        port = c.frontend_port,
    );
    for backend in BACKENDS {
        text.push_str(&format!(
            "
backend {backend}
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
"
        ));
        for i in 1..=c.slots {
            text.push_str(&format!(
                "    server s{i} 127.0.0.1:1 disabled check port 1\n"
            ));
        }
    }
    if let Some(port) = c.grpc_frontend_port {
        text.push_str(&format!(
            "
frontend fe-grpc
    # HTTP/2 only (prior knowledge, as gRPC clients speak it): long-lived client connections,
    # each stream balanced on its own.
    bind 127.0.0.1:{port} proto h2
    use_backend %[str(active),map({map},blue)]-grpc
",
            map = dir.join("active.map").display(),
        ));
        for backend in BACKENDS {
            text.push_str(&format!(
                "\nbackend {backend}-grpc\n    balance roundrobin\n"
            ));
            for i in 1..=c.slots {
                text.push_str(&format!(
                    "    server s{i} 127.0.0.1:1 proto h2 track {backend}/s{i}\n"
                ));
            }
        }
    }
    text
}

impl Haproxy {
    /// Writes the config to `dir` and starts `haproxy -f <cfg> -db`, logging to `dir/haproxy.log`.
    pub async fn start(bin: &Path, dir: &Path, config: &HaproxyConfig) -> Result<Haproxy, String> {
        // HAProxy wants absolute paths, and a unix socket path must stay short (108 bytes).
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cfg = dir.join("haproxy.cfg");
        let map = dir.join("active.map");
        let socket = std::env::temp_dir().join(format!(
            "podcycle-drill-{}-{}.sock",
            std::process::id(),
            config.frontend_port
        ));
        let log = dir.join("haproxy.log");
        let _ = std::fs::remove_file(&socket);
        std::fs::write(&cfg, config_text(&dir, &socket, config))
            .and_then(|()| std::fs::write(&map, "active blue\n"))
            .map_err(|e| format!("writing {}: {e}", cfg.display()))?;
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut haproxy = Haproxy {
            child,
            socket,
            map,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], config.frontend_port)),
            grpc_addr: config
                .grpc_frontend_port
                .map(|port| SocketAddr::from(([127, 0, 0, 1], port))),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = haproxy.child.try_wait() {
                return Err(format!(
                    "haproxy exited at start ({status}): {}",
                    tail(&haproxy.log, 20)
                ));
            }
            if haproxy.command("show info").await.is_ok() {
                return Ok(haproxy);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "haproxy admin socket not answering within 10s: {}",
                    tail(&haproxy.log, 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One runtime API command; returns HAProxy's answer.
    pub async fn command(&self, line: &str) -> Result<String, String> {
        command(&self.socket, line).await
    }

    /// The admin socket, for a concurrent watcher (see [`command`]).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A command whose answer must contain one of `accept` (or be empty when `accept` is empty).
    async fn expect(&self, line: &str, accept: &[&str]) -> Result<(), String> {
        let out = self.command(line).await?;
        let ok = if accept.is_empty() {
            out.trim().is_empty()
        } else {
            accept.iter().any(|a| out.contains(a))
        };
        if ok {
            Ok(())
        } else {
            Err(format!("haproxy `{line}` answered: {}", out.trim()))
        }
    }

    /// Points `slot` at a replica and enables it with `weight`.
    pub async fn attach(
        &self,
        slot: Slot,
        app_port: u16,
        admin_port: u16,
        weight: u32,
    ) -> Result<(), String> {
        self.expect(
            &format!("set server {slot} addr 127.0.0.1 port {app_port}"),
            &["changed", "no need to change"],
        )
        .await?;
        self.expect(&format!("set server {slot} check-port {admin_port}"), &[])
            .await?;
        if self.grpc_addr.is_some() {
            let twin = format!("{}-grpc/s{}", slot.backend, slot.server);
            self.expect(
                &format!("set server {twin} addr 127.0.0.1 port {app_port}"),
                &["changed", "no need to change"],
            )
            .await?;
        }
        self.set_weight(slot, weight).await?;
        self.expect(&format!("enable server {slot}"), &[]).await
    }

    /// Puts `slot` back in maintenance (the endpoint is gone).
    pub async fn detach(&self, slot: Slot) -> Result<(), String> {
        self.expect(&format!("disable server {slot}"), &[]).await
    }

    /// Sets `slot`'s weight (the canary's share).
    pub async fn set_weight(&self, slot: Slot, weight: u32) -> Result<(), String> {
        self.expect(&format!("set weight {slot} {weight}"), &[])
            .await?;
        if self.grpc_addr.is_some() {
            let twin = format!("{}-grpc/s{}", slot.backend, slot.server);
            self.expect(&format!("set weight {twin} {weight}"), &[])
                .await?;
        }
        Ok(())
    }

    /// Routes every new request to `backend`.
    pub async fn switch(&self, backend: &str) -> Result<(), String> {
        self.expect(
            &format!("set map {} active {backend}", self.map.display()),
            &[],
        )
        .await
    }

    /// `show servers state`, every backend.
    pub async fn states(&self) -> Result<Vec<ServerState>, String> {
        let out = self.command("show servers state").await?;
        Ok(parse_states(&out))
    }

    /// Waits until HAProxy has `slot` UP with a passed health check.
    pub async fn wait_up(&self, slot: Slot, within: Duration) -> Result<(), String> {
        let name = slot.to_string();
        let deadline = Instant::now() + within;
        loop {
            let states = self.states().await?;
            if let Some(s) = states.iter().find(|s| s.slot == name) {
                if s.label() == "UP" && s.check_result == 3 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "haproxy did not see {name} UP within {within:?} (state {}, check result {})",
                        s.label(),
                        s.check_result
                    ));
                }
            } else {
                return Err(format!("haproxy has no server {name}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until HAProxy no longer has `slot` UP (its health check failed); returns false
    /// when it still had it UP after `within`.
    pub async fn wait_down(&self, slot: Slot, within: Duration) -> Result<bool, String> {
        let name = slot.to_string();
        let deadline = Instant::now() + within;
        loop {
            let states = self.states().await?;
            match states.iter().find(|s| s.slot == name) {
                Some(s) if s.label() == "UP" => {}
                _ => return Ok(true),
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `show stat` as rows of named columns (frontend, backends, servers).
    pub async fn stat(&self) -> Result<Vec<BTreeMap<String, String>>, String> {
        let out = self.command("show stat").await?;
        let mut lines = out.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .map(str::to_owned)
            .collect();
        Ok(lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(l.split(',').map(str::to_owned))
                    .filter(|(_, v)| !v.is_empty())
                    .collect()
            })
            .collect())
    }

    /// The log file (HAProxy's own messages and one `DRILL` line per failed request).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops HAProxy (hard stop) and waits for it, bounded.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// One runtime API command on the admin socket at `socket` (one connection per command).
pub async fn command(socket: &Path, line: &str) -> Result<String, String> {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(format!("{line}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("haproxy `{line}`: {e}")),
        Err(_) => Err(format!("haproxy `{line}`: no answer within 5s")),
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // The process itself is killed on drop (`kill_on_drop`).
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Parses the output of `show servers state` into one [`ServerState`] per server.
pub fn parse_states(out: &str) -> Vec<ServerState> {
    out.lines()
        .filter(|l| !l.starts_with('#') && l.split(' ').count() > 12)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
            Some(ServerState {
                slot: format!("{}/{}", f.get(1)?, f.get(3)?),
                op: n(5)?,
                admin: n(6)?,
                weight: n(7)?,
                check_result: n(11)?,
            })
        })
        .collect()
}

/// HAProxy's log of failed requests, counted by `status termination-state`, and its
/// server state messages.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LogSummary {
    /// `"503 SC--"` → count; see HAProxy's "Session state at disconnection".
    pub failed_requests: BTreeMap<String, u64>,
    /// Up to 40 `DRILL` lines, for evidence.
    pub samples: Vec<String>,
    /// Server UP/DOWN messages.
    pub server_events: Vec<String>,
}

/// Reads HAProxy's log at `path` (empty when it cannot be read).
pub fn read_log(path: &Path) -> LogSummary {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut summary = LogSummary::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("DRILL ") {
            // DRILL <date> <backend/server> <status> <tsc> Tw= Tc= Tr= Ta= conns= "<request>"
            let f: Vec<&str> = rest.split(' ').collect();
            if f.len() >= 4 {
                *summary
                    .failed_requests
                    .entry(format!("{} {} {}", f[2], f[3], f[1]))
                    .or_default() += 1;
            }
            if summary.samples.len() < 40 {
                summary.samples.push(line.to_owned());
            }
        } else if line.starts_with("Server ") && summary.server_events.len() < 200 {
            // "Server blue/s1 is DOWN, reason: Layer7 wrong status, code: 503, ..."
            summary.server_events.push(line.to_owned());
        }
    }
    summary
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_states_parse() {
        let out = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 blue 1 s1 127.0.0.1 2 4 100 100 0 15 3 1 6 0 0 0 - 24001 - 0 24001 - - 1\n3 blue 2 s2 127.0.0.1 0 5 100 100 2 1 0 0 14 0 0 0 - 1 - 0 1 - - 1\n\n";
        let s = parse_states(out);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].slot, "blue/s1");
        assert_eq!(s[0].label(), "UP");
        assert_eq!(s[0].check_result, 3);
        assert_eq!(s[1].label(), "MAINT");
    }
}
