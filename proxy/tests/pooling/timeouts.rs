//! PgBouncer's client timeouts: idle transactions give their server
//! connection back, idle clients are let go, and a request nobody can take
//! does not wait forever.

use super::*;

/// A fresh database with table `t` that every role may write.
fn writable_table(name: &str) -> String {
    let db = fresh_database(name);
    cluster()
        .psql(0, &db, "CREATE TABLE t (a int); GRANT ALL ON t TO PUBLIC")
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    db
}

fn count(db: &str) -> String {
    cluster()
        .psql(0, db, "SELECT count(*) FROM t")
        .unwrap()
        .trim()
        .to_owned()
}

/// The first ErrorResponse a raw client gets, and how long after `since`.
async fn fatal_after(c: &mut RawClient, since: Instant) -> ((String, String, String), Duration) {
    let frames = tokio::time::timeout(Duration::from_secs(10), c.until_closed())
        .await
        .expect("the proxy closed the connection");
    (
        first_error(&frames).expect("an ErrorResponse"),
        since.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transactions_are_ended_and_free_their_server_connections() {
    let db = writable_table("timeouts_idle_tx");
    let limit = Duration::from_millis(400);
    let proxy = start_proxy_with(pooled(2, |c| {
        c.timeouts.idle_transaction_timeout = limit;
        c.pool.checkout_timeout = Duration::from_secs(8);
    }))
    .await;
    // Both primary connections held by transactions that then sit idle.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = RawClient::login(&proxy, &db).await;
        c.simple("BEGIN; INSERT INTO t VALUES (1)").await;
        idle.push((c, Instant::now()));
    }
    // A third client's write (the same user: pools are per database and
    // user) gets a connection once they are ended, long before the checkout
    // timeout.
    let mut writer = RawClient::login(&proxy, &db).await;
    let started = Instant::now();
    let reply = writer
        .simple("WITH i AS (INSERT INTO t VALUES (2)) SELECT inet_server_port()")
        .await;
    let port: u16 = data_values(&reply)[0].parse().unwrap();
    assert_primary(port, "the third client's write");
    assert!(
        started.elapsed() < limit + Duration::from_secs(2),
        "the write waited {:?}",
        started.elapsed()
    );
    for (mut c, since) in idle {
        let (e, after) = fatal_after(&mut c, since).await;
        assert_eq!((e.0.as_str(), e.1.as_str()), ("25P03", "FATAL"), "{e:?}");
        assert!(e.2.contains("idle-in-transaction timeout"), "{e:?}");
        assert!(after >= limit, "ended after {after:?}, before {limit:?}");
    }
    // Their inserts were rolled back; the third one's stands.
    assert_eq!(count(&db), "1");
    // A client idle outside a transaction is left alone (that timeout is off).
    let mut quiet = RawClient::login(&proxy, &db).await;
    tokio::time::sleep(limit * 2).await;
    assert_eq!(data_values(&quiet.simple("SELECT 1").await), ["1"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_let_go_and_busy_ones_are_not() {
    let db = writable_table("timeouts_idle_client");
    let limit = Duration::from_millis(400);
    let proxy = start_proxy_with(pooled(2, |c| c.timeouts.client_idle_timeout = limit)).await;
    let mut idle = RawClient::login(&proxy, &db).await;
    let since = Instant::now();
    // One that works in shorter intervals than the limit stays.
    let mut busy = RawClient::login(&proxy, &db).await;
    for _ in 0..6 {
        tokio::time::sleep(limit / 4).await;
        let port: u16 = data_values(&busy.simple("SELECT inet_server_port()").await)[0]
            .parse()
            .unwrap();
        assert_replica(port, "a busy client's read");
    }
    // An idle transaction is the other timeout's business (off here).
    busy.simple("BEGIN; INSERT INTO t VALUES (1)").await;
    tokio::time::sleep(limit * 2).await;
    assert_eq!(command_tags(&busy.simple("COMMIT").await), ["COMMIT"]);
    let (e, after) = fatal_after(&mut idle, since).await;
    assert_eq!((e.0.as_str(), e.1.as_str()), ("57P05", "FATAL"), "{e:?}");
    assert!(after >= limit, "ended after {after:?}, before {limit:?}");
    assert_eq!(count(&db), "1");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_server_takes_within_query_wait_timeout_ends_the_client_unrun() {
    let db = writable_table("timeouts_query_wait");
    let limit = Duration::from_millis(500);
    let proxy = start_proxy_with(pooled(1, |c| {
        c.timeouts.query_wait_timeout = limit;
        c.pool.checkout_timeout = Duration::from_secs(8);
    }))
    .await;
    // The same user as the waiter: pools are per database and user.
    let mut holder = RawClient::login(&proxy, &db).await;
    holder.simple("BEGIN; INSERT INTO t VALUES (1)").await;
    let mut waiter = RawClient::login(&proxy, &db).await;
    let started = Instant::now();
    let mut q = bytes::BytesMut::new();
    pgsplit_protocol::encode::query(&mut q, "INSERT INTO t VALUES (2)");
    waiter.send(&q).await;
    let (e, after) = fatal_after(&mut waiter, started).await;
    assert_eq!((e.0.as_str(), e.1.as_str()), ("57014", "FATAL"), "{e:?}");
    assert!(e.2.contains("query_wait_timeout"), "{e:?}");
    assert!(
        after >= limit && after < limit + Duration::from_secs(2),
        "ended after {after:?} (limit {limit:?}, checkout timeout 8 s)"
    );
    assert_eq!(command_tags(&holder.simple("COMMIT").await), ["COMMIT"]);
    // The waiting INSERT never ran; the pool serves the next client.
    assert_eq!(count(&db), "1");
    let mut next = RawClient::login(&proxy, &db).await;
    next.simple("INSERT INTO t VALUES (3)").await;
    assert_eq!(count(&db), "2");
    proxy.shutdown().await;
}
