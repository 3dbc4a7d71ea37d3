//! One run of the suite on a cluster of its own, directly or through
//! pgsplit.
//!
//! Every run gets a fresh primary and two replicas with the same settings,
//! so nothing one run leaves (roles, tablespaces, prepared transactions,
//! `regression*` databases, statistics, OID counters) can reach the next,
//! and a run that was killed leaves only what the cluster's watchdog
//! removes. The direct run has replicas too, though it never uses them: a
//! primary with walsenders is the server the proxied runs talk to.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pgsplit_cluster::{Cluster, ClusterOptions};

use super::outcome::{self, TestOutcome};
use super::pg_regress::{Finished, PgRegress};
use super::proxy;
use super::summary::RunSummary;
use super::Mode;
use crate::e2e::child::Owner;
use crate::e2e::configs::Layout;
use crate::e2e::scratch::Scratch;
use crate::e2e::targets::{self, Env, Target};

/// Replicas behind pgsplit: reads are split over two, as in production.
pub const REPLICAS: usize = 2;

/// What every run shares.
pub struct Context<'a> {
    pub pg_regress: &'a PgRegress,
    pub bindir: &'a Path,
    /// Needed only for the proxied modes.
    pub pgsplit: Option<&'a Path>,
    pub owner: Option<Owner>,
    /// Each run writes into `<runs_dir>/<name>`.
    pub runs_dir: &'a Path,
}

/// A finished run: where its output is and what pg_regress said.
pub struct Record {
    pub dir: PathBuf,
    pub finished: Finished,
    pub outcomes: Vec<TestOutcome>,
    /// Server log lines that point at the setup rather than pgsplit.
    pub warnings: Vec<String>,
}

impl Record {
    pub fn summary(&self, name: &str) -> RunSummary {
        let abnormal = self.outcomes.iter().filter(|o| o.abnormal_exit);
        RunSummary {
            name: name.to_owned(),
            complete: self.finished.complete(),
            exit_code: self.finished.exit.and_then(|s| s.code()),
            seconds: self.finished.seconds,
            failed_vs_expected: outcome::failed(&self.outcomes),
            abnormal_exits: abnormal.map(|o| o.test.clone()).collect(),
        }
    }
}

/// The same servers for every run. `max_prepared_transactions` for the
/// `prepared_xacts` test (0 by default, which skips its real work);
/// `trust_all` for the roles the suite creates without passwords.
pub fn cluster_options() -> ClusterOptions {
    ClusterOptions {
        replicas: REPLICAS,
        trust_all: true,
        extra_conf: vec![("max_prepared_transactions".into(), "10".into())],
        ..ClusterOptions::default()
    }
}

/// Runs the suite once into `<runs_dir>/<name>`: `mode` `None` is the
/// direct baseline.
pub fn run(ctx: &Context, mode: Option<Mode>, name: &str) -> Result<Record, String> {
    let dir = ctx.runs_dir.join(name);
    eprintln!("[{name}] starting a primary and {REPLICAS} replicas...");
    let cluster = Cluster::start(cluster_options()).map_err(|e| format!("cluster: {e}"))?;
    // pgsplit's config and log: next to the run's directory, which
    // pg_regress empties when it starts.
    fs::create_dir_all(ctx.runs_dir).map_err(|e| format!("{}: {e}", ctx.runs_dir.display()))?;
    let scratch = Scratch::at(ctx.runs_dir.join(format!("{name}.pgsplit")), None)?;
    let layout = layout(&cluster);
    let proxy = match mode.and_then(Mode::pool_mode) {
        Some(pool) => Some(spawn_pgsplit(ctx, &layout, &scratch, pool)?),
        None => None,
    };
    let port = proxy.as_ref().map_or(layout.primary_port, |t| t.port);
    eprintln!("[{name}] pg_regress through 127.0.0.1:{port}...");
    let finished = ctx.pg_regress.run(port, &layout.user, &dir)?;
    // pgsplit goes first: it holds connections to the servers.
    drop(proxy);
    let logs = keep_logs(&cluster, &scratch, &dir);
    let warnings = setup_warnings(&logs);
    cluster.shutdown();
    eprintln!("[{name}] finished in {:.0}s", finished.seconds);
    let outcomes = outcome::parse(&finished.report);
    Ok(Record {
        dir,
        finished,
        outcomes,
        warnings,
    })
}

fn layout(cluster: &Cluster) -> Layout {
    Layout {
        primary_port: cluster.port(0),
        replica_ports: (1..=REPLICAS).map(|i| cluster.port(i)).collect(),
        user: cluster.superuser().to_owned(),
        password: cluster.password().to_owned(),
        max_clients: super::pg_regress::MAX_CONNECTIONS,
        tls: None,
    }
}

fn spawn_pgsplit(
    ctx: &Context,
    layout: &Layout,
    scratch: &Scratch,
    pool: &str,
) -> Result<Target, String> {
    let binary = ctx
        .pgsplit
        .ok_or("no pgsplit binary given for a proxied run")?;
    let env = Env {
        layout,
        scratch,
        owner: ctx.owner,
        psql: ctx.bindir.join("psql"),
    };
    targets::spawn_pgsplit_with(&env, binary, |port| proxy::pgsplit_toml(layout, port, pool))
}

/// Copies the server logs and pgsplit's next to the run's results (the
/// cluster's directory is deleted with it); returns the copies.
fn keep_logs(cluster: &Cluster, scratch: &Scratch, dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<(PathBuf, String)> = cluster
        .nodes()
        .iter()
        .map(|n| (n.log_file.clone(), format!("node{}.log", n.index)))
        .collect();
    sources.push((scratch.path().join("pgsplit.log"), "pgsplit.log".into()));
    sources
        .into_iter()
        .filter(|(from, _)| from.is_file())
        .filter_map(|(from, name)| {
            let to = dir.join(name);
            fs::copy(&from, &to).ok().map(|_| to)
        })
        .collect()
}

/// Connection refusals by the servers would make tests differ for a reason
/// of this runner's making (too small `max_connections`), not pgsplit's.
fn setup_warnings(logs: &[PathBuf]) -> Vec<String> {
    logs.iter()
        .filter_map(|log| {
            let text = fs::read_to_string(log).ok()?;
            let refused = text.matches("too many clients already").count();
            (refused > 0).then(|| {
                format!(
                    "{}: {refused} login(s) refused for too many clients",
                    log.display()
                )
            })
        })
        .collect()
}

/// Empties the output directory, which the `postgres` user (when things
/// run as it: `as_other`) must be able to reach: pg_regress writes there,
/// and the servers write COPY output into it.
pub fn prepare_output_dir(out: &Path, as_other: bool) -> Result<(), String> {
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    if !as_other {
        return Ok(());
    }
    let out = out
        .canonicalize()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let closed = out.ancestors().find(|dir| {
        let mode = fs::metadata(dir).map_or(0, |m| m.permissions().mode());
        mode & 0o001 == 0
    });
    match closed {
        Some(dir) => Err(format!(
            "{} is not searchable by other users, so the servers cannot reach {}; \
             pass --out under /tmp or another open directory",
            dir.display(),
            out.display()
        )),
        None => Ok(()),
    }
}
