//! Faults one client causes on its own server connection stay with that
//! client: the server is not taken out of service for everyone else.

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
