//! Real foreign clients through the proxy: psql and pgbench, as users run them.

mod common;

use std::process::{Command, Output};

use common::*;

fn tool(name: &str) -> Command {
    let bindir = pgsplit_cluster::find_bindir().expect("PostgreSQL binaries");
    let mut cmd = Command::new(bindir.join(name));
    // Keep the user's environment from redirecting the client elsewhere.
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.env("PGPASSWORD", PASSWORD).env("LC_ALL", "C");
    cmd
}

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
    // Tables the script reads are created and replicated first: until
    // read-your-writes exists, a read right after a write may reach a replica
    // that has not replayed it yet.
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

    for mode in ["simple", "extended", "prepared"] {
        let c = conn.clone();
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            run(tool("pgbench")
                .args(["-T", "2", "-c", "4", "-j", "2", "-M", mode])
                .arg(c))
        })
        .await
        .unwrap();
        assert!(ok, "pgbench -M {mode} failed: {err}\n{out}");
        assert!(
            out.contains("number of failed transactions: 0 (0.000%)"),
            "-M {mode}: {out}"
        );
        let processed = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(processed > 0, "-M {mode} processed nothing: {out}");
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
