//! Read-your-writes against replicas that lag on purpose
//! (`recovery_min_apply_delay`). Every read reports whether it saw the row
//! just written and which server ran it; `off` mode must miss, or the test
//! could not tell a working mode from luck.

#[path = "../common/mod.rs"]
mod common;
mod modes;
mod timing;
mod users;

use std::time::Duration;

use common::*;
use pgsplit_config::ReadYourWrites as Mode;
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// Tests here change how far the shared replicas lag: one at a time.
static LAG: Mutex<()> = Mutex::const_new(());

fn set_lag(ms: u64) {
    for i in [1, 2] {
        cluster()
            .set_apply_delay(i, Duration::from_millis(ms))
            .unwrap();
    }
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
}

fn proxy_config(mode: Mode) -> pgsplit_config::Config {
    let mut c = config();
    c.routing.read_your_writes = mode;
    c
}

/// INSERT then SELECT the same row `n` times over the simple protocol.
/// Returns (misses, reads served by a replica).
async fn simple_loop(c: &Client, table: &str, n: usize) -> (usize, usize) {
    let (mut misses, mut replica) = (0, 0);
    for i in 0..n {
        c.simple_query(&format!("INSERT INTO {table} VALUES ({i})"))
            .await
            .unwrap();
        let r = row(
            c,
            &format!("SELECT count(*), inet_server_port() FROM {table} WHERE id = {i}"),
        )
        .await;
        misses += usize::from(r[0] == "0");
        replica += usize::from(is_replica(r[1].parse().unwrap()));
    }
    (misses, replica)
}

async fn driver_loop(
    proxy: &pgsplit::ProxyHandle,
    db: &str,
    driver: &str,
    table: &str,
    n: usize,
) -> (usize, usize) {
    let a = proxy.local_addr();
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@{}:{}/{db}",
        a.ip(),
        a.port()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ryw.py");
    let args = [
        script.to_owned(),
        dsn,
        driver.to_owned(),
        n.to_string(),
        table.to_owned(),
        cluster().port(0).to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{driver}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> usize {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{driver}: no {name} in {stdout:?}"))
    };
    (field("misses="), field("replica_reads="))
}

fn tables(db: &str, names: &[&str]) {
    let sql: String = names
        .iter()
        .map(|t| format!("CREATE TABLE {t} (id int);"))
        .collect();
    cluster().psql(0, db, &sql).unwrap();
}

/// A read through `c` of row `id` in `table`: (found it, the serving node).
async fn read_row(c: &Client, table: &str, id: i64) -> (bool, usize) {
    let r = row(
        c,
        &format!("SELECT count(*), inet_server_port() FROM {table} WHERE id = {id}"),
    )
    .await;
    (r[0] == "1", node(r[1].parse().unwrap()))
}

/// Whether both replicas, asked directly, have row `id` of `table`.
async fn replicas_have(db: &str, table: &str, id: i64) -> bool {
    let (db, sql) = (
        db.to_owned(),
        format!("SELECT count(*) FROM {table} WHERE id = {id}"),
    );
    tokio::task::spawn_blocking(move || {
        [1, 2]
            .iter()
            .all(|&i| cluster().psql(i, &db, &sql).ok().as_deref() == Some("1"))
    })
    .await
    .unwrap()
}
