//! Load balancing: weights, strategies, primary_reads, unreachable replicas, metrics.

use super::*;

#[tokio::test]
async fn load_balancing_follows_the_weights() {
    for (weights, low, high) in [((1, 1), 0.45, 0.55), ((1, 3), 0.20, 0.30)] {
        let proxy = start_proxy_with(config_with(|c| {
            c.backends[1].weight = weights.0;
            c.backends[2].weight = weights.1;
        }))
        .await;
        let c = connect(&proxy, "postgres").await;
        let mut counts: HashMap<u16, u32> = HashMap::new();
        for _ in 0..300 {
            *counts
                .entry(port_of(&c, "SELECT inet_server_port()").await)
                .or_default() += 1;
        }
        assert_eq!(
            counts.get(&primary()),
            None,
            "no read on the primary: {counts:?}"
        );
        let share = *counts.get(&cluster().port(1)).unwrap_or(&0) as f64 / 300.0;
        assert!(
            (low..=high).contains(&share),
            "weights {weights:?}: replica 1 got {share} ({counts:?})"
        );
        // The per-backend counters saw the same.
        let s1 = proxy.shared().stats(1);
        let s2 = proxy.shared().stats(2);
        assert!(s1.reads + s2.reads >= 300, "{s1:?} {s2:?}");
        assert_eq!(s1.writes + s2.writes, 0);
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn primary_reads_and_strategies() {
    let proxy = start_proxy_with(config_with(|c| {
        c.routing.primary_reads = pgsplit_config::PrimaryReads::On;
    }))
    .await;
    let c = connect(&proxy, "postgres").await;
    let mut counts: HashMap<u16, u32> = HashMap::new();
    for _ in 0..90 {
        *counts
            .entry(port_of(&c, "SELECT inet_server_port()").await)
            .or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        3,
        "primary_reads = on makes the primary a reader: {counts:?}"
    );
    proxy.shutdown().await;

    for strategy in [
        pgsplit_config::Strategy::LeastConnections,
        pgsplit_config::Strategy::Random,
    ] {
        let proxy = start_proxy_with(config_with(|c| c.routing.strategy = strategy)).await;
        let c = connect(&proxy, "postgres").await;
        let mut counts: HashMap<u16, u32> = HashMap::new();
        for _ in 0..60 {
            *counts
                .entry(port_of(&c, "SELECT inet_server_port()").await)
                .or_default() += 1;
        }
        assert!(
            counts.keys().all(|&p| is_replica(p)),
            "{strategy:?}: {counts:?}"
        );
        assert_eq!(
            counts.len(),
            2,
            "{strategy:?} used both replicas: {counts:?}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn weight_zero_and_an_unreachable_replica() {
    // A replica with weight 0 never gets reads; a dead one is skipped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = start_proxy_with(config_with(|c| {
        c.backends[1].weight = 0;
        c.backends[2].port = dead;
    }))
    .await;
    let c = connect(&proxy, "postgres").await;
    for _ in 0..5 {
        assert_eq!(
            port_of(&c, "SELECT inet_server_port()").await,
            primary(),
            "falls back to the primary"
        );
    }
    proxy.shutdown().await;

    let proxy = start_proxy_with(config_with(|c| {
        c.backends[1].port = dead;
        c.backends[2].port = dead;
        c.routing.primary_reads = pgsplit_config::PrimaryReads::Off;
    }))
    .await;
    let c = connect(&proxy, "postgres").await;
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57P03");
    // The session survives the refusal and writes still work.
    assert_eq!(
        port_of(&c, "/* pgsplit:primary */ SELECT inet_server_port()").await,
        primary()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_are_served_for_prometheus() {
    let proxy = start_proxy_with(config_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".into());
    }))
    .await;
    let c = connect(&proxy, "postgres").await;
    for _ in 0..10 {
        assert_replica(port_of(&c, "SELECT inet_server_port()").await, "a read");
    }
    c.batch_execute("CREATE TEMP TABLE pinned_here (a int)")
        .await
        .unwrap();
    let fetch = || metrics_page(&proxy);
    // The position loop reads the primary's WAL position within moments.
    let ready = eventually(Duration::from_secs(10), || async {
        !fetch()
            .await
            .contains("pgsplit_wal_position_bytes{backend=\"primary\"} 0\n")
    })
    .await;
    assert!(ready, "the primary's WAL position was never read");
    let page = fetch().await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let value = |line_start: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{page}"))
    };
    let reads = value("pgsplit_reads_total{backend=\"replica1\"}")
        + value("pgsplit_reads_total{backend=\"replica2\"}");
    assert!(reads >= 10, "{reads} reads counted");
    assert!(value("pgsplit_writes_total{backend=\"primary\"}") >= 1);
    assert_eq!(
        value("pgsplit_pinned_sessions_total{reason=\"unmovable_state\"}"),
        1
    );
    assert_eq!(value("pgsplit_client_connections"), 1);
    assert!(
        value("pgsplit_wal_position_bytes{backend=\"primary\"}") > 0,
        "positions are read"
    );
    proxy.shutdown().await;
}
