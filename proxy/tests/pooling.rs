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
    cluster()
        .psql(
            i,
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = '{user}'"),
        )
        .unwrap()
        .parse()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_hold_while_other_clients_churn_the_pool() {
    let db = fresh_database("pool_settings");
    let proxy = start_proxy_with(pooled(2, |_| {})).await;
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "{} application_name=keeper",
            conn_string(&proxy, "postgres", PASSWORD, &db)
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("SET search_path = keeper_schema, public")
        .await
        .unwrap();
    client
        .batch_execute("SET statement_timeout = '7s'")
        .await
        .unwrap();
    client
        .batch_execute("SET TIME ZONE 'Asia/Tokyo'")
        .await
        .unwrap();

    // Other clients with their own settings share the same two connections.
    let churn = {
        let conn = conn_string(&proxy, "postgres", PASSWORD, &db);
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for i in 0..8 {
                let conn = format!("{conn} application_name=churn{i}");
                handles.push(tokio::spawn(async move {
                    let (c, k) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
                    tokio::spawn(k);
                    for j in 0..40 {
                        c.batch_execute(&format!("SET search_path = other{i}; SET statement_timeout = '{}s'; SET TIME ZONE 'UTC'", j + 1))
                            .await
                            .unwrap();
                        c.simple_query("SELECT current_setting('search_path')").await.unwrap();
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        })
    };
    for _ in 0..50 {
        let row = client
            .query_one(
                "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
                 current_setting('TimeZone'), current_setting('application_name'), inet_server_port()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "keeper_schema, public");
        assert_eq!(row.get::<_, &str>(1), "7s");
        assert_eq!(row.get::<_, &str>(2), "Asia/Tokyo");
        assert_eq!(row.get::<_, &str>(3), "keeper");
        assert_eq!(scalar(&client, "SHOW statement_timeout").await, "7s");
    }
    churn.await.unwrap();
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
    let ok = eventually(Duration::from_secs(10), || async {
        next().await.1 == clean
    })
    .await;
    assert!(ok, "after a kill mid-transaction: {}", next().await.1);

    // Holding a temporary table and a session advisory lock (pins the session).
    let pid = killed_after(
        &proxy,
        &db,
        "CREATE TEMP TABLE t (a int); SELECT pg_advisory_lock(5)",
    )
    .await;
    let ok = eventually(Duration::from_secs(10), || async {
        next().await.1 == clean
    })
    .await;
    assert!(ok, "after a kill with a temp table: {}", next().await.1);
    // The pinned connection was reset and reused, not thrown away.
    let (c, _) = next().await;
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
    let ok = eventually(Duration::from_secs(10), || async {
        next().await.1 == clean
    })
    .await;
    assert!(ok, "after a kill mid-COPY: {}", next().await.1);
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
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "failed before the timeout"
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
    let proxy = start_proxy_with(pooled(1, |c| {
        c.pool.mode = pgsplit_config::PoolMode::Session
    }))
    .await;
    let a = connect(&proxy, &db).await;
    a.batch_execute("SET search_path = pg_catalog")
        .await
        .unwrap();
    let pid = scalar(&a, "/* pgsplit:primary */ SELECT pg_backend_pid()").await;
    for _ in 0..3 {
        assert_eq!(
            scalar(&a, "/* pgsplit:primary */ SELECT pg_backend_pid()").await,
            pid
        );
    }
    // A second client waits for the only connection, then finds it reset.
    let b = {
        let conn = conn_string(&proxy, "postgres", PASSWORD, &db);
        tokio::spawn(async move {
            let (c, k) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(k);
            scalar(&c, "/* pgsplit:primary */ SELECT pg_backend_pid() || ',' || current_setting('search_path')").await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b.is_finished(),
        "the second client got a connection the first one holds"
    );
    drop(a);
    assert_eq!(b.await.unwrap(), format!("{pid},\"$user\", public"));
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
