//! Large client messages: those pgsplit must hold whole share one memory
//! budget (the client over it is refused, no one else), and COPY data,
//! Queries and Binds are passed to their server as they arrive, so their
//! size costs no memory at all.

use super::*;

const HEAD: &[u8] = b"SELECT length('";
const TAIL: &[u8] = b"')\0";

/// The first `sent` bytes of an unnamed Parse of `len` bytes in all, of
/// `SELECT length('xx...x')`; and the length it will return.
fn big_parse(len: usize, sent: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(sent);
    out.push(b'P');
    out.extend_from_slice(&((len - 1) as u32).to_be_bytes());
    out.push(0);
    out.extend_from_slice(HEAD);
    let xs = len - out.len() - TAIL.len() - 2;
    out.resize(out.len() + xs, b'x');
    out.extend_from_slice(TAIL);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.truncate(sent);
    (out, xs)
}

/// Bind, Execute and Sync of the unnamed statement.
fn run_unnamed() -> BytesMut {
    let mut out = BytesMut::new();
    encode::bind(&mut out, "", "", &[]);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    out
}

#[tokio::test]
async fn large_messages_share_one_memory_budget_and_only_the_one_over_it_is_refused() {
    let mut config = routing_only();
    config.limits.client_buffer_budget = 64 << 20;
    config.metrics_listen = Some("127.0.0.1:0".into());
    let proxy = start_proxy_with(config).await;
    let db = fresh_database("faults_budget");
    let len = 40 << 20;
    // One client is halfway through a 40 MiB Parse (held whole: pgsplit
    // keeps every statement to prepare it on other connections)...
    let mut first = RawClient::login(&proxy, &db).await;
    let (message, xs) = big_parse(len, len);
    first.send(&message[..30 << 20]).await;
    let covered = eventually(Duration::from_secs(10), || async {
        metric(&metrics_page(&proxy).await, "pgsplit_client_buffer_bytes")
            >= (len - (64 << 10)) as u64
    })
    .await;
    assert!(covered, "the half-sent message was never counted");
    // ...so a second one that size does not fit: that client alone is told.
    let mut second = RawClient::login(&proxy, &db).await;
    let e = send_while_reading(&mut second, &message)
        .await
        .expect("an ErrorResponse");
    assert_eq!((e.0.as_str(), e.1.as_str()), ("53200", "FATAL"), "{e:?}");
    still_serving(&proxy).await;
    // The first one finishes its message and gets its answer.
    first.send(&message[30 << 20..]).await;
    first.send(&run_unnamed()).await;
    let frames = first.until_ready().await;
    assert_eq!(
        data_values(&frames),
        [xs.to_string()],
        "{:?}",
        first_error(&frames)
    );
    // Its memory is given back: the same message now fits for anyone.
    let freed = eventually(Duration::from_secs(5), || async {
        metric(&metrics_page(&proxy).await, "pgsplit_client_buffer_bytes") == 0
    })
    .await;
    assert!(freed, "the budget was not given back");
    let mut third = RawClient::login(&proxy, &db).await;
    third.send(&message).await;
    third.send(&run_unnamed()).await;
    assert_eq!(data_values(&third.until_ready().await).len(), 1);
    proxy.shutdown().await;
}

/// Sends `bytes` while reading whatever comes back until the proxy closes;
/// the first error in it. (The proxy may answer before all is sent.)
async fn send_while_reading(c: &mut RawClient, bytes: &[u8]) -> Option<(String, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = c.stream.split();
    let write = async {
        let _ = w.write_all(bytes).await;
    };
    let mut got = Vec::new();
    let read = r.read_to_end(&mut got);
    let (_, _) = tokio::join!(write, read);
    let mut buf = bytes::BytesMut::from(&got[..]);
    let mut frames = Vec::new();
    while let Ok(Some(f)) =
        pgsplit_protocol::split_frame(&mut buf, pgsplit_protocol::Direction::Backend, 1 << 20)
    {
        frames.push(f);
    }
    first_error(&frames)
}

/// A proxy whose buffer budget (16 MiB) is smaller than the messages the
/// tests send: one that were held whole would be refused with 53200.
async fn small_budget_proxy() -> pgsplit::ProxyHandle {
    let mut config = routing_only();
    config.limits.client_buffer_budget = 16 << 20;
    config.metrics_listen = Some("127.0.0.1:0".into());
    start_proxy_with(config).await
}

/// Sends `message` a few MiB at a time; the most the budget held meanwhile.
async fn send_in_pieces(c: &mut RawClient, proxy: &pgsplit::ProxyHandle, message: &[u8]) -> u64 {
    let mut most = 0;
    for piece in message.chunks(4 << 20) {
        c.send(piece).await;
        most = most.max(metric(
            &metrics_page(proxy).await,
            "pgsplit_client_buffer_bytes",
        ));
    }
    most
}

fn big_table(db: &str) {
    cluster()
        .psql(
            0,
            db,
            "CREATE TABLE big (v text); GRANT ALL ON big TO PUBLIC",
        )
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
}

#[tokio::test]
async fn a_copy_data_message_larger_than_the_budget_is_passed_through_unbuffered() {
    let proxy = small_budget_proxy().await;
    let db = fresh_database("faults_copy_stream");
    big_table(&db);
    let mut c = RawClient::login(&proxy, &db).await;
    let mut q = BytesMut::new();
    encode::query(&mut q, "COPY big FROM STDIN");
    c.send(&q).await;
    let started = c.recv().await.expect("CopyInResponse");
    assert_eq!(started.tag(), b'G', "{started:?}");
    // One CopyData of 64 MiB (four times the budget): a single row.
    let row = 64 << 20;
    let mut msg = Vec::with_capacity(row + 6);
    msg.push(b'd');
    msg.extend_from_slice(&((row + 1 + 4) as u32).to_be_bytes());
    msg.resize(5 + row, b'x');
    msg.push(b'\n');
    let most = send_in_pieces(&mut c, &proxy, &msg).await;
    let mut done = BytesMut::new();
    encode::copy_done(&mut done);
    c.send(&done).await;
    let frames = c.until_ready().await;
    assert_eq!(command_tags(&frames), ["COPY 1"], "{frames:?}");
    assert_eq!(most, 0, "the message was buffered against the budget");
    let stored = cluster().psql(0, &db, "SELECT length(v) FROM big").unwrap();
    assert_eq!(
        stored.trim(),
        row.to_string(),
        "the row reached the primary whole"
    );
    proxy.shutdown().await;
}

/// A simple Query of `len` bytes in all: `{head}xx...x{tail}`.
fn big_query(len: usize, head: &str, tail: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.push(b'Q');
    out.extend_from_slice(&((len - 1) as u32).to_be_bytes());
    out.extend_from_slice(head.as_bytes());
    out.resize(len - tail.len() - 1, b'x');
    out.extend_from_slice(tail.as_bytes());
    out.push(0);
    out
}

#[tokio::test]
async fn a_query_larger_than_the_budget_goes_to_the_primary_unbuffered_and_keeps_its_connection() {
    let proxy = small_budget_proxy().await;
    let db = fresh_database("faults_query_stream");
    big_table(&db);
    let pinned = "pgsplit_pinned_sessions_total{reason=\"unread_query\"}";
    let pins_before = metric(&metrics_page(&proxy).await, pinned);
    let mut c = RawClient::login(&proxy, &db).await;
    // A 40 MiB INSERT, and a read behind it in the same write.
    let len = 40 << 20;
    let mut message = big_query(
        len,
        "INSERT INTO big VALUES ('",
        "') RETURNING length(v), inet_server_port()",
    );
    let mut read = BytesMut::new();
    encode::query(&mut read, "SELECT inet_server_port()");
    message.extend_from_slice(&read);
    let most = send_in_pieces(&mut c, &proxy, &message).await;
    let frames = c.until_ready().await;
    let rows = data_rows(&frames);
    assert_eq!(rows.len(), 1, "{:?}", first_error(&frames));
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let xs = len
        - 5
        - "INSERT INTO big VALUES ('".len()
        - "') RETURNING length(v), inet_server_port()".len()
        - 1;
    assert_eq!(text(&rows[0][0]), xs.to_string());
    assert_primary(text(&rows[0][1]).parse().unwrap(), "the large INSERT");
    assert_eq!(most, 0, "the query was buffered against the budget");
    // What it did to the session is unknown, so the session stays on that
    // connection: the read behind it, and the next one, are on the primary.
    let port = data_values(&c.until_ready().await)[0].parse().unwrap();
    assert_primary(port, "the read queued behind the large query");
    let port = data_values(&c.simple("SELECT inet_server_port()").await)[0]
        .parse()
        .unwrap();
    assert_primary(port, "a later read of the same session");
    assert_eq!(metric(&metrics_page(&proxy).await, pinned), pins_before + 1);
    still_serving(&proxy).await;
    proxy.shutdown().await;
}

/// A Bind of `statement` with one text parameter of `len` bytes.
fn big_bind(statement: &str, len: usize) -> Vec<u8> {
    let param = vec![b'y'; len];
    let mut out = BytesMut::new();
    encode::bind(&mut out, "", statement, &[Some(&param)]);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    out.to_vec()
}

#[tokio::test]
async fn a_bind_larger_than_the_budget_is_passed_through_and_routed_by_its_statement() {
    let proxy = small_budget_proxy().await;
    let db = fresh_database("faults_bind_stream");
    big_table(&db);
    let len = 40 << 20;
    let mut c = RawClient::login(&proxy, &db).await;
    let mut out = BytesMut::new();
    // A named read (renamed on the server), a named write, and the unnamed
    // statement (sent as it is).
    encode::parse(
        &mut out,
        "r",
        "SELECT length($1::text), inet_server_port()",
        &[],
    );
    encode::parse(
        &mut out,
        "w",
        "INSERT INTO big VALUES ($1) RETURNING length(v), inet_server_port()",
        &[],
    );
    encode::sync(&mut out);
    c.send(&out).await;
    c.until_ready().await;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let mut unnamed = BytesMut::new();
    encode::parse(
        &mut unnamed,
        "",
        "SELECT length($1::text), inet_server_port()",
        &[],
    );
    unnamed.extend_from_slice(&big_bind("", len));
    // Reads first: after the write, read-your-writes may send reads to the
    // primary until a replica has replayed it.
    let cases = [
        ("r", big_bind("r", len), false),
        ("unnamed", unnamed.to_vec(), false),
        ("w", big_bind("w", len), true),
    ];
    for (statement, message, write) in cases {
        let most = send_in_pieces(&mut c, &proxy, &message).await;
        let frames = c.until_ready().await;
        let rows = data_rows(&frames);
        assert_eq!(rows.len(), 1, "{statement}: {:?}", first_error(&frames));
        assert_eq!(text(&rows[0][0]), len.to_string());
        let port = text(&rows[0][1]).parse().unwrap();
        if write {
            assert_primary(port, "the large Bind of an INSERT");
        } else {
            assert_replica(port, "the large Bind of a SELECT");
            // None of it pinned the session: a small read goes to a replica.
            let port = data_values(&c.simple("SELECT inet_server_port()").await)[0]
                .parse()
                .unwrap();
            assert_replica(port, "a read after a large Bind");
        }
        assert_eq!(most, 0, "{statement}: buffered against the budget");
    }
    let stored = cluster().psql(0, &db, "SELECT length(v) FROM big").unwrap();
    assert_eq!(
        stored.trim(),
        len.to_string(),
        "the row reached the primary"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_server_lost_while_a_large_bind_passes_fails_that_request_alone() {
    let mut config = routing_only();
    config.limits.client_buffer_budget = 16 << 20;
    // Reads go to replica 1 only, through a relay that cuts the connection
    // when it sees the marker pass.
    config.backends.truncate(2);
    let (relay, cuts) = super::client_faults::cutting_relay(config.backends[1].port).await;
    config.backends[1].port = relay;
    let proxy = start_proxy_with(config).await;
    let db = fresh_database("faults_bind_lost");
    let mut c = RawClient::login(&proxy, &db).await;
    let mut message = BytesMut::new();
    encode::parse(&mut message, "", "SELECT length($1::text)", &[]);
    let mut param = vec![b'y'; 24 << 20];
    // Several times, so that one is whole in some read of the relay.
    for at in [8 << 20, (8 << 20) + 100_000, (8 << 20) + 200_000] {
        param[at..at + CUT_LEN].copy_from_slice(super::client_faults::CUT.as_bytes());
    }
    encode::bind(&mut message, "", "", &[Some(&param)]);
    encode::execute(&mut message, "", 0);
    encode::sync(&mut message);
    c.send(&message).await;
    let frames = c.until_ready().await;
    assert_eq!(
        cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the relay never cut"
    );
    let e = first_error(&frames).expect("an ErrorResponse");
    // Half of it was sent: it cannot be sent again elsewhere.
    assert_eq!(e.0, "08006", "{e:?}");
    // The session goes on, and so does everyone else.
    let frames = c.simple("SELECT 1").await;
    assert_eq!(data_values(&frames), ["1"], "{:?}", first_error(&frames));
    let other = connect(&proxy, &db).await;
    assert_eq!(scalar(&other, "SELECT 2").await, "2");
    proxy.shutdown().await;
}

const CUT_LEN: usize = super::client_faults::CUT.len();
