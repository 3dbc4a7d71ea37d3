//! The check loop of one backend.
//!
//! A healthy server is asked every `routing.position_interval` (50 ms by
//! default: read-your-writes compares sessions' write positions with the
//! replicas' replay positions, so they must be fresh). The same query
//! brings its role, timeline and lag, so a promotion is seen within one
//! interval. A server that fails a check is asked again every
//! `health.health_check_period` and is `down` after
//! `health.health_check_max_retries` failures in a row; one success brings
//! it back.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::topology::{BackendId, Report, Topology};

pub use pgsplit_protocol::backend::parse_lsn;

/// One loop per backend; each ends when the proxy is gone.
pub fn spawn(shared: &Arc<Topology>) {
    for backend in shared.backends.ids() {
        tokio::spawn(watch(Arc::downgrade(shared), backend));
    }
}

// On a primary the timeline comes from the current WAL file name:
// pg_control_checkpoint() only moves at the next checkpoint, which after a
// promotion can be minutes away.
const CHECK: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     (CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) \
      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END)::text, \
     pg_last_wal_receive_lsn()::text, \
     (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::bigint::text, \
     (SELECT status FROM pg_stat_wal_receiver)";

async fn watch(shared: Weak<Topology>, backend: BackendId) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut failures = 0u32;
    let (mut system_id, mut warned) = (0u64, false);
    let mut local_misses = crate::admission::Throttle::new(Duration::from_secs(10));
    loop {
        let Some(s) = shared.upgrade() else { return };
        let timeout = s.config().health.health_check_timeout;
        let sent_at_us = s.now_us();
        // Sessions are skipping this server: only a check on a new
        // connection says whether it can be reached now (one that outlived
        // the failure proves nothing), and its pass ends the skipping.
        let marked = s.is_marked_unreachable(backend);
        if marked {
            client = None;
        }
        let outcome = tokio::time::timeout(timeout, async {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                let fresh = connect_or_miss(&s, backend).await?;
                // Asked once per connection: a server gets another cluster
                // only through a restart, which ends the connection.
                system_id = cluster_of(&fresh, &mut warned, s.backends[backend].name()).await;
                client = Some(fresh);
            }
            check(
                client.as_ref().expect("connected above"),
                sent_at_us,
                system_id,
            )
            .await
            .map_err(Miss::Server)
        })
        .await
        .unwrap_or_else(|_| Err(Miss::Server(format!("no answer within {timeout:?}"))));
        match outcome {
            Err(Miss::Local(error)) => {
                // Says nothing about the server: neither a pass nor a failure.
                if let Some(held_back) = local_misses.allow() {
                    tracing::warn!(backend = %s.backends[backend].name(), %error, held_back,
                        "health check skipped: pgsplit is out of file descriptors");
                }
            }
            Ok(report) => {
                failures = 0;
                s.control.checked(&s, backend, &report);
                if marked {
                    s.clear_unreachable(backend);
                }
            }
            Err(Miss::Server(error)) => {
                client = None;
                failures += 1;
                s.control.failed(&s, backend, failures, &error);
            }
        }
        let wait = if failures == 0 {
            s.config().routing.position_interval
        } else {
            s.config().health.health_check_period
        };
        let wake = Arc::clone(&s.backends[backend].node.wake);
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

/// The system identifier of the server's cluster, or 0 if the health user
/// may not read it (said once per backend, with the fix).
async fn cluster_of(c: &tokio_postgres::Client, warned: &mut bool, backend: &str) -> u64 {
    const SQL: &str = "SELECT system_identifier::text FROM pg_control_system()";
    let id = match c.simple_query(SQL).await {
        Ok(rows) => rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        }),
        Err(e) => {
            if !std::mem::replace(warned, true) {
                tracing::warn!(%backend, error = %e, "cannot read the system identifier: a re-initialized cluster or a server of another cluster will not be told apart; GRANT EXECUTE ON FUNCTION pg_control_system() TO the health check user (or pg_monitor)");
            }
            None
        }
    };
    id.unwrap_or(0)
}

async fn check(
    c: &tokio_postgres::Client,
    sent_at_us: u64,
    system_id: u64,
) -> Result<Report, String> {
    let rows = c.simple_query(CHECK).await.map_err(|e| e.to_string())?;
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or("the health check returned no row")?;
    let text = |i: usize| row.get(i).unwrap_or("");
    Ok(Report {
        in_recovery: text(0) == "t",
        lsn: parse_lsn(text(1)).unwrap_or(0),
        timeline: text(2).parse().unwrap_or(0),
        system_id,
        receive_lsn: parse_lsn(text(3)).unwrap_or(0),
        replay_age_millis: text(4).parse::<i64>().ok().map(|v| v.max(0) as u64),
        receiver_status: text(5).to_owned(),
        sent_at_us,
    })
}

/// The health credentials: `[health]`'s own, else the first user's server
/// login if it has a password, else `[auth_query]`'s login, else the first
/// user without a password (the servers must trust it).
pub(super) fn login(s: &Topology) -> (String, Option<String>) {
    let c = &s.config();
    let h = &c.health;
    if let Some(user) = &h.health_check_user {
        let password = h.health_check_password.as_ref();
        return (user.clone(), password.map(|p| p.expose().to_owned()));
    }
    let first = c
        .users
        .iter()
        .find(|u| u.name != pgsplit_config::WILDCARD_USER);
    let first = first.map(|u| (u.server_user(), u.server_password()));
    match (first, &c.auth_query.user) {
        (Some((user, Some(p))), _) => (user.to_owned(), Some(p.to_owned())),
        (_, Some(user)) => {
            let password = c.auth_query.password.as_ref();
            (user.clone(), password.map(|p| p.expose().to_owned()))
        }
        (Some((user, None)), None) => (user.to_owned(), None),
        // Only a wildcard entry that trusts: PostgreSQL's usual superuser.
        (None, None) => ("postgres".to_owned(), None),
    }
}

/// Why a check did not pass.
enum Miss {
    /// The server did not answer, or answered wrong.
    Server(String),
    /// pgsplit could not even open a socket.
    Local(String),
}

async fn connect_or_miss(s: &Topology, backend: BackendId) -> Result<tokio_postgres::Client, Miss> {
    connect_raw(s, backend).await.map_err(|e| {
        if e.is_local() {
            Miss::Local(e.to_string())
        } else {
            Miss::Server(e.to_string())
        }
    })
}

pub(super) async fn connect(
    s: &Topology,
    backend: BackendId,
) -> Result<tokio_postgres::Client, String> {
    connect_raw(s, backend).await.map_err(|e| e.to_string())
}

async fn connect_raw(
    s: &Topology,
    backend: BackendId,
) -> Result<tokio_postgres::Client, crate::backend::negotiate::ClientError> {
    let (user, password) = login(s);
    let b = &s.backends[backend].addr;
    let mut config = tokio_postgres::Config::new();
    config
        .user(&user)
        .dbname(&s.config().health.health_check_database)
        .application_name("pgsplit health check");
    if let Some(p) = &password {
        config.password(p);
    }
    let t = &s.config().timeouts;
    let limit = t.connect.min(Duration::from_secs(5));
    crate::backend::negotiate::postgres_client(b, &config, limit, t).await
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
