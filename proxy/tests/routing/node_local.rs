//! Views and functions that describe one server are read on the primary:
//! through pgsplit they describe the database, not whichever standby a
//! balancer picked.

use super::*;

#[tokio::test]
async fn statistics_views_describe_the_primary() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = database_with_items("route_node_local");
    let c = connect(&proxy, &db).await;

    // On a standby this view shows its own WAL receiver; the primary has none.
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM pg_stat_wal_receiver").await,
        "0"
    );
    let hinted = "/* pgsplit:replica */ SELECT count(*) FROM pg_stat_wal_receiver";
    assert_eq!(
        scalar(&c, hinted).await,
        "1",
        "a hint still reads a standby's"
    );
    for sql in [
        "SELECT inet_server_port() FROM pg_stat_activity LIMIT 1",
        "SELECT inet_server_port() FROM pg_catalog.pg_locks LIMIT 1",
        "SELECT inet_server_port() FROM (SELECT * FROM pg_prepared_xacts) x RIGHT JOIN (SELECT 1) y ON true",
        "SELECT inet_server_port(), pg_stat_get_numscans('items'::regclass)",
    ] {
        assert_primary(port_of(&c, sql).await, sql);
    }
    // Extended protocol (Parse/Bind) takes the same route.
    let row = c
        .query_one(
            "SELECT inet_server_port() FROM pg_stat_activity LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_primary(
        row.get::<_, i32>(0) as u16,
        "a prepared read of pg_stat_activity",
    );

    // The table's counters are the primary's, where its rows were written:
    // a standby keeps none (it showed zeros before).
    c.simple_query("INSERT INTO items SELECT g, 'x' FROM generate_series(1000, 1099) g")
        .await
        .unwrap();
    let inserted = "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'items'";
    let counted = eventually(Duration::from_secs(10), || async {
        scalar(&c, inserted).await.parse::<i64>().unwrap() >= 100
    })
    .await;
    assert!(
        counted,
        "pg_stat_user_tables never counted the inserts through pgsplit"
    );
    let on_a_standby = format!("/* pgsplit:replica */ {inserted}");
    assert_eq!(
        scalar(&c, &on_a_standby).await,
        "0",
        "a standby counts no inserts"
    );
    proxy.shutdown().await;
}
