//! Process metrics under the names and meanings the Prometheus client libraries give them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), read from `/proc` at
//! scrape time, never in between. Where `/proc` cannot be read (not Linux), the families are
//! simply absent.
//!
//! ```text
//! registry.register(Box::new(ProcessCollector::new()))?;
//! // process_cpu_seconds_total{version="1.1.0"} 12.34, process_resident_memory_bytes ... 7340032
//! ```
//!
//! The registry adds the `version` and constant labels, as to every family on it.
//!
//! Read by hand rather than with the `prometheus` crate's `process` feature: that
//! `ProcessCollector` keeps CPU time in an integer counter (whole seconds: useless for CPU
//! per request), and it pulls in `procfs` and `libc` for clock ticks and the page size.
//! Here CPU time comes from `/proc/self/stat` in clock ticks of 1/100 s (`USER_HZ`, which
//! the kernel fixes at 100 for user space on every mainstream architecture; Prometheus' own
//! Go `procfs` assumes the same), resident memory from `VmRSS` in `/proc/self/status` (exact,
//! in kB, no page size needed).

use std::collections::HashMap;
use std::sync::OnceLock;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};

use super::schema;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`).
const USER_HZ: f64 = 100.0;

/// The families, in the order they are collected: name, help, type.
const FAMILIES: [(&str, &str, MetricType); 7] = [
    (
        schema::PROCESS_CPU_SECONDS,
        "Total user and system CPU time spent in seconds.",
        MetricType::COUNTER,
    ),
    (
        schema::PROCESS_RESIDENT_MEMORY,
        "Resident memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        schema::PROCESS_VIRTUAL_MEMORY,
        "Virtual memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        schema::PROCESS_OPEN_FDS,
        "Number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        schema::PROCESS_MAX_FDS,
        "Maximum number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        schema::PROCESS_THREADS,
        "Number of OS threads in the process.",
        MetricType::GAUGE,
    ),
    (
        schema::PROCESS_START_TIME,
        "Start time of the process since unix epoch in seconds.",
        MetricType::GAUGE,
    ),
];

/// One reading of the process, each value `None` where its source could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    threads: Option<f64>,
    start_time_seconds: Option<f64>,
}

/// The fields of `/proc/self/stat` podcycle reads.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    threads: u64,
    /// Since boot, in clock ticks.
    start_ticks: u64,
    virtual_bytes: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here, so field N is index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// `VmRSS` in the text of `/proc/<pid>/status`, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = rest.split_whitespace();
    let kb: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kb * 1024)
}

/// `btime` (boot time, seconds since the epoch) in the text of `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

impl ProcessStats {
    /// Reads this process's statistics from `/proc/self`; `start_time` is the cached start
    /// time (it never changes).
    fn read(start_time: &OnceLock<Option<f64>>) -> ProcessStats {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        let start_time_seconds = *start_time.get_or_init(|| {
            let boot = read("/proc/stat").as_deref().and_then(parse_boot_time)?;
            Some(boot as f64 + stat?.start_ticks as f64 / USER_HZ)
        });
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as f64);
        ProcessStats {
            cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / USER_HZ),
            resident_bytes: read("/proc/self/status")
                .as_deref()
                .and_then(parse_vm_rss)
                .map(|b| b as f64),
            virtual_bytes: stat.map(|s| s.virtual_bytes as f64),
            open_fds,
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(crate::connections::open_files_soft_limit)
                .map(|n| n as f64),
            threads: stat.map(|s| s.threads as f64),
            start_time_seconds,
        }
    }

    fn values(&self) -> [Option<f64>; 7] {
        [
            self.cpu_seconds,
            self.resident_bytes,
            self.virtual_bytes,
            self.open_fds,
            self.max_fds,
            self.threads,
            self.start_time_seconds,
        ]
    }
}

/// The process families as a [`Collector`]: `/proc` is read on each `collect`.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    descs: Vec<Desc>,
    start_time: OnceLock<Option<f64>>,
}

impl ProcessCollector {
    pub(crate) fn new() -> ProcessCollector {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _)| {
                Desc::new((*name).into(), (*help).into(), Vec::new(), HashMap::new())
                    .expect("valid metric name")
            })
            .collect();
        ProcessCollector {
            descs,
            start_time: OnceLock::new(),
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = ProcessStats::read(&self.start_time);
        FAMILIES
            .iter()
            .zip(stats.values())
            .filter_map(|((name, help, kind), value)| Some(single(name, help, *kind, value?)))
            .collect()
    }
}

/// A family of one unlabelled counter or gauge (the registry adds the common labels).
pub(crate) fn single(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    let mut m = Metric::default();
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(vec![m]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_command_name() {
        // A command name with spaces and a parenthesis, as the kernel writes it.
        let text = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 2211 0 0 0 \
                    250 37 0 0 20 0 9 0 123456 1234567168 1789 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17642 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            Stat {
                cpu_ticks: 287,
                threads: 9,
                start_ticks: 123_456,
                virtual_bytes: 1_234_567_168,
            }
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
    }

    #[test]
    fn resident_memory_and_boot_time_are_read_from_their_lines() {
        let status = "Name:\tchatbot\nVmPeak:\t  100 kB\nVmRSS:\t    7168 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(7168 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let stat = "cpu  1 2 3\nintr 5\nctxt 99\nbtime 1764288000\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_764_288_000));
    }

    #[test]
    fn this_process_reads_as_itself_where_proc_exists() {
        if std::fs::metadata("/proc/self/stat").is_err() {
            return;
        }
        let stats = ProcessStats::read(&OnceLock::new());
        assert!(stats.values().iter().all(Option::is_some), "{stats:?}");
        assert!(stats.threads.unwrap() >= 1.0);
        assert!(stats.resident_bytes.unwrap() > 1e5);
        assert!(stats.open_fds.unwrap() >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = stats.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started}"
        );
    }
}
