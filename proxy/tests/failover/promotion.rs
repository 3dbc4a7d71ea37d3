//! Promotion, split brain and switchover.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_promote_without_a_manager() {
    let promote_after = Duration::from_secs(2);
    let s = Scenario::start(|c| {
        c.health.auto_promote = true;
        c.health.promote_after = promote_after;
    })
    .await;
    // The standbys must differ, or any choice would look right: node
    // `behind` stops while writes go on, so node `ahead` gets WAL that
    // `behind` never sees; it comes back only after the primary is dead.
    let (ahead, behind) = (1, 2);
    let writers = spawn_writers(s.conn_string(), 1, Duration::ZERO);
    sleep(Duration::from_secs(1)).await;
    s.cluster_op(move |c| c.stop_node(behind, StopMode::Fast))
        .await
        .expect("stop the standby that falls behind");
    let passed = s
        .cluster_op(move |c| {
            // Past anything `behind` received: it was already stopped.
            let mark = lsn(&c.psql(0, "postgres", "SELECT pg_current_wal_lsn()")?);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let replayed =
                    lsn(&c.psql(ahead, "postgres", "SELECT pg_last_wal_replay_lsn()")?);
                if replayed > mark {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok::<_, ClusterError>(false)
        })
        .await
        .expect("read WAL positions");
    assert!(
        passed,
        "node {ahead} never replayed past node {behind}'s end"
    );
    s.cluster_op(|c| c.stop_node(0, StopMode::Immediate))
        .await
        .expect("stop node 0");
    let killed = Instant::now();
    s.cluster_op(move |c| c.start_node(behind))
        .await
        .expect("restart the standby that is behind");
    // pgsplit must see it as an up standby before it decides (promote_after
    // after node 0 is marked down), or the choice would be forced.
    let (_, rows) = s
        .wait_pool_nodes("the restarted standby up", |r| {
            field(r, behind, "status") == "up" && field(r, behind, "pg_role") == "standby"
        })
        .await;
    let back_after = killed.elapsed();
    assert!(
        (1..3).all(|i| role(&rows, i) != "primary"),
        "a standby was promoted before node {behind} was back ({back_after:?} after the kill), \
         so the choice proves nothing: {rows:#?}"
    );
    // With the primary gone these positions are final.
    let received = s
        .cluster_op(|c| {
            [1, 2].map(|i| {
                lsn(&c
                    .psql(i, "postgres", "SELECT pg_last_wal_replay_lsn()")
                    .expect("replay position"))
            })
        })
        .await;
    assert!(
        received[ahead - 1] > received[behind - 1],
        "the standbys are level, so the choice is not tested: {received:?}"
    );

    let limit = promote_after + Duration::from_secs(3);
    let promoted = s
        .cluster_op(move |c| {
            let deadline = Instant::now() + limit + Duration::from_secs(5);
            while Instant::now() < deadline {
                for i in [1, 2] {
                    if c.psql(i, "postgres", "SELECT pg_is_in_recovery()").ok() == Some("f".into())
                    {
                        return Some(i);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        })
        .await;
    let promoted_at = killed.elapsed();
    // A second of writes on the new primary.
    sleep(Duration::from_secs(1)).await;
    let recorded = writers.stop().await;
    let promoted = promoted.expect("pgsplit promoted no replica");
    println!(
        "auto_promote: node {promoted} out of recovery {promoted_at:?} after the kill; node \
         {behind} was back as a standby {back_after:?} after it (replay LSNs of nodes 1, 2: \
         {received:?})"
    );
    assert_eq!(
        promoted, ahead,
        "pgsplit promoted node {promoted}, which had less WAL than node {ahead}: {received:?}"
    );

    let new_port = s.port(promoted);
    let first = recorded
        .attempts
        .iter()
        .filter(|a| a.result == Ok(new_port))
        .min_by_key(|a| a.done)
        .expect("no write reached the promoted node");
    let window = first.done - killed;
    println!(
        "auto_promote: writes resumed {window:?} after the kill (promote_after {promote_after:?}); \
         {} writes, {} failed",
        recorded.attempts.len(),
        failures(&recorded.attempts).len()
    );
    assert!(
        window <= limit,
        "writes resumed after {window:?}, over promote_after + 3 s = {limit:?}"
    );
    let stray: Vec<&Attempt> = recorded
        .attempts
        .iter()
        .filter(|a| a.sent > killed && a.ok() && a.result != Ok(new_port))
        .collect();
    assert!(stray.is_empty(), "writes not on the new primary: {stray:?}");
    s.wait_pool_nodes("the promoted node primary and node 0 down", |r| {
        role(r, promoted) == "primary" && field(r, 0, "status") == "down"
    })
    .await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_primaries_split_brain() {
    let s = Scenario::start(|_| {}).await;
    let (p0, p1) = (s.port(0), s.port(1));
    let writers = spawn_writers(s.conn_string(), 2, Duration::ZERO);
    sleep(Duration::from_secs(1)).await;
    // Someone promotes node 1 while node 0 still runs and takes writes.
    let promoting = Instant::now();
    s.cluster_op(|c| c.promote(1))
        .await
        .expect("promote node 1");
    let promoted = Instant::now();
    let (_, rows) = s
        .wait_pool_nodes("node 0 fenced and node 1 primary", |r| {
            role(r, 0) == "stale_primary" && role(r, 1) == "primary"
        })
        .await;
    let fenced = Instant::now();
    let fence_time = fenced - promoted;
    println!("split_brain: node 0 fenced {fence_time:?} after the external promotion");
    // Healthy servers are checked every position_interval: node 1's next
    // check reports it out of recovery on a new timeline, and the same
    // election fences node 0. One interval, one more for a check already
    // in flight when the promotion finished, and slack for the loaded
    // machine (README measured 71 ms).
    let fence_bound = s.config.routing.position_interval * 2 + SCHEDULING_SLACK;
    assert!(
        fence_time <= fence_bound,
        "node 0 fenced {fence_time:?} after the promotion, over {fence_bound:?}"
    );
    assert_eq!(field(&rows, 0, "pg_role"), "primary");
    assert_eq!(field(&rows, 0, "load_balance_node"), "false");

    let reader = s.client().await;
    let reads = sample_reads(&reader, 40).await;
    assert!(
        !reads.contains(&Ok(p0)),
        "a fenced node served reads: {reads:?}"
    );
    // Writes go on after the fence.
    sleep(Duration::from_millis(1500)).await;
    let recorded = writers.stop().await;
    let attempts = &recorded.attempts;

    println!(
        "split_brain: {} writes, {} failed",
        attempts.len(),
        failures(attempts).len()
    );
    let after_fence: Vec<&Attempt> = attempts.iter().filter(|a| a.sent > fenced).collect();
    assert!(!after_fence.is_empty(), "no writes after the fence");
    let wrong: Vec<&&Attempt> = after_fence.iter().filter(|a| a.result != Ok(p1)).collect();
    assert!(
        wrong.is_empty(),
        "writes after the fence not acknowledged by node 1: {wrong:?}"
    );

    let (on_0, on_1) = s.cluster_op(|c| (seqs_on(c, 0), seqs_on(c, 1))).await;
    // Rows node 0 has and node 1 lacks were written on the old timeline
    // after node 1 forked from it: between the promotion and the moment
    // pgsplit saw it, which only a proxy that promotes itself can close.
    let only_on_0: Vec<i64> = on_0.difference(&on_1).copied().collect();
    let old_timeline = only_on_0.len();
    let acked_by_0_after_promotion = attempts
        .iter()
        .filter(|a| a.result == Ok(p0) && a.done > promoted)
        .count();
    println!(
        "split_brain: {old_timeline} writes landed on node 0's old timeline before the fence \
         ({acked_by_0_after_promotion} acknowledged by node 0 after promote() returned)"
    );
    // Those rows can only come from writes sent before the fence, while
    // pgsplit had not seen the promotion yet...
    let by_seq: std::collections::HashMap<i64, &Attempt> =
        attempts.iter().map(|a| (a.seq, a)).collect();
    let late: Vec<&i64> = only_on_0
        .iter()
        .filter(|seq| by_seq.get(seq).is_none_or(|a| a.sent > fenced))
        .collect();
    assert!(
        late.is_empty(),
        "rows on the old timeline from writes sent after the fence (or never sent): {late:?}"
    );
    // ...so there are at most as many as the writers manage in that
    // window: node 1 forks when promote() is called, and the fence (itself
    // bounded above) ends it; their observed rate over it, two check
    // intervals of slack, and one write in flight per writer. Most of these
    // rows land while pg_ctl promote runs, before pgsplit can know.
    let first = attempts.first().expect("writes ran").sent;
    let last = attempts.last().expect("writes ran").done;
    let ok = attempts.iter().filter(|a| a.ok()).count();
    let rate = ok as f64 / (last - first).as_secs_f64();
    let window = (fenced - promoting) + s.config.routing.position_interval * 2;
    let rows_bound = (rate * window.as_secs_f64()).ceil() as usize + 2;
    println!("split_brain: {rate:.0} writes/s, so at most {rows_bound} rows on the old timeline");
    assert!(
        old_timeline <= rows_bound,
        "{old_timeline} rows on node 0's old timeline, over {rows_bound} \
         ({rate:.0} writes/s for {window:?})"
    );
    let leaked: Vec<i64> = after_fence
        .iter()
        .map(|a| a.seq)
        .filter(|seq| on_0.contains(seq))
        .collect();
    assert!(
        leaked.is_empty(),
        "rows written after the fence exist on node 0: {leaked:?}"
    );
    let lost: Vec<i64> = attempts
        .iter()
        .filter(|a| a.result == Ok(p1) && !on_1.contains(&a.seq))
        .map(|a| a.seq)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on node 1: {lost:?}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_through_pgsplit_writes_nothing_on_the_old_timeline() {
    let s = Scenario::start(|_| {}).await;
    let p1 = s.port(1);
    let writers = spawn_writers(s.conn_string(), 2, Duration::ZERO);
    sleep(Duration::from_secs(1)).await;
    let admin = s.client().await;
    let began = Instant::now();
    admin
        .batch_execute("PGSPLIT PROMOTE replica1")
        .await
        .unwrap_or_else(|e| panic!("PGSPLIT PROMOTE replica1: {}", describe(&e)));
    let done = Instant::now();
    let (_, rows) = s
        .wait_pool_nodes("node 1 primary and node 0 not", |r| {
            role(r, 1) == "primary" && role(r, 0) != "primary"
        })
        .await;
    let in_recovery = s
        .cluster_op(|c| c.psql(1, "postgres", "SELECT pg_is_in_recovery()"))
        .await
        .expect("ask node 1");
    assert_eq!(in_recovery, "f", "node 1 was not promoted");
    // Writes go on after the switchover.
    sleep(Duration::from_secs(1)).await;
    let recorded = writers.stop().await;
    let attempts = &recorded.attempts;
    let pause = longest_gap(attempts, began, done + Duration::from_secs(1));
    println!(
        "switchover: PGSPLIT PROMOTE took {:?}, longest write pause {pause:?}; node 0 is now {:?}; \
         {} writes, {} failed",
        done - began,
        role(&rows, 0),
        attempts.len(),
        failures(attempts).len()
    );
    let failed = failures(attempts);
    assert!(
        failed.is_empty(),
        "writes failed in a switchover: {}",
        show(&failed)
    );
    let (on_0, on_1) = s.cluster_op(|c| (seqs_on(c, 0), seqs_on(c, 1))).await;
    let only_on_0: Vec<&i64> = on_0.difference(&on_1).collect();
    assert!(
        only_on_0.is_empty(),
        "rows written on the old timeline: {only_on_0:?}"
    );
    let lost: Vec<i64> = attempts
        .iter()
        .filter(|a| a.ok() && !on_1.contains(&a.seq))
        .map(|a| a.seq)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on node 1: {lost:?}"
    );
    let stray: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.sent > done && a.result != Ok(p1))
        .collect();
    assert!(
        stray.is_empty(),
        "writes after the switchover not on node 1: {stray:?}"
    );
    s.finish().await;
}

/// pgbench's transactions (BEGIN ... END, several statements each) through
/// a switchover: the ones open on the old primary finish there, the next
/// ones wait for the new primary; none is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_lets_open_transactions_finish() {
    let s = Scenario::start(|_| {}).await;
    let conn = s.conn_string();
    let bindir = pgsplit_cluster::find_bindir().unwrap();
    let pgbench = move |args: &[&str]| {
        let mut cmd = std::process::Command::new(bindir.join("pgbench"));
        cmd.args(args)
            .arg(&conn)
            .env("PGPASSWORD", crate::common::PASSWORD);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let init = pgbench(&["-i", "-s", "1", "-q"]).await.unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    s.cluster_op(|c| c.wait_for_replay(Duration::from_secs(30)))
        .await
        .unwrap();
    let load = pgbench(&["-n", "-c", "2", "-T", "6"]);
    sleep(Duration::from_secs(2)).await;
    let admin = s.client().await;
    admin
        .batch_execute("PGSPLIT PROMOTE replica1")
        .await
        .unwrap_or_else(|e| panic!("PGSPLIT PROMOTE replica1: {}", describe(&e)));
    let out = load.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("pgbench through a switchover:\n{stdout}");
    assert!(out.status.success(), "pgbench failed:\n{stderr}\n{stdout}");
    assert!(!stderr.contains("aborted"), "{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0 (0.000%)"),
        "{stdout}"
    );
    let (_, rows) = s
        .wait_pool_nodes("node 1 primary", |r| role(r, 1) == "primary")
        .await;
    assert_eq!(role(&rows, 0), "stale_primary");
    s.finish().await;
}
