//! Health-driven failover (issue 6) against real servers: replicas and
//! primaries die, get promoted, rejoin and lag while clients keep working,
//! and pgsplit follows by itself, with no restart and no config change.
//!
//! Each test builds its own cluster (a promotion cannot be undone) and runs
//! alone (`SERIAL` in common/failover.rs), and prints the figure the issue
//! asks for: `cargo test -p pgsplit --test failover -- --nocapture`.
//! Health checks run every 200 ms with 2 retries, so detection costs well
//! under a second and the figures measure failover itself.
//!
//! Which node served a statement is always read from inside it
//! (`inet_server_port()`, or `RETURNING port` whose default is the same),
//! and what landed where is checked on the servers directly afterwards.

mod admin;
mod clusters;
#[path = "../common/mod.rs"]
mod common;
mod deaths;
mod partition;
mod promotion;
#[path = "../common/failover.rs"]
mod scenario;

use std::time::{Duration, Instant};

use pgsplit_cluster::{ClusterError, StopMode};
use pgsplit_config::{AuthMethod, ReadYourWrites, Secret, User};
use scenario::*;
use tokio::time::sleep;
use tokio_postgres::SimpleQueryMessage;

/// Ports that served `attempts`, counted per node index.
fn per_node<'a>(s: &Scenario, attempts: impl Iterator<Item = &'a Attempt>) -> [usize; 3] {
    let mut counts = [0; 3];
    for a in attempts {
        if let Ok(port) = a.result {
            counts[s.node_of(port)] += 1;
        }
    }
    counts
}

/// The first few failures, for an assertion message.
fn show(failed: &[&Attempt]) -> String {
    let errors: Vec<&str> = failed
        .iter()
        .take(5)
        .map(|a| a.result.as_ref().unwrap_err().as_str())
        .collect();
    format!("{} failed, first: {errors:#?}", failed.len())
}

/// Column names and text values of a result over the extended protocol.
async fn extended(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(Vec<String>, Vec<Vec<String>>), tokio_postgres::Error> {
    let rows = client.query(sql, &[]).await?;
    let names = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect())
        .unwrap_or_default();
    let values = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                .collect()
        })
        .collect();
    Ok((names, values))
}

/// Column names of a result over the simple protocol.
async fn simple_columns(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::RowDescription(cols) => {
                Some(cols.iter().map(|c| c.name().to_owned()).collect())
            }
            SimpleQueryMessage::Row(r) => {
                Some(r.columns().iter().map(|c| c.name().to_owned()).collect())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no columns"))
}
