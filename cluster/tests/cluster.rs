//! Real servers, real replicas: these tests start PostgreSQL processes.
//!
//! Most tests share one cluster (statics are never dropped; the watchdog
//! removes it when the binary exits) and take a lock on it, because several
//! of them stop nodes or delay replay and would disturb each other. The
//! promotion test builds its own cluster since promotion cannot be undone.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pgsplit_cluster::{
    find_bindir, Cluster, ClusterError, ClusterOptions, StopMode, MD5_PASSWORD, MD5_USER,
    SCRAM_PASSWORD, SCRAM_USER, TRUST_USER,
};

const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

fn shared() -> MutexGuard<'static, Cluster> {
    static CLUSTER: OnceLock<Mutex<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let started = Instant::now();
            let cluster = Cluster::start(ClusterOptions::default()).expect("start cluster");
            eprintln!(
                "Cluster::start with 2 replicas took {:?}",
                started.elapsed()
            );
            Mutex::new(cluster)
        })
        .lock()
        // A failed test must not fail every later one.
        .unwrap_or_else(|e| e.into_inner())
}

/// Restores a replica's apply delay even when the test body panics.
struct ResetDelay<'a>(&'a Cluster, usize);

impl Drop for ResetDelay<'_> {
    fn drop(&mut self) {
        let _ = self.0.set_apply_delay(self.1, Duration::ZERO);
    }
}

#[test]
fn cluster_can_live_in_a_static() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cluster>();
}

#[test]
fn finds_server_binaries() {
    let dir = find_bindir().expect("bindir");
    assert!(dir.join("initdb").is_file(), "{}", dir.display());
}

#[test]
fn node_zero_is_primary_and_the_rest_are_replicas() {
    let c = shared();
    assert_eq!(c.nodes().len(), 3);
    assert_eq!(
        c.psql(0, "postgres", "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );
    for index in 1..3 {
        assert_eq!(
            c.psql(index, "postgres", "SELECT pg_is_in_recovery()")
                .unwrap(),
            "t"
        );
    }
    for node in c.nodes() {
        assert_eq!(node.host, "127.0.0.1");
        assert_eq!(c.port(node.index), node.port);
        let port = c
            .psql(node.index, "postgres", "SELECT inet_server_port()")
            .unwrap();
        assert_eq!(port, node.port.to_string());
        assert!(node.data_dir.starts_with(c.base_dir()));
    }
}

#[test]
fn writes_on_the_primary_reach_every_replica() {
    let c = shared();
    c.psql(
        0,
        "postgres",
        "CREATE TABLE replicated (id int PRIMARY KEY, note text);\n\
         INSERT INTO replicated VALUES (1, 'one'), (2, 'two');",
    )
    .unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();
    for index in 1..3 {
        let rows = c.psql(
            index,
            "postgres",
            "SELECT id, note FROM replicated ORDER BY id",
        );
        assert_eq!(rows.unwrap(), "1|one\n2|two");
    }
}

#[test]
fn replicas_refuse_writes_and_errors_carry_stderr() {
    let c = shared();
    let err = c
        .psql(1, "postgres", "CREATE TABLE nope (id int)")
        .unwrap_err();
    match &err {
        ClusterError::Command { stderr, .. } => {
            assert!(stderr.contains("read-only transaction"), "{stderr}")
        }
        other => panic!("unexpected error {other:?}"),
    }
    let err = c.psql(0, "postgres", "SELEC 1").unwrap_err().to_string();
    assert!(err.contains("syntax error"), "{err}");
}

#[test]
fn apply_delay_holds_back_one_replica() {
    let c = shared();
    c.psql(0, "postgres", "CREATE TABLE delayed (id int)")
        .unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();

    // One second rather than less: the check right after the commit must
    // beat the delay even on a loaded CI machine.
    c.set_apply_delay(1, Duration::from_secs(1)).unwrap();
    let _reset = ResetDelay(&c, 1);
    let committed = Instant::now();
    c.psql(0, "postgres", "INSERT INTO delayed VALUES (1)")
        .unwrap();
    let early = c
        .psql(1, "postgres", "SELECT count(*) FROM delayed")
        .unwrap();
    if committed.elapsed() < Duration::from_millis(900) {
        assert_eq!(early, "0", "replica 1 applied the commit before its delay");
    }
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();
    assert!(committed.elapsed() >= Duration::from_secs(1));
    for index in 1..3 {
        let count = c
            .psql(index, "postgres", "SELECT count(*) FROM delayed")
            .unwrap();
        assert_eq!(count, "1", "node {index}");
    }
}

#[test]
fn a_stopped_replica_restarts_and_streams_again() {
    let c = shared();
    c.stop_node(2, StopMode::Immediate).unwrap();
    assert!(!c.is_running(2));
    assert!(c.psql(2, "postgres", "SELECT 1").is_err());
    // Stopping a stopped node is a no-op.
    c.stop_node(2, StopMode::Fast).unwrap();

    c.psql(
        0,
        "postgres",
        "CREATE TABLE while_down AS SELECT 42 AS answer",
    )
    .unwrap();
    c.start_node(2).unwrap();
    assert!(c.is_running(2));
    c.wait_for_streaming(2, REPLAY_TIMEOUT).unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();
    assert_eq!(
        c.psql(2, "postgres", "SELECT answer FROM while_down")
            .unwrap(),
        "42"
    );

    let seen_by_primary = "SELECT count(*) FROM pg_stat_replication \
                           WHERE application_name = 'pgsplit_node2' AND state = 'streaming'";
    let deadline = Instant::now() + REPLAY_TIMEOUT;
    while c.psql(0, "postgres", seen_by_primary).unwrap() != "1" {
        assert!(
            Instant::now() < deadline,
            "primary never saw node 2 streaming"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_auth_method_role_logs_in() {
    let c = shared();
    let who = "SELECT current_user";
    for index in [0, 1] {
        assert_eq!(
            c.psql_as(index, TRUST_USER, None, "postgres", who).unwrap(),
            TRUST_USER
        );
        let md5 = c.psql_as(index, MD5_USER, Some(MD5_PASSWORD), "postgres", who);
        assert_eq!(md5.unwrap(), MD5_USER);
        let scram = c.psql_as(index, SCRAM_USER, Some(SCRAM_PASSWORD), "postgres", who);
        assert_eq!(scram.unwrap(), SCRAM_USER);
    }
    assert!(c
        .psql_as(0, MD5_USER, Some("wrong"), "postgres", who)
        .is_err());
    let err = c
        .psql_as(0, SCRAM_USER, Some("wrong"), "postgres", who)
        .unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );

    let stored = c
        .psql(
            0,
            "postgres",
            "SELECT rolname, left(rolpassword, 14), rolcreatedb FROM pg_authid \
             WHERE rolname IN ('md5user', 'scramuser', 'trustuser') ORDER BY rolname",
        )
        .unwrap();
    let lines: Vec<&str> = stored.lines().collect();
    assert!(lines[0].starts_with("md5user|md5"), "{stored}");
    assert!(lines[1].starts_with("scramuser|SCRAM-SHA-256$"), "{stored}");
    assert_eq!(lines[2], "trustuser||t");
    for line in &lines {
        assert!(line.ends_with("|t"), "{line} lacks CREATEDB");
    }
}

#[test]
fn trust_all_lets_roles_without_a_password_in_everywhere() {
    // The default rules ask scramuser for a password...
    let who = "SELECT current_user";
    let refused = shared().psql_as(0, SCRAM_USER, None, "postgres", who);
    assert!(refused.is_err(), "{refused:?}");
    // ...trust_all asks nobody, on the replica too (pg_hba.conf travels
    // with the base backup), as a regression suite's own roles need.
    let opts = ClusterOptions {
        replicas: 1,
        trust_all: true,
        ..ClusterOptions::default()
    };
    let c = Cluster::start(opts).expect("start cluster");
    c.psql(0, "postgres", "CREATE ROLE regress_nopass LOGIN")
        .unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();
    for index in [0, 1] {
        for user in ["regress_nopass", SCRAM_USER, "postgres"] {
            let got = c.psql_as(index, user, None, "postgres", who);
            assert_eq!(got.unwrap(), user, "node {index}");
        }
    }
}

#[test]
fn promote_makes_a_replica_writable_and_shutdown_cleans_up() {
    let opts = ClusterOptions {
        replicas: 1,
        extra_conf: vec![("work_mem".to_owned(), "8MB".to_owned())],
        ..ClusterOptions::default()
    };
    let c = Cluster::start(opts).expect("start cluster");
    // extra_conf reaches the replica through the base backup.
    assert_eq!(c.psql(1, "postgres", "SHOW work_mem").unwrap(), "8MB");
    assert_eq!(
        c.psql(1, "postgres", "SELECT pg_is_in_recovery()").unwrap(),
        "t"
    );

    c.promote(1).unwrap();
    assert_eq!(
        c.psql(1, "postgres", "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );
    c.psql(1, "postgres", "CREATE TABLE after_promotion (id int)")
        .unwrap();

    let base = c.base_dir().to_owned();
    let ports: Vec<u16> = c.nodes().iter().map(|n| n.port).collect();
    c.shutdown();
    assert!(!base.exists(), "{} left behind", base.display());
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
}

#[test]
fn a_failed_start_reports_the_server_log() {
    let opts = ClusterOptions {
        replicas: 0,
        extra_conf: vec![("shared_buffers".to_owned(), "plenty".to_owned())],
        ..ClusterOptions::default()
    };
    let err = Cluster::start(opts).expect_err("bad setting must fail");
    let text = err.to_string();
    assert!(matches!(err, ClusterError::Command { .. }), "{text}");
    assert!(text.contains("pg_ctl start of node 0"), "{text}");
    assert!(
        text.contains("invalid value for parameter \"shared_buffers\""),
        "{text}"
    );
}

/// What a replica says about itself: (in recovery, port, upstream port).
fn standby_status(c: &Cluster, index: usize) -> (String, String, String) {
    let out = c
        .psql(
            index,
            "postgres",
            "SELECT pg_is_in_recovery(), inet_server_port(), \
             (SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming')",
        )
        .unwrap();
    let cols: Vec<&str> = out.split('|').collect();
    (cols[0].into(), cols[1].into(), cols[2].into())
}

#[test]
fn after_a_failover_replicas_follow_and_the_old_primary_rejoins() {
    let c = Cluster::start(ClusterOptions::default()).expect("start cluster");
    c.psql(
        0,
        "postgres",
        "CREATE TABLE history (id int PRIMARY KEY, note text);\n\
         INSERT INTO history VALUES (1, 'before');",
    )
    .unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();

    c.stop_node(0, StopMode::Immediate).unwrap();
    c.promote(1).unwrap();
    assert_eq!(c.current_primary(REPLAY_TIMEOUT).unwrap(), 1);
    let started = Instant::now();
    c.follow(2, 1).unwrap();
    eprintln!("follow(2, 1) took {:?}", started.elapsed());
    let (recovery, port, upstream) = standby_status(&c, 2);
    assert_eq!(recovery, "t");
    assert_eq!(port, c.port(2).to_string());
    assert_eq!(upstream, c.port(1).to_string());

    // The old primary comes back on its own timeline and takes a write the
    // new primary never sees: the diverged node a rejoin must cope with.
    c.start_node(0).unwrap();
    assert_eq!(
        c.psql(0, "postgres", "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );
    c.psql(0, "postgres", "INSERT INTO history VALUES (2, 'lost')")
        .unwrap();
    c.psql(1, "postgres", "INSERT INTO history VALUES (3, 'after')")
        .unwrap();
    let err = c.follow(0, 1).unwrap_err();
    assert!(matches!(err, ClusterError::Diverged(_)), "{err}");

    let started = Instant::now();
    c.rejoin_as_standby(0, 1).unwrap();
    eprintln!("rejoin_as_standby(0, 1) took {:?}", started.elapsed());
    let (recovery, port, upstream) = standby_status(&c, 0);
    assert_eq!(recovery, "t");
    assert_eq!(port, c.port(0).to_string(), "node 0 kept its port");
    assert_eq!(upstream, c.port(1).to_string());

    // Both standbys replay the new primary's writes, and the old timeline's
    // write is gone.
    c.psql(1, "postgres", "INSERT INTO history VALUES (4, 'later')")
        .unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();
    for index in [0, 2] {
        let rows = c
            .psql(index, "postgres", "SELECT id FROM history ORDER BY id")
            .unwrap();
        assert_eq!(rows, "1\n3\n4", "node {index}");
    }
    let seen_by_primary = c
        .psql(
            1,
            "postgres",
            "SELECT string_agg(application_name, ',' ORDER BY application_name) \
             FROM pg_stat_replication WHERE state = 'streaming'",
        )
        .unwrap();
    assert_eq!(seen_by_primary, "pgsplit_node0,pgsplit_node2");
}

#[test]
fn follow_refuses_an_upstream_that_forked_behind_it() {
    let c = Cluster::start(ClusterOptions::default()).expect("start cluster");
    c.psql(0, "postgres", "CREATE TABLE ahead (id int)")
        .unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();
    // Node 2 gets a write node 1 never receives, then node 1 is promoted:
    // its timeline forks before node 2's position.
    c.stop_node(1, StopMode::Fast).unwrap();
    c.psql(0, "postgres", "INSERT INTO ahead VALUES (1)")
        .unwrap();
    c.wait_for_replay(REPLAY_TIMEOUT).unwrap();
    c.stop_node(0, StopMode::Immediate).unwrap();
    c.start_node(1).unwrap();
    c.promote(1).unwrap();

    let started = Instant::now();
    let err = c.follow(2, 1).unwrap_err();
    eprintln!(
        "follow(2, 1) reported divergence after {:?}",
        started.elapsed()
    );
    assert!(matches!(err, ClusterError::Diverged(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "not fast");

    c.rejoin_as_standby(2, 1).unwrap();
    let (recovery, port, upstream) = standby_status(&c, 2);
    assert_eq!((recovery.as_str(), port), ("t", c.port(2).to_string()));
    assert_eq!(upstream, c.port(1).to_string());
    assert_eq!(
        c.psql(2, "postgres", "SELECT count(*) FROM ahead").unwrap(),
        "0"
    );
}
