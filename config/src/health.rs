//! Health checks, role discovery and failover: the `[health]` table.
//!
//! Key names follow pgpool-II's where one exists, so an operator moving
//! over finds `health_check_period` where they expect it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The `[health]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    /// How often each server is asked for its role, timeline and lag.
    /// Default: "1s".
    #[serde(with = "humantime_serde")]
    pub health_check_period: Duration,
    /// How long one check may take before it counts as failed. Default: "2s".
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    /// Consecutive failed checks after which a server is `down`. One
    /// success brings it back `up`. Default: 3.
    pub health_check_max_retries: u32,
    /// Role the checks log in as. Default: the first `[[users]]` entry's
    /// server credentials when it has a password, else `[auth_query]`'s
    /// login, else the first entry without a password. Give it `pg_monitor`
    /// so it can see the WAL receiver's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_user: Option<String>,
    /// Password for `health_check_user` (plaintext). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_password: Option<Secret>,
    /// Database the checks connect to. Default: "postgres".
    pub health_check_database: String,
    /// How long a write waits for a primary when there is none (it died and
    /// nothing has been promoted yet) before it fails. Default: "30s".
    #[serde(with = "humantime_serde")]
    pub failover_timeout: Duration,
    /// Promote a replica with `pg_promote()` when the primary has been down
    /// for `promote_after`. Only for clusters without a manager, and only on
    /// one pgsplit instance. Default: false.
    pub auto_promote: bool,
    /// How long the primary must be down before `auto_promote` acts.
    /// Default: "10s".
    #[serde(with = "humantime_serde")]
    pub promote_after: Duration,
    /// A replica whose replay is this far behind the primary in time gets
    /// no reads until it catches up. "0s" turns the time limit off.
    /// Default: "10s". Per session: `SET pgsplit.max_replica_lag = '1s'`.
    #[serde(with = "humantime_serde")]
    pub max_replica_lag: Duration,
    /// The same limit in bytes of WAL not yet replayed; 0 turns it off.
    /// Default: 16777216 (16 MB).
    pub max_replica_lag_bytes: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            health_check_period: Duration::from_secs(1),
            health_check_timeout: Duration::from_secs(2),
            health_check_max_retries: 3,
            health_check_user: None,
            health_check_password: None,
            health_check_database: "postgres".into(),
            failover_timeout: Duration::from_secs(30),
            auto_promote: false,
            promote_after: Duration::from_secs(10),
            max_replica_lag: Duration::from_secs(10),
            max_replica_lag_bytes: 16 << 20,
        }
    }
}
