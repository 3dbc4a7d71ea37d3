//! The crate's error type and the server-log excerpts it carries.

use std::path::Path;

/// Lines of server log quoted in errors: enough to show a FATAL and its
/// context without drowning the test output.
const LOG_TAIL_LINES: usize = 20;

/// Why the cluster could not be built or an operation on it failed.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum ClusterError {
    /// No usable `initdb`/`pg_ctl`/`postgres` was found.
    #[error(
        "no PostgreSQL server binaries found ({0}); install PostgreSQL 13+ server binaries, \
         e.g. `apt-get install -y postgresql`, or set PGSPLIT_PG_BINDIR to their directory"
    )]
    NoBinaries(String),
    /// Running as root, but there is no `postgres` OS user to run the servers as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` OS \
         user to run it as: create it (`useradd --system --home-dir /var/lib/postgresql \
         postgres`) or install the postgresql package"
    )]
    NoPostgresUser,
    /// A command (initdb, pg_ctl, pg_basebackup, psql) exited unsuccessfully.
    #[error("{what} failed ({status}): {}{}", stderr.trim_end(), format_tail(log_tail))]
    Command {
        what: String,
        status: String,
        stderr: String,
        log_tail: String,
    },
    /// A replica cannot follow the upstream it was pointed at: it already
    /// replayed or received WAL past the point where the upstream's
    /// timeline forked. Only a fresh copy fixes that
    /// ([`crate::Cluster::rejoin_as_standby`]), or pg_rewind.
    #[error("{0}")]
    Diverged(String),
    /// Something did not happen before its deadline; the message says what
    /// and quotes the relevant server log.
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn format_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(
            "\n--- last lines of the server log ---\n{}",
            tail.trim_end()
        )
    }
}

/// The last lines of a server log, or an empty string if it cannot be read
/// (a missing log is not worth a second error).
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].join("\n")
}

/// A [`ClusterError::Timeout`] whose message ends with the node's log tail.
pub(crate) fn timeout_with_log(what: String, log: &Path) -> ClusterError {
    ClusterError::Timeout(format!("{what}{}", format_tail(&log_tail(log))))
}
