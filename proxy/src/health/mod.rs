//! Health checks, role discovery and failover.
//!
//! Each backend has a check loop of its own (`check.rs`) on a small
//! connection outside the client pools: it reads the server's role,
//! timeline, WAL positions and replication state. Every report feeds the
//! election (`control.rs`, rules in `pgsplit_router::topology`), which
//! decides where writes go and which servers may take reads, and is kept
//! in [`crate::topology`]. Sessions only read atomics there; nothing on
//! the request path takes a lock.

mod check;
mod control;

pub use check::{parse_lsn, spawn};
pub use control::{accept, attach, detach, promote};
