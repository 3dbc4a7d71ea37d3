//! Counters of what went wrong, for alerts: failed logins, protocol
//! errors, sessions refused or ended by pgsplit (by reason), reads retried
//! elsewhere, writes a demoted primary refused. Counted where a session
//! ends or fails over, never on a request's way.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::errors::SessionError;

/// Why pgsplit refused or ended a session, as the metrics label it.
pub const REASONS: [&str; 10] = [
    "client_limit",
    "tls_required",
    "not_admin",
    "startup_timeout",
    "replication",
    "query_wait_timeout",
    "buffer_budget",
    "idle_timeout",
    "shutdown",
    "pool_exhausted",
];

#[derive(Default)]
pub struct Events {
    pub auth_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
    refused: [AtomicU64; REASONS.len()],
    /// Reads sent again to another server after theirs failed before any
    /// reply reached the client.
    pub retried_reads: AtomicU64,
    /// Writes refused as read-only by the server believed primary (it had
    /// been demoted); retried on the new primary when nothing had reached
    /// the client.
    pub fenced_writes: AtomicU64,
}

impl Events {
    /// Counts the error that ended a session, if it is one to count.
    pub fn session_ended(&self, e: &SessionError) {
        use SessionError::*;
        let counter = match e {
            AuthFailed(_) | UnknownUser(_) | NoStoredPassword(_) => &self.auth_failures,
            ClientProtocol(_)
            | UnknownMessage(_)
            | DataAfterEncryptionRequest
            | DirectTlsWithoutAlpn
            | EncryptionRequestInsideTls
            | UnexpectedStartup(_)
            | NoUser => &self.protocol_errors,
            TooManyClients(_) => self.refused("client_limit"),
            TlsRequired => self.refused("tls_required"),
            ConsoleNotAllowed(_) => self.refused("not_admin"),
            StartupTimeout => self.refused("startup_timeout"),
            Replication => self.refused("replication"),
            QueryWaitTimeout(_) => self.refused("query_wait_timeout"),
            BufferBudget { .. } => self.refused("buffer_budget"),
            IdleSession(_) | IdleInTransaction(_) => self.refused("idle_timeout"),
            AdminShutdown { .. } => self.refused("shutdown"),
            PoolExhausted { .. } => self.refused("pool_exhausted"),
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A socket over the client limit, refused without being read.
    pub fn over_limit(&self) {
        self.refused("client_limit").fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self, reason: &str) -> &AtomicU64 {
        let i = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        &self.refused[i]
    }

    /// (reason, count) for every reason.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REASONS
            .iter()
            .zip(&self.refused)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
    }
}
