//! Where reads go under pgsplit's read-your-writes modes.
//!
//! The README keeps `causal` the default "until the shares of replica reads
//! under a write load are measured for the three modes"; this measures
//! them. The `ryw` binary starts one primary with two streaming replicas,
//! then for each mode starts pgsplit with `routing.read_your_writes` set to
//! it and runs every [`Scenario`] through it, scraping pgsplit's metrics
//! before and after each: which backends served the reads, how many reads
//! read-your-writes kept on the primary, and whether any read missed the
//! row its own client had just written (a violation: a bug).
//!
//! The parts, by responsibility:
//! - [`setup`]: the tables and roles on the cluster, pgsplit's
//!   configuration, and starting it until its replicas are usable;
//! - [`metrics`]: scraping `/metrics` and the difference of two scrapes;
//! - [`clients`]: pgbench processes run side by side, and what their
//!   output says about violations;
//! - [`scenarios`]: each scenario's pgbench runs and its result;
//! - [`report`]: the tables printed and the JSON file.

pub mod clients;
pub mod metrics;
pub mod report;
pub mod scenarios;
pub mod setup;

use serde::Serialize;

/// pgsplit's `routing.read_your_writes` values, for checking `--modes`
/// before a cluster is started for nothing.
pub const MODES: [&str; 7] = [
    "off",
    "transaction",
    "session",
    "sticky",
    "causal",
    "user",
    "global",
];

/// One workload run through pgsplit in each mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Autocommit INSERT of a fresh row, then a SELECT of it: the read
    /// must see the write of the statement just before.
    OwnWrites,
    /// The same in a read-write transaction followed by a read-only one:
    /// a read-only transaction may go to a replica, so it must wait for
    /// (or skip) one that has not replayed the commit.
    RoAfterRw,
    /// tpcb-like writers and `-S` readers of the same user at once: in
    /// `user` and `global` modes the writers hold the readers' reads on the
    /// primary, in `causal` they do not.
    LoadSameUserReaders,
    /// The same with readers of another user: only `global` holds them.
    LoadOtherUserReaders,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::OwnWrites,
        Scenario::RoAfterRw,
        Scenario::LoadSameUserReaders,
        Scenario::LoadOtherUserReaders,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::OwnWrites => "own-writes",
            Scenario::RoAfterRw => "ro-after-rw",
            Scenario::LoadSameUserReaders => "load+same-user-readers",
            Scenario::LoadOtherUserReaders => "load+other-user-readers",
        }
    }

    /// Whether the scenario's reads check their own writes (so a missed
    /// row is a violation), rather than reading while others write.
    pub fn probes(self) -> bool {
        matches!(self, Scenario::OwnWrites | Scenario::RoAfterRw)
    }
}

/// `2026-05-04T12:34:56Z` for a Unix time (the e2e report's format).
pub use crate::e2e::report::format_utc as utc_timestamp;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_probes_check_their_writes() {
        let probes: Vec<_> = Scenario::ALL.iter().filter(|s| s.probes()).collect();
        assert_eq!(probes, [&Scenario::OwnWrites, &Scenario::RoAfterRw]);
    }
}
