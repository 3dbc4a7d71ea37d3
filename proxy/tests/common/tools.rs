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
