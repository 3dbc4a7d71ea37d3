//! Benchmarks for pgsplit.
//!
//! - `benches/`: criterion microbenchmarks of the pure crates (framing,
//!   classification), no sockets.
//! - [`e2e`] and the `e2e` binary: pgbench through pgsplit, a direct
//!   connection and any installed peer proxy, measured interleaved on a real
//!   local primary with streaming replicas, reporting TPS, latency and the
//!   proxy's CPU time per transaction.
//!
//! Nothing here is part of the proxy; it only starts processes and reads
//! their output.

pub mod e2e;
