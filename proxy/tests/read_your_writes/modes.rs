//! Each read-your-writes mode against lagging replicas.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replicas_never_hide_a_sessions_own_writes() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_lag");
    tables(
        &db,
        &[
            "s_causal", "s_global", "s_off", "p_causal", "p_global", "p_off", "a_causal",
            "a_global", "a_off", "watched",
        ],
    );
    cluster()
        .psql(0, &db, "INSERT INTO watched VALUES (1)")
        .unwrap();
    set_lag(300);
    for (mode, name) in [
        (Mode::Causal, "causal"),
        (Mode::Global, "global"),
        (Mode::Off, "off"),
    ] {
        let proxy = start_proxy_with(proxy_config(mode)).await;
        // A second session that never writes keeps reading meanwhile.
        let reader = connect(&proxy, &db).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut total, mut replica) = (0usize, 0usize);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = row(&reader, "SELECT inet_server_port() FROM watched").await;
                    total += 1;
                    replica += usize::from(is_replica(r[0].parse().unwrap()));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (total, replica)
            })
        };
        let writer = connect(&proxy, &db).await;
        let n = 1000;
        let simple = simple_loop(&writer, &format!("s_{name}"), n).await;
        let psycopg = driver_loop(&proxy, &db, "psycopg", &format!("p_{name}"), n).await;
        let asyncpg = driver_loop(&proxy, &db, "asyncpg", &format!("a_{name}"), n).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (total, replica) = watcher.await.unwrap();
        let misses = [simple.0, psycopg.0, asyncpg.0];
        println!(
            "{name}: misses simple/psycopg/asyncpg = {misses:?} of {n} each; \
             the non-writing session read {replica}/{total} times from replicas"
        );
        if mode == Mode::Off {
            assert!(
                misses.iter().sum::<usize>() > 0,
                "off mode never missed: the lag did not bite"
            );
        } else {
            assert_eq!(misses, [0, 0, 0], "{name} mode missed a write");
        }
        if mode == Mode::Causal {
            assert!(
                replica * 100 >= total * 95,
                "non-writer on replicas only {replica}/{total}"
            );
            let ryw = &proxy.shared().ryw;
            let kept = ryw
                .kept_on_primary
                .load(std::sync::atomic::Ordering::Relaxed);
            let replica_reads = ryw.replica_reads.load(std::sync::atomic::Ordering::Relaxed);
            println!("causal: reads kept on the primary by read-your-writes: {kept}, sent to replicas: {replica_reads}");
            assert!(kept >= 3 * n as u64 - 30, "kept {kept}");
            // The same on the wire: the writer's reads right after its
            // writes were served by the primary.
            let writer_on_replicas = simple.1 + psycopg.1 + asyncpg.1;
            assert!(
                writer_on_replicas <= 30,
                "{writer_on_replicas} of the writer's reads were served by a lagging replica"
            );
            // Once the replicas have replayed, the writer's reads go back to them.
            let back = eventually(Duration::from_secs(5), || async {
                is_replica(port_of(&writer, "SELECT inet_server_port()").await)
            })
            .await;
            assert!(back, "the writing session never returned to the replicas");
            let mut on_replicas = 0;
            for _ in 0..20 {
                on_replicas += usize::from(is_replica(
                    port_of(&writer, "SELECT inet_server_port()").await,
                ));
            }
            println!(
                "causal: after catching up, the writer read {on_replicas}/20 times from replicas"
            );
            assert!(on_replicas >= 19);
        }
        proxy.shutdown().await;
    }
    set_lag(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_mode_covers_writes_made_by_other_sessions() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_global");
    tables(&db, &["g"]);
    set_lag(300);
    let mut missed = Vec::new();
    for mode in [Mode::Global, Mode::Causal] {
        let proxy = start_proxy_with(proxy_config(mode)).await;
        let writer = connect(&proxy, &db).await;
        let reader = connect(&proxy, &db).await;
        let mut misses = 0;
        for i in 0..200 {
            let id = i + if mode == Mode::Global { 0 } else { 1000 };
            writer
                .simple_query(&format!("INSERT INTO g VALUES ({id})"))
                .await
                .unwrap();
            misses += usize::from(
                row(&reader, &format!("SELECT count(*) FROM g WHERE id = {id}")).await[0] == "0",
            );
        }
        missed.push(misses);
        if mode == Mode::Global {
            // Not by sending everything to the primary: once the replicas
            // have replayed, reads go back to them.
            let on_replica = eventually(Duration::from_secs(5), || async {
                is_replica(port_of(&reader, "SELECT inet_server_port()").await)
            })
            .await;
            assert!(on_replica, "global mode never read from a replica");
        }
        proxy.shutdown().await;
    }
    set_lag(0);
    assert_eq!(
        missed[0], 0,
        "global mode: another session's write was not visible"
    );
    assert!(
        missed[1] > 0,
        "causal mode does not cover other sessions, so it must miss here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_reads_return_to_replicas_quickly() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_fresh");
    tables(&db, &["f"]);
    set_lag(0);
    let proxy = start_proxy_with(proxy_config(Mode::Causal)).await;
    let c = connect(&proxy, &db).await;
    let mut replica = 0;
    for i in 0..40 {
        c.simple_query(&format!("INSERT INTO f VALUES ({i})"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = row(
            &c,
            &format!("SELECT count(*), inet_server_port() FROM f WHERE id = {i}"),
        )
        .await;
        assert_eq!(r[0], "1");
        replica += usize::from(is_replica(r[1].parse().unwrap()));
    }
    println!("causal, no lag: {replica}/40 reads 100 ms after a write were served by replicas");
    assert!(replica >= 36, "only {replica}/40 reads went to replicas");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_transaction_modes_and_the_per_session_setting() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_modes");
    tables(&db, &["m"]);
    set_lag(0);
    let primary = cluster().port(0);

    // session: after the first write, every read goes to the primary.
    let proxy = start_proxy_with(proxy_config(Mode::Session)).await;
    let c = connect(&proxy, &db).await;
    assert!(is_replica(port_of(&c, "SELECT inet_server_port()").await));
    c.simple_query("INSERT INTO m VALUES (1)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..5 {
        assert_eq!(port_of(&c, "SELECT inet_server_port()").await, primary);
    }
    // The per-session setting switches to sticky, answered by pgsplit itself.
    c.simple_query("SET pgsplit.read_your_writes = 'sticky'")
        .await
        .unwrap();
    assert_eq!(row(&c, "SHOW pgsplit.read_your_writes").await[0], "sticky");
    // What sticky does is tested against lagging replicas in
    // sticky_keeps_reads_on_the_primary_for_a_time_not_a_position.
    // transaction: only reads inside the writing transaction stay on the primary.
    c.simple_query("SET pgsplit.read_your_writes = transaction")
        .await
        .unwrap();
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("INSERT INTO m VALUES (3)").await.unwrap();
    assert_eq!(port_of(&c, "SELECT inet_server_port()").await, primary);
    c.simple_query("COMMIT").await.unwrap();
    assert!(
        is_replica(port_of(&c, "SELECT inet_server_port()").await),
        "after the transaction"
    );
    // A bad value is refused; RESET returns to the configured mode.
    let e = c
        .simple_query("SET pgsplit.read_your_writes = 'sometimes'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
    c.simple_query("RESET pgsplit.read_your_writes")
        .await
        .unwrap();
    assert_eq!(row(&c, "SHOW pgsplit.read_your_writes").await[0], "session");
    proxy.shutdown().await;

    // A per-user override in the config.
    let mut cfg = proxy_config(Mode::Causal);
    cfg.users[0].read_your_writes = Some(Mode::Off);
    let proxy = start_proxy_with(cfg).await;
    let c = connect(&proxy, &db).await;
    assert_eq!(row(&c, "SHOW pgsplit.read_your_writes").await[0], "off");
    proxy.shutdown().await;
}

/// `sticky` is a time window, not a position: within `sticky_duration`
/// of a write, reads stay on the primary even when every replica already
/// has the write (causal, on the same proxy, goes back to a replica), and
/// after it they go to a replica whether it has the write or not (causal
/// never misses). Replicas lag on purpose so the two can be told apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keeps_reads_on_the_primary_for_a_time_not_a_position() {
    let _lag = LAG.lock().await;
    let db = fresh_database("ryw_sticky");
    tables(&db, &["st"]);
    let lag = Duration::from_millis(600);
    set_lag(lag.as_millis() as u64);

    // A long window: the replicas have replayed the write well within it.
    let window = Duration::from_secs(3);
    let mut cfg = proxy_config(Mode::Sticky);
    cfg.routing.sticky_duration = window;
    let proxy = start_proxy_with(cfg).await;
    let mut first_replica_read = Vec::new();
    for (id, mode) in [(1, "sticky"), (2, "causal")] {
        let c = connect(&proxy, &db).await;
        c.simple_query(&format!("SET pgsplit.read_your_writes = '{mode}'"))
            .await
            .unwrap();
        let wrote = std::time::Instant::now();
        c.simple_query(&format!("INSERT INTO st VALUES ({id})"))
            .await
            .unwrap();
        let replayed = eventually(Duration::from_secs(10), || replicas_have(&db, "st", id)).await;
        assert!(replayed, "the replicas never replayed row {id}");
        let replayed_after = wrote.elapsed();
        assert!(
            replayed_after >= lag,
            "row {id} was on the replicas {replayed_after:?} after the write: the lag did not bite"
        );
        // Every replica has the row now. Read until a replica serves one,
        // for at most what is left of the sticky window (less a margin).
        let until = wrote + window - Duration::from_millis(300);
        let mut on_replica = None;
        let mut reads = 0;
        while std::time::Instant::now() < until {
            let (found, n) = read_row(&c, "st", id).await;
            reads += 1;
            assert!(found, "{mode}: read {reads} on node {n} missed the write");
            if n != 0 {
                on_replica = Some(wrote.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "{mode}: replicas had the write {replayed_after:?} after it; first read on a \
             replica: {on_replica:?} ({reads} reads)"
        );
        first_replica_read.push(on_replica);
    }
    assert_eq!(
        first_replica_read[0], None,
        "sticky sent a read to a replica within sticky_duration ({window:?})"
    );
    assert!(
        first_replica_read[1].is_some(),
        "causal kept reading on the primary although every replica had the write"
    );
    proxy.shutdown().await;

    // A short window, shorter than the lag: once it is over, reads go to
    // a replica that does not have the write yet.
    let window = Duration::from_millis(150);
    let mut cfg = proxy_config(Mode::Sticky);
    cfg.routing.sticky_duration = window;
    let proxy = start_proxy_with(cfg).await;
    let c = connect(&proxy, &db).await;
    let wrote = std::time::Instant::now();
    c.simple_query("INSERT INTO st VALUES (3)").await.unwrap();
    let (found, n) = read_row(&c, "st", 3).await;
    assert_eq!(
        (found, n),
        (true, 0),
        "the read right after the write, within sticky_duration"
    );
    // Polled without a pause: the first read a replica serves is the one
    // that tells.
    let mut after = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let (found, n) = read_row(&c, "st", 3).await;
        after = Some((found, n, wrote.elapsed()));
        if n != 0 {
            break;
        }
    }
    let (found, n, at) = after.unwrap();
    let left_primary = n != 0;
    println!(
        "sticky, {window:?} window: first read on a replica after {at:?}, found the row: {found}"
    );
    assert!(left_primary, "sticky never let reads go back to a replica");
    assert!(
        at >= window,
        "a read went to node {n} {at:?} after the write, within sticky_duration {window:?}"
    );
    // Sticky lets go as soon as its window is over (a read every few
    // milliseconds here), long before the replica replays the write: the
    // read misses it. Causal would have stayed on the primary until then.
    let prompt = window + Duration::from_millis(300);
    assert!(
        prompt < lag,
        "premise: the window ends well before the replicas replay"
    );
    assert!(
        at <= prompt,
        "the first read on a replica came {at:?} after the write, over {prompt:?}"
    );
    assert!(
        !found,
        "node {n} had the write {at:?} after it despite a {lag:?} apply delay"
    );
    // Without clients, shutdown does not wait for sessions to finish.
    drop(c);
    proxy.shutdown().await;
    set_lag(0);
}
