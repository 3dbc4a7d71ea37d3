//! Operating pgsplit (issue 16): shutting down in phases, pausing, and
//! what an operator's tools see while it does.

#[path = "../failures/binary.rs"]
mod binary;
#[path = "../common/mod.rs"]
mod common;
mod console;
mod http;
mod logs;
mod reload;
mod shutdown;

use std::time::Duration;

use common::*;
use pgsplit_config::Config;

/// The proxy in front of the shared cluster with `shutdown_timeout` set.
async fn proxy_with_shutdown_timeout(timeout: Duration) -> pgsplit::ProxyHandle {
    let mut config = config();
    config.timeouts.shutdown_timeout = timeout;
    config.metrics_listen = Some("127.0.0.1:0".into());
    start_proxy_with(config).await
}

/// The (SQLSTATE, detail) of the FATAL a connection was closed with.
fn fatal(frames: &[pgsplit_protocol::Frame]) -> Option<(String, String)> {
    use pgsplit_protocol::backend::{self, BackendMessage};
    frames.iter().find_map(|f| match backend::parse(f) {
        Ok(BackendMessage::ErrorResponse(e)) if e.severity() == Some("FATAL") => Some((
            e.code().unwrap_or_default().to_owned(),
            e.get(b'D').unwrap_or_default().to_owned(),
        )),
        _ => None,
    })
}

/// Rows of `table` on the primary, read there directly.
fn rows_on_primary(db: &str, table: &str) -> u64 {
    cluster()
        .psql(0, db, &format!("SELECT count(*) FROM {table}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// pgbench data initialised through the binary at `addr` in `db`, then
/// pgbench running `clients` for `seconds` (tpcb-like, simple protocol) in
/// the background.
fn pgbench_through(
    addr: std::net::SocketAddr,
    db: &str,
    clients: u32,
    seconds: u32,
) -> tokio::task::JoinHandle<std::process::Output> {
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname={db}",
        addr.port()
    );
    let init = tool("pgbench")
        .args(["-i", "-s", "1", "-q", &conn])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let (clients, seconds) = (clients.to_string(), seconds.to_string());
    tokio::task::spawn_blocking(move || {
        tool("pgbench")
            .args(["-c", &clients, "-T", &seconds, "-M", "simple", "-n", &conn])
            .output()
            .unwrap()
    })
}
