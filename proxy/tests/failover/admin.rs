//! Lagging standbys and the admin commands.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_replica_gets_no_reads() {
    let s = Scenario::start(|c| {
        c.routing.read_your_writes = ReadYourWrites::Off;
        c.health.max_replica_lag = Duration::from_secs(1);
    })
    .await;
    let p2 = s.port(2);
    // Replay lag in time only grows while there is something to replay.
    let writers = spawn_writers(s.conn_string(), 1, Duration::from_millis(50));
    s.cluster_op(|c| c.set_apply_delay(2, Duration::from_secs(3)))
        .await
        .expect("delay node 2");
    let delayed = Instant::now();
    let (_, rows) = s
        .wait_pool_nodes("node 2 out of load balancing", |r| {
            field(r, 2, "load_balance_node") == "false"
        })
        .await;
    let excluded_after = delayed.elapsed();
    println!(
        "lagging_replica: node 2 excluded {excluded_after:?} after a 3 s apply delay \
         (lag_seconds {}, lag_bytes {})",
        field(&rows, 2, "lag_seconds"),
        field(&rows, 2, "lag_bytes")
    );
    // Its lag passes max_replica_lag one second after replay stopped, and
    // the next check (every position_interval) sees it.
    let exclusion_bound =
        s.config.health.max_replica_lag + s.config.routing.position_interval + SCHEDULING_SLACK;
    assert!(
        excluded_after <= exclusion_bound,
        "node 2 excluded {excluded_after:?} after the delay, over {exclusion_bound:?}"
    );
    assert_eq!(field(&rows, 2, "status"), "up", "lagging is not down");

    let reader = s.client().await;
    let reads = sample_reads(&reader, 50).await;
    assert!(
        reads.iter().all(|r| r.is_ok() && *r != Ok(p2)),
        "reads while node 2 lags: {reads:?}"
    );

    let relaxed = s.client().await;
    relaxed
        .batch_execute("SET pgsplit.max_replica_lag = '10s'")
        .await
        .unwrap_or_else(|e| panic!("SET pgsplit.max_replica_lag: {}", describe(&e)));
    let reads = sample_reads(&relaxed, 40).await;
    assert!(
        reads.contains(&Ok(p2)),
        "a session allowing 10 s of lag never read from node 2: {reads:?}"
    );

    s.cluster_op(|c| c.set_apply_delay(2, Duration::ZERO))
        .await
        .expect("undelay node 2");
    let back = until_read_from(&reader, p2, Duration::from_secs(5)).await;
    println!("lagging_replica: node 2 served reads again {back:?} after the delay was removed");
    assert!(back.is_some(), "node 2 got no reads back within 5 s");
    s.wait_pool_nodes("node 2 back in load balancing", |r| {
        field(r, 2, "load_balance_node") == "true"
    })
    .await;
    let recorded = writers.stop().await;
    let failed = failures(&recorded.attempts);
    assert!(failed.is_empty(), "writes failed: {}", show(&failed));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_commands() {
    let s = Scenario::start(|c| {
        c.routing.read_your_writes = ReadYourWrites::Off;
        c.users.push(User {
            name: "operator".into(),
            password: Some(Secret::new("operator")),
            auth: AuthMethod::ScramSha256,
            server_user: Some("postgres".into()),
            server_password: Some(Secret::new(common::PASSWORD)),
            admin: false,
            ..User::default()
        });
    })
    .await;
    let admin = s.client().await;

    // SHOW pool_nodes: same columns, in pgpool's order, on both protocols.
    assert_eq!(
        simple_columns(&admin, "SHOW pool_nodes").await,
        POOL_NODES_COLUMNS
    );
    let (names, values) = extended(&admin, "SHOW pool_nodes")
        .await
        .unwrap_or_else(|e| panic!("SHOW pool_nodes (extended): {}", describe(&e)));
    assert_eq!(names, POOL_NODES_COLUMNS);
    assert_eq!(values.len(), 3, "{values:?}");
    let rows = pool_nodes(&admin).await.expect("SHOW pool_nodes");
    println!("admin_commands: pool_nodes {rows:#?}");
    for (i, expected_role) in ["primary", "standby", "standby"].iter().enumerate() {
        let f = |column| field(&rows, i, column);
        assert_eq!(f("node_id"), i.to_string());
        assert_eq!(f("hostname"), "127.0.0.1");
        assert_eq!(f("port"), s.port(i).to_string());
        assert_eq!((f("status"), f("pg_status")), ("up", "up"), "node {i}");
        assert_eq!((f("role"), f("pg_role")), (*expected_role, *expected_role));
        // pgpool prints the normalised share ("0.333333"); either form is
        // a positive number.
        let weight = f("lb_weight").parse::<f64>();
        assert!(weight.is_ok_and(|w| w > 0.0), "lb_weight of node {i}");
        assert_eq!(f("timeline"), "1", "node {i}");
        assert!(f("select_cnt").parse::<u64>().is_ok(), "node {i}");
        assert!(!f("last_status_change").is_empty(), "node {i}");
        let same_in_extended = &values[i];
        for (column, value) in POOL_NODES_COLUMNS.iter().zip(same_in_extended) {
            if ["node_id", "hostname", "port", "status", "role", "pg_role"].contains(column) {
                assert_eq!(
                    value,
                    f(column),
                    "{column} of node {i} over the extended protocol"
                );
            }
        }
    }
    assert_eq!(field(&rows, 0, "replication_delay"), "0");
    assert_eq!(field(&rows, 0, "replication_state"), "");
    for i in [1, 2] {
        assert_eq!(field(&rows, i, "replication_state"), "streaming");
        assert_eq!(field(&rows, i, "load_balance_node"), "true");
        lsn(field(&rows, i, "replay_lsn"));
    }

    assert_eq!(
        simple_columns(&admin, "SHOW pool_version").await,
        ["pool_version"]
    );
    let (names, values) = extended(&admin, "SHOW pool_version")
        .await
        .unwrap_or_else(|e| panic!("SHOW pool_version (extended): {}", describe(&e)));
    assert_eq!(names, ["pool_version"]);
    assert!(values[0][0].starts_with("pgsplit "), "{values:?}");

    // A non-admin may look but not touch.
    let operator = connect(&common::conn_string(&s.proxy, "operator", "operator", DB))
        .await
        .expect("operator logs in");
    assert_eq!(
        pool_nodes(&operator)
            .await
            .expect("operator reads pool_nodes")
            .len(),
        3
    );
    for command in [
        "PGSPLIT PROMOTE replica1",
        "PGSPLIT DETACH replica2",
        "PGSPLIT ATTACH 2",
    ] {
        let e = operator.batch_execute(command).await.expect_err(command);
        assert_eq!(common::sqlstate(&e), "42501", "{command}: {e}");
        let e = operator.execute(command, &[]).await.expect_err(command);
        assert_eq!(common::sqlstate(&e), "42501", "{command} (extended): {e}");
    }
    let in_recovery = s
        .cluster_op(|c| c.psql(1, "postgres", "SELECT pg_is_in_recovery()"))
        .await
        .expect("ask node 1");
    assert_eq!(in_recovery, "t", "a refused PROMOTE promoted node 1");

    // A detached node gets nothing, healthy or not, until attached.
    let p2 = s.port(2);
    let unknown = admin.batch_execute("PGSPLIT DETACH no_such_node").await;
    assert!(unknown.is_err(), "detaching an unknown node succeeded");
    admin
        .batch_execute("PGSPLIT DETACH replica2")
        .await
        .unwrap_or_else(|e| panic!("PGSPLIT DETACH replica2: {}", describe(&e)));
    let (_, rows) = s
        .wait_pool_nodes_for(Duration::from_secs(1), "node 2 detached", |r| {
            field(r, 2, "status") == "down"
        })
        .await;
    assert_eq!(field(&rows, 2, "pg_status"), "up");
    assert_eq!(field(&rows, 2, "load_balance_node"), "false");
    let reader = s.client().await;
    let select_cnt_1 = |rows: &[NodeRow]| field(rows, 1, "select_cnt").parse::<u64>().unwrap();
    let before = select_cnt_1(&rows);
    let reads = sample_reads(&reader, 40).await;
    assert!(
        reads.iter().all(|r| r.is_ok() && *r != Ok(p2)),
        "reads with node 2 detached: {reads:?}"
    );
    // Several health checks pass on the healthy node; it must stay out.
    sleep(Duration::from_secs(1)).await;
    let reads = sample_reads(&reader, 20).await;
    assert!(
        !reads.contains(&Ok(p2)),
        "detached node 2 came back by itself"
    );
    let rows = pool_nodes(&admin).await.expect("SHOW pool_nodes");
    assert_eq!(field(&rows, 2, "status"), "down");
    assert!(
        select_cnt_1(&rows) >= before + 60,
        "select_cnt of node 1 went from {before} to {}",
        select_cnt_1(&rows)
    );

    admin
        .execute("PGSPLIT ATTACH 2", &[])
        .await
        .unwrap_or_else(|e| panic!("PGSPLIT ATTACH 2 (extended): {}", describe(&e)));
    let back = until_read_from(&reader, p2, Duration::from_secs(3)).await;
    println!("admin_commands: attached node 2 served a read after {back:?}");
    assert!(back.is_some(), "attached node 2 got no read within 3 s");
    s.wait_pool_nodes("node 2 attached", |r| field(r, 2, "status") == "up")
        .await;
    s.finish().await;
}

/// PgBouncer's maintenance routine: with writers and readers running,
/// `PGSPLIT PAUSE` returns once no transaction runs and no server
/// connection is open, the primary restarts, `PGSPLIT RESUME` lets the
/// waiting statements go on, and not one of them failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_lets_the_primary_restart_with_no_client_error() {
    let s = Scenario::start(|_| {}).await;
    let writers = spawn_writers(s.conn_string(), 2, Duration::from_millis(20));
    let readers = spawn_readers(s.conn_string(), 2);
    sleep(Duration::from_millis(500)).await;
    let admin = s.client().await;
    let pausing = Instant::now();
    admin
        .batch_execute("PGSPLIT PAUSE")
        .await
        .unwrap_or_else(|e| panic!("PGSPLIT PAUSE: {}", describe(&e)));
    let paused_in = pausing.elapsed();
    let from_pgsplit = s
        .cluster_op(|c| {
            c.psql(
                0,
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}' \
                     AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ),
            )
        })
        .await
        .expect("count connections on the primary");
    assert_eq!(from_pgsplit, "0", "PAUSE returned with connections open");
    let restarted = s
        .cluster_op(|c| {
            c.stop_node(0, StopMode::Fast)?;
            c.start_node(0)
        })
        .await;
    restarted.expect("restart the primary");
    let resumed = Instant::now();
    admin
        .batch_execute("PGSPLIT RESUME")
        .await
        .unwrap_or_else(|e| panic!("PGSPLIT RESUME: {}", describe(&e)));
    sleep(Duration::from_secs(1)).await;
    let written = writers.stop().await;
    let read = readers.stop().await;
    let failed: Vec<_> = failures(&written.attempts)
        .into_iter()
        .chain(failures(&read.attempts))
        .collect();
    assert!(failed.is_empty(), "statements failed: {failed:?}");
    assert_eq!(
        written.reconnects + read.reconnects,
        0,
        "a client lost its connection"
    );
    let after = written
        .attempts
        .iter()
        .filter(|a| a.sent >= resumed && a.result == Ok(s.port(0)))
        .count();
    assert!(
        after > 0,
        "no write reached the restarted primary after RESUME"
    );
    let gap = longest_gap(&written.attempts, pausing, Instant::now());
    println!(
        "pause: PAUSE took {paused_in:?}; writes waited at most {gap:?} over the restart; 0 failed"
    );
    s.finish().await;
}

/// What a load balancer's probe sees as the primary goes away and comes
/// back (no promotion: `auto_promote` is off by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_and_primary_probes_follow_the_primary_away_and_back() {
    let s = Scenario::start(|c| c.metrics_listen = Some("127.0.0.1:0".into())).await;
    let addr = s.proxy.metrics_addr().unwrap();
    let probe = |path: &'static str| async move { http_status(addr, path).await };
    assert_eq!(probe("/ready").await, 200);
    s.cluster_op(|c| c.stop_node(0, StopMode::Immediate))
        .await
        .expect("stop the primary");
    let stopped = Instant::now();
    let unready = common::eventually(Duration::from_secs(10), || async {
        probe("/ready").await == 503
    })
    .await;
    assert!(unready, "/ready stayed 200 with the primary down");
    println!(
        "probes: /ready went 503 {:?} after the primary stopped",
        stopped.elapsed()
    );
    assert_eq!(probe("/primary").await, 503);
    assert_eq!(probe("/replica").await, 200, "the replicas still read");
    assert_eq!(probe("/health").await, 200, "pgsplit itself is alive");
    s.cluster_op(|c| c.start_node(0))
        .await
        .expect("start the primary");
    let back = common::eventually(Duration::from_secs(10), || async {
        probe("/ready").await == 200
    })
    .await;
    assert!(back, "/ready never came back with the primary");
    assert_eq!(probe("/primary").await, 200);
    s.finish().await;
}

async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response[9..12].parse().unwrap()
}
