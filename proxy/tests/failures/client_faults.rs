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
            .simple_query("/* pgsplit:replica */ SELECT pg_terminate_backend(pg_backend_pid())")
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
pub(super) async fn cutting_relay(target: u16) -> (u16, Arc<AtomicUsize>) {
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

pub(super) const CUT: &str = "relay: cut this connection";

/// Sends reads carrying [`CUT`] until the relay has cut `until` in all.
async fn cut_connections(proxy: &pgsplit::ProxyHandle, cuts: &AtomicUsize, until: usize) {
    let c = connect(proxy, "postgres").await;
    let sql = format!("SELECT '{CUT}'");
    // Paced, and bounded by time rather than a count: after two cuts the
    // replica is skipped until its health check passes, and back-to-back
    // reads could all go by before that on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cuts.load(Ordering::SeqCst) >= until {
            return;
        }
        // A read nothing of which reached the client is retried on the
        // other replica, so the client sees no error.
        c.simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("the cut read was not retried: {e}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
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
