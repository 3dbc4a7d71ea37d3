//! Which server each kind of statement goes to.

use super::*;

#[tokio::test]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_basic");
    let c = connect(&proxy, &db).await;

    assert_replica(
        port_of(&c, "SELECT inet_server_port()").await,
        "a plain SELECT",
    );
    assert_replica(
        port_of(&c, "select inet_server_port() from items limit 1").await,
        "SELECT FROM",
    );
    assert_eq!(scalar(&c, "SELECT pg_is_in_recovery()").await, "t");
    assert_replica(
        port_of(
            &c,
            "SELECT inet_server_port(), random(), clock_timestamp(), gen_random_uuid()",
        )
        .await,
        "harmless volatile built-ins",
    );
    assert_replica(
        port_of(&c, "WITH x AS (SELECT 1) SELECT inet_server_port() FROM x").await,
        "a read-only CTE",
    );
    assert_replica(
        port_of(&c, "SELECT inet_server_port(); SELECT 2").await,
        "several reads",
    );

    let writes = [
        "INSERT INTO items VALUES (100, 'x') RETURNING inet_server_port()",
        "UPDATE items SET v = 'y' WHERE id = 100 RETURNING inet_server_port()",
        "DELETE FROM items WHERE id = 100 RETURNING inet_server_port()",
        "SELECT inet_server_port() FROM items WHERE id = 1 FOR UPDATE",
        "SELECT inet_server_port() FROM items WHERE id = 1 FOR SHARE",
        "SELECT inet_server_port() FROM items WHERE id = 1 FOR NO KEY UPDATE",
        "SELECT inet_server_port() FROM items WHERE id = 1 FOR KEY SHARE",
        "SELECT inet_server_port(), nextval('seq')",
        "SELECT inet_server_port(), pg_catalog.setval('seq', 5)",
        "SELECT inet_server_port() WHERE pg_try_advisory_xact_lock(42)",
        "SELECT inet_server_port(), pg_notify('chan', 'x')",
        "WITH w AS (INSERT INTO items VALUES (101, 'w') RETURNING id) SELECT inet_server_port() FROM w",
        "SELECT inet_server_port(), txid_current()",
        "/* pgsplit:primary */ SELECT inet_server_port()",
        "/*NO LOAD BALANCE*/ SELECT inet_server_port()",
    ];
    for sql in writes {
        assert_eq!(port_of(&c, sql).await, primary(), "{sql}");
    }
    // A write hidden after a read in one query string goes to the primary.
    let rows = c
        .simple_query("SELECT inet_server_port(); INSERT INTO items VALUES (102, 'z')")
        .await
        .unwrap();
    let port: u16 = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .unwrap();
    assert_eq!(port, primary(), "a multi-statement string with a write");
    // DDL and maintenance run on the primary (a replica would refuse them).
    for sql in [
        "CREATE TABLE ddl_test (a int)",
        "VACUUM items",
        "ANALYZE items",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    // Extended protocol: parameters go through Parse/Bind/Execute.
    let row = c
        .query_one("SELECT inet_server_port(), $1::int", &[&7i32])
        .await
        .unwrap();
    assert_replica(row.get::<_, i32>(0) as u16, "an extended-protocol read");
    let row = c
        .query_one(
            "INSERT INTO items VALUES ($1, 'e') RETURNING inet_server_port()",
            &[&103i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0) as u16, primary());
    proxy.shutdown().await;
}

#[tokio::test]
async fn unparseable_sql_goes_to_the_primary_which_reports_the_error() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_unparsed");
    let c = connect(&proxy, &db).await;
    let before = proxy.shared().stats(0).writes;
    let e = c.batch_execute("SELEKT broken").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    assert_eq!(
        proxy.shared().stats(0).writes,
        before + 1,
        "counted on the primary"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn transactions_stay_on_the_primary_unless_read_only() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_tx");
    let c = connect(&proxy, &db).await;

    // An ordinary transaction: every statement, reads included, on the primary.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(port_of(&c, "SELECT inet_server_port()").await, primary());
    assert_eq!(
        port_of(&c, "SELECT inet_server_port() FROM items LIMIT 1").await,
        primary()
    );
    c.batch_execute("COMMIT").await.unwrap();

    // BEGIN READ ONLY runs the whole transaction on one replica.
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    let first = port_of(&c, "SELECT inet_server_port()").await;
    assert_replica(first, "a READ ONLY transaction");
    for _ in 0..5 {
        assert_eq!(
            port_of(&c, "SELECT inet_server_port()").await,
            first,
            "same replica throughout"
        );
    }
    c.batch_execute("COMMIT").await.unwrap();

    // START TRANSACTION with options, READ ONLY among them.
    c.batch_execute("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .unwrap();
    assert_replica(
        port_of(&c, "SELECT inet_server_port()").await,
        "START TRANSACTION ... READ ONLY",
    );
    assert_eq!(
        scalar(&c, "SHOW transaction_isolation").await,
        "repeatable read"
    );
    c.batch_execute("ROLLBACK").await.unwrap();

    // BEGIN, then SET TRANSACTION READ ONLY as the first statement.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET TRANSACTION READ ONLY").await.unwrap();
    let p = port_of(&c, "SELECT inet_server_port()").await;
    assert_replica(p, "BEGIN; SET TRANSACTION READ ONLY");
    assert_eq!(scalar(&c, "SHOW transaction_read_only").await, "on");
    c.batch_execute("COMMIT").await.unwrap();

    // A deferred BEGIN followed by a write starts the transaction on the primary,
    // and it really is one transaction (the rollback undoes the insert).
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO items VALUES (200, 'tx')")
        .await
        .unwrap();
    assert_eq!(port_of(&c, "SELECT inet_server_port()").await, primary());
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        scalar(
            &c,
            "/* pgsplit:primary */ SELECT count(*) FROM items WHERE id = 200"
        )
        .await,
        "0"
    );

    // An error inside a transaction keeps the session on the primary until ROLLBACK.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO items VALUES (201, 'e')")
        .await
        .unwrap();
    assert!(c.batch_execute("SELECT 1/0").await.is_err());
    assert_eq!(
        sqlstate(&c.batch_execute("SELECT 1").await.unwrap_err()),
        "25P02"
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_replica(
        port_of(&c, "SELECT inet_server_port()").await,
        "reads after the transaction",
    );

    // default_transaction_read_only makes every transaction read-only.
    c.batch_execute("SET default_transaction_read_only = on")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    assert_replica(
        port_of(&c, "SELECT inet_server_port()").await,
        "default_transaction_read_only",
    );
    c.batch_execute("COMMIT").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn session_settings_follow_reads_to_the_replicas() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_set");
    cluster()
        .psql(0, &db, "CREATE SCHEMA other; CREATE TABLE other.items (id int, v text); INSERT INTO other.items VALUES (1, 'from other')")
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    let c = connect(&proxy, &db).await;

    c.batch_execute("SET search_path = other, public")
        .await
        .unwrap();
    c.batch_execute("SET statement_timeout = '12s'")
        .await
        .unwrap();
    // Both replicas and the primary must see the same settings.
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let rows = c
            .query("SELECT inet_server_port(), current_setting('search_path'), current_setting('statement_timeout'), (SELECT v FROM items LIMIT 1)", &[])
            .await
            .unwrap();
        let r = &rows[0];
        let port = r.get::<_, i32>(0) as u16;
        assert_replica(port, "a read after SET");
        assert_eq!(r.get::<_, &str>(1), "other, public");
        assert_eq!(r.get::<_, &str>(2), "12s");
        assert_eq!(
            r.get::<_, &str>(3),
            "from other",
            "search_path resolved on {port}"
        );
        seen.insert(port, ());
    }
    assert_eq!(seen.len(), 2, "reads were balanced over both replicas");

    // RESET is replayed too.
    c.batch_execute("RESET statement_timeout").await.unwrap();
    for _ in 0..4 {
        assert_eq!(
            scalar(&c, "SELECT current_setting('statement_timeout')").await,
            "0"
        );
    }
    // A SET that fails changes nothing.
    assert!(c
        .batch_execute("SET statement_timeout = 'nonsense'")
        .await
        .is_err());
    assert_eq!(
        scalar(&c, "SELECT current_setting('statement_timeout')").await,
        "0"
    );
    // A SET inside a rolled-back transaction is undone everywhere.
    c.batch_execute("BEGIN; SET search_path = public; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(
        scalar(&c, "SELECT current_setting('search_path')").await,
        "other, public"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn unmovable_session_state_pins_the_session_to_the_primary() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_pin");
    for (n, (setup, what)) in [
        ("CREATE TEMP TABLE scratch (a int)", "a temporary table"),
        ("LISTEN some_channel", "LISTEN"),
        ("SELECT pg_advisory_lock(7)", "a session advisory lock"),
        ("PREPARE q AS SELECT 1", "SQL PREPARE"),
        (
            "SELECT set_config('application_name', 'x', false)",
            "set_config()",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let c = connect(&proxy, &db).await;
        assert_replica(
            port_of(&c, "SELECT inet_server_port()").await,
            "before the pin",
        );
        c.batch_execute(setup).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                port_of(&c, "SELECT inet_server_port()").await,
                primary(),
                "after {what}"
            );
        }
        if what == "a temporary table" {
            c.batch_execute("INSERT INTO scratch VALUES (1)")
                .await
                .unwrap();
            assert_eq!(scalar(&c, "SELECT count(*) FROM scratch").await, "1");
        }
        if what == "SQL PREPARE" {
            assert_eq!(scalar(&c, "EXECUTE q").await, "1");
        }
        let pins: u64 = proxy
            .shared()
            .pins
            .iter()
            .map(|p| p.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        assert_eq!(pins, n as u64 + 1, "each pinned session is counted once");
        // DISCARD ALL drops the state and the pin.
        c.batch_execute("DISCARD ALL").await.unwrap();
        assert_replica(
            port_of(&c, "SELECT inet_server_port()").await,
            &format!("after DISCARD ALL ({what})"),
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn prepared_statements_are_prepared_on_whichever_server_runs_them() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_prepared");
    let c = connect(&proxy, &db).await;
    let read = c
        .prepare("SELECT inet_server_port(), v FROM items WHERE id = $1")
        .await
        .unwrap();
    let write = c
        .prepare("UPDATE items SET v = $2 WHERE id = $1 RETURNING inet_server_port()")
        .await
        .unwrap();
    let mut ports = HashMap::new();
    for i in 0..20 {
        let r = c.query_one(&read, &[&1i32]).await.unwrap();
        let port = r.get::<_, i32>(0) as u16;
        assert_replica(port, "a prepared read");
        *ports.entry(port).or_insert(0) += 1;
        let w = c
            .query_one(&write, &[&2i32, &format!("w{i}")])
            .await
            .unwrap();
        assert_eq!(w.get::<_, i32>(0) as u16, primary());
    }
    assert_eq!(ports.len(), 2, "the read ran on both replicas: {ports:?}");
    // Inside a transaction the read runs on the primary, prepared there too.
    c.batch_execute("BEGIN").await.unwrap();
    let r = c.query_one(&read, &[&2i32]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0) as u16, primary());
    assert_eq!(
        r.get::<_, &str>(1),
        "w19",
        "reads its own transaction's view"
    );
    c.batch_execute("COMMIT").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn user_functions_route_by_volatility() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_functions");
    cluster()
        .psql(
            0,
            &db,
            "CREATE TABLE log (at timestamptz); \
             CREATE FUNCTION log_it() RETURNS int LANGUAGE sql VOLATILE AS $$ INSERT INTO log VALUES (now()) RETURNING 1 $$; \
             CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT $1 * 2 $$; \
             CREATE SCHEMA util; \
             CREATE FUNCTION util.label() RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'label' $$;",
        )
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    let c = connect(&proxy, &db).await;
    // A volatile user function may write: always the primary.
    for _ in 0..3 {
        assert_eq!(
            port_of(&c, "SELECT inet_server_port() + log_it() * 0").await,
            primary()
        );
    }
    // An immutable or stable one is looked up once, then read from replicas.
    for sql in [
        "SELECT inet_server_port() + twice(0)",
        "SELECT inet_server_port() || util.label()",
    ] {
        let on_replica = eventually(Duration::from_secs(10), || async {
            let v = scalar(&c, sql).await;
            let port: u16 = v.trim_end_matches("label").parse().unwrap();
            is_replica(port)
        })
        .await;
        assert!(on_replica, "{sql} never moved to a replica");
    }
    proxy.shutdown().await;
}
