//! Real foreign clients through the proxy: psql and pgbench, as users run them.

mod common;

use std::process::{Command, Output};

use common::*;

fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run client tool");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_copy_describe_and_errors() {
    let proxy = start_proxy().await;
    let db = fresh_database("clients_psql");
    let conn = conn_string(&proxy, "postgres", PASSWORD, &db);
    let dir = std::env::temp_dir().join(format!("pgsplit-psql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.tsv");
    let rows: String = (1..=500).map(|i| format!("{i}\tname {i}\n")).collect();
    std::fs::write(&input, &rows).unwrap();
    // Tables the script reads are created and replicated first, so what the
    // script sees does not depend on read-your-writes (tested on its own).
    cluster()
        .psql(
            0,
            &db,
            "CREATE TABLE people (id int primary key, name text); \
             CREATE TABLE seeded AS SELECT g AS id, 'seed ' || g AS name FROM generate_series(1, 5) g",
        )
        .unwrap();
    cluster()
        .wait_for_replay(std::time::Duration::from_secs(30))
        .unwrap();
    let script = format!(
        "CREATE TABLE extra (a int);\n\
         \\copy people from '{}'\n\
         SELEC broken;\n\
         /* pgsplit:primary */ SELECT count(*) AS n, inet_server_port() AS port FROM people;\n\
         \\d people\n\
         \\copy (SELECT * FROM seeded ORDER BY id LIMIT 3) to stdout\n",
        input.display()
    );
    // A script file, so psql handles meta-commands line by line as when typed.
    let file = dir.join("script.sql");
    std::fs::write(&file, &script).unwrap();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run(tool("psql").arg(conn).args(["-X", "-f"]).arg(&file))
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(ok, "psql failed: {err}");
    assert!(
        err.contains("syntax error at or near \"SELEC\""),
        "stderr: {err}"
    );
    assert!(out.contains("COPY 500"), "stdout: {out}");
    let primary = cluster().port(0).to_string();
    assert!(
        out.lines()
            .any(|l| l.split('|').map(str::trim).eq(["500", primary.as_str()])),
        "count and port line missing in: {out}"
    );
    assert!(
        out.contains("Table \"public.people\""),
        "\\d output missing: {out}"
    );
    assert!(
        out.contains("1\tseed 1\n2\tseed 2\n3\tseed 3\n"),
        "copy out: {out}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialises_and_runs_in_every_protocol_mode() {
    let proxy = start_proxy().await;
    let db = fresh_database("clients_pgbench");
    let conn = conn_string(&proxy, "postgres", PASSWORD, &db);

    // -i loads with COPY through the proxy.
    let init_conn = conn.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        run(tool("pgbench").args(["-i", "-s", "1", "-q"]).arg(init_conn))
    })
    .await
    .unwrap();
    assert!(ok, "pgbench -i failed: {err}");
    // The rows landed on the primary itself.
    let n = cluster()
        .psql(0, &db, "SELECT count(*) FROM pgbench_accounts")
        .unwrap();
    assert_eq!(n, "100000");

    cluster()
        .wait_for_replay(std::time::Duration::from_secs(30))
        .unwrap();
    let stats = |i| proxy.shared().stats(i);
    for mode in ["simple", "extended", "prepared"] {
        // Select-only: every transaction is one read, served by the replicas.
        let before = [stats(0), stats(1), stats(2)];
        let out = pgbench(
            &conn,
            &["-S", "-n", "-T", "2", "-c", "4", "-j", "2", "-M", mode],
        )
        .await;
        let done = processed(&out, mode);
        let after = [stats(0), stats(1), stats(2)];
        assert_eq!(
            after[0].routed, before[0].routed,
            "-S -M {mode} touched the primary"
        );
        let replica_reads = after[1].reads + after[2].reads - before[1].reads - before[2].reads;
        assert!(
            replica_reads >= done,
            "-S -M {mode}: {replica_reads} reads for {done} transactions"
        );
        assert!(
            after[1].reads > before[1].reads && after[2].reads > before[2].reads,
            "both replicas served"
        );

        // tpcb-like: transactions that write, entirely on the primary.
        let before = [stats(0), stats(1), stats(2)];
        let out = pgbench(&conn, &["-n", "-T", "2", "-c", "4", "-j", "2", "-M", mode]).await;
        let done = processed(&out, mode);
        let after = [stats(0), stats(1), stats(2)];
        assert!(
            after[0].writes - before[0].writes >= done,
            "-M {mode}: tpcb-like not on the primary"
        );
        // Before starting, pgbench reads the scale (pgbench_branches) and the
        // partitioning of pgbench_accounts: two reads, rightly on replicas.
        let replica_delta = after[1].routed + after[2].routed - before[1].routed - before[2].routed;
        assert!(
            replica_delta <= 2,
            "-M {mode}: {replica_delta} tpcb-like requests went to replicas"
        );
    }
    // tpcb-like writes history rows: they are on the primary.
    let history: u64 = cluster()
        .psql(0, &db, "SELECT count(*) FROM pgbench_history")
        .unwrap()
        .parse()
        .unwrap();
    assert!(history > 0);
    proxy.shutdown().await;
}

async fn pgbench(conn: &str, args: &[&str]) -> String {
    let mut cmd = tool("pgbench");
    cmd.args(args).arg(conn);
    let (ok, out, err) = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    assert!(ok, "pgbench {args:?} failed: {err}\n{out}");
    assert!(
        out.contains("number of failed transactions: 0 (0.000%)"),
        "{args:?}: {out}"
    );
    out
}

fn processed(out: &str, what: &str) -> u64 {
    let n = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(n > 0, "{what}: processed nothing: {out}");
    n
}
