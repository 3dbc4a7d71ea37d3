//! A server that stops answering without closing its connections (packets
//! dropped: a partition, a frozen host) must not hang the sessions waiting
//! on it. The drop is real: nftables in a network namespace of the test's
//! own, so nothing outside it is touched.

use std::process::Command;

use super::*;

const IN_NETNS: &str = "PGSPLIT_TEST_IN_NETNS";
const TABLE: &str = "pgsplit_partition";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_server_releases_the_sessions_waiting_on_it() {
    if std::env::var_os(IN_NETNS).is_some() {
        partitioned().await;
        return unnoticed_by_the_health_loop().await;
    }
    let name = format!("pgsplit-test-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["netns", "add", &name]);
    ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
    let exe = std::env::current_exe().unwrap();
    let name2 = name.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args(["netns", "exec", &name2])
            .arg(exe)
            .args([
                "partition::a_partitioned_server_releases_the_sessions_waiting_on_it",
                "--exact",
                "--nocapture",
            ])
            .env(IN_NETNS, "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    ip(&["netns", "del", &name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the test in its own network namespace failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nft(rules: &str) {
    let out = Command::new("nft").arg(rules).output().expect("run nft");
    assert!(
        out.status.success(),
        "nft {rules}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Drops every packet to and from `port` on loopback.
fn drop_port(port: u16) {
    nft(&format!("add table inet {TABLE}"));
    nft(&format!(
        "add chain inet {TABLE} out {{ type filter hook output priority 0 ; }}"
    ));
    nft(&format!("add rule inet {TABLE} out tcp dport {port} drop"));
    nft(&format!("add rule inet {TABLE} out tcp sport {port} drop"));
}

fn heal() {
    nft(&format!("delete table inet {TABLE}"));
}

/// Every attempt in flight at `cut` ended within `bound` of it.
fn released_within(attempts: &[Attempt], cut: Instant, bound: Duration, what: &str) -> usize {
    let in_flight: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.sent <= cut && a.done > cut)
        .collect();
    for a in &in_flight {
        assert!(
            a.done - cut <= bound,
            "{what}: a session waited {:?} after the partition (bound {bound:?}): {a:?}",
            a.done - cut
        );
    }
    in_flight.len()
}

async fn partitioned() {
    let s = Scenario::start(|c| {
        c.health.health_check_timeout = Duration::from_millis(500);
    })
    .await;
    let h = &s.config.health;
    // The health loop needs `max_retries` checks that each time out.
    let bound = s.config.routing.position_interval
        + (h.health_check_timeout + h.health_check_period) * h.health_check_max_retries
        + Duration::from_secs(1);
    let (p0, p1) = (s.port(0), s.port(1));

    // A replica goes silent while reads are in flight on it.
    let readers = spawn_slow_readers(s.conn_string(), 4, Duration::from_millis(300));
    sleep(Duration::from_secs(1)).await;
    let cut = Instant::now();
    drop_port(p1);
    s.wait_pool_nodes("replica1 down", |r| field(r, 1, "pg_status") == "down")
        .await;
    // Reads go on past the bound (detection may come well before it), so
    // some must be served by the other replica after it.
    let past_bound = cut + bound + Duration::from_millis(500);
    sleep(
        past_bound
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1)),
    )
    .await;
    let reads = readers.stop().await.attempts;
    heal();
    let in_flight = released_within(&reads, cut, bound, "reads");
    let failed = failures(&reads);
    println!(
        "partition of a replica: {in_flight} reads were in flight on the replicas, {} reads in all, {} failed, bound {bound:?}",
        reads.len(),
        failed.len()
    );
    assert!(in_flight > 0, "no read was in flight at the partition");
    assert!(failed.is_empty(), "reads failed: {}", show(&failed));
    assert!(
        reads
            .iter()
            .any(|a| a.done > cut + bound && a.result == Ok(s.port(2))),
        "reads did not go on on the other replica"
    );
    s.wait_pool_nodes("replica1 back", |r| field(r, 1, "pg_status") == "up")
        .await;

    // The primary goes silent while writes are in flight on it.
    let writers = spawn_slow_writers(s.conn_string(), 2, Duration::from_millis(300));
    sleep(Duration::from_secs(1)).await;
    let cut = Instant::now();
    drop_port(p0);
    s.wait_pool_nodes("primary down", |r| field(r, 0, "pg_status") == "down")
        .await;
    heal();
    s.wait_pool_nodes("the primary back", |r| {
        field(r, 0, "pg_status") == "up" && role(r, 0) == "primary"
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    let writes = writers.stop().await.attempts;
    let in_flight = released_within(&writes, cut, bound, "writes");
    for a in writes.iter().filter(|a| a.sent <= cut && a.done > cut) {
        if let Err(e) = &a.result {
            assert!(e.contains("08006"), "{a:?}");
        }
    }
    println!("partition of the primary: {in_flight} writes in flight, each ended within {bound:?}");
    assert!(in_flight > 0, "no write was in flight at the partition");
    assert!(
        writes.iter().any(|a| a.sent > cut && a.result == Ok(p0)),
        "writes did not resume on the primary after the partition healed"
    );
    s.finish().await;
}

/// The same partitions with a health loop that would take over a minute to
/// notice them: each session's own server socket bounds its wait for a
/// reply that never starts (keepalive once nothing is unacknowledged,
/// `TCP_USER_TIMEOUT` while something is), and a connection attempt is
/// bounded by `timeouts.connect`.
async fn unnoticed_by_the_health_loop() {
    let s = Scenario::start(|c| {
        c.health.health_check_period = Duration::from_secs(30);
        c.health.health_check_timeout = Duration::from_secs(30);
        c.timeouts.server_keepalive = Duration::from_secs(1);
        c.timeouts.server_tcp_user_timeout = Duration::from_secs(2);
        c.timeouts.connect = Duration::from_secs(2);
    })
    .await;
    let t = &s.config.timeouts;
    let bound = t.server_keepalive + t.server_tcp_user_timeout + Duration::from_secs(2);
    let (p0, p1) = (s.port(0), s.port(1));

    let readers = spawn_slow_readers(s.conn_string(), 4, Duration::from_millis(300));
    sleep(Duration::from_secs(1)).await;
    let cut = Instant::now();
    drop_port(p1);
    sleep(bound + Duration::from_secs(1)).await;
    let reads = readers.stop().await.attempts;
    heal();
    let in_flight = released_within(&reads, cut, bound, "reads (sockets alone)");
    let failed = failures(&reads);
    let longest = reads.iter().map(|a| a.done - a.sent).max().unwrap();
    println!(
        "replica partitioned, health loop too slow to see it: {in_flight} reads in flight, {} in all, {} failed, longest {longest:?}, bound {bound:?}",
        reads.len(),
        failed.len()
    );
    assert!(in_flight > 0, "no read was in flight at the partition");
    assert!(failed.is_empty(), "reads failed: {}", show(&failed));
    assert!(
        longest <= bound,
        "a read waited {longest:?} (bound {bound:?})"
    );

    let writers = spawn_slow_writers(s.conn_string(), 2, Duration::from_millis(300));
    sleep(Duration::from_secs(1)).await;
    let cut = Instant::now();
    drop_port(p0);
    sleep(bound + Duration::from_secs(1)).await;
    let writes = writers.stop().await.attempts;
    heal();
    // Writes sent after the cut wait for a primary (`failover_timeout`);
    // those already on it end with 08006, each within the bound.
    let in_flight = released_within(&writes, cut, bound, "writes (sockets alone)");
    for a in writes.iter().filter(|a| a.sent <= cut && a.done > cut) {
        if let Err(e) = &a.result {
            assert!(e.contains("08006"), "{a:?}");
        }
    }
    println!("primary partitioned, health loop too slow to see it: {in_flight} writes in flight, each ended within {bound:?}");
    assert!(in_flight > 0, "no write was in flight at the partition");
    s.finish().await;
}
