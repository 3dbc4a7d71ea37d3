//! Scaffolding for the failover tests: a private cluster and proxy per
//! test, one test at a time; background writers and readers that record
//! every outcome with its time; `SHOW pool_nodes` as rows keyed by column.
//!
//! Loaded by `tests/failover.rs` through `#[path]`, since `common/mod.rs`
//! belongs to every test binary and this belongs to one.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsplit::ProxyHandle;
use pgsplit_cluster::{Cluster, ClusterOptions};
use pgsplit_config::Config;
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};

pub use crate::common::read_port;

#[path = "load.rs"]
mod load;
use crate::common::{conn_string, node_index, start_proxy_with, PASSWORD};
pub use load::*;

/// The test database every scenario writes to, with table `writes`.
pub const DB: &str = "failover";

/// `SHOW pool_nodes`: pgpool's columns, then pgsplit's own, in this order.
pub const POOL_NODES_COLUMNS: [&str; 18] = [
    "node_id",
    "hostname",
    "port",
    "status",
    "pg_status",
    "lb_weight",
    "role",
    "pg_role",
    "select_cnt",
    "load_balance_node",
    "replication_delay",
    "replication_state",
    "replication_sync_state",
    "last_status_change",
    "timeline",
    "replay_lsn",
    "lag_bytes",
    "lag_seconds",
];

/// The figures are timings on a small machine; two tests killing servers
/// at once would measure each other. A tokio mutex because the guard is
/// held across awaits, and it does not poison, so one failed test does
/// not fail the rest.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Health checks fast enough that detection takes well under a second, so
/// the measured figures are about failover, not about the check period.
/// Every scenario gets its new primary within a few seconds; 10 s instead
/// of the default 30 s of `failover_timeout` only bounds how long a broken
/// proxy keeps a failing test waiting.
pub fn fast_health(config: &mut Config) {
    config.health.health_check_period = Duration::from_millis(200);
    config.health.health_check_max_retries = 2;
    config.health.failover_timeout = Duration::from_secs(10);
}

/// One test's own cluster (promotions cannot be undone, so no sharing)
/// and proxy. Fields drop in order: the lock goes last, after the servers.
pub struct Scenario {
    pub proxy: ProxyHandle,
    pub cluster: Arc<Cluster>,
    /// The proxy's configuration, for bounds computed from its intervals.
    pub config: Config,
    _serial: MutexGuard<'static, ()>,
}

impl Scenario {
    /// Starts a cluster (node 0 primary, nodes 1 and 2 replicas), creates
    /// database [`DB`] with table `writes`, starts a proxy configured by
    /// [`fast_health`] then `tweak`, and waits until it sees every node up
    /// in its expected role.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Scenario {
        let serial = SERIAL.lock().await;
        let started = Instant::now();
        let cluster = tokio::task::spawn_blocking(|| {
            let c = Cluster::start(ClusterOptions::default()).expect("start a cluster");
            c.psql(0, "postgres", &format!("CREATE DATABASE {DB}"))
                .expect("create the test database");
            // `port` defaults to the server that inserted the row, so a row
            // found on a node says which timeline it was written on.
            c.psql(
                0,
                DB,
                "CREATE TABLE writes (seq bigint PRIMARY KEY, \
                 port int NOT NULL DEFAULT inet_server_port())",
            )
            .expect("create table writes");
            c.wait_for_replay(Duration::from_secs(30))
                .expect("replicas replay the schema");
            c
        })
        .await
        .expect("cluster start-up panicked");
        println!("scenario: cluster ready in {:?}", started.elapsed());
        let mut config = pgsplit::demo::config_for(&cluster, "127.0.0.1:0");
        fast_health(&mut config);
        tweak(&mut config);
        let proxy = start_proxy_with(config.clone()).await;
        let scenario = Scenario {
            proxy,
            cluster: Arc::new(cluster),
            config,
            _serial: serial,
        };
        scenario
            .wait_pool_nodes("every node up in its configured role", |rows| {
                rows.len() == 3
                    && rows.iter().all(|r| r["status"] == "up")
                    && role(rows, 0) == "primary"
                    && role(rows, 1) == "standby"
                    && role(rows, 2) == "standby"
            })
            .await;
        scenario
    }

    /// Runs a blocking cluster operation (psql, pg_ctl) off the runtime's
    /// threads, which the in-process proxy needs to keep serving.
    pub async fn cluster_op<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Cluster) -> T + Send + 'static,
    ) -> T {
        let cluster = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || op(&cluster))
            .await
            .expect("cluster operation panicked")
    }

    pub fn port(&self, index: usize) -> u16 {
        self.cluster.port(index)
    }

    /// Which node listens on `port` (panics on a stranger).
    pub fn node_of(&self, port: u16) -> usize {
        node_index(&self.cluster, port)
    }

    pub fn conn_string(&self) -> String {
        conn_string(&self.proxy, "postgres", PASSWORD, DB)
    }

    /// A new client through the proxy, as the admin superuser.
    pub async fn client(&self) -> Client {
        connect(&self.conn_string())
            .await
            .expect("connect through pgsplit")
    }

    /// Polls `SHOW pool_nodes` until `cond` holds; returns how long that
    /// took and the rows. Panics after 10 s with the last rows seen.
    pub async fn wait_pool_nodes(
        &self,
        what: &str,
        cond: impl Fn(&[NodeRow]) -> bool,
    ) -> (Duration, Vec<NodeRow>) {
        self.wait_pool_nodes_for(Duration::from_secs(10), what, cond)
            .await
    }

    pub async fn wait_pool_nodes_for(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&[NodeRow]) -> bool,
    ) -> (Duration, Vec<NodeRow>) {
        poll_pool_nodes(self.conn_string(), timeout, what.to_owned(), cond).await
    }

    /// Shuts the proxy down and stops the cluster before the next test may
    /// start.
    pub async fn finish(self) {
        let Scenario {
            proxy,
            cluster,
            _serial,
            ..
        } = self;
        proxy.shutdown().await;
        let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    }
}

/// Polls `SHOW pool_nodes` over its own connection until `cond` holds;
/// returns how long that took and the rows. Panics after `timeout` with
/// the last rows seen. Owns its arguments so it can run in a task
/// alongside a load.
pub async fn poll_pool_nodes(
    conn: String,
    timeout: Duration,
    what: String,
    cond: impl Fn(&[NodeRow]) -> bool,
) -> (Duration, Vec<NodeRow>) {
    let started = Instant::now();
    let client = connect(&conn).await.expect("connect through pgsplit");
    let mut last = Err("never asked".to_owned());
    while started.elapsed() < timeout {
        last = pool_nodes(&client).await.map_err(|e| describe(&e));
        if let Ok(rows) = &last {
            if cond(rows) {
                return (started.elapsed(), last.unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("SHOW pool_nodes never showed {what} within {timeout:?}; last: {last:#?}");
}

pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// An error as "SQLSTATE: message", or the driver's text for errors that
/// never reached a server (closed connection, I/O).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => format!("(no SQLSTATE) {e}"),
    }
}

/// One row of `SHOW pool_nodes`, by column name.
pub type NodeRow = HashMap<String, String>;

/// `SHOW pool_nodes` over the simple protocol, rows in node_id order.
pub async fn pool_nodes(client: &Client) -> Result<Vec<NodeRow>, tokio_postgres::Error> {
    let mut rows: Vec<NodeRow> = crate::common::named_rows(client, "SHOW pool_nodes").await?;
    rows.sort_by_key(|r| r.get("node_id").and_then(|id| id.parse::<usize>().ok()));
    Ok(rows)
}

/// Column `column` of node `node_id`'s row, "" when missing.
pub fn field<'a>(rows: &'a [NodeRow], node_id: usize, column: &str) -> &'a str {
    rows.iter()
        .find(|r| r.get("node_id").map(String::as_str) == Some(&node_id.to_string()))
        .and_then(|r| r.get(column))
        .map(String::as_str)
        .unwrap_or("")
}

pub fn role(rows: &[NodeRow], node_id: usize) -> &str {
    field(rows, node_id, "role")
}

/// Slack added to bounds computed from the health intervals: the proxy,
/// three servers and the test's clients share two cores, so a check or a
/// poll may be late by a few hundred milliseconds.
pub const SCHEDULING_SLACK: Duration = Duration::from_secs(1);

/// Longest a server killed outright may take to be marked `down`: its
/// next check is due within `position_interval` (healthy servers are
/// checked that often), then `health_check_max_retries - 1` retries follow
/// every `health_check_period`. A dead server on loopback refuses at once,
/// so `health_check_timeout` plays no part; a regression to waiting it
/// out (2 s per check) fails this bound.
pub fn down_detection_bound(c: &Config) -> Duration {
    let retries = c.health.health_check_max_retries.saturating_sub(1);
    c.routing.position_interval + c.health.health_check_period * retries + SCHEDULING_SLACK
}

/// Reads through `client` until one is served by `port`; returns how long
/// that took, or None after `timeout`. Errors count as "not yet".
pub async fn until_read_from(client: &Client, port: u16, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut simple = false;
    while started.elapsed() < timeout {
        simple = !simple;
        if read_port(client, simple).await.ok() == Some(port) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Ports that served `n` reads through `client` (alternating protocols).
pub async fn sample_reads(client: &Client, n: usize) -> Vec<Result<u16, String>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(
            read_port(client, i % 2 == 0)
                .await
                .map_err(|e| describe(&e)),
        );
    }
    out
}
