//! Pooled server connections: many clients over few connections, session
//! state that survives pool churn, nothing left behind by killed clients,
//! and a clear error when the pool is exhausted.

#[path = "../common/mod.rs"]
mod common;
mod effective;
mod lifecycle;
mod sequences;
mod settings;
mod sharing;
mod timeouts;

use std::time::{Duration, Instant};

use common::*;
use pgsplit_config::Config;

fn pooled(size: usize, f: impl FnOnce(&mut Config)) -> Config {
    let mut c = config();
    c.pool.pool_size = size;
    f(&mut c);
    c
}

/// Server backends of `user` in `db` on node `i`, counted by the server.
fn server_connections(i: usize, db: &str, user: &str) -> usize {
    server_pids(i, db, user).len()
}

/// Process ids of the server backends of `user` in `db` on node `i`.
fn server_pids(i: usize, db: &str, user: &str) -> std::collections::BTreeSet<i32> {
    cluster()
        .psql(
            i,
            "postgres",
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' AND usename = '{user}'"
            ),
        )
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// [`server_pids`] off the runtime's threads, which the in-process proxy
/// needs to keep serving while a test polls.
async fn primary_pids(db: &str) -> std::collections::BTreeSet<i32> {
    let db = db.to_owned();
    tokio::task::spawn_blocking(move || server_pids(0, &db, "postgres"))
        .await
        .unwrap()
}

/// A client through the proxy with its own `application_name`.
async fn named_client(
    proxy: &pgsplit::ProxyHandle,
    db: &str,
    name: &str,
) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "{} application_name={name}",
            conn_string(proxy, "postgres", PASSWORD, db)
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

/// Pools of two with read-your-writes off, so every read goes to a replica
/// and the replica connections are the ones the clients take turns on.
fn shared_pools(size: usize) -> Config {
    pooled(size, |c| {
        c.routing.read_your_writes = pgsplit_config::ReadYourWrites::Off
    })
}

const SETTINGS: &str =
    "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
     current_setting('TimeZone'), current_setting('application_name'), inet_server_port()";

/// `(port, pid, search_path, statement_timeout)` of the server that ran a
/// read, over the extended protocol.
async fn where_and_what(
    c: &tokio_postgres::Client,
    sql_prefix: &str,
) -> (u16, i32, String, String) {
    let r = c
        .query_one(
            &format!(
                "{sql_prefix} SELECT inet_server_port(), pg_backend_pid(), \
                 current_setting('search_path'), current_setting('statement_timeout')"
            ),
            &[],
        )
        .await
        .unwrap();
    (
        r.get::<_, i32>(0) as u16,
        r.get(1),
        r.get::<_, String>(2),
        r.get::<_, String>(3),
    )
}

/// Connects, runs `setup`, then drops the connection without a goodbye.
async fn killed_after(proxy: &pgsplit::ProxyHandle, db: &str, setup: &str) -> String {
    let (client, conn) = tokio_postgres::connect(
        &conn_string(proxy, "postgres", PASSWORD, db),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let task = tokio::spawn(conn);
    client.batch_execute(setup).await.unwrap();
    let pid = scalar(&client, "/* pgsplit:primary */ SELECT pg_backend_pid()").await;
    task.abort();
    drop(client);
    pid
}

fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

const PRIMARY_PID: &str = "/* pgsplit:primary */ SELECT pg_backend_pid()";
