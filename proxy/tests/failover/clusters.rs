//! Timelines fence within one cluster only: a server of another cluster
//! gets no traffic, a cluster re-initialized as a whole is followed, and an
//! admin can accept a primary pgsplit would otherwise fence.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use pgsplit_cluster::{Cluster, ClusterOptions};
use pgsplit_config::{Backend, RoleHint};

use crate::common::{conn_string, start_proxy_with, PASSWORD};
use tokio_postgres::Client;

use super::*;

fn backend(name: &str, port: u16, role: RoleHint) -> Backend {
    Backend {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        role,
        ..Backend::default()
    }
}

/// A TCP relay whose target port can be switched; switching ends every
/// relayed connection, as a server restart would.
struct Relay {
    port: u16,
    target: Arc<AtomicU16>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (t, l) = (Arc::clone(&target), Arc::clone(&live));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay { port, target, live }
    }

    fn switch_to(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn proxy_for(x: &Scenario, backends: Vec<Backend>) -> pgsplit::ProxyHandle {
    let mut config = pgsplit::demo::config_for(&x.cluster, "127.0.0.1:0");
    config.backends = backends;
    fast_health(&mut config);
    start_proxy_with(config).await
}

fn admin_conn(proxy: &pgsplit::ProxyHandle) -> String {
    conn_string(proxy, "postgres", PASSWORD, "postgres")
}

#[tokio::test]
async fn timelines_fence_within_one_cluster_and_an_admin_can_accept_a_primary() {
    let x = Scenario::start(|_| {}).await;
    let y = tokio::task::spawn_blocking(|| {
        Cluster::start(ClusterOptions {
            replicas: 1,
            ..ClusterOptions::default()
        })
        .expect("start a second cluster")
    })
    .await
    .unwrap();
    let y = Arc::new(y);
    let (x0, x1, x2, y0, y1) = (x.port(0), x.port(1), x.port(2), y.port(0), y.port(1));

    // 1. A standby of another cluster among this one's servers.
    let mixed = proxy_for(
        &x,
        vec![
            backend("x0", x0, RoleHint::Primary),
            backend("x1", x1, RoleHint::Replica),
            backend("x2", x2, RoleHint::Replica),
            backend("y1", y1, RoleHint::Replica),
        ],
    )
    .await;
    poll_pool_nodes(
        admin_conn(&mixed),
        Duration::from_secs(10),
        "y1 refused".into(),
        |r| role(r, 3) == "other_cluster" && role(r, 0) == "primary" && role(r, 1) == "standby",
    )
    .await;
    let c = connect(&admin_conn(&mixed)).await.unwrap();
    for port in sample_reads(&c, 30).await {
        let port = port.expect("a read");
        assert_ne!(port, y1, "a read was served by another cluster's standby");
    }
    mixed.shutdown().await;

    // 2. X's node 1 promoted (timeline 2): then the server behind one
    // address is re-initialized (another cluster, timeline 1).
    x.cluster_op(|c| {
        c.stop_node(0, StopMode::Fast).unwrap();
        c.promote(1).unwrap();
    })
    .await;
    let relay = Relay::start(x1).await;
    let rebuilt = proxy_for(&x, vec![backend("db", relay.port, RoleHint::Primary)]).await;
    let conn = admin_conn(&rebuilt);
    poll_pool_nodes(
        conn.clone(),
        Duration::from_secs(10),
        "timeline 2".into(),
        |r| role(r, 0) == "primary" && field(r, 0, "timeline") == "2",
    )
    .await;
    relay.switch_to(y0);
    let (took, _) = poll_pool_nodes(
        conn.clone(),
        Duration::from_secs(10),
        "the new cluster followed".into(),
        |r| role(r, 0) == "primary" && field(r, 0, "timeline") == "1",
    )
    .await;
    println!("re-initialized cluster followed after {took:?}");
    let c = connect(&conn).await.unwrap();
    let served = scalar_of(&c, "/* pgsplit:primary */ SELECT inet_server_port()").await;
    assert_eq!(
        served,
        y0.to_string(),
        "the write went to the new cluster's primary"
    );
    rebuilt.shutdown().await;

    // 3. The old timeline-1 primary restarted without a rejoin, the
    // timeline-2 one gone: fenced, until an admin accepts it.
    x.cluster_op(|c| c.start_node(0).unwrap()).await;
    let split = proxy_for(
        &x,
        vec![
            backend("x0", x0, RoleHint::Replica),
            backend("x1", x1, RoleHint::Primary),
        ],
    )
    .await;
    let conn = admin_conn(&split);
    poll_pool_nodes(
        conn.clone(),
        Duration::from_secs(10),
        "x0 fenced".into(),
        |r| role(r, 0) == "stale_primary" && role(r, 1) == "primary",
    )
    .await;
    x.cluster_op(|c| c.stop_node(1, StopMode::Immediate).unwrap())
        .await;
    poll_pool_nodes(
        conn.clone(),
        Duration::from_secs(10),
        "no primary".into(),
        |r| field(r, 1, "pg_status") == "down" && role(r, 0) == "stale_primary",
    )
    .await;
    let c = connect(&conn).await.unwrap();
    c.simple_query("PGSPLIT ACCEPT x0")
        .await
        .expect("PGSPLIT ACCEPT");
    let served = scalar_of(&c, "/* pgsplit:primary */ SELECT inet_server_port()").await;
    assert_eq!(served, x0.to_string(), "writes go to the accepted primary");
    // Only a server that says it is primary can be accepted.
    let e = c.simple_query("PGSPLIT ACCEPT x1").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("55000"), "{e:?}");
    split.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || drop(y)).await;
    x.finish().await;
}

async fn scalar_of(c: &Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.expect(sql);
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}
