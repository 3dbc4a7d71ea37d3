//! Conformance: PostgreSQL's own core regression suite (`src/test/regress`,
//! `parallel_schedule`, driven by `pg_regress`) run directly against a
//! primary and then through pgsplit, with the result files compared.
//!
//! The suite is the most demanding client there is (every kind of SET,
//! temporary tables, cursors, PREPARE, LISTEN, COPY, advisory locks, `\c`
//! reconnects, two-phase commit), so a test whose output through pgsplit
//! differs from its output on a direct connection names a behaviour an
//! application could see. The proxied runs are compared with the direct
//! run, not with `expected/`: the direct run is what PostgreSQL itself does
//! on this machine.
//!
//! The `regress` binary orchestrates; the parts live here by responsibility:
//! - [`apt`] and [`source`]: the Debian packages the build needs, and the
//!   server's source package;
//! - [`build`]: compiling `regress.so`, `autoinc.so` and `refint.so`;
//! - [`suite`]: the cache that survives between runs, and the copy of the
//!   suite the servers and `pg_regress` (both run as `postgres`) can read;
//! - [`schedule`] and [`outcome`]: reading the schedule and pg_regress's
//!   report (pure);
//! - [`pg_regress`]: one run of pg_regress with a deadline;
//! - [`proxy`]: pgsplit's configuration for the suite;
//! - [`runs`]: one run on a fresh cluster, directly or through pgsplit;
//! - [`compare`] and [`summary`]: which result files differ, the diffs, the
//!   printed lines and the JSON file (pure but for file reading).

pub mod apt;
pub mod build;
pub mod compare;
pub mod outcome;
pub mod pg_regress;
pub mod proxy;
pub mod runs;
pub mod schedule;
pub mod source;
pub mod suite;
pub mod summary;

use std::fmt;
use std::process::Command;
use std::str::FromStr;

use serde::Serialize;

/// Runs a short tool to completion; Err says which one failed and why,
/// with the end of what it printed.
pub fn run_tool(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "{what}: cannot start {}: {e}",
            cmd.get_program().to_string_lossy()
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let both = format!("{stdout}{stderr}");
    let lines: Vec<&str> = both.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Err(format!("{what} failed ({}):\n{tail}", out.status))
}

/// A run compared with the direct baseline run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Through pgsplit, `[pool] mode = "transaction"`.
    Transaction,
    /// Through pgsplit, `[pool] mode = "session"`.
    Session,
    /// Directly again: how much the suite differs from itself on this
    /// machine (timing-dependent output), the noise floor of the others.
    Direct,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Transaction, Mode::Session, Mode::Direct];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Transaction => "transaction",
            Mode::Session => "session",
            Mode::Direct => "direct",
        }
    }

    /// pgsplit's `[pool] mode`, or `None` for a direct run.
    pub fn pool_mode(self) -> Option<&'static str> {
        match self {
            Mode::Transaction => Some("transaction"),
            Mode::Session => Some("session"),
            Mode::Direct => None,
        }
    }

    /// What the printed result line starts with.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Transaction => "transaction pooling",
            Mode::Session => "session pooling",
            Mode::Direct => "direct again",
        }
    }

    /// Directory of this run's output; the baseline has `direct`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Mode::Transaction => "transaction",
            Mode::Session => "session",
            Mode::Direct => "direct-again",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode {s:?}; expected transaction, session or direct"))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_direct_has_no_pool() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
        }
        assert_eq!(Mode::Direct.pool_mode(), None);
        assert_eq!(Mode::Session.pool_mode(), Some("session"));
        assert!("statement".parse::<Mode>().is_err());
        // The baseline's directory is "direct": a second direct run must
        // not overwrite it.
        assert_ne!(Mode::Direct.dir_name(), "direct");
    }
}
