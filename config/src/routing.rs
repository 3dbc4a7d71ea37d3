//! Read/write routing and load balancing: the `[routing]` table.

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

/// The `[routing]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
}
