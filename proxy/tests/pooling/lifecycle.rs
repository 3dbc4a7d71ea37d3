//! Server connections over time: idle timeout, lifetime, min_idle, LIFO reuse, prepared-statement eviction.

use super::*;

/// The pool hands out the connection returned last: its server process is
/// the warm one, and the others can reach their idle timeout. Read-only
/// transactions on the one replica: primary connections a session wrote
/// on are kept for its `currval()` instead (see `sequences.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_recently_returned_connection_is_reused() {
    let db = fresh_database("pool_lifo");
    let proxy = start_proxy_with(pooled(5, |c| c.backends.truncate(2))).await;
    let pid_in_tx = "BEGIN READ ONLY; SELECT pg_backend_pid()";
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let c = connect(&proxy, &db).await;
        let rows = c.simple_query(pid_in_tx).await.unwrap();
        pids.push(first_value(&rows));
        clients.push(c);
    }
    assert_eq!(
        pids.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "three open transactions need three server connections: {pids:?}"
    );
    let on_replica = server_pids(1, &db, "postgres");
    assert!(
        pids.iter()
            .all(|p| on_replica.contains(&p.parse().unwrap())),
        "read-only transactions run on the replica: {pids:?} {on_replica:?}"
    );
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
    let last = pids[2].clone();
    for c in &clients {
        for _ in 0..3 {
            let rows = c
                .simple_query("BEGIN READ ONLY; SELECT pg_backend_pid(); COMMIT")
                .await
                .unwrap();
            assert_eq!(first_value(&rows), last, "reused {pids:?} out of order");
        }
    }
    proxy.shutdown().await;
}

/// Idle connections are closed once idle for `pool.server_idle_timeout`,
/// and not before: the server sees them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_are_closed_after_the_idle_timeout() {
    let db = fresh_database("pool_idle");
    let idle_timeout = Duration::from_secs(1);
    let proxy = start_proxy_with(pooled(5, |c| c.pool.server_idle_timeout = idle_timeout)).await;
    // Three transactions open at once take three primary connections.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = connect(&proxy, &db).await;
        c.batch_execute("BEGIN; SELECT pg_backend_pid()")
            .await
            .unwrap();
        clients.push(c);
    }
    let used = primary_pids(&db).await;
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
    let returned = Instant::now();
    assert!(used.len() >= 3, "three transactions, connections {used:?}");
    assert!(
        primary_pids(&db).await.is_superset(&used),
        "a connection returned to the pool was closed at once"
    );
    let closed = time_until(Duration::from_secs(15), || async {
        primary_pids(&db).await.is_disjoint(&used)
    })
    .await;
    let closed = closed.map(|_| returned.elapsed());
    println!("idle connections closed {closed:?} after their return");
    let closed = closed.expect("idle connections still open 15 s after their return");
    assert!(
        closed >= idle_timeout,
        "closed after {closed:?}, before the idle timeout"
    );
    // The maintenance pass runs every few seconds; 10 s is a regression.
    assert!(
        closed <= Duration::from_secs(10),
        "closed only after {closed:?}"
    );
    // The clients go on, on a new connection.
    assert!(!used.contains(&scalar(&clients[0], PRIMARY_PID).await.parse().unwrap()));
    proxy.shutdown().await;
}

/// A connection in constant use is still replaced once it is older than
/// `pool.server_lifetime`, and its server process ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_are_replaced_after_their_lifetime() {
    let db = fresh_database("pool_lifetime");
    let proxy = start_proxy_with(pooled(2, |c| {
        c.pool.server_lifetime = Duration::from_millis(1500)
    }))
    .await;
    let c = connect(&proxy, &db).await;
    let first = scalar(&c, PRIMARY_PID).await;
    for _ in 0..3 {
        assert_eq!(scalar(&c, PRIMARY_PID).await, first, "replaced while young");
    }
    let replaced = time_until(Duration::from_secs(10), || async {
        scalar(&c, PRIMARY_PID).await != first
    })
    .await;
    println!("a busy connection was replaced after {replaced:?} of polling");
    assert!(
        replaced.is_some(),
        "the connection outlived pool.server_lifetime by 10 s"
    );
    let first: i32 = first.parse().unwrap();
    let gone = eventually(Duration::from_secs(10), || async {
        !primary_pids(&db).await.contains(&first)
    })
    .await;
    assert!(
        gone,
        "the retired connection's server process is still there"
    );
    proxy.shutdown().await;
}

/// `pool.min_idle` connections are opened without any demand for them and
/// stay open, the same ones, while nobody uses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_connections_are_opened_and_kept() {
    let db = fresh_database("pool_min_idle");
    let proxy = start_proxy_with(pooled(5, |c| c.pool.min_idle = 3)).await;
    let c = connect(&proxy, &db).await;
    // Pools are made on first use: one statement makes the primary's.
    scalar(&c, PRIMARY_PID).await;
    let opened = eventually(Duration::from_secs(15), || async {
        primary_pids(&db).await.len() >= 3
    })
    .await;
    assert!(
        opened,
        "min_idle connections never opened: {:?}",
        primary_pids(&db).await
    );
    let pids = primary_pids(&db).await;
    assert_eq!(pids.len(), 3, "min_idle = 3 with nobody busy: {pids:?}");
    // The point is time passing with nothing to do: over a maintenance
    // pass (every 5 s) the idle connections are neither closed nor
    // replaced nor added to.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        primary_pids(&db).await,
        pids,
        "the idle connections changed"
    );
    proxy.shutdown().await;
}

/// More distinct prepared statements than `pool.max_prepared_statements`
/// on one server connection: the least recently used are closed on the
/// server, and every statement still runs, prepared again when needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_beyond_the_cap_are_evicted_and_still_run() {
    let db = fresh_database("pool_evict");
    let cap = 3;
    let proxy = start_proxy_with(pooled(1, |c| c.pool.max_prepared_statements = cap)).await;
    let c = connect(&proxy, &db).await;
    let mut statements = Vec::new();
    for k in 0..8 {
        let sql = format!("/* pgsplit:primary */ SELECT $1::int + {k}, inet_server_port()");
        statements.push(c.prepare(&sql).await.unwrap());
    }
    // On the primary's only connection, the one this simple query runs on.
    let on_server = || async {
        scalar(
            &c,
            "/* pgsplit:primary */ SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgsplit%'",
        )
        .await
        .parse::<usize>()
        .unwrap()
    };
    let mut most = 0;
    let order: Vec<usize> = (0..8).chain((0..8).rev()).chain([0, 7, 0, 7, 3]).collect();
    for (i, &k) in order.iter().enumerate() {
        let row = c.query_one(&statements[k], &[&(i as i32)]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i as i32 + k as i32, "statement {k}");
        assert_primary(row.get::<_, i32>(1) as u16, "a hinted prepared read");
        let n = on_server().await;
        assert!(
            n <= cap,
            "{n} pgsplit statements on a connection capped at {cap}"
        );
        most = most.max(n);
    }
    assert_eq!(
        most, cap,
        "the statements were never prepared under pgsplit's names"
    );
    proxy.shutdown().await;
}
