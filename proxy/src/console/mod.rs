//! PgBouncer's admin console: a client that logs in to the virtual
//! database `pgbouncer` (or `pgsplit`) as an admin user talks to pgsplit
//! itself, never to a server, and gets PgBouncer's `SHOW` views and
//! commands, so the dashboards, exporters and scripts written for
//! PgBouncer work unchanged. One pool row per backend, database and user
//! shows the per-replica split.

mod commands;
mod stats;
mod table;
mod views;

use bytes::BytesMut;
use pgsplit_protocol::encode::{self, ErrorInfo};
use pgsplit_protocol::tag::frontend as fe;
use pgsplit_protocol::{split_frame, Direction, TransactionStatus};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::errors::SessionError;
use crate::lifecycle::Listener;
use crate::shared::Shared;
use crate::topology::BackendId;
use crate::wire::Wire;

pub use table::Column;

/// The databases that name the console instead of a server's database.
pub const DATABASES: [&str; 2] = ["pgbouncer", "pgsplit"];

pub fn is_console(database: &str) -> bool {
    DATABASES.contains(&database)
}

/// How the console names the pool target for `database` on `backend`.
fn target(shared: &Shared, backend: BackendId, database: &str) -> String {
    format!("{database}@{}", shared.topology.backends[backend].name())
}

/// What a console login is told about the "server": enough for libpq,
/// psycopg and JDBC to accept it (their checks read these).
pub fn startup_parameters(out: &mut BytesMut) {
    for (name, value) in [
        ("server_version", "16.0 (pgsplit admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", "pgsplit"),
    ] {
        encode::parameter_status(out, name, value);
    }
}

/// Serves a console session until the client leaves or pgsplit stops.
/// Only simple queries are taken, as in PgBouncer's console.
pub(crate) async fn serve<T: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: &mut Wire<T>,
    rbuf: &mut BytesMut,
    shared: &std::sync::Arc<Shared>,
    lifecycle: &Listener,
    is_admin: bool,
) -> Result<(), SessionError> {
    let max = shared.config.limits.max_message_size;
    let mut out = BytesMut::new();
    // After an extended-protocol message: everything up to Sync is skipped.
    let mut skipping = false;
    loop {
        while let Some(frame) = split_frame(rbuf, Direction::Frontend, max)? {
            match frame.tag() {
                fe::TERMINATE => return Ok(()),
                // Everything up to the Sync of a refused extended request
                // is dropped, as PostgreSQL does.
                fe::SYNC => {
                    skipping = false;
                    encode::ready_for_query(&mut out, TransactionStatus::Idle);
                }
                _ if skipping => {}
                fe::QUERY => {
                    let sql = query_text(frame.body());
                    let reply = commands::run(shared, &sql, is_admin).await;
                    reply.encode(&mut out);
                    encode::ready_for_query(&mut out, TransactionStatus::Idle);
                }
                fe::FLUSH => {}
                // A simple-protocol message: answered at once, no Sync follows.
                fe::FUNCTION_CALL => {
                    encode::error_response(&mut out, &simple_only());
                    encode::ready_for_query(&mut out, TransactionStatus::Idle);
                }
                _ => {
                    skipping = true;
                    encode::error_response(&mut out, &simple_only());
                }
            }
        }
        if !out.is_empty() {
            stream.send(&out).await?;
            out.clear();
        }
        tokio::select! {
            more = stream.fill(rbuf, Direction::Frontend, max) => {
                if !more? {
                    return Ok(());
                }
            }
            _ = lifecycle.session_ends(true) => {
                return Err(SessionError::AdminShutdown {
                    cut: None,
                    in_flight: false,
                });
            }
        }
    }
}

fn query_text(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn simple_only() -> ErrorInfo {
    ErrorInfo::error(
        "0A000",
        "pgsplit admin console: only simple queries are supported",
    )
    .hint("Send the command as a simple query (psql, or a driver's simple-query mode), as PgBouncer's console requires.")
}
