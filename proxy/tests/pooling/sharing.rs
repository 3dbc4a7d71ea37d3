//! Many clients over few connections: sharing, exhaustion, killed clients, session mode.

use super::*;

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
