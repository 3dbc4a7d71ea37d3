//! The PostgreSQL client tools the tests run, as a user would.

use super::PASSWORD;

/// A PostgreSQL client tool (psql, pgbench) from the server's bindir, with
/// the user's PG* environment removed so nothing redirects it elsewhere.
pub fn tool(name: &str) -> std::process::Command {
    let bindir = pgsplit_cluster::find_bindir().expect("PostgreSQL binaries");
    let mut cmd = std::process::Command::new(bindir.join(name));
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.env("PGPASSWORD", PASSWORD).env("LC_ALL", "C");
    cmd
}

/// Runs `proxy/tests/py/<name>` with `args`, off the runtime's threads;
/// panics with its output unless it exits 0 having printed `done`.
pub async fn python_script(name: &str, args: Vec<String>, done: &'static str) {
    let script = format!("{}/tests/py/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .args(&args)
            .output()
            .expect("python3 runs (install psycopg[binary] and asyncpg: see .ci/run)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(done),
        "{name} failed:\n{stdout}\n{stderr}"
    );
}
