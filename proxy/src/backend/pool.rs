//! Pools of authenticated server connections, one per backend, database
//! and server user.
//!
//! A connection goes back to its pool only when it owes no replies and is
//! outside a transaction (ReadyForQuery said `I`); checkout looks at the
//! socket, age and idle time before handing it out again. The
//! session layer is responsible for session settings and prepared
//! statements, which it tracks per connection.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, TryAcquireError};

use super::{BackendAddr, BackendError, ConnectParams, Credential, ServerConn};

mod held;
mod pools;
mod stats;
pub use held::Held;
pub use pools::{PoolReport, Pools};
pub use stats::{PoolTotals, Traffic, WAIT_BUCKETS};

struct ConnManager {
    backend: BackendAddr,
    user: String,
    /// The newest login proven for `user`: a role's looked-up credential
    /// changes with its password, and connections opened from then on
    /// need the new one.
    credential: Mutex<Arc<Credential>>,
    database: String,
    connect_timeout: Duration,
    max_message_size: usize,
    keepalive: Duration,
    user_timeout: Duration,
    idle_timeout: Duration,
    lifetime: Duration,
}

impl ConnManager {
    async fn create(&self) -> Result<ServerConn, BackendError> {
        let credential = Arc::clone(&self.credential.lock().unwrap());
        ServerConn::connect(
            &self.backend,
            &ConnectParams {
                user: &self.user,
                credential: &credential,
                database: &self.database,
                // Connections are shared by clients with different startup
                // parameters: sessions apply theirs as SETs when needed.
                extra: &[],
                timeout: self.connect_timeout,
                max_message_size: self.max_message_size,
                keepalive: self.keepalive,
                user_timeout: self.user_timeout,
            },
        )
        .await
    }

    /// Whether an idle connection may be handed out again; checked on the
    /// way out of the pool, so a server that hung up while idle is never
    /// used.
    fn reusable(&self, idle: &mut Idle, now: Instant) -> Result<(), &'static str> {
        if now.duration_since(idle.created) > self.lifetime {
            return Err("reached pool.server_lifetime");
        }
        if now.duration_since(idle.returned) > self.idle_timeout {
            return Err("idle longer than pool.server_idle_timeout");
        }
        if !idle.conn.is_alive() {
            return Err("closed by the server");
        }
        Ok(())
    }
}

/// An idle connection and the times that decide when it is retired.
struct Idle {
    conn: Box<ServerConn>,
    created: Instant,
    returned: Instant,
    /// Kept for the session whose sequence state it holds (see
    /// [`Held`]): other checkouts take it only when nothing else is left.
    held: bool,
}

/// Why no connection could be handed out.
#[derive(Debug)]
pub enum PoolError {
    /// Every connection stayed in use for the whole `checkout_timeout`.
    Timeout,
    /// Opening a new connection failed.
    Backend(BackendError),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Timeout => f.write_str("no server connection came free in time"),
            PoolError::Backend(e) => e.fmt(f),
        }
    }
}

struct PoolInner {
    manager: ConnManager,
    /// One permit per connection that may be in use; idle connections hold
    /// none, so open connections never exceed `max`. Waiters queue fairly.
    permits: Semaphore,
    /// Most recently returned last: the next checkout takes the connection
    /// whose server process is still warm, and the ones at the bottom, no
    /// longer needed, reach their idle timeout and are closed.
    idle: Mutex<Vec<Idle>>,
    /// Idle and in use.
    open: AtomicUsize,
    /// `pool.pool_size`; a reload may change it (see `resize`).
    max: AtomicUsize,
    /// Permits still to take out of circulation after a shrink, as the
    /// connections holding them come back.
    shrink_debt: AtomicUsize,
    wait: Duration,
    stats: stats::PoolStats,
}

impl PoolInner {
    /// The idle connection a checkout takes: the one returned last among
    /// those nobody holds. Held ones are left to their sessions while
    /// the pool may still open connections; after that the one held
    /// longest is taken, and its session's `currval()` fails loudly.
    fn next_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap();
        if let Some(at) = idle.iter().rposition(|i| !i.held) {
            return Some(idle.remove(at));
        }
        if idle.is_empty() || self.open.load(Ordering::Relaxed) < self.max.load(Ordering::Relaxed) {
            return None;
        }
        tracing::debug!(backend = %self.manager.backend.name, "pool full: taking a connection held for another session's currval()");
        Some(idle.remove(0))
    }
}

/// A pool of connections to one backend, database and server user. Cloning
/// shares it.
///
/// Built for the per-transaction checkout of transaction pooling: with a
/// connection idle, a checkout is a semaphore CAS, a short lock and a look
/// at the socket's readiness that costs no system call. The generic pool
/// used before (deadpool) measured about 3 000 instructions per checkout
/// and return, a sixth of pgsplit's user-space work for a pgbench `-S`
/// transaction (callgrind).
#[derive(Clone)]
pub struct ConnPool(Arc<PoolInner>);

/// Open and idle connections of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub open: usize,
    pub idle: usize,
    /// Of the idle ones, those kept for a session (`PooledConn::hold`).
    pub held: usize,
    pub max: usize,
}

impl ConnPool {
    fn new(manager: ConnManager, max: usize, wait: Duration) -> ConnPool {
        ConnPool(Arc::new(PoolInner {
            manager,
            permits: Semaphore::new(max),
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            shrink_debt: AtomicUsize::new(0),
            wait,
            stats: stats::PoolStats::default(),
        }))
    }

    /// New connections log in with `credential` (idle ones keep the login
    /// they were opened with: the server already accepted it).
    fn log_in_with(&self, credential: &Arc<Credential>) {
        let mut current = self.0.manager.credential.lock().unwrap();
        if !Arc::ptr_eq(&current, credential) && **current != **credential {
            *current = Arc::clone(credential);
        }
    }

    /// A connection: an idle one if any is reusable, else a new one while
    /// fewer than `max` are open; otherwise waits up to the checkout
    /// timeout for one to come back.
    pub async fn get(&self) -> Result<PooledConn, PoolError> {
        self.checkout(true).await
    }

    /// A connection for `min_idle`, not counted as a session's checkout.
    pub(super) async fn refill(&self) -> Result<PooledConn, PoolError> {
        self.checkout(false).await
    }

    /// `assign`: a session's checkout, counted in the statistics (not the
    /// maintenance that opens idle connections).
    async fn checkout(&self, assign: bool) -> Result<PooledConn, PoolError> {
        let inner = &self.0;
        let mut waited = None;
        match inner.permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(TryAcquireError::NoPermits) => {
                // Counted as waiting until dropped, however the wait ends
                // (this future may be dropped by a caller's own timeout).
                let ticket = inner.stats.begin_wait();
                match tokio::time::timeout(inner.wait, inner.permits.acquire()).await {
                    Ok(Ok(p)) => p.forget(),
                    Ok(Err(_)) => unreachable!("pool semaphores are never closed"),
                    Err(_) => return Err(PoolError::Timeout),
                }
                waited = Some(ticket.started());
            }
            Err(TryAcquireError::Closed) => unreachable!("pool semaphores are never closed"),
        }
        let assigned = |inner: &PoolInner| {
            if assign {
                inner.stats.assigned(waited.map(|w| w.elapsed()));
            }
        };
        // Holds the permit until a connection carries it, and gives it back
        // if this future is dropped while connecting.
        let permit = Permit(inner);
        let mut now = None;
        loop {
            let Some(mut idle) = inner.next_idle() else {
                break;
            };
            let now = *now.get_or_insert_with(Instant::now);
            match inner.manager.reusable(&mut idle, now) {
                Ok(()) => {
                    std::mem::forget(permit);
                    assigned(inner);
                    return Ok(PooledConn::checked_out(inner, idle, now));
                }
                Err(why) => {
                    tracing::debug!(backend = %inner.manager.backend.name, why, "closing a pooled server connection");
                    inner.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        // Counted open while connecting, and no longer if this future is
        // dropped meanwhile (a caller's timeout): PAUSE waits for `open`.
        inner.open.fetch_add(1, Ordering::Relaxed);
        let opening = Opening(inner);
        match inner.manager.create().await {
            Ok(mut conn) => {
                std::mem::forget(opening);
                std::mem::forget(permit);
                conn.uses = 1;
                assigned(inner);
                let now = Instant::now();
                Ok(PooledConn {
                    conn: Some(Box::new(conn)),
                    created: now,
                    checked_out: now,
                    pool: Arc::clone(inner),
                    held: false,
                })
            }
            Err(e) => Err(PoolError::Backend(e)),
        }
    }

    pub fn status(&self) -> PoolStatus {
        let idle = self.0.idle.lock().unwrap();
        PoolStatus {
            open: self.0.open.load(Ordering::Relaxed),
            idle: idle.len(),
            held: idle.iter().filter(|i| i.held).count(),
            max: self.0.max.load(Ordering::Relaxed),
        }
    }

    /// A new `pool.pool_size`: more room at once, or less as connections
    /// in use come back (idle ones beyond it are closed now).
    pub fn resize(&self, max: usize) {
        let inner = &self.0;
        let before = inner.max.swap(max, Ordering::Relaxed);
        if max > before {
            let mut grow = max - before;
            // Repay a shrink not yet carried out before adding permits.
            let debt = inner.shrink_debt.load(Ordering::Relaxed).min(grow);
            inner.shrink_debt.fetch_sub(debt, Ordering::Relaxed);
            grow -= debt;
            inner.permits.add_permits(grow);
        } else if max < before {
            let shrink = before - max;
            let forgotten = inner.permits.forget_permits(shrink);
            inner
                .shrink_debt
                .fetch_add(shrink - forgotten, Ordering::Relaxed);
            let mut idle = inner.idle.lock().unwrap();
            let in_use = inner
                .open
                .load(Ordering::Relaxed)
                .saturating_sub(idle.len());
            let keep = max.saturating_sub(in_use);
            if idle.len() > keep {
                let excess = idle.len() - keep;
                // The oldest returned go first (the list is LIFO).
                idle.drain(..excess);
                inner.open.fetch_sub(excess, Ordering::Relaxed);
            }
        }
    }

    /// Closes idle connections past their idle time or lifetime.
    fn retire_idle(&self, now: Instant) {
        let m = &self.0.manager;
        let mut idle = self.0.idle.lock().unwrap();
        let before = idle.len();
        idle.retain(|i| {
            now.duration_since(i.returned) < m.idle_timeout
                && now.duration_since(i.created) < m.lifetime
        });
        self.0
            .open
            .fetch_sub(before - idle.len(), Ordering::Relaxed);
    }
}

/// A connection being opened, counted in `open` until it is made (then
/// forgotten) or given up.
struct Opening<'a>(&'a PoolInner);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A permit taken from a pool's semaphore, returned on drop.
struct Permit<'a>(&'a PoolInner);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.give_back_permit();
    }
}

/// A checked-out connection. Dropping it gives it back to its pool when it
/// is clean (outside a transaction, no replies owed) and closes it
/// otherwise.
pub struct PooledConn {
    conn: Option<Box<ServerConn>>,
    created: Instant,
    checked_out: Instant,
    pool: Arc<PoolInner>,
    /// Goes back to the pool held (see [`PooledConn::hold`]).
    held: bool,
}

impl PooledConn {
    fn checked_out(pool: &Arc<PoolInner>, mut idle: Idle, now: Instant) -> PooledConn {
        idle.conn.uses += 1;
        PooledConn {
            conn: Some(idle.conn),
            created: idle.created,
            checked_out: now,
            pool: Arc::clone(pool),
            held: false,
        }
    }

    /// Takes the connection out of the pool for good (to terminate it).
    pub fn take(mut this: PooledConn) -> ServerConn {
        let mut conn = this.conn.take().expect("a checked-out connection");
        let held = this.checked_out.elapsed();
        this.pool.stats.absorb(&mut conn.traffic, held);
        this.pool.open.fetch_sub(1, Ordering::Relaxed);
        *conn
    }

    /// Closes the connection instead of returning it.
    pub fn discard(this: PooledConn) {
        drop(PooledConn::take(this));
    }
}

impl Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn.as_ref().expect("a checked-out connection")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("a checked-out connection")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let now = Instant::now();
            let held = now.duration_since(self.checked_out);
            self.pool.stats.absorb(&mut conn.traffic, held);
            if conn.is_clean() {
                self.pool.idle.lock().unwrap().push(Idle {
                    conn,
                    created: self.created,
                    returned: now,
                    held: self.held,
                });
            } else {
                tracing::debug!(backend = %conn.backend.name, "closing a server connection returned inside a transaction or with replies owed");
                self.pool.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.pool.give_back_permit();
    }
}

impl PoolInner {
    /// A checked-out connection's permit comes back, unless a shrink is
    /// still owed one.
    fn give_back_permit(&self) {
        let owed = self
            .shrink_debt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1));
        if owed.is_err() {
            self.permits.add_permits(1);
        }
    }
}
