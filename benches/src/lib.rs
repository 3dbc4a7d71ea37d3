//! Benchmarks for pgsplit.
//!
//! - `benches/`: criterion microbenchmarks of the pure crates (framing,
//!   classification), no sockets.
//! - [`e2e`] and the `e2e` binary: pgbench through pgsplit, a direct
//!   connection and any installed peer proxy, measured interleaved on a real
//!   local primary with streaming replicas, reporting TPS, latency and the
//!   proxy's CPU time per transaction.
//! - [`regress`] and the `regress` binary: PostgreSQL's own regression
//!   suite directly and through pgsplit, in each pooling mode, with the
//!   result files compared.
//! - [`ryw`] and the `ryw` binary: where reads go under the read-your-writes
//!   modes (own writes read back, readers next to writers of the same and
//!   of another user), from pgsplit's metrics, with any read that misses
//!   its own write reported as a violation.
//!
//! Nothing here is part of the proxy; it only starts processes and reads
//! their output.

pub mod e2e;
pub mod regress;
pub mod ryw;
