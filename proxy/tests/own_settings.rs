//! pgsplit's own session settings (`pgsplit.read_your_writes`,
//! `pgsplit.max_replica_lag`) over the extended protocol, as psycopg 3,
//! JDBC and tokio-postgres send them: answered by pgsplit, never by a
//! server, with the same effect as over the simple protocol.

mod common;

use common::*;
use pgsplit::ProxyHandle;
use pgsplit_config::ReadYourWrites as Mode;

/// The first column of an extended-protocol query, as text.
async fn extended_text(c: &tokio_postgres::Client, sql: &str) -> String {
    let row = c
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    row.get::<_, String>(0)
}

/// A proxy configured with read-your-writes off, and a session on a
/// fresh database with a table `t`.
async fn session_with_table(name: &str) -> (ProxyHandle, tokio_postgres::Client) {
    let db = fresh_database(name);
    let mut cfg = config();
    cfg.routing.read_your_writes = Mode::Off;
    let proxy = start_proxy_with(cfg).await;
    let c = connect(&proxy, &db).await;
    c.simple_query("CREATE TABLE t (id int)").await.unwrap();
    (proxy, c)
}

#[tokio::test]
async fn set_show_and_reset_of_pgsplit_settings_work_over_the_extended_protocol() {
    let (proxy, c) = session_with_table("own_extended").await;
    let primary = cluster().port(0);

    assert_eq!(
        extended_text(&c, "SHOW pgsplit.read_your_writes").await,
        "off"
    );
    c.execute("SET pgsplit.read_your_writes = 'session'", &[])
        .await
        .unwrap();
    assert_eq!(
        extended_text(&c, "SHOW pgsplit.read_your_writes").await,
        "session"
    );
    // In force, not just remembered: after a write, session mode keeps
    // every read on the primary (with "off" they would go to replicas).
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    for _ in 0..4 {
        assert_eq!(
            read_port(&c, false).await.unwrap(),
            primary,
            "session mode after a write"
        );
    }
    // RESET returns to the configured mode: reads leave the primary.
    c.execute("RESET pgsplit.read_your_writes", &[])
        .await
        .unwrap();
    assert_eq!(
        extended_text(&c, "SHOW pgsplit.read_your_writes").await,
        "off"
    );
    assert!(
        is_replica(read_port(&c, false).await.unwrap()),
        "off again after RESET"
    );

    // An invalid value is refused, and the mode stays.
    let e = c
        .execute("SET pgsplit.read_your_writes = 'sometimes'", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
    assert_eq!(
        extended_text(&c, "SHOW pgsplit.read_your_writes").await,
        "off"
    );

    // The lag limit, the same way.
    c.execute("SET pgsplit.max_replica_lag = '250ms'", &[])
        .await
        .unwrap();
    assert!(extended_text(&c, "SHOW pgsplit.max_replica_lag")
        .await
        .starts_with("250ms"));
    let e = c
        .execute("SET pgsplit.max_replica_lag = 'soon'", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
    proxy.shutdown().await;
}

#[tokio::test]
async fn pgsplit_settings_inside_a_transaction_are_answered_by_pgsplit() {
    let (proxy, c) = session_with_table("own_in_tx").await;
    let primary = cluster().port(0);
    c.simple_query("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // A server would take this as a custom setting and leave the mode alone.
    c.simple_query("SET pgsplit.read_your_writes = 'session'")
        .await
        .unwrap();
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!(scalar(&c, "SHOW pgsplit.read_your_writes").await, "session");
    assert_eq!(
        port_of(&c, "SELECT inet_server_port()").await,
        primary,
        "session mode, applied inside the transaction, after its write"
    );
    proxy.shutdown().await;
}
