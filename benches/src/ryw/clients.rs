//! pgbench processes started side by side against pgsplit, and what each
//! one's output says.
//!
//! pgbench 15 stops a client whose `\gset` got no row ("expected one row,
//! got 0") and carries on with the others: each such line is a read that
//! missed its own client's write, a read-your-writes violation. It cannot
//! be retried with `--max-tries`, which covers only serialization failures
//! and deadlocks.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde::Serialize;

use crate::e2e::child::{clean_command, die_with_parent, wait_deadline};
use crate::e2e::pgbench::parse_summary;

/// pgbench's message for a `\gset` that found no row.
const NO_ROW: &str = "expected one row, got 0";
/// How every per-client error line of pgbench begins.
const CLIENT_ERROR: &str = "pgbench: error: client ";

/// Where every pgbench connects: pgsplit's port, with the cluster's password.
pub struct Endpoint {
    pub pgbench: PathBuf,
    pub port: u16,
    pub password: String,
    /// Receives each run's stdout and stderr: files, not pipes, so a
    /// client printing many errors can never block on a full pipe.
    pub dir: PathBuf,
}

/// One pgbench run to start.
pub struct Client {
    /// `probe`, `writers` or `readers`: names the output files too.
    pub role: &'static str,
    pub user: String,
    pub clients: u32,
    /// Everything after the connection options: script, `-T`, `-n`.
    pub args: Vec<String>,
}

/// A pgbench that is running; dropping it unfinished kills it, so an error
/// elsewhere leaves no load behind.
pub struct Running {
    role: &'static str,
    user: String,
    clients: u32,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// What one finished pgbench run reported.
#[derive(Clone, Debug, Serialize)]
pub struct ClientRun {
    pub role: &'static str,
    pub user: String,
    pub clients: u32,
    pub tps: Option<f64>,
    pub transactions: u64,
    /// Reads that missed the row their client had just written.
    pub violations: u64,
    /// Failed transactions and clients stopped by any other error.
    pub errors: u64,
    pub exit_code: Option<i32>,
    /// The end of stderr when the run did not end cleanly.
    pub error: Option<String>,
}

impl Endpoint {
    pub fn start(&self, client: Client) -> Result<Running, String> {
        let out = self.dir.join(format!("{}.out", client.role));
        let err = self.dir.join(format!("{}.err", client.role));
        let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut cmd = clean_command(&self.pgbench);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", &client.user])
            .arg(format!("--client={}", client.clients))
            .args(&client.args)
            .arg("postgres")
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", "disable")
            .stdout(Stdio::from(file(&out)?))
            .stderr(Stdio::from(file(&err)?));
        die_with_parent(&mut cmd, libc::SIGKILL);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.pgbench.display()))?;
        Ok(Running {
            role: client.role,
            user: client.user,
            clients: client.clients,
            child,
            out,
            err,
        })
    }
}

impl Running {
    /// Waits up to `timeout` (then kills it) and reads what it printed.
    pub fn finish(mut self, timeout: Duration) -> ClientRun {
        let status = wait_deadline(&mut self.child, timeout);
        let stdout = fs::read_to_string(&self.out).unwrap_or_default();
        let stderr = fs::read_to_string(&self.err).unwrap_or_default();
        let summary = parse_summary(&stdout);
        let (violations, stopped) = client_errors(&stderr);
        let clean = status.is_some_and(|s| s.success()) && summary.is_some();
        let error = match status {
            None => Some(format!(
                "killed after {}s; {}",
                timeout.as_secs(),
                tail(&stderr)
            )),
            Some(_) if clean => None,
            Some(s) => Some(format!("pgbench exited with {s}; {}", tail(&stderr))),
        };
        // A run that died without a summary failed as a whole: at least one error.
        let failed = summary.as_ref().map_or(1, |s| s.failed);
        ClientRun {
            role: self.role,
            user: self.user.clone(),
            clients: self.clients,
            tps: summary.as_ref().map(|s| s.tps),
            transactions: summary.as_ref().map_or(0, |s| s.transactions),
            violations,
            errors: failed + stopped,
            exit_code: status.and_then(|s| s.code()),
            error,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // try_wait keeps the status of a child already reaped by finish.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// (clients stopped by a `\gset` that found no row, clients stopped by
/// anything else), from pgbench's stderr.
pub fn client_errors(stderr: &str) -> (u64, u64) {
    let lines = stderr.lines().filter(|l| l.starts_with(CLIENT_ERROR));
    let (mut no_row, mut other) = (0, 0);
    for line in lines {
        match line.contains(NO_ROW) {
            true => no_row += 1,
            false => other += 1,
        }
    }
    (no_row, other)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines[lines.len().saturating_sub(4)..].join(" | ") {
        s if s.is_empty() => "no stderr output".to_owned(),
        s => format!("stderr: {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_rows_told_apart_from_other_errors() {
        // pgbench 15.18's lines for a \gset without a row and an SQL error.
        let stderr =
            "pgbench: error: client 2 script 0 command 2 query 0: expected one row, got 0\n\
             pgbench: error: client 0 script 0 aborted in command 1 query 0: ERROR:  boom\n\
             pgbench: error: client 3 script 0 command 2 query 0: expected one row, got 0\n\
             pgbench: error: Run was aborted; the above results are incomplete.\n";
        assert_eq!(client_errors(stderr), (2, 1));
        assert_eq!(client_errors(""), (0, 0));
    }
}
