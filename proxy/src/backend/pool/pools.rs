//! Every pool of the proxy, by backend, database and server user, and
//! what the admin console reports of them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgsplit_config::Config;

use super::{stats::PoolTotals, ConnManager, ConnPool, PoolStatus};
use crate::backend::{BackendAddr, Credential};
use crate::topology::BackendId;

/// Every pool of the proxy, created on first use.
pub struct Pools {
    /// The newest configuration: new pools are made with its settings.
    config: Mutex<Arc<Config>>,
    backends: Vec<BackendAddr>,
    map: Mutex<HashMap<(BackendId, String, String), ConnPool>>,
    /// Totals at the start of the last two stats periods, for averages.
    periods: Mutex<Periods>,
}

/// How often `SHOW STATS` averages are recomputed, as PgBouncer's
/// default `stats_period`.
pub const STATS_PERIOD: Duration = Duration::from_secs(60);

type PoolKey = (BackendId, String, String);

#[derive(Default)]
struct Periods {
    last: Option<(Instant, HashMap<PoolKey, PoolTotals>)>,
    before: Option<(Instant, HashMap<PoolKey, PoolTotals>)>,
}

impl Pools {
    pub fn new(config: Arc<Config>, backends: Vec<BackendAddr>) -> Pools {
        Pools {
            config: Mutex::new(config),
            backends,
            map: Mutex::new(HashMap::new()),
            periods: Mutex::default(),
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
                let c = Arc::clone(&self.config.lock().unwrap());
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
    /// `refill` false (paused): only closes; it is asked before every
    /// connection opened.
    pub async fn maintain(&self, refill: impl Fn() -> bool) {
        self.sample_stats(Instant::now());
        let pools: Vec<ConnPool> = self.map.lock().unwrap().values().cloned().collect();
        let config = Arc::clone(&self.config.lock().unwrap());
        let p = &config.pool;
        for pool in pools {
            pool.retire_idle(Instant::now());
            let status = pool.status();
            if !refill() || status.idle >= p.min_idle {
                continue;
            }
            // Holding the free idle connections and the missing ones at
            // once makes the pool open what is missing; released together,
            // they are all idle. Held ones count as idle and stay held.
            let room = status.max.saturating_sub(status.open);
            let missing = (p.min_idle - status.idle).min(room);
            let mut opened = Vec::new();
            for _ in 0..status.idle - status.held + missing {
                // Asked again each time: a PAUSE may have begun meanwhile.
                if !refill() {
                    break;
                }
                match pool.refill().await {
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

/// One pool as the admin console shows it.
#[derive(Debug, Clone)]
pub struct PoolReport {
    pub backend: BackendId,
    pub database: String,
    pub user: String,
    pub status: PoolStatus,
    pub totals: PoolTotals,
    /// Sessions waiting for a connection now, and the longest wait.
    pub waiting: usize,
    pub max_wait: Duration,
    /// Idle connections' server process ids.
    pub idle_pids: Vec<i32>,
}

impl Pools {
    /// After a reload: pools made from now on use `config`, and every
    /// pool takes its `pool.pool_size` at once.
    pub fn reconfigure(&self, config: Arc<Config>) {
        let size = config.pool.pool_size;
        *self.config.lock().unwrap() = config;
        for pool in self.map.lock().unwrap().values() {
            pool.resize(size);
        }
    }

    /// Starts a new stats period once the last one is over.
    fn sample_stats(&self, now: Instant) {
        let mut periods = self.periods.lock().unwrap();
        if periods
            .last
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < STATS_PERIOD)
        {
            return;
        }
        let totals = self
            .map
            .lock()
            .unwrap()
            .iter()
            .map(|(k, pool)| (k.clone(), pool.0.stats.totals()))
            .collect();
        periods.before = periods.last.replace((now, totals));
    }

    /// Per pool, what the last complete stats period added, and its length;
    /// empty until one period has passed.
    pub fn last_period(&self) -> (HashMap<PoolKey, PoolTotals>, Duration) {
        let periods = self.periods.lock().unwrap();
        let (Some((end, last)), Some((start, before))) = (&periods.last, &periods.before) else {
            return (HashMap::new(), STATS_PERIOD);
        };
        let added = last
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    t.since(before.get(k).copied().unwrap_or_default()),
                )
            })
            .collect();
        (added, end.duration_since(*start))
    }

    /// Every pool, ordered by backend, database and user.
    pub fn report(&self) -> Vec<PoolReport> {
        let map = self.map.lock().unwrap();
        let mut out: Vec<PoolReport> = map
            .iter()
            .map(|((backend, database, user), pool)| {
                let (waiting, max_wait) = pool.0.stats.waiting();
                PoolReport {
                    backend: *backend,
                    database: database.clone(),
                    user: user.clone(),
                    status: pool.status(),
                    totals: pool.0.stats.totals(),
                    waiting,
                    max_wait,
                    idle_pids: pool
                        .0
                        .idle
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|i| i.conn.pid)
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (a.backend, &a.database, &a.user).cmp(&(b.backend, &b.database, &b.user))
        });
        out
    }
}
