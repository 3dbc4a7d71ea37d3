//! Session settings and roles replayed onto shared connections, never leaked.

use super::*;

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
