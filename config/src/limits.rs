//! Resource limits and timeouts: the `[limits]` and `[timeouts]` tables.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds that protect the proxy from clients and from itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest protocol message, in bytes, accepted from a client or backend;
    /// a frame whose length exceeds this is a protocol error and closes the
    /// connection. Guards memory against a bogus length prefix. Must be at
    /// least 8192 (startup packets and small queries have to fit) and at most
    /// 2147483647 (the wire length field is a signed 32-bit integer).
    /// Default: 1073741824 (1 GiB, PostgreSQL's own limit for a value).
    pub max_message_size: usize,
    /// Client connections accepted at once; further clients are refused with
    /// an error. Must be at least 1. Default: 10000.
    pub max_client_connections: usize,
    /// Bytes of client messages pgsplit buffers at once across all sessions,
    /// beyond the first 64 KiB of each: a client whose message would go
    /// over it gets FATAL 53200 (out of memory), and only that client.
    /// Bounds the proxy's memory against many large messages at once.
    /// Must be at least 1048576 (1 MiB). Default: 268435456 (256 MiB).
    pub client_buffer_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1 << 30,
            max_client_connections: 10_000,
            client_buffer_budget: 256 << 20,
        }
    }
}

/// How long pgsplit waits for the network and for peers. Written as humantime
/// strings in TOML and env vars ("5s", "250ms", "1m 30s"). `connect`,
/// `client_startup` and `cancel` must be > 0; for the others "0s" means off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Opening a backend connection: TCP connect plus startup and
    /// authentication. Default: "5s".
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// A client must finish startup and authentication within this, so idle
    /// half-open connections cannot hold connection slots. Default: "15s".
    #[serde(with = "humantime_serde")]
    pub client_startup: Duration,
    /// Forwarding a client's CancelRequest to the backend running its query.
    /// Default: "5s".
    #[serde(with = "humantime_serde")]
    pub cancel: Duration,
    /// A request that no server has taken within this (waiting for a free
    /// connection, for a primary during a failover, for a connect) ends
    /// the client's connection with FATAL 57014; the request was not run.
    /// PgBouncer's `query_wait_timeout`. "0s" turns it off. Default: "120s".
    #[serde(with = "humantime_serde")]
    pub query_wait_timeout: Duration,
    /// A client idle inside a transaction for longer is disconnected with
    /// FATAL 25P03, as PostgreSQL's `idle_in_transaction_session_timeout`
    /// does, and the transaction is rolled back, which frees its server
    /// connection. PgBouncer's `idle_transaction_timeout`. Default: "0s"
    /// (off).
    #[serde(with = "humantime_serde")]
    pub idle_transaction_timeout: Duration,
    /// A client idle outside a transaction for longer is disconnected with
    /// FATAL 57P05, as PostgreSQL's `idle_session_timeout` does.
    /// PgBouncer's `client_idle_timeout`. Default: "0s" (off).
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// TCP keepalive on server connections: probes start after this long
    /// without traffic (then every third of it, three of them), so a
    /// connection to a server that vanished without a word is found dead.
    /// "0s" turns it off. Default: "10s".
    #[serde(with = "humantime_serde")]
    pub server_keepalive: Duration,
    /// `TCP_USER_TIMEOUT` on server connections: data left unacknowledged
    /// this long (a partition, a frozen host) ends the connection instead
    /// of TCP's retransmissions, which take many minutes. "0s" turns it
    /// off. Default: "15s".
    #[serde(with = "humantime_serde")]
    pub server_tcp_user_timeout: Duration,
    /// On SIGTERM, SIGINT or `PGSPLIT SHUTDOWN`: how long transactions and
    /// requests already running may take to finish. Idle clients are told
    /// FATAL 57P01 at once, the others as soon as their transaction ends;
    /// whoever is still inside one after this is cut off the same way
    /// (its server rolls it back). "0s" ends every session at once.
    /// Default: "20s", which fits in Kubernetes' default 30 s grace period.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client_startup: Duration::from_secs(15),
            cancel: Duration::from_secs(5),
            query_wait_timeout: Duration::from_secs(120),
            idle_transaction_timeout: Duration::ZERO,
            client_idle_timeout: Duration::ZERO,
            server_keepalive: Duration::from_secs(10),
            server_tcp_user_timeout: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}
