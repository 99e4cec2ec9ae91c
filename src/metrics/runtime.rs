//! The application runtime's health as numbers: tokio's stable
//! [`RuntimeMetrics`](tokio::runtime::RuntimeMetrics) (workers, alive tasks, global queue
//! depth, busy time, parks), and the runtime watchdog's scheduling lag as a histogram, read at
//! scrape time.
//!
//! ```text
//! registry.register(Box::new(RuntimeCollector::new(Handle::current(), lag)))?;
//! // podcycle_runtime_workers{version="1.1.0"} 2
//! // podcycle_runtime_scheduling_lag_seconds_bucket{version="1.1.0",le="0.001"} 118
//! ```
//!
//! The runtime is the one [`Lifecycle::new`](crate::Lifecycle::new) runs on: where the
//! watchdog, the checks and the warm-ups run, and normally the one that serves.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
use tokio::runtime::Handle;

use super::process::single;
use super::schema;
use crate::lag::{SchedulingLag, LAG_BOUNDS};

const WORKERS_HELP: &str = "Worker threads of the application runtime.";
const ALIVE_TASKS_HELP: &str = "Tasks alive on the application runtime.";
const QUEUE_HELP: &str = "Tasks waiting in the application runtime's global queue.";
const BUSY_HELP: &str =
    "Seconds the application runtime's workers spent busy, summed over workers.";
const PARKS_HELP: &str = "Times the application runtime's workers parked, summed over workers.";
const LAG_HELP: &str =
    "How late the runtime watchdog's timer ticks ran on the application runtime.";

/// The runtime families as a [`Collector`].
#[derive(Debug)]
pub(crate) struct RuntimeCollector {
    runtime: Handle,
    lag: Arc<SchedulingLag>,
    descs: Vec<Desc>,
}

impl RuntimeCollector {
    pub(crate) fn new(runtime: Handle, lag: Arc<SchedulingLag>) -> RuntimeCollector {
        let mut names = vec![
            (schema::RUNTIME_WORKERS, WORKERS_HELP),
            (schema::RUNTIME_ALIVE_TASKS, ALIVE_TASKS_HELP),
            (schema::RUNTIME_GLOBAL_QUEUE_DEPTH, QUEUE_HELP),
            (schema::RUNTIME_SCHEDULING_LAG, LAG_HELP),
        ];
        if cfg!(target_has_atomic = "64") {
            names.extend([
                (schema::RUNTIME_BUSY, BUSY_HELP),
                (schema::RUNTIME_PARKS, PARKS_HELP),
            ]);
        }
        let descs = names
            .into_iter()
            .map(|(name, help)| {
                Desc::new(name.into(), help.into(), Vec::new(), HashMap::new())
                    .expect("valid metric name")
            })
            .collect();
        RuntimeCollector {
            runtime,
            lag,
            descs,
        }
    }

    fn lag_family(&self) -> MetricFamily {
        let snapshot = self.lag.snapshot();
        let mut cumulative = 0;
        let buckets = LAG_BOUNDS
            .iter()
            .zip(&snapshot.buckets)
            .map(|(bound, count)| {
                cumulative += count;
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = Histogram::default();
        h.set_sample_count(snapshot.buckets.iter().sum());
        h.set_sample_sum(snapshot.sum_secs);
        h.set_bucket(buckets);
        let mut m = Metric::default();
        m.set_histogram(h);
        let mut f = MetricFamily::default();
        f.set_name(schema::RUNTIME_SCHEDULING_LAG.into());
        f.set_help(LAG_HELP.into());
        f.set_field_type(MetricType::HISTOGRAM);
        f.set_metric(vec![m]);
        f
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = self.runtime.metrics();
        let workers = m.num_workers();
        let gauge = MetricType::GAUGE;
        #[allow(unused_mut)]
        let mut out = vec![
            single(schema::RUNTIME_WORKERS, WORKERS_HELP, gauge, workers as f64),
            single(
                schema::RUNTIME_ALIVE_TASKS,
                ALIVE_TASKS_HELP,
                gauge,
                m.num_alive_tasks() as f64,
            ),
            single(
                schema::RUNTIME_GLOBAL_QUEUE_DEPTH,
                QUEUE_HELP,
                gauge,
                m.global_queue_depth() as f64,
            ),
            self.lag_family(),
        ];
        #[cfg(target_has_atomic = "64")]
        {
            let busy: f64 = (0..workers)
                .map(|w| m.worker_total_busy_duration(w).as_secs_f64())
                .sum();
            let parks: u64 = (0..workers).map(|w| m.worker_park_count(w)).sum();
            let counter = MetricType::COUNTER;
            out.push(single(schema::RUNTIME_BUSY, BUSY_HELP, counter, busy));
            out.push(single(
                schema::RUNTIME_PARKS,
                PARKS_HELP,
                counter,
                parks as f64,
            ));
        }
        out
    }
}
