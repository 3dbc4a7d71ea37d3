//! Cancel requests: the real key reaches the server running the query, a forged one nothing.

use super::*;

#[tokio::test]
async fn cancel_reaches_the_server_running_the_query() {
    let proxy = start_proxy().await;
    let db = fresh_database("relay_cancel");
    let client = connect(&proxy, &db).await;
    let bystander = connect(&proxy, &db).await;
    let token = client.cancel_token();

    let started = tokio::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = client
            .batch_execute("SELECT pg_sleep(30) /* on_a_replica */")
            .await;
        (client, r)
    });
    // It is a read, so a replica runs it and the cancel must reach that
    // replica.
    let node = wait_running(&db, "on_a_replica").await;
    assert_ne!(node, 0, "a read should not run on the primary");
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (client, r) = sleeper.await.unwrap();
    assert_eq!(
        sqlstate(&r.unwrap_err()),
        "57014",
        "canceled by user request"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_replica(
        port_of(&client, "SELECT inet_server_port()").await,
        "a read after the cancel",
    );
    bystander.batch_execute("SELECT 1").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn cancel_reaches_the_primary_and_ends_a_transaction_like_postgres() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_cancel_primary");
    cluster().psql(0, &db, "CREATE TABLE t (a int)").unwrap();
    let client = std::sync::Arc::new(connect(&proxy, &db).await);
    let token = client.cancel_token();

    // An autocommit statement on the primary.
    cancel_while_running(
        &client,
        &token,
        &db,
        "/* pgsplit:primary */ SELECT pg_sleep(30) /* hinted */",
        "hinted",
    )
    .await;

    // Inside a transaction: the transaction is aborted, as on PostgreSQL,
    // until ROLLBACK, which undoes what it wrote.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    cancel_while_running(
        &client,
        &token,
        &db,
        "SELECT pg_sleep(30) /* in_a_transaction */",
        "in_a_transaction",
    )
    .await;
    let e = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "the transaction is aborted");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        cluster().psql(0, &db, "SELECT count(*) FROM t").unwrap(),
        "0"
    );
    assert_primary(
        port_of(
            &client,
            "INSERT INTO t VALUES (2) RETURNING inet_server_port()",
        )
        .await,
        "a write after the rollback",
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_forged_cancel_key_cancels_nothing_while_a_query_runs() {
    let proxy = start_proxy().await;
    let db = fresh_database("relay_forged");
    let mut c = RawClient::login(&proxy, &db).await;
    let (pid, secret) = c.key.expect("BackendKeyData at login");
    let mut q = BytesMut::new();
    encode::query(
        &mut q,
        "SELECT pg_sleep(1.5)::text || 'slept' /* forged_target */",
    );
    c.send(&q.split()).await;
    wait_running(&db, "forged_target").await;
    // The right pid with two wrong secrets: forwarded by a proxy that
    // skipped the secret check, either would cancel the sleep at once.
    send_cancel(&proxy, pid, secret.wrapping_add(1)).await;
    send_cancel(&proxy, pid, !secret).await;
    let frames = c.until_ready().await;
    assert_eq!(
        first_error(&frames),
        None,
        "a forged key cancelled the query"
    );
    assert_eq!(data_values(&frames), vec!["slept"]);

    // The real key does cancel: the forged ones were wrong only in the secret.
    encode::query(&mut q, "SELECT pg_sleep(30) /* real_target */");
    c.send(&q.split()).await;
    wait_running(&db, "real_target").await;
    send_cancel(&proxy, pid, secret).await;
    let frames = c.until_ready().await;
    assert_eq!(first_error(&frames).map(|e| e.0), Some("57014".into()));
    proxy.shutdown().await;
}

/// Runs `sql` (marked `marker`) on the primary, cancels it with `token`
/// once it runs there, and checks it ended with 57014.
async fn cancel_while_running(
    client: &std::sync::Arc<tokio_postgres::Client>,
    token: &tokio_postgres::CancelToken,
    db: &str,
    sql: &'static str,
    marker: &str,
) {
    let c = client.clone();
    let sleeper = tokio::spawn(async move { c.batch_execute(sql).await });
    assert_eq!(wait_running(db, marker).await, 0, "{marker} on the primary");
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel stopped the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
}
