//! SQL-level operations on a [`Cluster`]: running `psql`, and waiting for
//! replication states by polling rather than sleeping a fixed time.

use std::thread;
use std::time::{Duration, Instant};

use crate::error::timeout_with_log;
use crate::exec::{ensure_success, run};
use crate::setup::slot_name;
use crate::{Cluster, ClusterError};

/// Generous: tests may run `pg_sleep` or wait on locks through `psql`.
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);
/// Interval between polls; each poll is a `psql` run of a few milliseconds.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

impl Cluster {
    /// Runs `sql` on node `index` as the superuser and returns stdout,
    /// trimmed. See [`Cluster::psql_as`].
    pub fn psql(&self, index: usize, dbname: &str, sql: &str) -> Result<String, ClusterError> {
        self.psql_as(index, &self.superuser, Some(&self.password), dbname, sql)
    }

    /// Runs `sql` on node `index` over TCP as `user`, with `psql -X -q -At
    /// -v ON_ERROR_STOP=1`. The text is fed as a script, so statements run
    /// one by one in autocommit (`ALTER SYSTEM`, `CREATE DATABASE` work next
    /// to others), `-q` drops command tags so only rows are printed, one per
    /// line with `|` between columns. Any error stops the script and is
    /// returned with psql's stderr.
    pub fn psql_as(
        &self,
        index: usize,
        user: &str,
        password: Option<&str>,
        dbname: &str,
        sql: &str,
    ) -> Result<String, ClusterError> {
        let node = self.node(index);
        let mut cmd = self.runner.command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", &node.host, "-p", &node.port.to_string()])
            .args(["-U", user, "-d", dbname, "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "pgsplit-cluster");
        if let Some(password) = password {
            // The environment, unlike argv, is private to the process owner.
            cmd.env("PGPASSWORD", password);
        }
        let what = format!(
            "psql as {user} on node {index} (port {}): {}",
            node.port,
            excerpt(sql)
        );
        let out = run(&mut cmd, Some(sql), PSQL_TIMEOUT).map_err(|e| match e {
            ClusterError::Timeout(_) => {
                timeout_with_log(format!("{what} did not finish"), &node.log_file)
            }
            other => other,
        })?;
        let stdout = ensure_success(out, &what, Some(&node.log_file))?;
        Ok(stdout.trim().to_owned())
    }

    /// Sets `recovery_min_apply_delay` on replica `index` (`ZERO` resets
    /// it) and returns once the server has reloaded the new value.
    pub fn set_apply_delay(&self, index: usize, delay: Duration) -> Result<(), ClusterError> {
        let millis = delay.as_micros().div_ceil(1000);
        let change = if millis == 0 {
            "ALTER SYSTEM RESET recovery_min_apply_delay".to_owned()
        } else {
            format!("ALTER SYSTEM SET recovery_min_apply_delay = '{millis}ms'")
        };
        self.psql(
            index,
            "postgres",
            &format!("{change};\nSELECT pg_reload_conf();"),
        )?;
        // pg_reload_conf only signals the postmaster. A new session seeing
        // the value proves the postmaster has reread the file, and it
        // signals the startup process before forking any later backend.
        let check = "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'";
        let expected = millis.to_string();
        self.poll(
            index,
            Duration::from_secs(10),
            "the apply delay to take effect",
            || Ok(self.psql(index, "postgres", check)? == expected),
        )
    }

    /// Waits until every running replica has replayed the primary's WAL as
    /// of this call. The primary is the first running node out of recovery
    /// (node 0 unless it was stopped and another promoted); promoted nodes
    /// are not waited for.
    pub fn wait_for_replay(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let primary = self.current_primary(timeout)?;
        let lsn = self.psql(primary, "postgres", "SELECT pg_current_wal_lsn()")?;
        let caught_up =
            format!("SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= '{lsn}'");
        for index in 0..self.nodes.len() {
            if index == primary || !self.is_running(index) {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("replay of the primary's LSN {lsn}");
            self.poll(index, left, &what, || {
                Ok(self.psql(index, "postgres", &caught_up)? == "t")
            })?;
        }
        Ok(())
    }

    /// Waits until replica `index`'s WAL receiver is streaming (from
    /// whichever upstream it follows), e.g. after [`Cluster::start_node`].
    pub fn wait_for_streaming(&self, index: usize, timeout: Duration) -> Result<(), ClusterError> {
        self.poll(index, timeout, "the WAL receiver to stream", || {
            let status = self.psql(index, "postgres", "SELECT status FROM pg_stat_wal_receiver")?;
            Ok(status == "streaming")
        })
    }

    /// The first running node (by index) that is out of recovery, waiting
    /// up to `timeout` for one to appear, e.g. while a promotion finishes.
    /// With two primaries at once (a promotion while the old primary still
    /// runs) this is the lower index, not the newer timeline.
    pub fn current_primary(&self, timeout: Duration) -> Result<usize, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            for index in 0..self.nodes.len() {
                let sql = "SELECT pg_is_in_recovery()";
                if self.is_running(index)
                    && self.psql(index, "postgres", sql).is_ok_and(|r| r == "f")
                {
                    return Ok(index);
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout(
                    "no running node is out of recovery, so there is no primary to replay from"
                        .to_owned(),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until the primary sees replica `index` streaming on its slot.
    pub(crate) fn wait_slot_streaming(
        &self,
        index: usize,
        deadline: Instant,
    ) -> Result<(), ClusterError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots s \
             JOIN pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = '{}' AND r.state = 'streaming')",
            slot_name(index)
        );
        let left = deadline.saturating_duration_since(Instant::now());
        self.poll(index, left, "the primary to see it streaming", || {
            Ok(self.psql(0, "postgres", &sql)? == "t")
        })
    }

    /// Polls `done` until it returns true or `timeout` passes. Errors from
    /// `done` count as "not yet" (the node may be restarting) but the last
    /// one is reported on timeout, together with node `index`'s log.
    pub(crate) fn poll(
        &self,
        index: usize,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut() -> Result<bool, ClusterError>,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match done() {
                Ok(true) => return Ok(()),
                Ok(false) => None,
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let cause = last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                let node = self.node(index);
                return Err(timeout_with_log(
                    format!(
                        "node {index} (port {}) waited {timeout:?} for {what}{cause}",
                        node.port
                    ),
                    &node.log_file,
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

fn excerpt(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 120 {
        format!("{}…", flat.chars().take(120).collect::<String>())
    } else {
        flat
    }
}
