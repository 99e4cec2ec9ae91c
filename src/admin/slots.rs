//! The admin listener's connection slots: a fixed number, and a rule that gives a probe on a
//! new connection a slot whatever the other clients of the admin port do.
//!
//! The admin port must answer the kubelet (1 s timeout by default) even while anyone who can
//! reach the port (any pod of the cluster, as probes need it open) holds connections. A plain
//! connection limit fails that: 64 connections that send nothing, reopened as soon as they
//! are closed, keep every slot, and the kubelet restarts a healthy pod. So:
//!
//! - a connection that sends nothing is closed after [`FIRST_BYTE_TIMEOUT`];
//! - when every slot is taken, a new connection **evicts** the oldest connection that is not
//!   busy (nothing in flight, or a probe or scrape stuck for [`STUCK_AFTER`]: a client that
//!   never reads its response), unless that one is younger than [`EVICT_MIN_AGE`]; it waits
//!   (in the listener's backlog) only until one qualifies;
//! - open `Watch` streams (the one legitimate long-lived admin request) are capped at
//!   [`MAX_WATCHES`], fewer than the slots, and a connection with one open is never evicted.
//!
//! So at least `ADMIN_MAX_CONNECTIONS - MAX_WATCHES` slots can always be taken over, and a new
//! connection waits at most [`EVICT_MIN_AGE`] plus a scheduling tick. The youth rule keeps a
//! reconnect loop from evicting a probe's connection before its request is read: evictions
//! run at most `ADMIN_MAX_CONNECTIONS` per [`EVICT_MIN_AGE`].
//!
//! This is the idea of Go's and nginx's header timeouts plus the reuse nginx applies to
//! keep-alive connections when its `worker_connections` run out (it closes idle keep-alive
//! connections to make room for new ones).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::connections::ADMIN_MAX_CONNECTIONS;

/// Most `grpc.health.v1.Health/Watch` streams open at once over all admin connections; further
/// ones get `RESOURCE_EXHAUSTED`. A pod has a handful of watchers (a mesh, a sidecar);
/// a quarter of the slots leaves three quarters for probes and scrapes.
pub(crate) const MAX_WATCHES: usize = ADMIN_MAX_CONNECTIONS / 4;

/// How long a new admin connection may stay silent before it is closed. Probers and scrapers
/// send their request as soon as they are connected; 2 s covers a loaded node's scheduling.
pub(crate) const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection younger than this is not evicted: its request may be on its way.
pub(crate) const EVICT_MIN_AGE: Duration = Duration::from_millis(50);

/// A probe or `/metrics` response still in flight after this long is stuck (its client does
/// not read it): its connection may be evicted. Watches are never stuck.
pub(crate) const STUCK_AFTER: Duration = Duration::from_secs(2);

/// The admin connection slots.
#[derive(Debug)]
pub(crate) struct Slots {
    live: Mutex<Vec<Arc<Slot>>>,
    max: usize,
    /// Notified when a slot is given back.
    freed: Notify,
    /// Connections evicted so far.
    evicted: AtomicU64,
}

/// One admin connection: what the eviction rule looks at.
#[derive(Debug)]
pub(crate) struct Slot {
    opened: Instant,
    /// Requests started on this connection.
    started: AtomicU64,
    in_flight: AtomicU64,
    watches: AtomicU64,
    /// When the last request started, in milliseconds since `opened`.
    last_start_ms: AtomicU64,
    /// Cancelled when the connection is evicted: its task closes it.
    pub(crate) evict: CancellationToken,
}

/// Gives the slot back when the connection's task ends.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    slots: Arc<Slots>,
    pub(crate) slot: Arc<Slot>,
}

/// Why no slot could be had now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// Every connection is busy or young: try again after this long, or when a slot is freed.
    RetryIn(Duration),
}

impl Slots {
    /// `max` slots (at least one).
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            live: Mutex::new(Vec::with_capacity(max)),
            max: max.max(1),
            freed: Notify::new(),
            evicted: AtomicU64::new(0),
        })
    }

    /// A slot for a connection accepted at `now`: a free one, or the slot of the oldest
    /// evictable connection (which is told to close).
    pub(crate) fn take(self: &Arc<Self>, now: Instant) -> Result<SlotGuard, NoSlot> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= self.max {
            let victim = live
                .iter()
                .enumerate()
                .filter(|(_, s)| s.evictable(now))
                .min_by_key(|(_, s)| s.opened)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    let victim = live.swap_remove(i);
                    victim.evict.cancel();
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    // The oldest young connection comes of age first.
                    let wait = live
                        .iter()
                        .filter(|s| s.watches.load(Ordering::Relaxed) == 0)
                        .map(|s| s.next_evictable(now))
                        .min()
                        .unwrap_or(EVICT_MIN_AGE);
                    return Err(NoSlot::RetryIn(wait.max(Duration::from_millis(1))));
                }
            }
        }
        let slot = Arc::new(Slot {
            opened: now,
            started: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            last_start_ms: AtomicU64::new(0),
            evict: CancellationToken::new(),
        });
        live.push(slot.clone());
        Ok(SlotGuard {
            slots: self.clone(),
            slot,
        })
    }

    /// Waits until a slot may be free: one was given back, or `wait` passed.
    pub(crate) async fn freed_or(&self, wait: Duration) {
        tokio::select! {
            _ = self.freed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    /// Connections open now (evicted ones no longer count).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Connections evicted so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut live = self.slots.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = live.iter().position(|s| Arc::ptr_eq(s, &self.slot)) {
            live.swap_remove(i);
        }
        drop(live);
        self.slots.freed.notify_one();
    }
}

impl Slot {
    /// Whether the connection may be closed to make room at `now`.
    fn evictable(&self, now: Instant) -> bool {
        self.next_evictable(now).is_zero() && self.watches.load(Ordering::Relaxed) == 0
    }

    /// How long until the connection may be evicted (zero: now), watches aside.
    fn next_evictable(&self, now: Instant) -> Duration {
        let age = now.saturating_duration_since(self.opened);
        let young = EVICT_MIN_AGE.saturating_sub(age);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            return young;
        }
        let started = Duration::from_millis(self.last_start_ms.load(Ordering::Relaxed));
        let busy_for = age.saturating_sub(started);
        young.max(STUCK_AFTER.saturating_sub(busy_for))
    }

    /// A request starts on this connection (`watch`: a `Watch` stream); it counts until the
    /// returned guard is dropped (with the response body).
    pub(crate) fn start(self: &Arc<Self>, watch: bool) -> InFlight {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_start_ms.store(ms, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if watch {
            self.watches.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            slot: self.clone(),
            watch,
        }
    }

    /// Requests started on this connection so far.
    pub(crate) fn requests(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Requests in flight on this connection.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One admin request in flight on its connection, until dropped with its response body.
#[derive(Debug)]
pub(crate) struct InFlight {
    slot: Arc<Slot>,
    watch: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.watch {
            self.slot.watches.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_free_slot_is_taken_without_eviction() {
        let slots = Slots::new(2);
        let t = Instant::now();
        let a = slots.take(t).unwrap();
        let _b = slots.take(t).unwrap();
        assert_eq!(slots.len(), 2);
        assert!(!a.slot.evict.is_cancelled());
        assert_eq!(slots.evicted(), 0);
        drop(a);
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn when_full_the_oldest_idle_connection_is_evicted() {
        let slots = Slots::new(3);
        let t = Instant::now();
        let oldest = slots.take(t).unwrap();
        let older = slots.take(at(t, 10)).unwrap();
        let young = slots.take(at(t, 20)).unwrap();
        let newcomer = slots.take(at(t, 500)).unwrap();
        assert!(oldest.slot.evict.is_cancelled(), "the oldest idle one goes");
        assert!(!older.slot.evict.is_cancelled() && !young.slot.evict.is_cancelled());
        assert!(!newcomer.slot.evict.is_cancelled());
        assert_eq!((slots.len(), slots.evicted()), (3, 1));
        // The evicted connection's guard, dropped when its task ends, frees nothing twice.
        drop(oldest);
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn busy_watching_and_young_connections_are_not_evicted() {
        let slots = Slots::new(3);
        let t = Instant::now();
        let watching = slots.take(t).unwrap();
        let _watch = watching.slot.start(true);
        let busy = slots.take(t).unwrap();
        let _probe = busy.slot.start(false);
        let young = slots.take(at(t, 450)).unwrap();
        // At +470 ms: the watcher never goes, the busy one is not stuck yet (started ~0 ms,
        // stuck after 2 s), the young one is 20 ms old: wait until it is 50 ms old.
        let now = at(t, 470);
        assert_eq!(
            slots.take(now).unwrap_err(),
            NoSlot::RetryIn(Duration::from_millis(30))
        );
        assert!(!young.slot.evict.is_cancelled());
        // Once the young one is old enough, it goes (it is idle; the busy one is older but busy).
        let _newcomer = slots.take(at(t, 500)).unwrap();
        assert!(young.slot.evict.is_cancelled());
        assert!(!busy.slot.evict.is_cancelled() && !watching.slot.evict.is_cancelled());
    }

    #[test]
    fn a_response_nobody_reads_stops_protecting_its_connection() {
        let slots = Slots::new(1);
        let t = Instant::now();
        let stuck = slots.take(t).unwrap();
        let _never_read = stuck.slot.start(false);
        assert!(slots.take(at(t, 1_000)).is_err(), "busy for ~1 s: kept");
        let _newcomer = slots.take(at(t, 2_500)).unwrap();
        assert!(
            stuck.slot.evict.is_cancelled(),
            "busy for 2.5 s: stuck, evicted"
        );
    }

    #[test]
    fn watches_count_until_their_guard_drops() {
        let slots = Slots::new(1);
        let t = Instant::now();
        let conn = slots.take(t).unwrap();
        let watch = conn.slot.start(true);
        assert!(
            slots.take(at(t, 60_000)).is_err(),
            "a Watch is never evicted"
        );
        drop(watch);
        assert_eq!(conn.slot.in_flight(), 0);
        assert!(
            slots.take(at(t, 60_000)).is_ok(),
            "once it ended, the connection is idle"
        );
    }
}
