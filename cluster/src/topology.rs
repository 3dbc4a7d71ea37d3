//! Changing who follows whom after a promotion, as a failover manager
//! (Patroni, repmgr, a human) does: re-pointing a replica at the new
//! primary, and turning an old primary into a standby of it.
//!
//! Both end by waiting until the node's WAL receiver streams from the new
//! upstream, so a caller measuring what happens next (a proxy noticing the
//! node) starts its clock from a node that really is a working standby.

use std::fs;
use std::time::Duration;

use crate::cluster::{log_len, log_since};
use crate::setup::{self, slot_name};
use crate::{Cluster, ClusterError, StopMode};

/// How long a re-pointed or rebuilt replica may take to stream. A fresh
/// standby replays from the backup's checkpoint first, which is quick for
/// a test-sized cluster.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a WAL receiver must stream before a follow counts as done
/// (see `wait_streaming_from`).
const STREAMING_SETTLES: Duration = Duration::from_secs(1);

/// Server log lines meaning the node's WAL went past the point where the
/// upstream's timeline forked, so it can never follow that upstream.
/// The first comes from the startup process, the others from the WAL
/// receiver (the second quotes the upstream's walsender).
const DIVERGED: [&str; 4] = [
    "forked off current database system timeline",
    "is not in this server's history",
    "is not a child of database system timeline",
    "of the primary is behind recovery timeline",
];

impl Cluster {
    /// Re-points running replica `index` at node `upstream`, the step a
    /// failover manager takes for the surviving replicas after promoting
    /// one: `primary_conninfo` now names the upstream's port, and the
    /// replica's slot (`replica_<index>`) is created on the upstream if it
    /// is missing there, since slots are not copied to standbys. PostgreSQL
    /// 13+ applies a changed `primary_conninfo` on reload, and
    /// `recovery_target_timeline` defaults to `latest`, so the replica
    /// crosses to the upstream's timeline without a restart.
    ///
    /// Returns once the WAL receiver streams from the upstream. Fails fast
    /// with [`ClusterError::Diverged`] when the replica already has WAL
    /// past the upstream's fork point (it received more from the dead
    /// primary than the promoted node did) or is itself a primary; use
    /// [`Cluster::rejoin_as_standby`] then.
    pub fn follow(&self, index: usize, upstream: usize) -> Result<(), ClusterError> {
        assert_ne!(index, upstream, "node {index} cannot follow itself");
        let node = self.node(index);
        if self.psql(index, "postgres", "SELECT pg_is_in_recovery()")? == "f" {
            return Err(ClusterError::Diverged(format!(
                "node {index} (port {}) is a primary, not a standby, so it cannot follow \
                 node {upstream}; rebuild it with rejoin_as_standby",
                node.port
            )));
        }
        self.ensure_slot(upstream, index)?;
        let seen = log_len(&node.log_file);
        let conninfo = conninfo(self.port(upstream), &self.superuser);
        self.psql(
            index,
            "postgres",
            &format!(
                "ALTER SYSTEM SET primary_conninfo = '{conninfo}';\n\
                 ALTER SYSTEM SET primary_slot_name = '{}';\n\
                 SELECT pg_reload_conf();",
                slot_name(index)
            ),
        )?;
        self.wait_streaming_from(index, upstream, seen)
    }

    /// Makes node `index` — typically an old primary, stopped or still
    /// running on its own timeline — a streaming standby of `upstream`
    /// with a fresh base backup: the way to rejoin a node whose WAL
    /// diverged, short of pg_rewind. A running node is stopped with
    /// `immediate` (whatever it wrote on its own is thrown away anyway),
    /// its data directory deleted and cloned again from the upstream; it
    /// keeps its port, so anything configured with it (a proxy) finds it
    /// again. Returns once its WAL receiver streams from the upstream.
    pub fn rejoin_as_standby(&self, index: usize, upstream: usize) -> Result<(), ClusterError> {
        assert_ne!(index, upstream, "node {index} cannot rejoin itself");
        let node = self.node(index);
        let source = self.node(upstream);
        self.stop_node(index, StopMode::Immediate)?;
        match fs::remove_dir_all(&node.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        // `pg_basebackup -S` streams through the slot and fails if it is
        // missing; created up front, it also keeps WAL for the new standby
        // between the backup's end and its first connection.
        self.ensure_slot(upstream, index)?;
        setup::basebackup(
            &self.runner,
            source.port,
            &self.superuser,
            index,
            &node.data_dir,
            &source.log_file,
        )?;
        // The copy carries the upstream's per-node file, port included.
        setup::write_node_conf(&node.data_dir, index, node.port, self.runner.owner)?;
        let seen = log_len(&node.log_file);
        self.pg_ctl_start(&node.data_dir, &node.log_file, index)?;
        self.wait_streaming_from(index, upstream, seen)
    }

    /// Creates physical slot `replica_<for_index>` on node `on` unless it
    /// exists. Works on a standby too (cascading replication).
    fn ensure_slot(&self, on: usize, for_index: usize) -> Result<(), ClusterError> {
        let slot = slot_name(for_index);
        self.psql(
            on,
            "postgres",
            &format!(
                "SELECT pg_create_physical_replication_slot('{slot}', true) \
                 WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '{slot}')"
            ),
        )
        .map(drop)
    }

    /// Waits until node `index`'s WAL receiver streams from `upstream`'s
    /// port, failing with [`ClusterError::Diverged`] as soon as the log
    /// written after byte `seen` says it never will.
    fn wait_streaming_from(
        &self,
        index: usize,
        upstream: usize,
        seen: u64,
    ) -> Result<(), ClusterError> {
        let log = &self.node(index).log_file;
        let sql = format!(
            "SELECT status = 'streaming' AND sender_port = {} FROM pg_stat_wal_receiver",
            self.port(upstream)
        );
        // `poll` knows only "done" and "not yet", so a divergence ends the
        // poll as done and is reported from here.
        let mut diverged = None;
        // A diverged standby streams too, for a moment: its WAL receiver
        // asks from the start of the current segment, which the upstream
        // still has, and only then does the startup process compare the
        // timelines and log the fork. Streaming counts once it has lasted.
        let mut streaming_since: Option<std::time::Instant> = None;
        self.poll(
            index,
            STREAMING_TIMEOUT,
            &format!("its WAL receiver to stream from node {upstream}"),
            || {
                let fresh = log_since(log, seen);
                if let Some(line) = fresh
                    .lines()
                    .find(|l| DIVERGED.iter().any(|p| l.contains(p)))
                {
                    diverged = Some(line.to_owned());
                    return Ok(true);
                }
                if self.psql(index, "postgres", &sql)? != "t" {
                    streaming_since = None;
                    return Ok(false);
                }
                let since = *streaming_since.get_or_insert_with(std::time::Instant::now);
                Ok(since.elapsed() >= STREAMING_SETTLES)
            },
        )?;
        match diverged {
            None => Ok(()),
            Some(line) => Err(ClusterError::Diverged(format!(
                "node {index} (port {}) cannot follow node {upstream} (port {}): it has WAL \
                 past the point where node {upstream}'s timeline forked; rebuild it with \
                 rejoin_as_standby. Server log: {line}",
                self.port(index),
                self.port(upstream)
            ))),
        }
    }
}

/// The connection string a standby streams with. Replication connections
/// are trusted on loopback (see `pg_hba.conf` in setup.rs), so host, port
/// and user are all it needs; `cluster_name` supplies the
/// `application_name` the upstream shows in `pg_stat_replication`.
fn conninfo(port: u16, user: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user}")
}
