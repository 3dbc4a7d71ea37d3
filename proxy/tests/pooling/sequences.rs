//! `currval()` and `lastval()` through transaction pooling: the pool keeps
//! the connection a session wrote on for it while the pool has room, so its
//! `currval()` sees its own `nextval()`; when the pool is full and another
//! client takes it, PostgreSQL's 55000 "not yet defined in this session" —
//! never the value of another client that shared the connection.

use super::*;

/// A database with `t (id serial, who text)` and a second sequence `other`.
fn sequence_database(name: &str) -> String {
    let db = fresh_database(name);
    let sql = "CREATE TABLE t (id serial PRIMARY KEY, who text); CREATE SEQUENCE other";
    cluster().psql(0, &db, sql).unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
    db
}

async fn error_of(c: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let e = c.simple_query(sql).await.expect_err(sql);
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currval_answers_for_this_session_or_fails_loudly() {
    // One server connection per backend: every client shares it.
    let proxy = start_proxy_with(pooled(1, |_| {})).await;
    let db = sequence_database("pool_sequences");
    let a = connect(&proxy, &db).await;
    let b = connect(&proxy, &db).await;

    // The ORM pattern: an INSERT whose default calls nextval, then currval.
    a.simple_query("INSERT INTO t (who) VALUES ('a')")
        .await
        .unwrap();
    let a_id = scalar(&a, "SELECT currval('t_id_seq')").await;
    assert_eq!(a_id, scalar(&a, "SELECT id FROM t WHERE who = 'a'").await);
    assert_eq!(scalar(&a, "SELECT lastval()").await, a_id);
    // Again after a read, which runs elsewhere and changes nothing.
    assert_eq!(scalar(&a, "SELECT count(*) FROM t").await, "1");
    assert_eq!(scalar(&a, "SELECT currval('t_id_seq')").await, a_id);

    // Another client's write takes the connection: a's currval no longer
    // has its own answer there, and must not return b's.
    b.simple_query("INSERT INTO t (who) VALUES ('b')")
        .await
        .unwrap();
    let (code, message) = error_of(&a, "SELECT currval('t_id_seq')").await;
    assert_eq!(code, "55000", "{message}");
    assert!(
        message.contains("not yet defined in this session"),
        "{message}"
    );
    // b's own, though, was cleared by a's currval taking the connection.
    let (code, _) = error_of(&b, "SELECT currval('t_id_seq')").await;
    assert_eq!(code, "55000");
    b.simple_query("INSERT INTO t (who) VALUES ('b1')")
        .await
        .unwrap();
    let b_id = scalar(&b, "SELECT currval('t_id_seq')").await;
    assert_eq!(b_id, scalar(&b, "SELECT id FROM t WHERE who = 'b1'").await);
    assert_ne!(a_id, b_id);

    // a used sequence `other` on the connection, then b wrote there: b's
    // currval of `other` is PostgreSQL's "not yet defined", not a's value.
    let a_other = scalar(&a, "SELECT nextval('other')").await;
    assert_eq!(scalar(&a, "SELECT currval('other')").await, a_other);
    b.simple_query("INSERT INTO t (who) VALUES ('b2')")
        .await
        .unwrap();
    let (code, message) = error_of(&b, "SELECT currval('other')").await;
    assert_eq!(code, "55000", "{message}");
    assert!(
        message.contains("not yet defined in this session"),
        "{message}"
    );

    // In one transaction it always works, whoever came between.
    let tx = "BEGIN; INSERT INTO t (who) VALUES ('a2'); SELECT currval('t_id_seq') = \
              (SELECT id FROM t WHERE who = 'a2'); COMMIT";
    let rows = a.simple_query(tx).await.unwrap();
    let same = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(same.as_deref(), Some("t"));
    proxy.shutdown().await;
}

/// Clients interleaving their writes never take each other's connection
/// while the pool has room: every currval() is its own session's, on the
/// server process that ran its INSERT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_a_writers_connection_for_its_currval() {
    let proxy = start_proxy_with(pooled(4, |_| {})).await;
    let db = sequence_database("pool_sequences_kept");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&proxy, &db).await);
    }
    for round in 0..5 {
        let mut inserted = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let sql = format!(
                "INSERT INTO t (who) VALUES ('{i}/{round}') RETURNING id, pg_backend_pid()"
            );
            let rows = c.simple_query(&sql).await.unwrap();
            inserted.push(first_row(&rows));
        }
        // Between a write and its currval(), the other clients write too,
        // and read (on a replica).
        for (c, (id, pid)) in clients.iter().zip(&inserted) {
            assert_eq!(scalar(c, "SELECT count(*) >= 0 FROM t").await, "t");
            let rows = c
                .simple_query("SELECT currval('t_id_seq'), pg_backend_pid()")
                .await
                .unwrap();
            assert_eq!(
                &first_row(&rows),
                &(id.clone(), pid.clone()),
                "round {round}"
            );
            assert_eq!(scalar(c, "SELECT lastval()").await, *id);
        }
    }
    proxy.shutdown().await;
}

fn first_row(messages: &[tokio_postgres::SimpleQueryMessage]) -> (String, String) {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0)?.to_owned(), r.get(1)?.to_owned()))
            }
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_keeps_currval_as_a_direct_connection_does() {
    let proxy = start_proxy_with(pooled(2, |c| {
        c.pool.mode = pgsplit_config::PoolMode::Session
    }))
    .await;
    let db = sequence_database("pool_sequences_session");
    let a = connect(&proxy, &db).await;
    let b = connect(&proxy, &db).await;
    a.simple_query("INSERT INTO t (who) VALUES ('a')")
        .await
        .unwrap();
    b.simple_query("INSERT INTO t (who) VALUES ('b')")
        .await
        .unwrap();
    let a_id = scalar(&a, "SELECT id FROM t WHERE who = 'a'").await;
    assert_eq!(scalar(&a, "SELECT currval('t_id_seq')").await, a_id);
    assert_eq!(scalar(&a, "SELECT lastval()").await, a_id);
    proxy.shutdown().await;
}
