//! What pgsplit knows about one backend right now.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use pgsplit_router::topology::{Lag, NodeReport, PgRole, Role};
use tokio::sync::Notify;

/// One backend's latest health, readable without locks on the request
/// path; the text details for `SHOW pool_nodes` sit behind a mutex only
/// the health loop and admin views touch.
pub struct Node {
    /// Replay position (standby) or write position (primary); 0: unknown.
    lsn: AtomicU64,
    /// When the check that read `lsn` was sent, in microseconds of the
    /// proxy's clock: a position sampled after a commit covers it.
    sampled_at_us: AtomicU64,
    /// Answers health checks (pgpool's `pg_status`).
    up: AtomicBool,
    /// Taken out of service by `PGSPLIT DETACH`.
    detached: AtomicBool,
    pg_role: AtomicU8,
    role: AtomicU8,
    timeline: AtomicU32,
    /// The system identifier of its cluster; 0: unknown.
    system_id: AtomicU64,
    lag_bytes: AtomicU64,
    lag_millis: AtomicU64,
    /// Checks completed, successful or not.
    checks: AtomicU64,
    /// Wakes the check loop for an immediate check (a session saw the
    /// server fail, or refuse a write).
    pub(crate) wake: Arc<Notify>,
    detail: Mutex<Detail>,
}

#[derive(Clone)]
struct Detail {
    replication_state: String,
    last_status_change: SystemTime,
    state_changes: u64,
}

/// A consistent-enough copy of a node for views and metrics.
#[derive(Clone, Debug)]
pub struct NodeSnapshot {
    pub up: bool,
    pub detached: bool,
    pub pg_role: PgRole,
    pub role: Role,
    pub timeline: u32,
    pub lsn: u64,
    pub lag: Lag,
    pub replication_state: String,
    pub last_status_change: SystemTime,
    pub state_changes: u64,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            lsn: AtomicU64::new(0),
            sampled_at_us: AtomicU64::new(0),
            // Assumed up until a check says otherwise, so the configured
            // roles carry traffic while the first checks run.
            up: AtomicBool::new(true),
            detached: AtomicBool::new(false),
            pg_role: AtomicU8::new(0),
            role: AtomicU8::new(0),
            timeline: AtomicU32::new(0),
            system_id: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_millis: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            detail: Mutex::new(Detail {
                replication_state: String::new(),
                last_status_change: SystemTime::now(),
                state_changes: 0,
            }),
        }
    }
}

impl Node {
    /// A node as configured, before its first check: the role hint stands
    /// in for the server's own answer so traffic flows from the start.
    pub fn with_hint(primary: bool) -> Node {
        let n = Node::default();
        let (hint, role) = if primary {
            (PgRole::Primary, Role::Primary)
        } else {
            (PgRole::Standby, Role::Standby)
        };
        n.pg_role.store(pg_role_code(hint), Ordering::Release);
        n.role.store(role_code(role), Ordering::Release);
        n
    }
}

fn pg_role_of(v: u8) -> PgRole {
    match v {
        1 => PgRole::Primary,
        2 => PgRole::Standby,
        _ => PgRole::Unknown,
    }
}

fn pg_role_code(r: PgRole) -> u8 {
    match r {
        PgRole::Unknown => 0,
        PgRole::Primary => 1,
        PgRole::Standby => 2,
    }
}

fn role_of(v: u8) -> Role {
    match v {
        1 => Role::Primary,
        2 => Role::Standby,
        3 => Role::StalePrimary,
        4 => Role::OtherCluster,
        5 => Role::Draining,
        _ => Role::Unknown,
    }
}

fn role_code(r: Role) -> u8 {
    match r {
        Role::Unknown => 0,
        Role::Primary => 1,
        Role::Standby => 2,
        Role::StalePrimary => 3,
        Role::OtherCluster => 4,
        Role::Draining => 5,
    }
}

impl Node {
    pub fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }

    /// A session read this standby's replay position: never older than
    /// what the last check saw, since replay only moves forward (a check
    /// taken before it may still store an older one, which is only
    /// cautious).
    pub fn replayed(&self, lsn: u64) {
        self.lsn.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The position from a check sent after `t_us` (proxy clock), if one
    /// has come back yet.
    pub fn position_sampled_after(&self, t_us: u64) -> Option<u64> {
        if self.sampled_at_us.load(Ordering::Acquire) <= t_us {
            return None;
        }
        Some(self.lsn()).filter(|&lsn| lsn > 0)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    pub fn role(&self) -> Role {
        role_of(self.role.load(Ordering::Acquire))
    }

    pub fn pg_role(&self) -> PgRole {
        pg_role_of(self.pg_role.load(Ordering::Acquire))
    }

    /// Checks completed so far (0: the configured hint still stands).
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Acquire)
    }

    pub fn lag(&self) -> Lag {
        Lag {
            bytes: self.lag_bytes.load(Ordering::Relaxed),
            millis: self.lag_millis.load(Ordering::Relaxed),
        }
    }

    /// Up, attached and in use as a standby: may take reads if not lagging.
    pub fn serves_as_standby(&self) -> bool {
        self.is_up() && !self.is_detached() && self.role() == Role::Standby
    }

    pub(crate) fn report(&self) -> NodeReport {
        NodeReport {
            up: self.is_up(),
            detached: self.is_detached(),
            pg_role: self.pg_role(),
            timeline: self.timeline.load(Ordering::Acquire),
            system_id: self.system_id.load(Ordering::Acquire),
        }
    }

    pub(crate) fn set_role(&self, role: Role) -> Role {
        role_of(self.role.swap(role_code(role), Ordering::AcqRel))
    }

    pub(crate) fn set_detached(&self, on: bool) -> bool {
        let was = self.detached.swap(on, Ordering::AcqRel);
        if was != on {
            self.status_changed();
        }
        was
    }

    /// Records a successful check; returns whether the node was down.
    pub(crate) fn checked(&self, r: &Report, lag: Lag) -> bool {
        self.pg_role.store(
            pg_role_code(if r.in_recovery {
                PgRole::Standby
            } else {
                PgRole::Primary
            }),
            Ordering::Release,
        );
        self.timeline.store(r.timeline, Ordering::Release);
        self.system_id.store(r.system_id, Ordering::Release);
        self.lsn.store(r.lsn, Ordering::Release);
        // After the position: whoever sees this time reads that position
        // or a later one.
        self.sampled_at_us.store(r.sent_at_us, Ordering::Release);
        self.lag_bytes.store(lag.bytes, Ordering::Relaxed);
        self.lag_millis.store(lag.millis, Ordering::Relaxed);
        {
            let mut d = self.detail.lock().unwrap();
            if d.replication_state != r.receiver_status {
                d.replication_state.clone_from(&r.receiver_status);
            }
        }
        let was_up = self.up.swap(true, Ordering::AcqRel);
        if !was_up {
            self.status_changed();
        }
        self.checks.fetch_add(1, Ordering::AcqRel);
        !was_up
    }

    /// Records a failed check; marks the node down (returning true) when
    /// this failure is the one that crosses the limit.
    pub(crate) fn failed(&self, mark_down: bool) -> bool {
        self.lsn.store(0, Ordering::Release);
        let went_down = mark_down && self.up.swap(false, Ordering::AcqRel);
        if went_down {
            self.status_changed();
        }
        self.checks.fetch_add(1, Ordering::AcqRel);
        went_down
    }

    fn status_changed(&self) {
        let mut d = self.detail.lock().unwrap();
        d.last_status_change = SystemTime::now();
        d.state_changes += 1;
    }

    pub fn snapshot(&self) -> NodeSnapshot {
        let d = self.detail.lock().unwrap().clone();
        NodeSnapshot {
            up: self.is_up(),
            detached: self.is_detached(),
            pg_role: self.pg_role(),
            role: self.role(),
            timeline: self.timeline.load(Ordering::Acquire),
            lsn: self.lsn(),
            lag: self.lag(),
            replication_state: d.replication_state,
            last_status_change: d.last_status_change,
            state_changes: d.state_changes,
        }
    }
}

/// One successful check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub in_recovery: bool,
    /// Write position (primary) or replay position (standby).
    pub lsn: u64,
    pub receive_lsn: u64,
    pub timeline: u32,
    /// Its cluster's system identifier; 0: it would not say.
    pub system_id: u64,
    /// Milliseconds since the last replayed transaction's commit.
    pub replay_age_millis: Option<u64>,
    /// The WAL receiver's status ("streaming", ...); empty on a primary.
    pub receiver_status: String,
    /// When the check was sent ([`super::Topology::now_us`]).
    pub sent_at_us: u64,
}
