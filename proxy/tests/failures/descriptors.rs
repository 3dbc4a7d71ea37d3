//! Sockets that never log in count against the client limit, and cannot
//! starve server connections of file descriptors.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::binary::Binary;
use super::*;

/// `n` sockets that connect and then say nothing.
async fn silent_sockets(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

#[tokio::test]
async fn silent_sockets_count_against_the_client_limit_and_a_cancel_still_gets_through() {
    let mut config = config();
    config.limits.max_client_connections = 3;
    let proxy = start_proxy_with(config).await;
    // A session running a long query, then the limit filled with sockets
    // that never send a startup packet.
    let busy = connect(&proxy, "postgres").await;
    let token = busy.cancel_token();
    let running = tokio::spawn(async move {
        busy.simple_query("/* pgsplit:primary */ SELECT pg_sleep(30)")
            .await
            .map(|_| ())
    });
    let _silent = silent_sockets(proxy.local_addr(), 2).await;
    let started = Instant::now();
    let e = connect_as(&proxy, "postgres", PASSWORD, "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53300", "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Over the limit, a CancelRequest is still served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the cancel reached the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn silent_sockets_cannot_take_the_descriptors_server_connections_need() {
    let db = fresh_database("descriptors_flood");
    // 256 descriptors: a few score clients fit after the server side's share.
    let pgsplit = Binary::start("[pool]\npool_size = 5\n", Some(256)).await;
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname={db}",
        pgsplit.addr.port()
    );
    let early = connect_str(&conn).await;
    // More silent sockets than the process has descriptors.
    let flood = silent_sockets(pgsplit.addr, 300).await;
    // The session that was in goes on, on new server connections to every
    // node (its reads had not used a replica yet).
    let mut replicas = std::collections::HashSet::new();
    for _ in 0..4 {
        let port = read_port(&early, true)
            .await
            .expect("a read during the flood");
        assert_replica(port, "a read during the flood");
        replicas.insert(port);
    }
    assert_eq!(replicas.len(), 2, "both replicas kept serving");
    assert_primary(
        port_of(&early, "/* pgsplit:primary */ SELECT inet_server_port()").await,
        "a write during the flood",
    );
    // A new client is turned away at once, not left to time out.
    let started = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(5), connect_str_result(&conn)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "a client over the limit was not refused promptly"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(flood);
    let back = eventually(Duration::from_secs(10), || async {
        connect_str_result(&conn).await.is_ok()
    })
    .await;
    assert!(back, "clients were not served again after the flood");
    let log = pgsplit.stop();
    assert!(
        log.contains("limits.max_client_connections = 10000"),
        "no warning about the lowered client limit:\n{log}"
    );
    assert!(
        !log.contains("unreachable") && !log.contains("health check failed"),
        "a server was blamed for the local shortage:\n{log}"
    );
    assert!(
        log.matches("accept failed").count() <= 2,
        "accept errors are not rate-limited:\n{log}"
    );
}

async fn connect_str_result(conn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn connect_str(conn: &str) -> tokio_postgres::Client {
    connect_str_result(conn)
        .await
        .expect("connect through pgsplit")
}
