//! Faults one client causes on its own server connection stay with that
//! client: the server is not taken out of service for everyone else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

/// Reads from another client while `fault` runs: every one must succeed on
/// a replica, and both replicas must keep serving (a server penalized for
/// the fault would get none for about 2 s).
async fn observe_while<F: std::future::Future<Output = ()>>(
    proxy: &pgsplit::ProxyHandle,
    fault: F,
) {
    let observer = connect(proxy, "postgres").await;
    fault.await;
    let started = Instant::now();
    let mut nodes = std::collections::HashSet::new();
    for i in 0..20 {
        let t = Instant::now();
        let port = read_port(&observer, true)
            .await
            .unwrap_or_else(|e| panic!("read {i} of another client failed: {e}"));
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "read {i} of another client waited {:?}",
            t.elapsed()
        );
        assert_replica(port, "another client's read");
        nodes.insert(port);
    }
    assert_eq!(
        nodes.len(),
        2,
        "both replicas kept serving within {:?} of the fault",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unknown_message_type_is_refused_by_pgsplit_and_penalizes_no_server() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("faults_unknown");
    observe_while(&proxy, async {
        let mut c = RawClient::login(&proxy, &db).await;
        c.send(b"z\0\0\0\x04").await;
        let frames = c.until_closed().await;
        let e = first_error(&frames).expect("an ErrorResponse");
        assert_eq!((e.0.as_str(), e.1.as_str()), ("08P01", "FATAL"), "{e:?}");
        assert!(e.2.contains("invalid frontend message type 122"), "{e:?}");
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_terminating_its_own_backend_penalizes_no_server() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("faults_terminate");
    let c = connect(&proxy, &db).await;
    observe_while(&proxy, async {
        // A read: retried once elsewhere (it returned nothing), where it
        // terminates that backend too; the client then hears of it.
        let e = c
            .simple_query("SELECT pg_terminate_backend(pg_backend_pid())")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "08006", "{e:?}");
        // On the primary, hinted.
        let e = c
            .simple_query("/* pgsplit:primary */ SELECT pg_terminate_backend(pg_backend_pid())")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "08006", "{e:?}");
    })
    .await;
    // The client goes on, and so does the primary for others.
    assert_replica(
        read_port(&c, true).await.unwrap(),
        "the terminating client's next read",
    );
    let t = Instant::now();
    let other = connect(&proxy, "postgres").await;
    assert_primary(
        port_of(&other, "/* pgsplit:primary */ SELECT inet_server_port()").await,
        "another client's write",
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "the write waited {:?}",
        t.elapsed()
    );
    proxy.shutdown().await;
}

/// A TCP relay to `target` that closes a connection (FIN both ways, no
/// error from any server) when a query carrying [`CUT`] passes through it,
/// so a session loses its server connection silently. Counts the cuts.
async fn cutting_relay(target: u16) -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cuts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&cuts);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let cuts = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                let (mut ci, mut co) = inbound.into_split();
                let (mut si, mut so) = outbound.into_split();
                let upstream = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match ci.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if buf[..n].windows(CUT.len()).any(|w| w == CUT.as_bytes()) {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        if so.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let downstream = tokio::io::copy(&mut si, &mut co);
                // Whichever side ends first ends the relayed connection.
                tokio::select! {
                    _ = upstream => {}
                    _ = downstream => {}
                }
            });
        }
    });
    (port, cuts)
}

const CUT: &str = "relay: cut this connection";

/// Sends reads carrying [`CUT`] until the relay has cut `until` in all.
async fn cut_connections(proxy: &pgsplit::ProxyHandle, cuts: &AtomicUsize, until: usize) {
    let c = connect(proxy, "postgres").await;
    let sql = format!("SELECT '{CUT}'");
    for _ in 0..50 {
        if cuts.load(Ordering::SeqCst) >= until {
            return;
        }
        // A read nothing of which reached the client is retried on the
        // other replica, so the client sees no error.
        c.simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("the cut read was not retried: {e}"));
    }
    panic!("the relay cut {} connections", cuts.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_silent_loss_on_one_session_penalizes_no_server_and_a_passing_check_ends_a_penalty() {
    let mut config = routing_only();
    let (relay, cuts) = cutting_relay(config.backends[1].port).await;
    config.backends[1].port = relay;
    let proxy = start_proxy_with(config).await;
    // One connection lost without a word: the server is spared.
    observe_while(&proxy, cut_connections(&proxy, &cuts, 1)).await;
    // Two in a row: sessions skip it until a health check on a fresh
    // connection passes, which is far sooner than the 2 s retry delay.
    cut_connections(&proxy, &cuts, 3).await;
    let observer = connect(&proxy, "postgres").await;
    let back = time_until(Duration::from_secs(5), || async {
        read_port(&observer, true).await.ok() == Some(cluster().nodes()[1].port)
    })
    .await
    .expect("replica 1 serves again");
    assert!(
        back < Duration::from_secs(1),
        "replica 1 was skipped for {back:?} although its health check passed"
    );
    proxy.shutdown().await;
}

/// The first `sent` bytes of a simple Query of `len` bytes in all:
/// `SELECT length('xx...x')`.
fn big_query(len: usize, sent: usize) -> Vec<u8> {
    let head = b"SELECT length('";
    let tail = b"')\0";
    let mut out = Vec::with_capacity(sent);
    out.push(b'Q');
    out.extend_from_slice(&((len - 1) as u32).to_be_bytes());
    out.extend_from_slice(head);
    let body = len - 5 - head.len() - tail.len();
    out.resize(out.len() + body, b'x');
    out.extend_from_slice(tail);
    out.truncate(sent);
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
    // One client is halfway through a 40 MiB message...
    let mut first = RawClient::login(&proxy, &db).await;
    first.send(&big_query(len, 30 << 20)).await;
    let covered = eventually(Duration::from_secs(10), || async {
        metric(&metrics_page(&proxy).await, "pgsplit_client_buffer_bytes")
            >= (len - (64 << 10)) as u64
    })
    .await;
    assert!(covered, "the half-sent message was never counted");
    // ...so a second one that size does not fit: that client alone is told.
    let mut second = RawClient::login(&proxy, &db).await;
    let e = send_while_reading(&mut second, &big_query(len, len))
        .await
        .expect("an ErrorResponse");
    assert_eq!((e.0.as_str(), e.1.as_str()), ("53200", "FATAL"), "{e:?}");
    still_serving(&proxy).await;
    // The first one finishes its message and gets its answer.
    first.send(&big_query(len, len)[30 << 20..]).await;
    let frames = first.until_ready().await;
    let n: usize = data_values(&frames)[0].parse().unwrap();
    assert_eq!(n, len - 5 - "SELECT length('".len() - "')\0".len());
    // Its memory is given back: the same message now fits for anyone.
    let freed = eventually(Duration::from_secs(5), || async {
        metric(&metrics_page(&proxy).await, "pgsplit_client_buffer_bytes") == 0
    })
    .await;
    assert!(freed, "the budget was not given back");
    let mut third = RawClient::login(&proxy, &db).await;
    third.send(&big_query(len, len)).await;
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

#[tokio::test]
async fn a_copy_data_message_larger_than_the_budget_is_passed_through_unbuffered() {
    let mut config = routing_only();
    config.limits.client_buffer_budget = 16 << 20;
    config.metrics_listen = Some("127.0.0.1:0".into());
    let proxy = start_proxy_with(config).await;
    let db = fresh_database("faults_copy_stream");
    cluster()
        .psql(
            0,
            &db,
            "CREATE TABLE big (v text); GRANT ALL ON big TO PUBLIC",
        )
        .unwrap();
    cluster().wait_for_replay(Duration::from_secs(30)).unwrap();
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
    let mut most = 0;
    for piece in msg.chunks(4 << 20) {
        c.send(piece).await;
        most = most.max(metric(
            &metrics_page(&proxy).await,
            "pgsplit_client_buffer_bytes",
        ));
    }
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
