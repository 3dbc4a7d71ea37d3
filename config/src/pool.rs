//! Server connection pooling: the `[pool]` table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a client gives its server connection back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// A client holds a server connection only while a transaction or an
    /// extended-protocol batch runs. Default.
    #[default]
    Transaction,
    /// A client keeps its server connections until it disconnects; they are
    /// reset (`DISCARD ALL`) before another client gets them.
    Session,
}

/// The `[pool]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pool {
    /// "transaction" (default) or "session".
    pub mode: PoolMode,
    /// Server connections per backend, database and user. Default: 20.
    pub pool_size: usize,
    /// Connections each pool keeps open even when idle. Default: 0.
    pub min_idle: usize,
    /// How long a request waits for a free server connection before it fails
    /// with SQLSTATE 53300. Default: "10s".
    #[serde(with = "humantime_serde")]
    pub checkout_timeout: Duration,
    /// Idle server connections older than this are closed. Default: "10m".
    #[serde(with = "humantime_serde")]
    pub server_idle_timeout: Duration,
    /// Server connections are closed (when idle) after this long, so memory
    /// held by long-lived backends is given back. Default: "1h".
    #[serde(with = "humantime_serde")]
    pub server_lifetime: Duration,
    /// Protocol-level prepared statements kept per server connection; the
    /// least recently used are closed beyond this. Default: 500.
    pub max_prepared_statements: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            mode: PoolMode::Transaction,
            pool_size: 20,
            min_idle: 0,
            checkout_timeout: Duration::from_secs(10),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            max_prepared_statements: 500,
        }
    }
}
