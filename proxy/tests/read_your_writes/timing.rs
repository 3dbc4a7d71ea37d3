//! When a read may leave the primary: causal_wait, pipelined writes, SET, statement Close.

use super::*;

/// With `routing.causal_wait`, a read right after a write waits for a
/// replica to replay the write instead of going to the primary, and still
/// sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_wait_holds_a_read_until_a_replica_has_the_write() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_wait");
    tables(&db, &["w"]);
    set_lag(200);
    let mut cfg = proxy_config(Mode::Causal);
    cfg.routing.causal_wait = Duration::from_secs(5);
    let proxy = start_proxy_with(cfg).await;
    let c = connect(&proxy, &db).await;
    for i in 0..5 {
        c.simple_query(&format!("INSERT INTO w VALUES ({i})"))
            .await
            .unwrap();
        let r = row(
            &c,
            &format!("SELECT count(*), inet_server_port() FROM w WHERE id = {i}"),
        )
        .await;
        assert_eq!(r[0], "1", "read {i} missed the session's own write");
        assert!(
            is_replica(r[1].parse().unwrap()),
            "read {i} went to the primary (port {}) instead of waiting",
            r[1]
        );
    }
    proxy.shutdown().await;
    set_lag(0);
}

/// Two writes pipelined, the second still running when the first one's
/// reply arrives: the read after both must see the second, so its commit,
/// not the first one's, is what a replica must have replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_write_is_timed_by_its_own_commit() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_pipe");
    tables(&db, &["q"]);
    set_lag(300);
    let proxy = start_proxy_with(proxy_config(Mode::Causal)).await;
    let c = connect(&proxy, &db).await;
    for round in 0..3 {
        let (first, second) = (2 * round, 2 * round + 1);
        let quick = format!("INSERT INTO q VALUES ({first})");
        let slow = format!("INSERT INTO q SELECT {second} FROM pg_sleep(0.6)");
        // Polled together, tokio-postgres sends both before any reply.
        let (a, b) = tokio::join!(c.simple_query(&quick), c.simple_query(&slow));
        a.unwrap();
        b.unwrap();
        let r = row(
            &c,
            &format!("SELECT count(*), inet_server_port() FROM q WHERE id = {second}"),
        )
        .await;
        assert_eq!(
            r[0], "1",
            "round {round}: the read (port {}) missed the write acknowledged last",
            r[1]
        );
    }
    proxy.shutdown().await;
    set_lag(0);
}

/// The default mode (causal) after a `SET`: the SET runs on the primary
/// and counts as a write ("anything that ran on the primary outside a
/// read-only transaction"), so the read right after it needs a replica
/// that has replayed the primary's position after the SET. Wherever the
/// read runs, the setting is in effect there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_right_after_set_sees_the_setting_where_it_runs() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_set");
    set_lag(0);
    let cfg = config();
    assert_eq!(
        cfg.routing.read_your_writes,
        Mode::Causal,
        "the default mode"
    );
    let proxy = start_proxy_with(cfg).await;
    let c = connect(&proxy, &db).await;
    let mut on = [0usize; 3];
    for i in 0..20 {
        let value = format!("{}s", 11 + i);
        let simple = i % 2 == 0;
        let set = format!("SET statement_timeout = '{value}'");
        if simple {
            c.batch_execute(&set).await.unwrap();
        } else {
            c.execute(set.as_str(), &[]).await.unwrap();
        }
        let (shown, port) = if simple {
            // One request: SHOW and the port come from the same server.
            let messages = c
                .simple_query("SHOW statement_timeout; SELECT inet_server_port()")
                .await
                .unwrap();
            let values: Vec<String> = messages
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect();
            (values[0].clone(), values[1].parse::<u16>().unwrap())
        } else {
            let r = c
                .query_one(
                    "SELECT current_setting('statement_timeout'), inet_server_port()",
                    &[],
                )
                .await
                .unwrap();
            (r.get::<_, String>(0), r.get::<_, i32>(1) as u16)
        };
        let n = node(port);
        assert_eq!(
            shown, value,
            "round {i}: the read right after SET ran on node {n}"
        );
        on[n] += 1;
    }
    println!("causal, read right after SET: served per node {on:?}");
    // The SET's position is read right after it on the primary, and a
    // replica asked has replayed it (a SET writes no WAL): from the second
    // round on, the read goes to a replica, where the setting is replayed.
    assert!(
        on[1] + on[2] >= 15,
        "reads right after SET stayed on the primary: per node {on:?}"
    );
    // Later reads go back to the replicas, with the setting replayed there.
    let mut seen = [false; 3];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(seen[1] && seen[2]) && std::time::Instant::now() < deadline {
        let r = row(
            &c,
            "SELECT current_setting('statement_timeout'), inet_server_port()",
        )
        .await;
        let n = node(r[1].parse().unwrap());
        assert_eq!(r[0], "30s", "the setting on node {n}");
        seen[n] = true;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = seen[1] && seen[2];
    assert!(
        back,
        "reads after the SET did not reach both replicas: {seen:?}"
    );
    drop(c);
    proxy.shutdown().await;
}

/// "Sessions that never wrote read from replicas as usual" (README,
/// Read-your-writes) must hold for drivers that close their prepared
/// statements: tokio-postgres sends Close+Sync when a statement made by
/// `query(&str)` is dropped, and JDBC and others close theirs too. Such a
/// request has nothing to classify and goes to the primary; counted as a
/// write, it kept the session's next reads on the primary as if it had
/// written, for seconds under a steady write load elsewhere (what delayed
/// the rejoined node's first read in failover.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_close_does_not_count_as_a_write() {
    let _lag = LAG.lock().await;
    set_lag(0);
    let proxy = start_proxy_with(proxy_config(Mode::Causal)).await;
    let c = connect(&proxy, "postgres").await;
    let mut on_primary = 0;
    for _ in 0..10 {
        // Prepared, executed, and closed when the statement is dropped.
        read_port(&c, false).await.unwrap();
        on_primary += usize::from(!is_replica(read_port(&c, true).await.unwrap()));
    }
    drop(c);
    proxy.shutdown().await;
    assert_eq!(
        on_primary, 0,
        "a session that never wrote had {on_primary} of 10 reads kept on the primary"
    );
}

/// A causal session whose reads follow its writes: the position of each
/// commit is read on the connection that ran it, and a replica whose last
/// health check predates the commit is asked whether it has replayed it.
/// Health checks are made rare here, so only that can put these reads on a
/// replica; with replicas 300 ms behind, the same reads must stay on the
/// primary, and still see the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writers_read_goes_to_a_replica_once_it_has_replayed_the_commit() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_confirm");
    tables(&db, &["c"]);
    set_lag(0);
    let proxy = start_proxy_with(rare_checks(true)).await;
    let c = connect(&proxy, &db).await;
    let mut on_replica = 0;
    for id in 0..30 {
        let (seen, node) = write_then_read(&c, "c", id).await;
        assert!(seen, "read {id} (node {node}) missed the session's write");
        on_replica += usize::from(node != 0);
    }
    let page = metrics_page(&proxy).await;
    let (asked, confirmed) = (
        metric(&page, "pgsplit_ryw_positions_read_total"),
        metric(&page, "pgsplit_ryw_replay_confirmed_total"),
    );
    println!("caught up: {on_replica}/30 reads on replicas; positions read {asked}, confirmed {confirmed}");
    // The first read finds the session write-only so far: it goes to the
    // primary and makes the later commits' positions worth reading.
    assert!(
        on_replica >= 27,
        "only {on_replica}/30 reads went to replicas"
    );
    assert!(
        asked >= 28 && confirmed >= 27,
        "positions {asked}, confirmed {confirmed}"
    );

    set_lag(300);
    let mut on_replica = 0;
    for id in 100..110 {
        let (seen, node) = write_then_read(&c, "c", id).await;
        assert!(seen, "read {id} (node {node}) missed the session's write");
        on_replica += usize::from(node != 0);
    }
    let behind = metric(
        &metrics_page(&proxy).await,
        "pgsplit_ryw_replay_behind_total",
    );
    assert_eq!(on_replica, 0, "a replica 300 ms behind served a read");
    assert!(behind >= 10, "replicas asked and found behind: {behind}");
    proxy.shutdown().await;

    // Turned off, the same reads stay on the primary until a check.
    set_lag(0);
    let proxy = start_proxy_with(rare_checks(false)).await;
    let c = connect(&proxy, &db).await;
    let mut on_replica = 0;
    for id in 200..205 {
        let (seen, node) = write_then_read(&c, "c", id).await;
        assert!(seen, "read {id} (node {node}) missed the session's write");
        on_replica += usize::from(node != 0);
    }
    let asked = metric(
        &metrics_page(&proxy).await,
        "pgsplit_ryw_positions_read_total",
    );
    assert_eq!((on_replica, asked), (0, 0), "confirm_replay = false");
    proxy.shutdown().await;
}

/// Causal mode with position checks 30 s apart, so that only asking a
/// replica (`confirm_replay`) can put a read right after a write on it;
/// metrics on, to count what was asked.
fn rare_checks(confirm_replay: bool) -> pgsplit_config::Config {
    let mut cfg = proxy_config(Mode::Causal);
    cfg.routing.position_interval = Duration::from_secs(30);
    cfg.routing.confirm_replay = confirm_replay;
    cfg.metrics_listen = Some("127.0.0.1:0".into());
    cfg
}

/// An INSERT, a pause far shorter than any health check's period but long
/// enough for an unthrottled replica to replay it, then a read of the row.
async fn write_then_read(c: &Client, table: &str, id: i64) -> (bool, usize) {
    c.simple_query(&format!("INSERT INTO {table} VALUES ({id})"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    read_row(c, table, id).await
}

/// The position read after a commit must leave the client's own protocol
/// state alone: psql's `\gdesc` prepares the unnamed statement in one
/// request and describes it in the next, and a simple query of pgsplit's
/// between the two replaced it ("unnamed prepared statement does not
/// exist", PostgreSQL's `psql` regression test). Pinned by `PREPARE`, the
/// session runs everything on one primary connection, where the position
/// query follows each commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_read_keeps_the_clients_unnamed_statement() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_gdesc");
    tables(&db, &["g"]);
    set_lag(0);
    let proxy = start_proxy_with(rare_checks(true)).await;
    let a = proxy.local_addr();
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@{}:{}/{db}",
        a.ip(),
        a.port()
    );
    // The read right after the first INSERT marks the session as one
    // whose reads follow its writes.
    let script = "INSERT INTO g VALUES (1);\n\
                  SELECT count(*) FROM g;\n\
                  PREPARE q AS SELECT 1 AS first;\n\
                  INSERT INTO g VALUES (2);\n\
                  EXECUTE q \\gdesc\n\
                  INSERT INTO g VALUES (3);\n\
                  SELECT 2 AS second \\gdesc\n";
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut psql = tool("psql")
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", &dsn, "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        psql.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        psql.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql failed: {text}");
    let asked = metric(
        &metrics_page(&proxy).await,
        "pgsplit_ryw_positions_read_total",
    );
    assert!(
        asked > 0,
        "no position was read, so nothing was tested: {text}"
    );
    assert!(
        text.contains("first|integer") && text.contains("second|integer"),
        "{text}"
    );
    proxy.shutdown().await;
}
