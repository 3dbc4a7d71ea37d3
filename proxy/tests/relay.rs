//! The proxy relays every part of the protocol to the primary, against a real
//! cluster: simple and extended queries, pipelines, COPY, errors, cancel and
//! NOTIFY. Each assertion checks which server answered, not just that
//! something did.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use futures::{SinkExt, StreamExt, TryStreamExt};
use pgsplit_protocol::encode;

#[tokio::test]
async fn simple_and_extended_queries_reach_the_right_servers() {
    // Routing alone: read-your-writes would keep the reads that follow the
    // hinted primary statement on the primary for a moment.
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_basic");
    let client = connect(&proxy, &db).await;

    let rows = client
        .simple_query(
            "/* pgsplit:primary */ SELECT inet_server_port()::text, pg_is_in_recovery()::text",
        )
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("one row");
    assert_primary(row.get(0).unwrap().parse().unwrap(), "a hinted read");
    assert_eq!(row.get(1), Some("false"));

    // tokio-postgres sends parameterised queries through Parse/Bind/Execute.
    let row = client
        .query_one(
            "SELECT $1::int + 1, inet_server_port(), pg_is_in_recovery()",
            &[&41i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_replica(row.get::<_, i32>(1) as u16, "an extended-protocol read");
    assert!(row.get::<_, bool>(2), "a read runs on a standby");

    client
        .batch_execute("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    // The replicas have the rows too, whatever read-your-writes mode applies.
    cluster()
        .wait_for_replay(std::time::Duration::from_secs(30))
        .unwrap();
    let stmt = client
        .prepare("SELECT v FROM t WHERE id = $1")
        .await
        .unwrap();
    for _ in 0..3 {
        let row = client.query_one(&stmt, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, &str>(0), "a");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn pipelined_extended_batches_keep_their_order() {
    let proxy = start_proxy().await;
    let db = fresh_database("relay_pipeline");
    let mut c = RawClient::login(&proxy, &db).await;

    // Three Parse/Bind/Execute triples before one Sync, then a second batch
    // with its own Sync, all in a single write.
    let mut out = BytesMut::new();
    for i in 1..=3 {
        encode::parse(&mut out, "", &format!("SELECT {i} * 10"), &[]);
        encode::bind(&mut out, "", "", &[]);
        encode::execute(&mut out, "", 0);
    }
    encode::sync(&mut out);
    encode::parse(
        &mut out,
        "named",
        "SELECT $1::int + inet_server_port() * 0",
        &[],
    );
    encode::bind(&mut out, "", "named", &[Some(b"7")]);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    c.send(&out).await;

    let first = c.until_ready().await;
    let tags: String = first.iter().map(|f| f.tag() as char).collect();
    assert_eq!(tags, "12DC12DC12DCZ", "responses of the first batch");
    assert_eq!(data_values(&first), vec!["10", "20", "30"]);
    let second = c.until_ready().await;
    assert_eq!(data_values(&second), vec!["7"]);

    // An error mid-pipeline skips to the Sync, and the next batch still runs.
    let mut out = BytesMut::new();
    encode::parse(&mut out, "", "SELECT 1/0", &[]);
    encode::bind(&mut out, "", "", &[]);
    encode::execute(&mut out, "", 0);
    encode::parse(&mut out, "", "SELECT 'skipped'", &[]);
    encode::bind(&mut out, "", "", &[]);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    encode::query(&mut out, "SELECT 'after'");
    c.send(&out).await;
    let failed = c.until_ready().await;
    assert_eq!(first_error(&failed).unwrap().0, "22012");
    assert!(data_values(&failed).is_empty());
    let after = c.until_ready().await;
    assert_eq!(data_values(&after), vec!["after"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn copy_in_and_out_round_trip() {
    let proxy = start_proxy().await;
    let db = fresh_database("relay_copy");
    let client = connect(&proxy, &db).await;
    client
        .batch_execute("CREATE TABLE c (id int, payload text)")
        .await
        .unwrap();

    let mut expected = String::new();
    for i in 0..20_000 {
        expected.push_str(&format!("{i}\trow number {i} {}\n", "x".repeat(i % 50)));
    }
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    // Several CopyData messages of uneven sizes.
    for chunk in expected.as_bytes().chunks(7_777) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 20_000);

    let out: Vec<bytes::Bytes> = client
        .copy_out("/* pgsplit:primary */ COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let got: Vec<u8> = out.concat();
    assert_eq!(String::from_utf8(got).unwrap(), expected);

    // A COPY the client aborts leaves the session usable.
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY c FROM STDIN")
        .await
        .unwrap();
    drop(sink);
    let n: i64 = client
        .query_one("/* pgsplit:primary */ SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20_000);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_error_inside_a_transaction_then_rollback() {
    let proxy = start_proxy().await;
    let db = fresh_database("relay_txerr");
    let client = connect(&proxy, &db).await;
    client
        .batch_execute("CREATE TABLE r (id int)")
        .await
        .unwrap();

    client
        .batch_execute("BEGIN; INSERT INTO r VALUES (1)")
        .await
        .unwrap();
    let e = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    let e = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "the transaction is aborted");
    client.batch_execute("ROLLBACK").await.unwrap();

    let n: i64 = client
        .query_one("/* pgsplit:primary */ SELECT count(*) FROM r", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the rolled-back insert is gone");
    // An error outside a transaction does not disturb the next statement.
    assert_eq!(
        sqlstate(&client.batch_execute("SELEC 1").await.unwrap_err()),
        "42601"
    );
    client
        .batch_execute("INSERT INTO r VALUES (2)")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("/* pgsplit:primary */ SELECT count(*) FROM r", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    proxy.shutdown().await;
}

/// The node on which a statement of `db` whose text contains `marker` is
/// running right now, if any.
fn running_on(db: &str, marker: &str) -> Option<usize> {
    (0..3).find(|&i| {
        cluster()
            .psql(
                i,
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                     AND state = 'active' AND query LIKE '%{marker}%' \
                     AND pid <> pg_backend_pid()"
                ),
            )
            .map(|n| n == "1")
            .unwrap_or(false)
    })
}

/// Polls until a statement marked `marker` runs; the node running it.
async fn wait_running(db: &str, marker: &str) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (d, m) = (db.to_owned(), marker.to_owned());
        if let Some(node) = tokio::task::spawn_blocking(move || running_on(&d, &m))
            .await
            .unwrap()
        {
            return node;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{marker} never showed up in pg_stat_activity"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_cancel(proxy: &pgsplit::ProxyHandle, pid: i32, secret: i32) {
    let mut raw = RawClient::connect(proxy).await;
    let mut out = BytesMut::new();
    encode::cancel_request(&mut out, pid, secret);
    raw.send(&out).await;
    // As PostgreSQL does, the proxy answers nothing and closes.
    assert!(raw.until_closed().await.is_empty());
}

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
    let c = client.clone();
    let sleeper = tokio::spawn(async move {
        c.batch_execute("/* pgsplit:primary */ SELECT pg_sleep(30) /* hinted */")
            .await
    });
    assert_eq!(
        wait_running(&db, "hinted").await,
        0,
        "hinted to the primary"
    );
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel stopped the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014");

    // Inside a transaction: the transaction is aborted, as on PostgreSQL,
    // until ROLLBACK, which undoes what it wrote.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let c = client.clone();
    let sleeper = tokio::spawn(async move {
        c.batch_execute("SELECT pg_sleep(30) /* in_a_transaction */")
            .await
    });
    assert_eq!(
        wait_running(&db, "in_a_transaction").await,
        0,
        "the transaction's server"
    );
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel stopped the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
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

#[tokio::test]
async fn notifications_are_delivered_to_listeners() {
    let proxy = start_proxy().await;
    let db = fresh_database("relay_notify");
    let (listener, mut conn) = tokio_postgres::connect(
        &conn_string(&proxy, "postgres", PASSWORD, &db),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();

    let sender = connect(&proxy, &db).await;
    sender.batch_execute("NOTIFY jobs, 'first'").await.unwrap();
    sender
        .batch_execute("SELECT pg_notify('jobs', 'second')")
        .await
        .unwrap();

    // The listener is idle: the proxy must forward without a request in flight.
    for expected in ["first", "second"] {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("notification within 10s")
            .unwrap();
        assert_eq!(got, ("jobs".to_owned(), expected.to_owned()));
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn copy_to_stdout_is_served_by_a_replica() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_copy_out");
    cluster()
        .psql(0, &db, "CREATE TABLE c AS SELECT g AS id FROM generate_series(1, 1000) g; GRANT SELECT ON c TO trustuser")
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    let client = connect(&proxy, &db).await;
    let copy = |sql: &'static str| {
        let client = &client;
        async move {
            let chunks: Vec<bytes::Bytes> = client
                .copy_out(sql)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            String::from_utf8(chunks.concat()).unwrap()
        }
    };
    for _ in 0..2 {
        let port = copy("COPY (SELECT inet_server_port()) TO STDOUT").await;
        assert_replica(port.trim().parse().unwrap(), "COPY (SELECT ...) TO STDOUT");
    }
    // A table's COPY names no function to ask: the per-backend counters
    // say who served it. Over the simple protocol, so the one request is
    // the COPY alone (a driver adds a Parse/Describe and a Close).
    let mut raw = RawClient::login(&proxy, &db).await;
    let stats = |i| proxy.shared().stats(i);
    let before = [stats(0), stats(1), stats(2)];
    let mut q = BytesMut::new();
    encode::query(&mut q, "COPY c TO STDOUT");
    raw.send(&q).await;
    let frames = raw.until_ready().await;
    let after = [stats(0), stats(1), stats(2)];
    assert_eq!(first_error(&frames), None);
    assert_eq!(frames.iter().filter(|f| f.tag() == b'd').count(), 1000);
    assert_eq!(
        after[0].routed, before[0].routed,
        "COPY c TO STDOUT touched the primary"
    );
    assert_eq!(
        after[1].reads + after[2].reads,
        before[1].reads + before[2].reads + 1,
        "COPY c TO STDOUT was not one read on a replica"
    );
    proxy.shutdown().await;
}

/// Resident memory of this process (the proxy runs in it), in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Whether the statement marked `marker` is blocked writing its result on
/// node `i`: the proxy stopped reading it.
fn blocked_in_client_write(i: usize, db: &str, marker: &str) -> bool {
    cluster()
        .psql(
            i,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state = 'active' \
                 AND wait_event = 'ClientWrite' AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
            ),
        )
        .unwrap()
        == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_holds_back_the_server_not_the_proxys_memory() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_backpressure");
    const ROWS: usize = 32_000;
    const WIDTH: usize = 2_000; // 64 MB of rows: more than any socket buffers.
    let before = rss();
    let mut slow = RawClient::login(&proxy, &db).await;
    let mut q = BytesMut::new();
    encode::query(
        &mut q,
        &format!("SELECT lpad(g::text, {WIDTH}, '.') FROM generate_series(1, {ROWS}) g /* slow_reader */"),
    );
    slow.send(&q).await;
    // The client reads nothing: the server must end up blocked writing to
    // the proxy, rather than the proxy reading the whole result into memory.
    let node = wait_running(&db, "slow_reader").await;
    assert_ne!(node, 0, "a read on the primary");
    let db2 = db.clone();
    let blocked = eventually(Duration::from_secs(10), || {
        let db = db2.clone();
        async move {
            tokio::task::spawn_blocking(move || blocked_in_client_write(node, &db, "slow_reader"))
                .await
                .unwrap()
        }
    })
    .await;
    assert!(blocked, "the server never waited for the proxy to read");
    // Time passing is the point: the stall holds while the client reads nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let db2 = db.clone();
    let still =
        tokio::task::spawn_blocking(move || blocked_in_client_write(node, &db2, "slow_reader"));
    assert!(
        still.await.unwrap(),
        "the server finished a result nobody read"
    );
    let grown = rss().saturating_sub(before);
    println!(
        "backpressure: the process grew by {} kB while a 64 MB result was unread",
        grown / 1024
    );
    assert!(
        grown < 24 << 20,
        "the proxy buffered {} MB of an unread result",
        grown >> 20
    );

    // Meanwhile others are served as usual.
    let other = connect(&proxy, &db).await;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        assert_replica(
            read_port(&other, false).await.unwrap(),
            "a read beside the slow client",
        );
    }
    assert_primary(
        port_of(&other, "/* pgsplit:primary */ SELECT inet_server_port()").await,
        "a hinted read beside the slow client",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "others waited {:?}",
        started.elapsed()
    );

    // Then the slow client reads it all, paced: complete and in order.
    let mut n = 0;
    loop {
        let f = slow.recv().await.expect("the result was cut short");
        match f.tag() {
            b'D' => {
                n += 1;
                let v = data_values(std::slice::from_ref(&f)).swap_remove(0);
                assert_eq!(v.len(), WIDTH);
                assert_eq!(
                    v.trim_start_matches('.'),
                    n.to_string(),
                    "row {n} out of order"
                );
                if n % 2_000 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            b'Z' => break,
            b'E' => panic!("error mid-result: {:?}", first_error(&[f])),
            _ => {}
        }
    }
    assert_eq!(n, ROWS);
    proxy.shutdown().await;
}

/// Frames up to and including the first with `tag`.
async fn until_tag(c: &mut RawClient, tag: u8) -> Vec<pgsplit_protocol::Frame> {
    let mut frames = Vec::new();
    while let Some(f) = c.recv().await {
        let done = f.tag() == tag;
        frames.push(f);
        if done {
            return frames;
        }
    }
    panic!("closed before {}: {frames:?}", tag as char);
}

fn tags(frames: &[pgsplit_protocol::Frame]) -> String {
    frames.iter().map(|f| f.tag() as char).collect()
}

#[tokio::test]
async fn row_limited_execute_suspends_the_portal_and_resumes_it() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_portal");
    // Raw: Execute with max_rows and Flush, no Sync until the end.
    let mut c = RawClient::login(&proxy, &db).await;
    let mut out = BytesMut::new();
    encode::parse(
        &mut out,
        "",
        "SELECT g::text || ',' || inet_server_port() FROM generate_series(1, 10) g",
        &[],
    );
    encode::bind(&mut out, "", "", &[]);
    encode::execute(&mut out, "", 3);
    encode::flush(&mut out);
    c.send(&out.split()).await;
    let mut got = Vec::new();
    let first = until_tag(&mut c, b's').await;
    assert_eq!(tags(&first), "12DDDs", "PortalSuspended after 3 rows");
    got.extend(data_values(&first));
    encode::execute(&mut out, "", 3);
    encode::flush(&mut out);
    c.send(&out.split()).await;
    let second = until_tag(&mut c, b's').await;
    assert_eq!(tags(&second), "DDDs");
    got.extend(data_values(&second));
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    c.send(&out.split()).await;
    let rest = c.until_ready().await;
    assert_eq!(tags(&rest), "DDDDCZ", "the rest, then the end");
    got.extend(data_values(&rest));
    let (values, ports): (Vec<String>, Vec<String>) = got
        .iter()
        .map(|v| {
            let (a, b) = v.split_once(',').unwrap();
            (a.to_owned(), b.to_owned())
        })
        .unzip();
    assert_eq!(values, (1..=10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_replica(ports[0].parse().unwrap(), "a suspended read");
    assert!(
        ports.iter().all(|p| *p == ports[0]),
        "one portal, one server: {ports:?}"
    );

    // A driver's portal in a transaction, fetched 4 rows at a time.
    let mut client = connect(&proxy, &db).await;
    let tx = client.transaction().await.unwrap();
    let portal = tx
        .bind(
            "SELECT g, inet_server_port() FROM generate_series(1, 10) g",
            &[],
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 4).await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 4, "{} rows for max_rows 4", rows.len());
        for r in rows {
            assert_primary(r.get::<_, i32>(1) as u16, "a read in a transaction");
            got.push(r.get::<_, i32>(0));
        }
    }
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    tx.commit().await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_latin1_client_round_trips_accents_and_is_still_routed() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_latin1");
    cluster()
        .psql(
            0,
            &db,
            "CREATE TABLE words (w text); GRANT ALL ON words TO trustuser",
        )
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    let mut c = RawClient::login_with(&proxy, &db, &[("client_encoding", "LATIN1")]).await;
    // 'café' in LATIN1: é is the single byte 0xE9, invalid as UTF-8.
    c.query_bytes(b"INSERT INTO words VALUES ('caf\xe9') RETURNING inet_server_port()::text")
        .await;
    let frames = c.until_ready().await;
    assert_eq!(first_error(&frames), None);
    assert_primary(
        String::from_utf8(data_rows(&frames)[0][0].clone())
            .unwrap()
            .parse()
            .unwrap(),
        "a LATIN1 INSERT",
    );
    // The server converted it: stored as UTF-8.
    assert_eq!(
        cluster().psql(0, &db, "SELECT w FROM words").unwrap(),
        "café"
    );
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    // Read back on both replicas, in LATIN1 again.
    let mut ports = std::collections::HashSet::new();
    for _ in 0..4 {
        let (row, port) = latin1_read(
            &mut c,
            b"SELECT w, length(w)::text, current_setting('client_encoding'), \
              inet_server_port()::text FROM words WHERE w LIKE 'caf_'",
        )
        .await;
        assert_eq!(row[0], b"caf\xe9", "sent back in LATIN1");
        assert_eq!(row[1], b"4");
        assert_eq!(row[2], b"LATIN1");
        assert_replica(port, "a LATIN1 read");
        ports.insert(port);
    }
    assert_eq!(ports.len(), 2, "both replicas served the LATIN1 session");
    proxy.shutdown().await;
}

/// Runs a one-row read whose last column is `inet_server_port()::text`;
/// the row's raw columns and the port.
async fn latin1_read(c: &mut RawClient, sql: &[u8]) -> (Vec<Vec<u8>>, u16) {
    c.query_bytes(sql).await;
    let frames = c.until_ready().await;
    assert_eq!(first_error(&frames), None);
    let mut rows = data_rows(&frames);
    assert_eq!(rows.len(), 1, "one row: {rows:?}");
    let row = rows.swap_remove(0);
    let port = String::from_utf8(row.last().unwrap().clone())
        .unwrap()
        .parse()
        .unwrap();
    (row, port)
}

#[tokio::test]
#[ignore = "bug: a read whose query text has a non-UTF-8 byte (a LATIN1 client's 'é') is routed to the primary"]
async fn a_latin1_read_with_an_accent_in_its_text_goes_to_a_replica() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_latin1_text");
    cluster()
        .psql(0, &db, "CREATE TABLE words (w text); INSERT INTO words VALUES ('café'); GRANT ALL ON words TO trustuser")
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    let mut c = RawClient::login_with(&proxy, &db, &[("client_encoding", "LATIN1")]).await;
    for _ in 0..2 {
        let (row, port) = latin1_read(
            &mut c,
            b"SELECT w, inet_server_port()::text FROM words WHERE w = 'caf\xe9'",
        )
        .await;
        assert_eq!(row[0], b"caf\xe9");
        assert_replica(port, "a read with a LATIN1 literal");
    }
    proxy.shutdown().await;
}

#[tokio::test]
#[ignore = "bug: a SET whose text is not valid UTF-8 (a LATIN1 client's 'é') is not recorded, so it is never replayed on other servers"]
async fn a_latin1_sessions_accented_set_follows_it_to_the_replicas() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_latin1_set");
    let mut c = RawClient::login_with(&proxy, &db, &[("client_encoding", "LATIN1")]).await;
    c.query_bytes(b"SET application_name = 'caf\xe9'").await;
    assert_eq!(first_error(&c.until_ready().await), None);
    for _ in 0..2 {
        let (row, port) = latin1_read(
            &mut c,
            b"SELECT current_setting('application_name'), inet_server_port()::text",
        )
        .await;
        assert_replica(port, "a read after the SET");
        assert_eq!(
            row[0], b"caf\xe9",
            "the SET did not follow the session to {port}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
#[ignore = "bug: a statement whose text is not valid UTF-8 records no session effects, so a temporary table made by one does not pin the session"]
async fn a_latin1_sessions_temp_table_made_with_an_accent_pins_it() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("relay_latin1_pin");
    let mut c = RawClient::login_with(&proxy, &db, &[("client_encoding", "LATIN1")]).await;
    c.query_bytes(b"CREATE TEMP TABLE scratch AS SELECT 'caf\xe9'::text AS w")
        .await;
    assert_eq!(first_error(&c.until_ready().await), None);
    for _ in 0..2 {
        c.query_bytes(b"SELECT w, inet_server_port()::text FROM scratch")
            .await;
        let frames = c.until_ready().await;
        assert_eq!(
            first_error(&frames),
            None,
            "the temporary table was not where the read went"
        );
        let row = data_rows(&frames).swap_remove(0);
        assert_primary(
            String::from_utf8(row[1].clone()).unwrap().parse().unwrap(),
            "a read of the temporary table",
        );
        assert_eq!(row[0], b"caf\xe9");
    }
    proxy.shutdown().await;
}
