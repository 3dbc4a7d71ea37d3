//! SIGTERM, SIGINT and `PGSPLIT SHUTDOWN`: no new clients, idle ones told
//! FATAL 57P01, running transactions finish (or are cut and rolled back
//! at `timeouts.shutdown_timeout`), and no acknowledged work is lost.

use std::net::SocketAddr;
use std::time::Instant;

use super::*;

async fn metrics_at(addr: SocketAddr) -> String {
    super::http::http(addr, "GET", "/metrics").await.1
}

fn table(name: &str) -> String {
    let db = fresh_database(name);
    cluster()
        .psql(0, &db, "CREATE TABLE t (i int); GRANT ALL ON t TO PUBLIC")
        .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_hear_57p01_while_a_running_transaction_commits_first() {
    let db = table("shutdown_phases");
    let proxy = proxy_with_shutdown_timeout(Duration::from_secs(20)).await;
    let (addr, metrics) = (proxy.local_addr(), proxy.metrics_addr().unwrap());
    let mut idle = RawClient::login(&proxy, &db).await;
    let mut busy = RawClient::login(&proxy, &db).await;
    let begun = busy.simple("BEGIN; INSERT INTO t VALUES (1)").await;
    assert_eq!(ready_status(&begun), b'T', "{begun:?}");
    let started = Instant::now();
    let stopping = tokio::spawn(proxy.shutdown());

    let told = fatal(&idle.until_closed().await);
    let (code, detail) = told.expect("the idle client is told why it is closed");
    assert_eq!(code, "57P01");
    assert!(detail.contains("nothing was running"), "{detail}");
    let refused = eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "new clients are refused once shutdown began");
    let page = metrics_at(metrics).await;
    assert_eq!(metric(&page, "pgsplit_state{state=\"draining\"}"), 1);
    assert_eq!(metric(&page, "pgsplit_state{state=\"running\"}"), 0);

    let more = busy.simple("INSERT INTO t VALUES (2)").await;
    assert_eq!(command_tags(&more), ["INSERT 0 1"], "{more:?}");
    let committed = busy.simple("COMMIT").await;
    assert_eq!(command_tags(&committed), ["COMMIT"], "{committed:?}");
    let (code, _) = fatal(&busy.until_closed().await).expect("told after its commit");
    assert_eq!(code, "57P01");
    stopping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the shutdown waited for nothing once the transaction ended: {:?}",
        started.elapsed()
    );
    assert_eq!(rows_on_primary(&db, "t"), 2, "both rows committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_the_shutdown_timeout_is_cut_and_rolled_back() {
    let db = table("shutdown_cut");
    let timeout = Duration::from_secs(1);
    let proxy = proxy_with_shutdown_timeout(timeout).await;
    let mut busy = RawClient::login(&proxy, &db).await;
    let begun = busy.simple("BEGIN; INSERT INTO t VALUES (1)").await;
    assert_eq!(ready_status(&begun), b'T', "{begun:?}");
    let started = Instant::now();
    let stopping = tokio::spawn(proxy.shutdown());
    let (code, detail) = fatal(&busy.until_closed().await).expect("the cut client is told");
    let cut_after = started.elapsed();
    assert_eq!(code, "57P01");
    assert!(detail.contains("rolled back"), "{detail}");
    assert!(
        cut_after >= timeout,
        "cut after {cut_after:?}, before shutdown_timeout"
    );
    stopping.await.unwrap();
    assert!(
        started.elapsed() < timeout + Duration::from_secs(4),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(
        rows_on_primary(&db, "t"),
        0,
        "the open transaction rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_the_admin_console_answers_then_closes() {
    let db = table("shutdown_admin");
    let proxy = proxy_with_shutdown_timeout(Duration::from_secs(20)).await;
    let mut other = RawClient::login(&proxy, &db).await;
    let admin = connect(&proxy, &db).await;
    admin.batch_execute("PGSPLIT SHUTDOWN").await.unwrap();
    let (code, _) = fatal(&other.until_closed().await).expect("the other client is told");
    assert_eq!(code, "57P01");
    let finished = tokio::time::timeout(Duration::from_secs(10), proxy.shutdown_requested()).await;
    assert!(finished.is_ok(), "the handle hears of the admin's shutdown");
    proxy.shutdown().await;
}

/// pgbench's clients through the `pgsplit` binary while it gets SIGTERM:
/// every transaction pgbench counts as done is on the primary and no
/// other is (pgbench_history has one row per committed transaction), every
/// client ended with 57P01, and the log names the phases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_pgbench_finishes_transactions_and_tells_clients_57p01() {
    let db = fresh_database("shutdown_pgbench");
    let proxy = super::binary::Binary::start("", None).await;
    let bench = super::pgbench_through(proxy.addr, &db, 6, 60);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let out = bench.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in pgbench's output:\n{stdout}\n{stderr}"));
    assert!(processed > 0, "{stdout}");
    let history = rows_on_primary(&db, "pgbench_history");
    assert_eq!(
        history, processed,
        "committed transactions on the primary vs acknowledged ones\n{stdout}\n{stderr}"
    );
    // pgbench prints the server's message on the abort line, or on a line
    // of its own before a line that guesses the backend died.
    let aborted = stderr
        .lines()
        .filter(|l| l.contains("client ") && l.contains(" aborted in command"))
        .count();
    assert_eq!(aborted, 6, "every client ended by the shutdown:\n{stderr}");
    let told = stderr
        .matches("FATAL:  terminating connection due to administrator command")
        .count();
    assert_eq!(told, 6, "each was told 57P01:\n{stderr}");
    assert!(!stderr.contains("ERROR:"), "{stderr}");
    for phase in ["phase=\"draining\"", "phase=\"stopped\""] {
        assert!(log.contains(phase), "no {phase} in the log:\n{log}");
    }
    assert!(
        !log.contains("phase=\"closing\""),
        "nothing was cut:\n{log}"
    );
    println!("sigterm during pgbench: {processed} transactions acknowledged, {history} committed");
}

/// A query still running when `shutdown_timeout` is over: its client is
/// told at once that it may or may not have completed, rather than
/// waiting for it or being dropped without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_running_past_the_shutdown_timeout_is_told_it_may_not_have_completed() {
    let db = table("shutdown_running");
    let timeout = Duration::from_secs(1);
    let proxy = proxy_with_shutdown_timeout(timeout).await;
    let mut busy = RawClient::login(&proxy, &db).await;
    let mut out = bytes::BytesMut::new();
    pgsplit_protocol::encode::query(&mut out, "SELECT pg_sleep(20)");
    busy.send(&out).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(proxy.shutdown());
    let (code, detail) = fatal(&busy.until_closed().await).expect("the running client is told");
    let told_after = started.elapsed();
    assert_eq!(code, "57P01");
    assert!(detail.contains("may or may not have completed"), "{detail}");
    assert!(
        told_after >= timeout && told_after < timeout + Duration::from_secs(2),
        "told after {told_after:?}"
    );
    stopping.await.unwrap();
}
