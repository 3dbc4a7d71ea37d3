//! Settings are replayed as the values in effect, not as the client's
//! SET text: a SET that changes part of a value (DateStyle) or a SET LOCAL
//! in between must not leave a replica with another value than the
//! primary's connection has.

use super::*;

/// What a read sees: DateStyle, a date, default_transaction_isolation,
/// work_mem, and the port of the server that ran it.
const SEEN: &str = "SELECT current_setting('DateStyle'), '1999-01-08'::date::text, \
     current_setting('default_transaction_isolation'), current_setting('work_mem'), \
     inet_server_port()::text";

async fn seen(c: &tokio_postgres::Client) -> (Vec<String>, u16) {
    let r = row(c, SEEN).await;
    let port = r[4].parse().unwrap();
    (r[..4].to_vec(), port)
}

/// Four reads, spread over both replicas (fresh or shared connections,
/// each brought to the session's settings): all must see `want`.
async fn every_replica_sees(c: &tokio_postgres::Client, want: [&str; 4], what: &str) {
    for _ in 0..4 {
        let (values, port) = seen(c).await;
        assert_replica(port, what);
        assert_eq!(values, want, "{what}, on {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_local_settings_replay_as_their_effective_values() {
    let proxy = start_proxy_with(shared_pools(2)).await;
    let db = fresh_database("pool_effective");
    // The client starts in Postgres style (PGDATESTYLE='Postgres, MDY').
    let mut config: tokio_postgres::Config = conn_string(&proxy, "postgres", PASSWORD, &db)
        .parse()
        .unwrap();
    config.options("-c DateStyle=Postgres,MDY");
    let (c, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    every_replica_sees(
        &c,
        ["Postgres, MDY", "01-08-1999", "read committed", "4MB"],
        "at start",
    )
    .await;

    // The second SET changes only the field order: ISO output stays.
    c.batch_execute("SET datestyle TO iso").await.unwrap();
    c.batch_execute("SET datestyle TO ymd").await.unwrap();
    c.batch_execute("SET default_transaction_isolation TO 'repeatable read'")
        .await
        .unwrap();
    c.batch_execute("SET work_mem = '8MB'").await.unwrap();
    let now = ["ISO, YMD", "1999-01-08", "repeatable read", "8MB"];
    every_replica_sees(&c, now, "after partial SETs").await;

    // SET LOCAL and a rolled-back SET leave nothing behind.
    c.batch_execute("BEGIN; SET LOCAL datestyle TO 'German'; COMMIT")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET datestyle TO 'SQL, DMY'")
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    every_replica_sees(&c, now, "after SET LOCAL and a rollback").await;

    // RESET ALL returns to the startup values, not the servers' defaults.
    c.batch_execute("RESET ALL").await.unwrap();
    every_replica_sees(
        &c,
        ["Postgres, MDY", "01-08-1999", "read committed", "4MB"],
        "after RESET ALL",
    )
    .await;

    // A custom setting stays defined (empty) after RESET, as on a direct
    // connection, on replica connections that never saw it set.
    c.batch_execute("SET custom.my_guc = 42").await.unwrap();
    c.batch_execute("RESET custom.my_guc").await.unwrap();
    for _ in 0..4 {
        let r = row(
            &c,
            "SELECT current_setting('custom.my_guc'), inet_server_port()",
        )
        .await;
        assert_replica(
            r[1].parse().unwrap(),
            "a read after RESET of a custom setting",
        );
        assert_eq!(r[0], "", "on {}", r[1]);
    }

    // FROM CURRENT takes the value of wherever it runs: not replayable, so
    // the session stays on its primary connection.
    c.batch_execute("SET work_mem FROM CURRENT").await.unwrap();
    let (_, port) = seen(&c).await;
    assert_primary(port, "a read after SET ... FROM CURRENT");
    proxy.shutdown().await;
}
