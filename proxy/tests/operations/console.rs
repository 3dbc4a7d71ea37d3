//! PgBouncer's admin console on the virtual database `pgbouncer`: its
//! views with PgBouncer's columns and types, one pool row per backend,
//! and a real PgBouncer exporter reading them unchanged.

use std::process::{Child, Command, Stdio};

use super::http::http;
use super::*;

type Row = std::collections::HashMap<String, String>;

/// Rows of a console view by column name.
async fn view(console: &tokio_postgres::Client, sql: &str) -> Vec<Row> {
    named_rows(console, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn get<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
}

/// The row of `view` whose `key` column is `value`.
fn row_of<'a>(rows: &'a [Row], key: &str, value: &str) -> &'a Row {
    rows.iter()
        .find(|r| get(r, key) == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {rows:?}"))
}

/// 30 reads and 5 writes through pgsplit, then the console's pools and
/// statistics show the reads on the replicas and the writes on the
/// primary, each backend a row of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_each_backends_share_in_pgbouncers_columns() {
    let db = fresh_database("console_views");
    cluster().psql(0, &db, "CREATE TABLE t (i int)").unwrap();
    let mut config = routing_only();
    config.pool.mode = pgsplit_config::PoolMode::Transaction;
    let proxy = start_proxy_with(config).await;
    let app = connect(&proxy, &db).await;
    for _ in 0..30 {
        let port = read_port(&app, true).await.unwrap();
        assert_replica(port, "a read");
    }
    for i in 0..5 {
        app.batch_execute(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .unwrap();
    }
    let console = connect(&proxy, "pgbouncer").await;
    let pools = view(&console, "SHOW POOLS").await;
    for backend in ["primary", "replica1", "replica2"] {
        let row = row_of(&pools, "database", &format!("{db}@{backend}"));
        assert_eq!(get(row, "user"), "postgres");
        assert_eq!(get(row, "backend"), backend);
        assert_eq!(get(row, "pool_mode"), "transaction");
        assert_eq!(get(row, "cl_waiting"), "0");
    }
    let stats = view(&console, "SHOW STATS").await;
    let count = |backend: &str, column: &str| -> u64 {
        get(
            row_of(&stats, "database", &format!("{db}@{backend}")),
            column,
        )
        .parse()
        .unwrap()
    };
    let replica_queries =
        count("replica1", "total_query_count") + count("replica2", "total_query_count");
    assert!(
        replica_queries >= 30,
        "reads on the replicas: {replica_queries}"
    );
    assert!(
        count("primary", "total_xact_count") >= 5,
        "writes on the primary: {stats:?}"
    );
    assert!(count("primary", "total_received") > 0);
    assert_eq!(
        count("primary", "total_requests"),
        count("primary", "total_query_count"),
        "PgBouncer 1.7's name for the query count"
    );
    let servers = view(&console, "SHOW SERVERS").await;
    let on_primary: Vec<i64> = cluster()
        .psql(
            0,
            &db,
            &format!("SELECT pid FROM pg_stat_activity WHERE datname = '{db}'"),
        )
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let listed: Vec<i64> = servers
        .iter()
        .filter(|r| get(r, "database") == format!("{db}@primary"))
        .map(|r| get(r, "remote_pid").parse().unwrap())
        .collect();
    assert!(
        !listed.is_empty() && listed.iter().all(|p| on_primary.contains(p)),
        "SHOW SERVERS lists the primary's own processes: {listed:?} vs {on_primary:?}"
    );
    let clients = view(&console, "SHOW CLIENTS").await;
    assert!(
        clients
            .iter()
            .any(|r| get(r, "database") == db && get(r, "type") == "C"),
        "{clients:?}"
    );
    let lists = view(&console, "SHOW LISTS").await;
    assert_eq!(
        get(row_of(&lists, "list", "pools"), "items"),
        pools.len().to_string()
    );
    let state = view(&console, "SHOW STATE").await;
    assert_eq!(get(row_of(&state, "key", "paused"), "value"), "no");
    let config = view(&console, "show config").await;
    assert_eq!(
        get(row_of(&config, "key", "pool.mode"), "value"),
        "transaction"
    );
    for sql in [
        "SHOW DATABASES",
        "SHOW USERS",
        "SHOW VERSION",
        "SHOW STATS_TOTALS",
        "SHOW STATS_AVERAGES",
        "SHOW pool_nodes",
    ] {
        assert!(!view(&console, sql).await.is_empty(), "{sql} is empty");
    }
    // pgpool's shapes, on the console and on any connection.
    let status = view(&app, "SHOW pool_status").await;
    assert_eq!(
        get(row_of(&status, "item", "pool.mode"), "value"),
        "transaction"
    );
    assert_eq!(
        get(row_of(&status, "item", "pool.pool_size"), "description"),
        "default: 20"
    );
    let pooled = view(&console, "SHOW pool_pools").await;
    let primary_pids: Vec<i64> = pooled
        .iter()
        .filter(|r| get(r, "backend_id") == "0" && get(r, "database") == db)
        .map(|r| get(r, "pool_backendpid").parse().unwrap())
        .collect();
    assert!(
        !primary_pids.is_empty() && primary_pids.iter().all(|p| on_primary.contains(p)),
        "pool_pools lists the primary's processes: {primary_pids:?} vs {on_primary:?}"
    );
    let e = console.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601", "{e}");
    proxy.shutdown().await;
}

/// Columns carry PgBouncer's types (counts as integers), which drivers
/// turn into numbers; a non-admin is refused; extended queries get an
/// error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_types_access_and_protocol() {
    let mut config = config();
    for u in &mut config.users {
        if u.name == pgsplit_cluster::TRUST_USER {
            u.admin = true;
        }
    }
    let proxy = start_proxy_with(config).await;
    let mut raw = RawClient::login(&proxy, "pgbouncer").await;
    let frames = raw.simple("SHOW POOLS").await;
    let description = frames
        .iter()
        .find(|f| f.tag() == b'T')
        .expect("RowDescription");
    let body = description.body();
    // cl_active is the third column: find its type OID after its name.
    let at = body.windows(10).position(|w| w == b"cl_active\0").unwrap() + 10;
    let oid = u32::from_be_bytes(body[at + 6..at + 10].try_into().unwrap());
    assert_eq!(oid, 23, "cl_active is an int4");
    let frames = raw.extended("SHOW POOLS").await;
    let (code, _, _) = first_error(&frames).expect("extended protocol is refused");
    assert_eq!(code, "0A000");
    assert_eq!(command_tags(&raw.simple("SHOW STATE").await), ["SHOW"]);

    let e = connect_as(
        &proxy,
        pgsplit_cluster::MD5_USER,
        pgsplit_cluster::MD5_PASSWORD,
        "pgbouncer",
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&e), "28000", "{e}");
    proxy.shutdown().await;
}

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's `prometheus-pgbouncer-exporter`, pointed at pgsplit as it
/// would be at PgBouncer, exports pool and stats series for every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_pgbouncer_exporter_runs_unchanged_against_pgsplit() {
    let db = fresh_database("console_exporter");
    let proxy = start_proxy_with(routing_only()).await;
    let app = connect(&proxy, &db).await;
    for _ in 0..10 {
        read_port(&app, false).await.unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exporter = Exporter(
        Command::new("prometheus-pgbouncer-exporter")
            .args(["--pgbouncer-host", "127.0.0.1"])
            .args(["--pgbouncer-port", &proxy.local_addr().port().to_string()])
            .args(["--pgbouncer-user", "postgres"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("PGPASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prometheus-pgbouncer-exporter runs (apt-get install prometheus-pgbouncer-exporter: see .ci/run)"),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "the exporter never listened");
    let (status, page) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{page}");
    for backend in ["replica1", "replica2", "primary"] {
        let series =
            format!("pgbouncer_active_clients{{database=\"{db}@{backend}\",user=\"postgres\"}}");
        assert!(page.contains(&series), "no {series} in:\n{page}");
    }
    let replica_requests: f64 = ["replica1", "replica2"]
        .iter()
        .map(|b| {
            let series = format!("pgbouncer_requests_total{{database=\"{db}@{b}\"}} ");
            page.lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
                .parse::<f64>()
                .unwrap()
        })
        .sum();
    assert!(replica_requests >= 10.0, "{page}");
    for series in ["pgbouncer_pool_size{", "pgbouncer_used_clients "] {
        assert!(page.contains(series), "no {series} in:\n{page}");
    }
    drop(exporter);
    proxy.shutdown().await;
}
