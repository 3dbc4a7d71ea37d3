//! The [`Cluster`] handle: building it, node lifecycle, teardown.
//! SQL-level operations (psql, waiting for replication) live in `sql.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::exec::{server_owner, Runner};
use crate::watchdog::Watchdog;
use crate::{bindir, ports, setup};
use crate::{ClusterError, ClusterOptions, NodeInfo, StopMode};

/// pg_ctl's own wait limit (`-t`); the outer kill deadline is a bit longer
/// so pg_ctl gets to report its timeout with a message.
const PG_CTL_WAIT_SECS: u64 = 60;
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
/// How often a fresh node may pick a new port after losing a bind race.
const PORT_ATTEMPTS: usize = 5;
/// How long `start` waits for replicas to reach `streaming`.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);
/// Fast shutdown budget during teardown before falling back to immediate.
const TEARDOWN_FAST_SECS: u64 = 10;

/// A running primary (node 0) and its streaming replicas (nodes `1..=n`).
///
/// Indexes name nodes, not roles: after [`Cluster::promote`],
/// [`Cluster::follow`] and [`Cluster::rejoin_as_standby`] node 0 may be a
/// standby and another node the primary. A node keeps its port and data
/// directory for the cluster's whole life.
///
/// Dropping it (or [`Cluster::shutdown`]) stops every server and deletes
/// [`Cluster::base_dir`]; if this process dies first, the watchdog does.
/// Methods take `&self` so a cluster can live in a `static OnceLock`;
/// concurrent operations on the *same* node are not coordinated.
pub struct Cluster {
    pub(crate) runner: Runner,
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) superuser: String,
    pub(crate) password: String,
    base_dir: PathBuf,
    watchdog: Mutex<Option<Watchdog>>,
}

impl Cluster {
    /// Builds and starts the cluster; returns once every replica streams.
    /// Takes a few seconds (initdb dominates).
    pub fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let bindir = bindir::find_bindir()?;
        let owner = server_owner()?;
        let base_dir = setup::create_base_dir(owner)?;
        let runner = Runner {
            bindir,
            owner,
            home: base_dir.clone(),
        };
        let watchdog = match Watchdog::spawn(&runner, &base_dir) {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_dir_all(&base_dir);
                return Err(e.into());
            }
        };
        let mut cluster = Cluster {
            runner,
            nodes: Vec::new(),
            superuser: opts.superuser.clone(),
            password: opts.password.clone(),
            base_dir,
            watchdog: Mutex::new(Some(watchdog)),
        };
        // On error, dropping `cluster` stops whatever did start.
        cluster.build(&opts)?;
        Ok(cluster)
    }

    fn build(&mut self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let primary_dir = self.data_dir(0);
        setup::initdb(&self.runner, opts, &primary_dir)?;
        setup::configure_primary(&primary_dir, opts)?;
        if let Some(tls) = &opts.tls {
            let hba = setup::hba_conf(opts);
            setup::configure_tls(&primary_dir, tls, hba, self.runner.owner)?;
        }
        let primary = self.start_fresh(0)?;
        let primary_port = primary.port;
        let primary_log = primary.log_file.clone();
        self.nodes.push(primary);
        self.psql(0, "postgres", &setup::bootstrap_sql(opts.replicas))?;

        // Replicas are independent once their slots exist; cloning and
        // starting them in parallel keeps `start` near the cost of one.
        let this = &*self;
        let replicas: Vec<Result<NodeInfo, ClusterError>> = thread::scope(|s| {
            let handles: Vec<_> = (1..=opts.replicas)
                .map(|index| {
                    let primary_log = &primary_log;
                    s.spawn(move || {
                        let dir = this.data_dir(index);
                        setup::basebackup(
                            &this.runner,
                            primary_port,
                            &this.superuser,
                            index,
                            &dir,
                            primary_log,
                        )?;
                        this.start_fresh(index)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("replica setup thread panicked"))
                .collect()
        });
        for replica in replicas {
            self.nodes.push(replica?);
        }
        let deadline = Instant::now() + STREAMING_TIMEOUT;
        for index in 1..=opts.replicas {
            self.wait_slot_streaming(index, deadline)?;
        }
        Ok(())
    }

    pub(crate) fn data_dir(&self, index: usize) -> PathBuf {
        self.base_dir.join(format!("node{index}"))
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.base_dir.join(format!("node{index}.log"))
    }

    /// First start of a node: picks a port, and picks another if the server
    /// lost the race for it to some other process.
    fn start_fresh(&self, index: usize) -> Result<NodeInfo, ClusterError> {
        let data_dir = self.data_dir(index);
        let log_file = self.log_path(index);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = ports::free_port()?;
            setup::write_node_conf(&data_dir, index, port, self.runner.owner)?;
            let seen = log_len(&log_file);
            match self.pg_ctl_start(&data_dir, &log_file, index) {
                Ok(()) => {
                    return Ok(NodeInfo {
                        index,
                        host: "127.0.0.1".to_owned(),
                        port,
                        data_dir,
                        log_file,
                    })
                }
                Err(e) if attempt < PORT_ATTEMPTS && lost_port(&log_file, seen) => drop(e),
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn pg_ctl_start(
        &self,
        data_dir: &Path,
        log: &Path,
        index: usize,
    ) -> Result<(), ClusterError> {
        let mut cmd = self.runner.command("pg_ctl");
        cmd.args(["start", "-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "-D"])
            .arg(data_dir)
            .arg("-l")
            .arg(log);
        let what = format!("pg_ctl start of node {index}");
        self.runner
            .check(cmd, &what, PG_CTL_TIMEOUT, Some(log))
            .map(drop)
    }

    /// All nodes; index 0 is the primary.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Panics if there is no node `index`.
    pub fn node(&self, index: usize) -> &NodeInfo {
        self.nodes
            .get(index)
            .unwrap_or_else(|| panic!("no node {index}: cluster has {} nodes", self.nodes.len()))
    }

    /// Port of node `index`; panics if there is no such node.
    pub fn port(&self, index: usize) -> u16 {
        self.node(index).port
    }

    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Whether node `index`'s postmaster is alive.
    pub fn is_running(&self, index: usize) -> bool {
        postmaster_alive(&self.node(index).data_dir)
    }

    /// Stops node `index`; a node that is already down is left alone.
    pub fn stop_node(&self, index: usize, mode: StopMode) -> Result<(), ClusterError> {
        let node = self.node(index);
        if !self.is_running(index) {
            return Ok(());
        }
        self.pg_ctl_stop(&node.data_dir, mode, PG_CTL_WAIT_SECS, Some(&node.log_file))
    }

    fn pg_ctl_stop(
        &self,
        data_dir: &Path,
        mode: StopMode,
        wait_secs: u64,
        log: Option<&Path>,
    ) -> Result<(), ClusterError> {
        let mut cmd = self.runner.command("pg_ctl");
        cmd.args([
            "stop",
            "-w",
            "-m",
            mode.as_arg(),
            "-t",
            &wait_secs.to_string(),
        ])
        .arg("-D")
        .arg(data_dir);
        let what = format!("pg_ctl stop -m {} of {}", mode.as_arg(), data_dir.display());
        let timeout = Duration::from_secs(wait_secs + 30);
        self.runner.check(cmd, &what, timeout, log).map(drop)
    }

    /// Starts a stopped node on its original port and waits until it
    /// accepts connections (a replica: read-only ones). A running node is
    /// left alone.
    pub fn start_node(&self, index: usize) -> Result<(), ClusterError> {
        let node = self.node(index);
        if self.is_running(index) {
            return Ok(());
        }
        self.pg_ctl_start(&node.data_dir, &node.log_file, index)
    }

    /// Promotes replica `index` and waits until it is out of recovery.
    pub fn promote(&self, index: usize) -> Result<(), ClusterError> {
        let node = self.node(index);
        let mut cmd = self.runner.command("pg_ctl");
        cmd.args(["promote", "-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "-D"])
            .arg(&node.data_dir);
        let what = format!("pg_ctl promote of node {index}");
        self.runner
            .check(cmd, &what, PG_CTL_TIMEOUT, Some(&node.log_file))?;
        self.poll(
            index,
            Duration::from_secs(30),
            "promotion to finish",
            || Ok(self.psql(index, "postgres", "SELECT pg_is_in_recovery()")? == "f"),
        )
    }

    /// Stops every server and deletes the base directory; same as drop.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Idempotent, best-effort cleanup. It scans the base dir rather than
    /// `self.nodes` so a node whose first start failed half-way is stopped too.
    fn teardown(&mut self) {
        let mut dirs: Vec<PathBuf> = fs::read_dir(&self.base_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.retain(|d| d.join("PG_VERSION").is_file());
        // Replicas first: a primary's fast shutdown otherwise waits for its
        // walsenders to hand the shutdown checkpoint to them.
        dirs.sort();
        dirs.reverse();
        for dir in &dirs {
            if postmaster_alive(dir)
                && self
                    .pg_ctl_stop(dir, StopMode::Fast, TEARDOWN_FAST_SECS, None)
                    .is_err()
                && postmaster_alive(dir)
            {
                let _ = self.pg_ctl_stop(dir, StopMode::Immediate, TEARDOWN_FAST_SECS, None);
            }
        }
        let _ = fs::remove_dir_all(&self.base_dir);
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(watchdog) = watchdog {
            watchdog.dismiss();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("base_dir", &self.base_dir)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Whether the log written since byte `seen` blames a port already in use.
fn lost_port(log: &Path, seen: u64) -> bool {
    ports::is_port_conflict(&log_since(log, seen))
}

/// Length of a log file now, so a later [`log_since`] sees only what an
/// operation made the server write.
pub(crate) fn log_len(log: &Path) -> u64 {
    fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// What the log gained after byte `seen` (empty if it cannot be read).
pub(crate) fn log_since(log: &Path, seen: u64) -> String {
    let Ok(bytes) = fs::read(log) else {
        return String::new();
    };
    let fresh = bytes.get(seen as usize..).unwrap_or_default();
    String::from_utf8_lossy(fresh).into_owned()
}

/// Reads the postmaster pid from `postmaster.pid` and checks it exists. A
/// crashed server leaves the file behind, hence the liveness probe.
fn postmaster_alive(data_dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
