//! The cluster's tables and roles, and pgsplit started in one
//! read-your-writes mode.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use pgsplit_cluster::{Cluster, ClusterOptions};

use super::metrics;
use crate::e2e::configs::{backends_toml, toml_string, Layout};
use crate::e2e::pgbench::Pgbench;
use crate::e2e::targets::{self, log_tail, Env, Target};

pub const REPLICAS: usize = 2;
/// pgbench's scale: 500 000 accounts, small enough to load in seconds.
pub const SCALE: u32 = 5;
/// The second login, whose reads `user` mode must not hold back for the
/// superuser's writes.
pub const OTHER_USER: &str = "other";
/// How long replicas may take to replay what a step wrote.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long pgsplit may take to find its primary and replicas.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Primary and replicas; `trust_all` lets pgsplit log in as `other` with
/// nothing set up on the servers but the role.
pub fn start_cluster() -> Result<Cluster, String> {
    Cluster::start(ClusterOptions {
        replicas: REPLICAS,
        trust_all: true,
        ..ClusterOptions::default()
    })
    .map_err(|e| format!("cluster: {e}"))
}

pub fn layout(cluster: &Cluster) -> Layout {
    Layout {
        primary_port: cluster.port(0),
        replica_ports: (1..=REPLICAS).map(|i| cluster.port(i)).collect(),
        user: cluster.superuser().to_owned(),
        password: cluster.password().to_owned(),
        max_clients: 8,
        tls: None,
    }
}

/// pgbench's tables, `ryw_probe` and the `other` role, made directly on the
/// primary (so pgsplit counts none of it), then waited for on the replicas.
pub fn prepare(cluster: &Cluster, pgbench: &Pgbench) -> Result<(), String> {
    pgbench.init(cluster.port(0), SCALE)?;
    let password = cluster.password().replace('\'', "''");
    let sql = format!(
        "CREATE TABLE ryw_probe (id bigint PRIMARY KEY, v int);\n\
         CREATE ROLE {OTHER_USER} LOGIN PASSWORD '{password}';\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {OTHER_USER};\n"
    );
    cluster
        .psql(0, "postgres", &sql)
        .map_err(|e| format!("setting up tables: {e}"))?;
    catch_up(cluster)?;
    // Replayed past the CREATE means the table is there; say so if not,
    // rather than measuring reads that fail.
    for replica in 1..=REPLICAS {
        let found = cluster
            .psql(
                replica,
                "postgres",
                "SELECT to_regclass('ryw_probe') IS NOT NULL",
            )
            .map_err(|e| e.to_string())?;
        if found != "t" {
            return Err(format!("replica {replica} has no ryw_probe after replay"));
        }
    }
    Ok(())
}

/// Vacuums directly on the primary, so every mode starts from tables in
/// the same shape (the runs use `-n`: pgsplit is not timed vacuuming).
pub fn vacuum(cluster: &Cluster) -> Result<(), String> {
    cluster
        .psql(0, "postgres", "VACUUM ANALYZE;")
        .map_err(|e| format!("vacuum: {e}"))?;
    catch_up(cluster)
}

/// Replicas have replayed everything so far: a scenario does not start
/// with the lag the previous one left.
pub fn catch_up(cluster: &Cluster) -> Result<(), String> {
    cluster
        .wait_for_replay(REPLAY_TIMEOUT)
        .map_err(|e| format!("replicas did not catch up: {e}"))
}

/// Every setting at its default but the pool mode (transaction, written
/// out so a change of default cannot change the measurement), the
/// read-your-writes mode and the metrics listener. The superuser comes
/// first: health and WAL position checks log in as the first user.
pub fn pgsplit_toml(layout: &Layout, listen: u16, metrics: u16, mode: &str) -> String {
    let mut s = format!(
        "listen = \"127.0.0.1:{listen}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\n\
         [pool]\nmode = \"transaction\"\n\n[routing]\nread_your_writes = {}\n\n{}",
        toml_string(mode),
        backends_toml(layout)
    );
    for user in [layout.user.as_str(), OTHER_USER] {
        let _ = write!(
            s,
            "\n[[users]]\nname = {}\npassword = {}\n",
            toml_string(user),
            toml_string(&layout.password)
        );
    }
    s
}

/// pgsplit in `mode`, once it accepts logins and its metrics show a
/// primary and every replica usable.
pub fn start_pgsplit(env: &Env, binary: &Path, mode: &str) -> Result<(Target, SocketAddr), String> {
    let metrics_port = targets::free_port()?;
    let mut target = targets::spawn_pgsplit_with(env, binary, |port| {
        pgsplit_toml(env.layout, port, metrics_port, mode)
    })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let backends = 1 + env.layout.replica_ports.len();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        target.check_alive()?;
        let last = metrics::scrape(addr);
        if last.as_ref().is_ok_and(|m| m.ready(backends)) {
            return Ok((target, addr));
        }
        if Instant::now() > deadline {
            let why = last
                .err()
                .unwrap_or_else(|| "not every backend usable".into());
            return Err(format!(
                "pgsplit ({mode}) not ready within {}s ({why}); log tail:\n{}",
                READY_TIMEOUT.as_secs(),
                log_tail(Some(&env.scratch.path().join("pgsplit.log")))
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sets_the_mode_and_both_users() {
        let layout = Layout {
            primary_port: 5000,
            replica_ports: vec![5001, 5002],
            user: "postgres".into(),
            password: "pw".into(),
            max_clients: 8,
            tls: None,
        };
        let toml = pgsplit_toml(&layout, 6000, 6001, "user");
        assert!(
            toml.starts_with("listen = \"127.0.0.1:6000\"\nmetrics_listen = \"127.0.0.1:6001\"\n")
        );
        assert!(toml.contains("[routing]\nread_your_writes = \"user\"\n"));
        assert_eq!(toml.matches("[[backends]]").count(), 3);
        let users = toml.split_once("[[users]]").unwrap().1;
        assert!(users.starts_with("\nname = \"postgres\"\npassword = \"pw\"\n"));
        assert!(users.ends_with("[[users]]\nname = \"other\"\npassword = \"pw\"\n"));
    }
}
