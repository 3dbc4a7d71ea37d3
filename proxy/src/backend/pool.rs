//! Pools of authenticated server connections, one per backend, database
//! and server user, on `deadpool`.
//!
//! A connection goes back to its pool only when it owes no replies and is
//! outside a transaction (ReadyForQuery said `I`); `recycle` checks that
//! again, plus the socket, age and idle time, before handing it out. The
//! session layer is responsible for session settings and prepared
//! statements, which it tracks per connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use pgsplit_config::Config;

use super::{BackendAddr, BackendError, ConnectParams, ServerConn};

pub struct ConnManager {
    backend: BackendAddr,
    user: String,
    password: Option<String>,
    database: String,
    connect_timeout: Duration,
    max_message_size: usize,
    idle_timeout: Duration,
    lifetime: Duration,
}

impl managed::Manager for ConnManager {
    type Type = ServerConn;
    type Error = BackendError;

    async fn create(&self) -> Result<ServerConn, BackendError> {
        ServerConn::connect(
            &self.backend,
            &ConnectParams {
                user: &self.user,
                password: self.password.as_deref(),
                database: &self.database,
                // Connections are shared by clients with different startup
                // parameters: sessions apply theirs as SETs when needed.
                extra: &[],
                timeout: self.connect_timeout,
                max_message_size: self.max_message_size,
            },
        )
        .await
    }

    async fn recycle(&self, conn: &mut ServerConn, m: &Metrics) -> RecycleResult<BackendError> {
        if m.created.elapsed() > self.lifetime {
            return Err(RecycleError::message("reached pool.server_lifetime"));
        }
        if m.last_used() > self.idle_timeout {
            return Err(RecycleError::message(
                "idle longer than pool.server_idle_timeout",
            ));
        }
        if !conn.is_clean() {
            return Err(RecycleError::message(
                "returned inside a transaction or with replies owed",
            ));
        }
        if !conn.is_alive() {
            return Err(RecycleError::message("closed by the server"));
        }
        Ok(())
    }
}

pub type ConnPool = managed::Pool<ConnManager>;
pub type PooledConn = managed::Object<ConnManager>;

/// Every pool of the proxy, created on first use.
pub struct Pools {
    config: Arc<Config>,
    backends: Vec<BackendAddr>,
    map: Mutex<HashMap<(usize, String, String), ConnPool>>,
}

impl Pools {
    pub fn new(config: Arc<Config>, backends: Vec<BackendAddr>) -> Pools {
        Pools {
            config,
            backends,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for one backend, database and server user. Sessions keep
    /// the handle, so this lock is taken once per session and backend.
    pub fn pool(
        &self,
        backend: usize,
        database: &str,
        user: &str,
        password: Option<&str>,
    ) -> ConnPool {
        let key = (backend, database.to_owned(), user.to_owned());
        let mut map = self.map.lock().unwrap();
        map.entry(key)
            .or_insert_with(|| {
                let c = &self.config;
                let manager = ConnManager {
                    backend: self.backends[backend].clone(),
                    user: user.to_owned(),
                    password: password.map(str::to_owned),
                    database: database.to_owned(),
                    connect_timeout: c.timeouts.connect,
                    max_message_size: c.limits.max_message_size,
                    idle_timeout: c.pool.server_idle_timeout,
                    lifetime: c.pool.server_lifetime,
                };
                managed::Pool::builder(manager)
                    .max_size(c.pool.pool_size)
                    .wait_timeout(Some(c.pool.checkout_timeout))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .expect("a pool with a runtime and a wait timeout builds")
            })
            .clone()
    }

    /// Closes idle connections past their idle time or lifetime, then
    /// opens connections until each pool has `pool.min_idle` idle ones. Run
    /// periodically, so idle servers are released even without traffic.
    pub async fn maintain(&self) {
        let pools: Vec<ConnPool> = self.map.lock().unwrap().values().cloned().collect();
        let p = &self.config.pool;
        for pool in pools {
            pool.retain(|_, m| {
                m.last_used() < p.server_idle_timeout && m.created.elapsed() < p.server_lifetime
            });
            let status = pool.status();
            if status.available >= p.min_idle {
                continue;
            }
            // Holding min_idle connections at once makes the pool open what
            // is missing; released together, they are all idle.
            let room = status.max_size.saturating_sub(status.size);
            let mut opened = Vec::new();
            for _ in 0..p.min_idle.min(status.available + room) {
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

    /// Server connections open to `backend` (idle and in use), over all its
    /// pools.
    pub fn open_connections(&self, backend: usize) -> usize {
        self.map
            .lock()
            .unwrap()
            .iter()
            .filter(|((b, _, _), _)| *b == backend)
            .map(|(_, pool)| pool.status().size)
            .sum()
    }
}
