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
use crate::common::{conn_string, node_index, start_proxy_with, PASSWORD};

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
    let mut rows: Vec<NodeRow> = client
        .simple_query("SHOW pool_nodes")
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
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

/// One statement a background task ran, with what came back.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Writers: the row's key. Readers: the client's number.
    pub seq: i64,
    pub sent: Instant,
    pub done: Instant,
    /// The serving node's port, or the error.
    pub result: Result<u16, String>,
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// A background task looping over one statement until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<(Vec<Attempt>, usize)>>,
}

/// What a [`Load`] recorded: every attempt in completion order, and how
/// often a client found its connection closed and had to reconnect.
pub struct Recorded {
    pub attempts: Vec<Attempt>,
    pub reconnects: usize,
}

impl Load {
    pub async fn stop(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        let mut attempts = Vec::new();
        let mut reconnects = 0;
        for task in self.tasks {
            let (a, r) = task.await.expect("load task panicked");
            attempts.extend(a);
            reconnects += r;
        }
        attempts.sort_by_key(|a| a.done);
        Recorded {
            attempts,
            reconnects,
        }
    }
}

/// Bound on one statement: above the tests' `failover_timeout`, so a write
/// waiting for a primary is measured rather than abandoned, yet a hung
/// proxy cannot hang the suite.
const STATEMENT_LIMIT: Duration = Duration::from_secs(15);

/// `clients` connections inserting rows into `writes` (keys `1..` for the
/// first client, `1_000_001..` for the second, ...) with `pause` between
/// inserts, alternating simple and extended protocol. Each insert returns
/// the port of the server that ran it.
pub fn spawn_writers(conn: String, clients: usize, pause: Duration) -> Load {
    spawn_load(conn, clients, pause, |client, i, seq| async move {
        if i % 2 == 0 {
            let sql = format!("INSERT INTO writes (seq) VALUES ({seq}) RETURNING port");
            let messages = client.simple_query(&sql).await?;
            Ok(first_port(&messages))
        } else {
            let row = client
                .query_one(
                    "INSERT INTO writes (seq) VALUES ($1) RETURNING port",
                    &[&seq],
                )
                .await?;
            Ok(row.get::<_, i32>(0) as u16)
        }
    })
}

/// `clients` connections reading `inet_server_port()` in autocommit with
/// no pause, alternating simple and extended protocol.
pub fn spawn_readers(conn: String, clients: usize) -> Load {
    spawn_load(conn, clients, Duration::ZERO, |client, i, _| async move {
        read_port(&client, i % 2 == 0).await
    })
}

fn first_port(messages: &[SimpleQueryMessage]) -> u16 {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|p| p.parse().ok()),
            _ => None,
        })
        .expect("RETURNING gave a port")
}

fn spawn_load<F, Fut>(conn: String, clients: usize, pause: Duration, statement: F) -> Load
where
    F: Fn(Arc<Client>, u64, i64) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Result<u16, tokio_postgres::Error>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|n| {
            let stop = Arc::clone(&stop);
            tokio::spawn(client_loop(conn.clone(), n as i64, pause, stop, statement))
        })
        .collect();
    Load { stop, tasks }
}

/// One client of a [`Load`]: runs `statement` until `stop`, recording each
/// attempt, and reconnects when the proxy closed its connection.
async fn client_loop<F, Fut>(
    conn: String,
    n: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    statement: F,
) -> (Vec<Attempt>, usize)
where
    F: Fn(Arc<Client>, u64, i64) -> Fut,
    Fut: std::future::Future<Output = Result<u16, tokio_postgres::Error>>,
{
    let mut attempts = Vec::new();
    let mut reconnects = 0;
    let mut client: Option<Arc<Client>> = None;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = match &client {
            Some(c) => Arc::clone(c),
            None => match connect(&conn).await {
                Ok(c) => Arc::clone(client.insert(Arc::new(c))),
                Err(e) => {
                    let now = Instant::now();
                    attempts.push(Attempt {
                        seq: -1,
                        sent: now,
                        done: now,
                        result: Err(format!("connect: {}", describe(&e))),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        i += 1;
        let seq = n * 1_000_000 + i as i64;
        let sent = Instant::now();
        let result =
            match tokio::time::timeout(STATEMENT_LIMIT, statement(Arc::clone(&c), i, seq)).await {
                Ok(Ok(port)) => Ok(port),
                Ok(Err(e)) => Err(describe(&e)),
                Err(_) => Err(format!("no answer within {STATEMENT_LIMIT:?}")),
            };
        let failed = result.is_err();
        attempts.push(Attempt {
            seq,
            sent,
            done: Instant::now(),
            result,
        });
        if c.is_closed() {
            client = None;
            reconnects += 1;
        }
        // After an error, a short breath like any client's retry loop:
        // spinning on instant failures would starve the proxy of the cores
        // the figures are measured on.
        let pause = if failed {
            pause.max(Duration::from_millis(10))
        } else {
            pause
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    (attempts, reconnects)
}

/// Failed attempts, for assertion messages.
pub fn failures(attempts: &[Attempt]) -> Vec<&Attempt> {
    attempts.iter().filter(|a| !a.ok()).collect()
}

/// The latest success completed by `t`.
pub fn last_ok_before(attempts: &[Attempt], t: Instant) -> Option<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.ok() && a.done <= t)
        .max_by_key(|a| a.done)
}

/// The longest stretch without a completed success inside `[from, to]`,
/// counting from the last success before `from`: the pause clients felt.
pub fn longest_gap(attempts: &[Attempt], from: Instant, to: Instant) -> Duration {
    let mut last = last_ok_before(attempts, from).map_or(from, |a| a.done);
    let mut longest = Duration::ZERO;
    for a in attempts
        .iter()
        .filter(|a| a.ok() && a.done > from && a.done <= to)
    {
        longest = longest.max(a.done - last);
        last = a.done;
    }
    longest.max(to.saturating_duration_since(last))
}

/// The `seq` column of every row in `writes` on node `index`, read directly.
pub fn seqs_on(cluster: &Cluster, index: usize) -> std::collections::BTreeSet<i64> {
    cluster
        .psql(index, DB, "SELECT seq FROM writes")
        .unwrap_or_else(|e| panic!("read writes on node {index}: {e}"))
        .lines()
        .map(|l| l.parse().expect("a seq"))
        .collect()
}

/// A WAL position ("16/B374D848") as a number, for comparing two nodes.
pub fn lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}
