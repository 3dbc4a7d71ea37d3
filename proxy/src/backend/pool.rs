//! Pools of authenticated server connections, one per backend, database
//! and server user.
//!
//! A connection goes back to its pool only when it owes no replies and is
//! outside a transaction (ReadyForQuery said `I`); checkout looks at the
//! socket, age and idle time before handing it out again. The
//! session layer is responsible for session settings and prepared
//! statements, which it tracks per connection.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgsplit_config::Config;
use tokio::sync::{Semaphore, TryAcquireError};

use super::{BackendAddr, BackendError, ConnectParams, Credential, ServerConn};
use crate::topology::BackendId;

mod held;
pub use held::Held;

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
    max: usize,
    wait: Duration,
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
        if idle.is_empty() || self.open.load(Ordering::Relaxed) < self.max {
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
            max,
            wait,
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
        let inner = &self.0;
        match inner.permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout(inner.wait, inner.permits.acquire()).await {
                    Ok(Ok(p)) => p.forget(),
                    Ok(Err(_)) => unreachable!("pool semaphores are never closed"),
                    Err(_) => return Err(PoolError::Timeout),
                }
            }
            Err(TryAcquireError::Closed) => unreachable!("pool semaphores are never closed"),
        }
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
                    return Ok(PooledConn::checked_out(inner, idle));
                }
                Err(why) => {
                    tracing::debug!(backend = %inner.manager.backend.name, why, "closing a pooled server connection");
                    inner.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        inner.open.fetch_add(1, Ordering::Relaxed);
        match inner.manager.create().await {
            Ok(mut conn) => {
                std::mem::forget(permit);
                conn.uses = 1;
                Ok(PooledConn {
                    conn: Some(Box::new(conn)),
                    created: Instant::now(),
                    pool: Arc::clone(inner),
                    held: false,
                })
            }
            Err(e) => {
                inner.open.fetch_sub(1, Ordering::Relaxed);
                Err(PoolError::Backend(e))
            }
        }
    }

    pub fn status(&self) -> PoolStatus {
        let idle = self.0.idle.lock().unwrap();
        PoolStatus {
            open: self.0.open.load(Ordering::Relaxed),
            idle: idle.len(),
            held: idle.iter().filter(|i| i.held).count(),
            max: self.0.max,
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

/// A permit taken from a pool's semaphore, returned on drop.
struct Permit<'a>(&'a PoolInner);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.permits.add_permits(1);
    }
}

/// A checked-out connection. Dropping it gives it back to its pool when it
/// is clean (outside a transaction, no replies owed) and closes it
/// otherwise.
pub struct PooledConn {
    conn: Option<Box<ServerConn>>,
    created: Instant,
    pool: Arc<PoolInner>,
    /// Goes back to the pool held (see [`PooledConn::hold`]).
    held: bool,
}

impl PooledConn {
    fn checked_out(pool: &Arc<PoolInner>, mut idle: Idle) -> PooledConn {
        idle.conn.uses += 1;
        PooledConn {
            conn: Some(idle.conn),
            created: idle.created,
            pool: Arc::clone(pool),
            held: false,
        }
    }

    /// Takes the connection out of the pool for good (to terminate it).
    pub fn take(mut this: PooledConn) -> ServerConn {
        let conn = this.conn.take().expect("a checked-out connection");
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
        if let Some(conn) = self.conn.take() {
            if conn.is_clean() {
                self.pool.idle.lock().unwrap().push(Idle {
                    conn,
                    created: self.created,
                    returned: Instant::now(),
                    held: self.held,
                });
            } else {
                tracing::debug!(backend = %conn.backend.name, "closing a server connection returned inside a transaction or with replies owed");
                self.pool.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.pool.permits.add_permits(1);
    }
}

/// Every pool of the proxy, created on first use.
pub struct Pools {
    config: Arc<Config>,
    backends: Vec<BackendAddr>,
    map: Mutex<HashMap<(BackendId, String, String), ConnPool>>,
}

impl Pools {
    pub fn new(config: Arc<Config>, backends: Vec<BackendAddr>) -> Pools {
        Pools {
            config,
            backends,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for one backend, database and server user, which logs in
    /// with `credential` from now on. Sessions keep the handle, so this
    /// lock is taken once per session and backend.
    pub fn pool(
        &self,
        backend: BackendId,
        database: &str,
        user: &str,
        credential: &Arc<Credential>,
    ) -> ConnPool {
        let key = (backend, database.to_owned(), user.to_owned());
        let mut map = self.map.lock().unwrap();
        let pool = map
            .entry(key)
            .or_insert_with(|| {
                let c = &self.config;
                let manager = ConnManager {
                    backend: self.backends[backend.index()].clone(),
                    user: user.to_owned(),
                    credential: Mutex::new(Arc::clone(credential)),
                    database: database.to_owned(),
                    connect_timeout: c.timeouts.connect,
                    max_message_size: c.limits.max_message_size,
                    keepalive: c.timeouts.server_keepalive,
                    user_timeout: c.timeouts.server_tcp_user_timeout,
                    idle_timeout: c.pool.server_idle_timeout,
                    lifetime: c.pool.server_lifetime,
                };
                ConnPool::new(manager, c.pool.pool_size, c.pool.checkout_timeout)
            })
            .clone();
        pool.log_in_with(credential);
        pool
    }

    /// Closes idle connections past their idle time or lifetime, then
    /// opens connections until each pool has `pool.min_idle` idle ones. Run
    /// periodically, so idle servers are released even without traffic.
    /// `refill` false (paused): only closes.
    pub async fn maintain(&self, refill: bool) {
        let pools: Vec<ConnPool> = self.map.lock().unwrap().values().cloned().collect();
        let p = &self.config.pool;
        for pool in pools {
            pool.retire_idle(Instant::now());
            let status = pool.status();
            if !refill || status.idle >= p.min_idle {
                continue;
            }
            // Holding the free idle connections and the missing ones at
            // once makes the pool open what is missing; released together,
            // they are all idle. Held ones count as idle and stay held.
            let room = status.max.saturating_sub(status.open);
            let missing = (p.min_idle - status.idle).min(room);
            let mut opened = Vec::new();
            for _ in 0..status.idle - status.held + missing {
                match pool.get().await {
                    Ok(c) => opened.push(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not open an idle server connection");
                        break;
                    }
                }
            }
        }
    }

    /// Closes every idle connection (Terminate, then the socket), for a
    /// shutdown or a pause; returns how many.
    pub async fn close_idle(&self) -> usize {
        let pools: Vec<ConnPool> = self.map.lock().unwrap().values().cloned().collect();
        let mut closed = 0;
        for pool in pools {
            let idle = std::mem::take(&mut *pool.0.idle.lock().unwrap());
            pool.0.open.fetch_sub(idle.len(), Ordering::Relaxed);
            closed += idle.len();
            // Five bytes into an idle socket's empty buffer: no waiting.
            for i in idle {
                (*i.conn).terminate().await;
            }
        }
        closed
    }

    /// Server connections checked out now, over all pools.
    pub fn in_use(&self) -> usize {
        let map = self.map.lock().unwrap();
        map.values()
            .map(|pool| {
                let s = pool.status();
                s.open.saturating_sub(s.idle)
            })
            .sum()
    }

    /// Server connections open to `backend` (idle and in use), over all its
    /// pools.
    pub fn open_connections(&self, backend: BackendId) -> usize {
        self.map
            .lock()
            .unwrap()
            .iter()
            .filter(|((b, _, _), _)| *b == backend)
            .map(|(_, pool)| pool.status().open)
            .sum()
    }
}
