//! Read/write routing and load balancing: the `[routing]` table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How reads are spread over the servers that may take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Smooth weighted round robin: over any window the shares follow the
    /// weights exactly (1:3 gives 25 % / 75 %). Default.
    #[default]
    RoundRobin,
    /// The server with the fewest sessions currently using it, relative to its
    /// weight; good when statement costs vary a lot.
    LeastConnections,
    /// Random, weighted.
    Random,
}

/// Whether the primary takes load-balanced reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryReads {
    /// The primary is one more read server, with its own weight.
    On,
    /// Reads go to the primary only when no replica is usable. Default.
    #[default]
    Fallback,
    /// Reads never go to the primary; when no replica is usable they fail
    /// with an error instead of adding load to the primary.
    Off,
}

/// How a session's reads see its own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    /// Pure load balancing: a read right after a write may miss it.
    Off,
    /// Only reads inside the writing transaction stay on the primary (they
    /// always do: transactions run on one server).
    Transaction,
    /// After the session's first write, all its reads go to the primary.
    Session,
    /// Reads go to the primary for `sticky_duration` after each write.
    Sticky,
    /// A read goes to a replica only if it has replayed the session's last
    /// write (by WAL position); otherwise to the primary. Default.
    #[default]
    Causal,
    /// A read goes to a replica only if it has replayed every write made
    /// through pgsplit before the read arrived, by any session.
    Global,
    /// As causal, over every session of the same user and database: a
    /// client that reconnects (psql's `\c`, an application pool handing
    /// its next request to another connection) reads what it wrote before.
    User,
}

/// The `[routing]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routing {
    /// Load-balancing strategy for reads: "round_robin" (weighted, default),
    /// "least_connections" or "random".
    pub strategy: Strategy,
    /// Whether the primary serves reads: "on", "fallback" (default: only when
    /// no replica is usable) or "off".
    pub primary_reads: PrimaryReads,
    /// Extra functions that write (like pgpool's `write_function_list`): a
    /// statement calling one goes to the primary. Case-insensitive;
    /// "schema.name" or "name".
    pub write_functions: Vec<String>,
    /// Functions known to only read (like pgpool's
    /// `read_only_function_list`): calls stay on replicas without a catalog
    /// lookup. Case-insensitive; "schema.name" or "name".
    pub read_functions: Vec<String>,
    /// How reads see earlier writes: "off", "transaction", "session",
    /// "sticky", "causal" (default), "user" or "global". Per user with
    /// `[[users]] read_your_writes`, per session with
    /// `SET pgsplit.read_your_writes = '...'`.
    pub read_your_writes: ReadYourWrites,
    /// In causal and global modes, how long a read may wait for a replica to
    /// catch up before it falls back to the primary. Default: "0ms".
    #[serde(with = "humantime_serde")]
    pub causal_wait: Duration,
    /// In sticky mode, how long reads stay on the primary after a write.
    /// Default: "2s".
    #[serde(with = "humantime_serde")]
    pub sticky_duration: Duration,
    /// How often each server's WAL position is read (replay position on
    /// replicas, write position on the primary). Default: "50ms".
    #[serde(with = "humantime_serde")]
    pub position_interval: Duration,
    /// In causal mode, for a session whose reads follow its writes: read
    /// each commit's position on the committing connection, and ask a
    /// replica for its replay position before a read that no health check
    /// covers yet, so the read may leave the primary at once. Default: true.
    pub confirm_replay: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            strategy: Strategy::default(),
            primary_reads: PrimaryReads::default(),
            write_functions: Vec::new(),
            read_functions: Vec::new(),
            read_your_writes: ReadYourWrites::default(),
            causal_wait: Duration::ZERO,
            sticky_duration: Duration::from_secs(2),
            position_interval: Duration::from_millis(50),
            confirm_replay: true,
        }
    }
}
