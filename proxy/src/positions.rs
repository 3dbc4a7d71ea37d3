//! How far each server's WAL has got: the replay position of replicas and
//! the write position of the primary, read every `routing.position_interval`
//! over a small connection of its own per server.
//!
//! Causal reads compare these with a session's last write position, so a
//! read goes to a replica only once that replica has replayed the write. A
//! position that cannot be read is 0, "unknown", which no read relies on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use crate::shared::Shared;

#[derive(Default)]
pub struct Position {
    pub lsn: AtomicU64,
    pub in_recovery: AtomicBool,
}

impl Position {
    pub fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }
}

/// `X/Y` as PostgreSQL prints a pg_lsn.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// One loop per backend; each ends when the proxy is gone.
pub fn spawn(shared: &std::sync::Arc<Shared>) {
    for backend in 0..shared.backends.len() {
        tokio::spawn(watch(std::sync::Arc::downgrade(shared), backend));
    }
}

async fn watch(shared: Weak<Shared>, backend: usize) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut failures = 0u32;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let interval = s.config.routing.position_interval;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect(&s, backend).await;
        }
        let read = match &client {
            Some(c) => tokio::time::timeout(Duration::from_secs(2), read_position(c))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let p = &s.positions[backend];
        match read {
            Some((in_recovery, lsn)) => {
                p.in_recovery.store(in_recovery, Ordering::Release);
                p.lsn.store(lsn, Ordering::Release);
                failures = 0;
            }
            None => {
                p.lsn.store(0, Ordering::Release);
                client = None;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(backend = %s.backends[backend].name, "cannot read the WAL position; reads needing it go to the primary");
                }
            }
        }
        drop(s);
        // Back off while a server is unreachable, up to a second.
        let wait = if failures == 0 {
            interval
        } else {
            (interval * failures).min(Duration::from_secs(1))
        };
        tokio::time::sleep(wait).await;
    }
}

async fn read_position(c: &tokio_postgres::Client) -> Option<(bool, u64)> {
    let rows = c
        .simple_query(
            "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() \
             THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text",
        )
        .await
        .ok()?;
    rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => {
            Some((r.get(0)? == "t", parse_lsn(r.get(1)?)?))
        }
        _ => None,
    })
}

/// Logs in as the first configured user, to the `postgres` database.
async fn connect(s: &Shared, backend: usize) -> Option<tokio_postgres::Client> {
    let user = s.config.users.first()?;
    let b = &s.backends[backend];
    let mut config = tokio_postgres::Config::new();
    config
        .host(&b.host)
        .port(b.port)
        .user(user.server_user())
        .dbname("postgres")
        .application_name("pgsplit positions")
        .connect_timeout(s.config.timeouts.connect);
    if let Some(p) = user.server_password() {
        config.password(p);
    }
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_as_postgresql_prints_them() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("garbage"), None);
        assert_eq!(parse_lsn("1/"), None);
    }
}
