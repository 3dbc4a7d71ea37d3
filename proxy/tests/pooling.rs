//! Pooled server connections: many clients over few connections, session
//! state that survives pool churn, nothing left behind by killed clients,
//! and a clear error when the pool is exhausted.

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_share_ten_connections_per_backend() {
    let db = fresh_database("pool_many");
    cluster()
        .psql(
            0,
            &db,
            "CREATE TABLE hits (client int, n int); GRANT ALL ON hits TO trustuser",
        )
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    let proxy = start_proxy_with(pooled(10, |_| {})).await;
    let user = pgsplit_cluster::TRUST_USER;

    // Watch every node while the clients run: never more than the pool size.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, db) = (stop.clone(), db.clone());
        tokio::task::spawn_blocking(move || {
            let mut peak = [0usize; 3];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, p) in peak.iter_mut().enumerate() {
                    *p = (*p).max(server_connections(i, &db, user));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let mut tasks = Vec::new();
    for id in 0..2000i32 {
        // Trust: the password is ignored.
        let conn = conn_string(&proxy, user, "unused", &db);
        tasks.push(tokio::spawn(async move {
            let (client, connection) =
                tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            for n in 0..3i32 {
                client
                    .execute("INSERT INTO hits VALUES ($1, $2)", &[&id, &n])
                    .await?;
                client
                    .query_one("SELECT count(*) FROM hits WHERE client = $1", &[&id])
                    .await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(format!("{e:?}"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = watcher.await.unwrap();
    assert!(
        errors.is_empty(),
        "{} clients failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    assert_eq!(
        cluster().psql(0, &db, "SELECT count(*) FROM hits").unwrap(),
        "6000"
    );
    for (i, p) in peak.iter().enumerate() {
        assert!(
            *p <= 10,
            "node {i} had {p} server connections for a pool of 10"
        );
    }
    assert!(peak[0] > 0, "the watcher saw the primary's connections");
    proxy.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_hold_while_other_clients_churn_the_pool() {
    let db = fresh_database("pool_settings");
    let proxy = start_proxy_with(shared_pools(2)).await;
    let client = named_client(&proxy, &db, "keeper").await;
    // One SET per query string: a combined string would pin the session to
    // its primary connection, and no setting would ever need replaying.
    for set in [
        "SET search_path = keeper_schema, public",
        "SET statement_timeout = '7s'",
        "SET TIME ZONE 'Asia/Tokyo'",
    ] {
        client.batch_execute(set).await.unwrap();
    }

    // Other clients with their own settings share the same two connections
    // per replica, changing them between the keeper's reads.
    let churn = {
        let conn = conn_string(&proxy, "postgres", PASSWORD, &db);
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for i in 0..8 {
                let conn = format!("{conn} application_name=churn{i}");
                handles.push(tokio::spawn(async move {
                    let (c, k) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(k);
                    for j in 0..20 {
                        let timeout = format!("{}s", j + 1);
                        for set in [
                            format!("SET search_path = other{i}"),
                            format!("SET statement_timeout = '{timeout}'"),
                            "SET TIME ZONE 'UTC'".to_owned(),
                        ] {
                            c.batch_execute(&set).await.unwrap();
                        }
                        for _ in 0..2 {
                            let r = c.query_one(SETTINGS, &[]).await.unwrap();
                            let port = r.get::<_, i32>(4) as u16;
                            assert_replica(port, "a churn client's read");
                            assert_eq!(r.get::<_, &str>(0), format!("other{i}"), "on {port}");
                            assert_eq!(r.get::<_, &str>(1), timeout, "on {port}");
                            assert_eq!(r.get::<_, &str>(2), "UTC", "on {port}");
                        }
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        })
    };
    let mut ports = std::collections::HashSet::new();
    for _ in 0..50 {
        let row = client.query_one(SETTINGS, &[]).await.unwrap();
        let port = row.get::<_, i32>(4) as u16;
        assert_replica(port, "the keeper's read");
        ports.insert(port);
        assert_eq!(row.get::<_, &str>(0), "keeper_schema, public", "on {port}");
        assert_eq!(row.get::<_, &str>(1), "7s", "on {port}");
        assert_eq!(row.get::<_, &str>(2), "Asia/Tokyo", "on {port}");
        assert_eq!(row.get::<_, &str>(3), "keeper", "on {port}");
        assert_eq!(scalar(&client, "SHOW statement_timeout").await, "7s");
    }
    assert_eq!(ports.len(), 2, "the keeper read from both replicas");
    churn.await.unwrap();
    proxy.shutdown().await;
}

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

/// With one server connection per backend, two clients take turns on the
/// very same connections: each sees only its own settings on every one of
/// them, and a SET counts once its transaction commits, not before and not
/// after a rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_replayed_onto_connections_shared_between_clients() {
    let db = fresh_database("pool_replay");
    let proxy = start_proxy_with(shared_pools(1)).await;
    let a = connect(&proxy, &db).await;
    let b = connect(&proxy, &db).await;
    const DEFAULT_PATH: &str = "\"$user\", public";
    a.batch_execute("SET search_path = a_schema").await.unwrap();
    // B on the primary connection A's SET ran on: none of A's setting.
    let (port, a_primary_pid, _, _) = where_and_what(&a, "/* pgsplit:primary */").await;
    assert_primary(port, "a hinted read");
    let (port, pid, path, _) = where_and_what(&b, "/* pgsplit:primary */").await;
    assert_primary(port, "a hinted read");
    assert_eq!(pid, a_primary_pid, "one primary connection, shared");
    assert_eq!(path, DEFAULT_PATH, "B inherited A's search_path");

    // B changes its own statement_timeout and uses both replica connections.
    b.batch_execute("SET statement_timeout = '3s'")
        .await
        .unwrap();
    let mut b_pids = std::collections::HashMap::new();
    for _ in 0..4 {
        let (port, pid, path, timeout) = where_and_what(&b, "").await;
        assert_replica(port, "B's read");
        assert_eq!(
            (path.as_str(), timeout.as_str()),
            (DEFAULT_PATH, "3s"),
            "B on {port}"
        );
        b_pids.insert(port, pid);
    }
    assert_eq!(b_pids.len(), 2, "B read from both replicas: {b_pids:?}");
    // A follows onto the connections B just used: its own settings only.
    for _ in 0..4 {
        let (port, pid, path, timeout) = where_and_what(&a, "").await;
        assert_eq!(
            b_pids.get(&port),
            Some(&pid),
            "A on another connection than B's"
        );
        assert_eq!(
            (path.as_str(), timeout.as_str()),
            ("a_schema", "0"),
            "A on {port}"
        );
    }
    // And B gets its own back on them.
    for _ in 0..2 {
        let (port, _, path, timeout) = where_and_what(&b, "").await;
        assert_eq!(
            (path.as_str(), timeout.as_str()),
            (DEFAULT_PATH, "3s"),
            "B on {port}"
        );
    }

    // A SET in a transaction that commits is kept; one rolled back is not.
    // Separate requests, as a driver sends them.
    for sql in ["BEGIN", "SET statement_timeout = '5s'", "COMMIT"] {
        a.batch_execute(sql).await.unwrap();
    }
    for sql in [
        "BEGIN",
        "SET statement_timeout = '9s'",
        "SET search_path = gone",
        "ROLLBACK",
    ] {
        a.batch_execute(sql).await.unwrap();
    }
    for (prefix, b_reads) in [("/* pgsplit:primary */", 1), ("", 2), ("", 2), ("", 2)] {
        // B runs between A's reads (on both replicas, whichever the
        // balancer picks next), so A's reads find connections B changed.
        for _ in 0..b_reads {
            let (_, _, path, timeout) = where_and_what(&b, prefix).await;
            assert_eq!(
                (path.as_str(), timeout.as_str()),
                (DEFAULT_PATH, "3s"),
                "B {prefix}"
            );
        }
        let (port, _, path, timeout) = where_and_what(&a, prefix).await;
        assert_eq!(
            (path.as_str(), timeout.as_str()),
            ("a_schema", "5s"),
            "A on {port} after a committed and a rolled-back SET"
        );
    }
    proxy.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_clients_leave_nothing_behind() {
    let db = fresh_database("pool_killed");
    cluster().psql(0, &db, "CREATE TABLE k (a int)").unwrap();
    let proxy = start_proxy_with(pooled(1, |_| {})).await;
    let next = || async {
        let c = connect(&proxy, &db).await;
        // Everything below is checked on the primary's one pooled connection.
        let state = scalar(
            &c,
            "/* pgsplit:primary */ SELECT concat_ws(',', pg_current_xact_id_if_assigned() IS NULL, \
             (SELECT count(*) FROM pg_class WHERE relpersistence = 't'), current_setting('search_path'), \
             (SELECT count(*) FROM k), (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'))",
        )
        .await;
        (c, state)
    };
    let clean = "t,0,\"$user\", public,0,0";

    // Mid-transaction, with an uncommitted row and a changed setting.
    killed_after(
        &proxy,
        &db,
        "SET search_path = pg_catalog; BEGIN; INSERT INTO public.k VALUES (1)",
    )
    .await;
    // No "not yet" to wait for: a connection is settled before anyone else
    // can take it, so the very next client must find it clean (a retry
    // would pass once that client's own disconnect had cleaned it).
    assert_eq!(next().await.1, clean, "after a kill mid-transaction");

    // Holding a temporary table and a session advisory lock (pins the session).
    let pid = killed_after(
        &proxy,
        &db,
        "CREATE TEMP TABLE t (a int); SELECT pg_advisory_lock(5)",
    )
    .await;
    let (c, state) = next().await;
    assert_eq!(state, clean, "after a kill with a temp table");
    // The pinned connection was reset and reused, not thrown away.
    assert_eq!(
        scalar(&c, "/* pgsplit:primary */ SELECT pg_backend_pid()").await,
        pid
    );
    drop(c);

    // Mid-COPY.
    let (client, conn) = tokio_postgres::connect(
        &conn_string(&proxy, "postgres", PASSWORD, &db),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let task = tokio::spawn(conn);
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY k FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    futures::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();
    futures::SinkExt::flush(&mut sink).await.unwrap();
    task.abort();
    assert_eq!(next().await.1, clean, "after a kill mid-COPY");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_53300_and_others_go_on() {
    let db = fresh_database("pool_full");
    cluster().psql(0, &db, "CREATE TABLE f (a int)").unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    let proxy = start_proxy_with(pooled(1, |c| {
        c.pool.checkout_timeout = Duration::from_millis(500)
    }))
    .await;
    let holder = connect(&proxy, &db).await;
    holder
        .batch_execute("BEGIN; INSERT INTO f VALUES (1)")
        .await
        .unwrap();

    let waiter = connect(&proxy, &db).await;
    let started = Instant::now();
    let e = waiter
        .batch_execute("INSERT INTO f VALUES (2)")
        .await
        .unwrap_err();
    // Not before checkout_timeout, and not much after it either (a proxy
    // ignoring the setting would wait its default 10 s).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "failed after {waited:?}, before the 500 ms timeout"
    );
    assert!(
        waited <= Duration::from_millis(500 + 1500),
        "failed after {waited:?}, long after the 500 ms timeout"
    );
    assert_eq!(sqlstate(&e), "53300");
    let db_error = e.as_db_error().unwrap();
    assert!(
        db_error.message().contains("\"primary\""),
        "{}",
        db_error.message()
    );
    assert!(db_error.hint().unwrap_or("").contains("pool.pool_size"));

    // Reads go on on the replicas, and the waiting session is still usable.
    let port: i32 = waiter
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(port, cluster().port(0) as i32);
    holder.batch_execute("COMMIT").await.unwrap();
    waiter
        .batch_execute("INSERT INTO f VALUES (2)")
        .await
        .unwrap();
    assert_eq!(
        cluster().psql(0, &db, "SELECT count(*) FROM f").unwrap(),
        "2"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_connection_per_client_and_resets_it() {
    let db = fresh_database("pool_session");
    let proxy = start_proxy_with(pooled(2, |c| {
        c.pool.mode = pgsplit_config::PoolMode::Session
    }))
    .await;
    const PID: &str = "/* pgsplit:primary */ SELECT pg_backend_pid()";
    let a = connect(&proxy, &db).await;
    let b = connect(&proxy, &db).await;
    a.batch_execute("SET search_path = pg_catalog")
        .await
        .unwrap();
    // Taking turns, idle in between: in transaction mode both would run on
    // the connection returned last; in session mode each keeps its own.
    let pid_a = scalar(&a, PID).await;
    let pid_b = scalar(&b, PID).await;
    assert_ne!(pid_a, pid_b, "two sessions shared one server connection");
    for _ in 0..3 {
        assert_eq!(scalar(&a, PID).await, pid_a);
        assert_eq!(scalar(&b, PID).await, pid_b);
    }
    // A third client waits for a connection the others hold, then gets the
    // one A leaves, reset.
    let mut c = {
        let conn = conn_string(&proxy, "postgres", PASSWORD, &db);
        tokio::spawn(async move {
            let (c, k) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(k);
            scalar(&c, "/* pgsplit:primary */ SELECT pg_backend_pid() || ',' || current_setting('search_path')").await
        })
    };
    let early = tokio::time::timeout(Duration::from_millis(300), &mut c).await;
    assert!(
        early.is_err(),
        "the third client got a connection the first two hold: {early:?}"
    );
    drop(a);
    assert_eq!(c.await.unwrap(), format!("{pid_a},\"$user\", public"));
    assert_eq!(scalar(&b, PID).await, pid_b);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_through_a_pool_of_five() {
    let db = fresh_database("pool_pgbench");
    let proxy = start_proxy_with(pooled(5, |_| {})).await;
    let conn = conn_string(&proxy, "postgres", PASSWORD, &db);
    let bindir = pgsplit_cluster::find_bindir().unwrap();
    let run = |args: Vec<&'static str>| {
        let conn = conn.clone();
        let bindir = bindir.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bindir.join("pgbench"))
                .args(&args)
                .arg(&conn)
                .env("PGPASSWORD", PASSWORD)
                .output()
                .unwrap()
        })
    };
    let out = run(vec!["-i", "-s", "1", "-q"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    for args in [
        vec!["-n", "-M", "prepared", "-c", "50", "-j", "2", "-T", "4"],
        vec![
            "-n", "-S", "-M", "prepared", "-c", "50", "-j", "2", "-T", "4",
        ],
    ] {
        let out = run(args.clone()).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of failed transactions: 0 (0.000%)"),
            "{args:?}: {stdout}"
        );
        assert!(
            !stdout.contains("number of transactions actually processed: 0/"),
            "{stdout}"
        );
    }
    for i in 0..3 {
        let n = server_connections(i, &db, "postgres");
        assert!(n <= 5, "node {i}: {n} server connections for a pool of 5");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_never_reaches_another_client() {
    let db = fresh_database("pool_role");
    let proxy = start_proxy_with(pooled(1, |_| {})).await;
    let a = connect(&proxy, &db).await;
    a.batch_execute("SET ROLE trustuser").await.unwrap();
    assert_eq!(
        scalar(&a, "/* pgsplit:primary */ SELECT current_user").await,
        "trustuser"
    );
    // The role sticks to this client's own connection: RESET ALL would not
    // undo it, so it is never replayed onto a shared one.
    assert_eq!(scalar(&a, "SELECT current_user").await, "trustuser");
    drop(a);
    // No "not yet" to wait for: a connection is reset before anyone else
    // can take it, so the very next client must see its own role.
    let b = connect(&proxy, &db).await;
    assert_eq!(
        scalar(
            &b,
            "/* pgsplit:primary */ SELECT current_user || ',' || session_user",
        )
        .await,
        "postgres,postgres",
        "the next client on the connection inherited the role"
    );
    proxy.shutdown().await;
}

/// The pool hands out the connection returned last: its server process is
/// the warm one, and the others can reach their idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_recently_returned_connection_is_reused() {
    let db = fresh_database("pool_lifo");
    let proxy = start_proxy_with(pooled(5, |_| {})).await;
    let pid_in_tx = "BEGIN; SELECT pg_backend_pid()";
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
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
    let last = pids[2].clone();
    for c in &clients {
        for _ in 0..3 {
            let rows = c
                .simple_query("BEGIN; SELECT pg_backend_pid(); COMMIT")
                .await
                .unwrap();
            assert_eq!(first_value(&rows), last, "reused {pids:?} out of order");
        }
    }
    proxy.shutdown().await;
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
