//! Python's psycopg 3 (server-side prepared statements) and asyncpg (which
//! prepares everything) through pgsplit: reads on replicas, writes on the
//! primary, no errors. The script checks every placement itself.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_route_reads_and_writes() {
    let proxy = start_proxy_with(routing_only()).await;
    let db = fresh_database("drivers_py");
    let a = proxy.local_addr();
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@{}:{}/{db}",
        a.ip(),
        a.port()
    );
    let replicas = format!("{},{}", cluster().port(1), cluster().port(2));
    let primary = cluster().port(0).to_string();
    python_script("drivers.py", vec![dsn, primary, replicas], "drivers ok").await;
    // The proxy's own counters agree: both replicas served reads.
    assert!(proxy.shared().stats(1).reads > 0 && proxy.shared().stats(2).reads > 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_tasks_per_driver_over_a_pool_of_five() {
    let mut config = routing_only();
    config.pool.pool_size = 5;
    let proxy = start_proxy_with(config).await;
    let db = fresh_database("drivers_pool");
    let a = proxy.local_addr();
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@{}:{}/{db}",
        a.ip(),
        a.port()
    );
    let primary = cluster().port(0).to_string();
    python_script("pool.py", vec![dsn, primary], "pool ok").await;
    for i in 0..3 {
        assert!(
            proxy
                .shared()
                .pools
                .open_connections(pgsplit::topology::BackendId::nth(i))
                <= 5,
            "node {i}"
        );
    }
    proxy.shutdown().await;
}
