//! The proxy relays every part of the protocol to the primary, against a real
//! cluster: simple and extended queries, pipelines, COPY, errors, cancel and
//! NOTIFY. Each assertion checks which server answered, not just that
//! something did.

mod cancel;
#[path = "../common/mod.rs"]
mod common;
mod encoding;
mod flow;
mod protocol;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use futures::{SinkExt, StreamExt, TryStreamExt};
use pgsplit_protocol::encode;

/// The node on which a statement of `db` whose text contains `marker` is
/// running right now, if any.
fn running_on(db: &str, marker: &str) -> Option<usize> {
    (0..3).find(|&i| {
        cluster()
            .psql(
                i,
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                     AND state = 'active' AND query LIKE '%{marker}%' \
                     AND pid <> pg_backend_pid()"
                ),
            )
            .map(|n| n == "1")
            .unwrap_or(false)
    })
}

/// Polls until a statement marked `marker` runs; the node running it.
async fn wait_running(db: &str, marker: &str) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (d, m) = (db.to_owned(), marker.to_owned());
        if let Some(node) = tokio::task::spawn_blocking(move || running_on(&d, &m))
            .await
            .unwrap()
        {
            return node;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{marker} never showed up in pg_stat_activity"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_cancel(proxy: &pgsplit::ProxyHandle, pid: i32, secret: i32) {
    let mut raw = RawClient::connect(proxy).await;
    let mut out = BytesMut::new();
    encode::cancel_request(&mut out, pid, secret);
    raw.send(&out).await;
    // As PostgreSQL does, the proxy answers nothing and closes.
    assert!(raw.until_closed().await.is_empty());
}

/// Resident memory of this process (the proxy runs in it), in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Whether the statement marked `marker` is blocked writing its result on
/// node `i`: the proxy stopped reading it.
fn blocked_in_client_write(i: usize, db: &str, marker: &str) -> bool {
    cluster()
        .psql(
            i,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state = 'active' \
                 AND wait_event = 'ClientWrite' AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
            ),
        )
        .unwrap()
        == "1"
}

/// Frames up to and including the first with `tag`.
async fn until_tag(c: &mut RawClient, tag: u8) -> Vec<pgsplit_protocol::Frame> {
    let mut frames = Vec::new();
    while let Some(f) = c.recv().await {
        let done = f.tag() == tag;
        frames.push(f);
        if done {
            return frames;
        }
    }
    panic!("closed before {}: {frames:?}", tag as char);
}

fn tags(frames: &[pgsplit_protocol::Frame]) -> String {
    frames.iter().map(|f| f.tag() as char).collect()
}

/// Runs a one-row read whose last column is `inet_server_port()::text`;
/// the row's raw columns and the port.
async fn latin1_read(c: &mut RawClient, sql: &[u8]) -> (Vec<Vec<u8>>, u16) {
    c.query_bytes(sql).await;
    let frames = c.until_ready().await;
    assert_eq!(first_error(&frames), None);
    let mut rows = data_rows(&frames);
    assert_eq!(rows.len(), 1, "one row: {rows:?}");
    let row = rows.swap_remove(0);
    let port = String::from_utf8(row.last().unwrap().clone())
        .unwrap()
        .parse()
        .unwrap();
    (row, port)
}
