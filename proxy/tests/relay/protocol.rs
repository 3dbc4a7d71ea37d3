//! Queries, pipelines, COPY, errors and notifications relayed.

use super::*;

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

/// A bulk insert as psycopg sends it, with more than 32 767 parameters
/// (the protocol's counts are unsigned, up to 65 535): pgsplit once read
/// the Parse's count as signed and dropped the connection.
#[tokio::test]
async fn a_statement_with_40_000_parameters_is_prepared_and_run() {
    const ROWS: usize = 20_000;
    let proxy = start_proxy().await;
    let db = fresh_database("relay_many_params");
    let grant = format!(
        "CREATE TABLE wide (a int, b int); GRANT ALL ON wide TO {}",
        pgsplit_cluster::TRUST_USER
    );
    cluster().psql(0, &db, &grant).unwrap();
    let values: Vec<String> = (0..ROWS)
        .map(|r| format!("(${}, ${})", 2 * r + 1, 2 * r + 2))
        .collect();
    let sql = format!("INSERT INTO wide VALUES {}", values.join(", "));
    let texts: Vec<String> = (0..2 * ROWS).map(|i| i.to_string()).collect();
    let params: Vec<Option<&[u8]>> = texts.iter().map(|t| Some(t.as_bytes())).collect();
    let mut c = RawClient::login(&proxy, &db).await;
    let mut out = BytesMut::new();
    encode::parse(&mut out, "bulk", &sql, &vec![23; 2 * ROWS]);
    encode::bind(&mut out, "", "bulk", &params);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    c.send(&out).await;
    let frames = c.until_ready().await;
    assert_eq!(first_error(&frames), None);
    let count = cluster().psql(0, &db, "SELECT count(*) FROM wide").unwrap();
    assert_eq!(count.trim(), ROWS.to_string(), "every row on the primary");
    proxy.shutdown().await;
}
