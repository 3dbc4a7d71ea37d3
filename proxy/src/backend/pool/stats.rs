//! What a pool's connections did, for the admin console's `SHOW STATS` and
//! `SHOW POOLS`: counted as plain numbers on each connection while it is
//! checked out, and added to the pool's atomics when it comes back, so a
//! request costs no shared write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One connection's traffic since it was last checked out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    /// ReadyForQuery messages: requests (a Query, or a batch up to Sync)
    /// the server finished.
    pub queries: u64,
    /// Of those, the ones that left the server outside a transaction: an
    /// autocommit statement or a transaction's end.
    pub xacts: u64,
    /// Bytes written to the server, and read from it.
    pub sent: u64,
    pub received: u64,
}

/// A pool's totals since it was created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolTotals {
    /// Times a connection was handed to a session.
    pub assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub sent: u64,
    pub received: u64,
    /// Microseconds connections were checked out (in transaction pooling,
    /// the transactions' time, idle-in-transaction included).
    pub assigned_us: u64,
    /// Microseconds sessions waited for a connection of this pool.
    pub wait_us: u64,
    /// Checkouts that had to wait and got a connection, by how long
    /// (cumulative, bounds in [`WAIT_BUCKETS`]); the others waited 0.
    pub waits: [u64; WAIT_BUCKETS.len()],
    /// Checkouts that had to wait and got a connection, however long,
    /// and the microseconds they waited.
    pub waited: u64,
    pub waited_us: u64,
}

/// Upper bounds (seconds) of the wait histogram's buckets.
pub const WAIT_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];

impl PoolTotals {
    /// What was added since `earlier`.
    pub fn since(self, earlier: PoolTotals) -> PoolTotals {
        PoolTotals {
            assignments: self.assignments.saturating_sub(earlier.assignments),
            xacts: self.xacts.saturating_sub(earlier.xacts),
            queries: self.queries.saturating_sub(earlier.queries),
            sent: self.sent.saturating_sub(earlier.sent),
            received: self.received.saturating_sub(earlier.received),
            assigned_us: self.assigned_us.saturating_sub(earlier.assigned_us),
            wait_us: self.wait_us.saturating_sub(earlier.wait_us),
            waits: std::array::from_fn(|i| self.waits[i].saturating_sub(earlier.waits[i])),
            waited: self.waited.saturating_sub(earlier.waited),
            waited_us: self.waited_us.saturating_sub(earlier.waited_us),
        }
    }

    pub fn add(&mut self, other: PoolTotals) {
        self.assignments += other.assignments;
        self.xacts += other.xacts;
        self.queries += other.queries;
        self.sent += other.sent;
        self.received += other.received;
        self.assigned_us += other.assigned_us;
        self.wait_us += other.wait_us;
        for (w, o) in self.waits.iter_mut().zip(other.waits) {
            *w += o;
        }
        self.waited += other.waited;
        self.waited_us += other.waited_us;
    }
}

/// A session waiting for a connection; it stops counting as waiting when
/// dropped, and its time is added to the pool's wait total.
pub(super) struct Waiting<'a> {
    stats: &'a PoolStats,
    ticket: u64,
    started: Instant,
}

impl Waiting<'_> {
    pub(super) fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.stats.waiting.lock().unwrap().remove(&self.ticket);
        let waited = self.started.elapsed().as_micros() as u64;
        self.stats.wait_us.fetch_add(waited, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(super) struct PoolStats {
    assignments: AtomicU64,
    xacts: AtomicU64,
    queries: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    assigned_us: AtomicU64,
    wait_us: AtomicU64,
    /// Sessions waiting for a connection now, by ticket, with when they
    /// began: only a checkout that found the pool full writes here.
    waiting: Mutex<HashMap<u64, Instant>>,
    next_ticket: AtomicU64,
    /// Not cumulative here: each wait lands in its first bucket that fits.
    waits: [AtomicU64; WAIT_BUCKETS.len()],
    waited: AtomicU64,
    waited_us: AtomicU64,
}

impl PoolStats {
    /// A session got a connection, after `waited` if it had to wait.
    pub(super) fn assigned(&self, waited: Option<Duration>) {
        self.assignments.fetch_add(1, Ordering::Relaxed);
        if let Some(waited) = waited {
            self.waited.fetch_add(1, Ordering::Relaxed);
            self.waited_us
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            let secs = waited.as_secs_f64();
            if let Some(i) = WAIT_BUCKETS.iter().position(|b| secs <= *b) {
                self.waits[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A connection came back (or closed) after `held` checked out.
    pub(super) fn absorb(&self, traffic: &mut Traffic, held: Duration) {
        let t = std::mem::take(traffic);
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.xacts, t.xacts);
        add(&self.queries, t.queries);
        add(&self.sent, t.sent);
        add(&self.received, t.received);
        add(&self.assigned_us, held.as_micros() as u64);
    }

    pub(super) fn begin_wait(&self) -> Waiting<'_> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        self.waiting.lock().unwrap().insert(ticket, started);
        Waiting {
            stats: self,
            ticket,
            started,
        }
    }

    /// Sessions waiting now, and the longest wait among them.
    pub(super) fn waiting(&self) -> (usize, Duration) {
        let waiting = self.waiting.lock().unwrap();
        let longest = waiting.values().min().map(Instant::elapsed);
        (waiting.len(), longest.unwrap_or_default())
    }

    pub(super) fn totals(&self) -> PoolTotals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PoolTotals {
            assignments: get(&self.assignments),
            xacts: get(&self.xacts),
            queries: get(&self.queries),
            sent: get(&self.sent),
            received: get(&self.received),
            assigned_us: get(&self.assigned_us),
            wait_us: get(&self.wait_us),
            waits: std::array::from_fn(|i| self.waits[..=i].iter().map(get).sum::<u64>()),
            waited: get(&self.waited),
            waited_us: get(&self.waited_us),
        }
    }
}
