//! Flow control: a slow client, and portals read a few rows at a time.

use super::*;

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
