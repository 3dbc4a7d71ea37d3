//! Session errors and the one place they become what the client sees.
//!
//! Each message says what happened and what to do, and the SQLSTATE lets
//! drivers classify it (28xxx: credentials, 08xxx: connection, 53300: limits).

use pgsplit_protocol::encode::ErrorInfo;
use pgsplit_protocol::{Frame, ProtocolError};

use crate::backend::BackendError;
use crate::io::ReadError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The client went away or its socket failed: nobody to tell.
    #[error("client connection: {0}")]
    ClientIo(#[from] std::io::Error),
    #[error("client broke the protocol: {0}")]
    ClientProtocol(#[from] ProtocolError),
    /// A message type PostgreSQL does not take in a session: refused by
    /// pgsplit itself, never forwarded.
    #[error("client sent message type {0:?}")]
    UnknownMessage(u8),
    #[error("client closed the connection in the middle of a message")]
    ClientTruncated,
    /// The client said goodbye (Terminate): not an error to report.
    #[error("client terminated the session")]
    ClientGone,
    #[error("client did not complete startup in time")]
    StartupTimeout,
    /// Bytes that came in the same read as SSLRequest or GSSENCRequest,
    /// before the answer: they would bypass the negotiation (CVE-2021-23214).
    #[error("client sent unencrypted data after its encryption request, before the answer")]
    DataAfterEncryptionRequest,
    /// `tls.client_tls = "require"` and the client did not negotiate TLS.
    #[error("client did not use TLS, which tls.client_tls = \"require\" demands")]
    TlsRequired,
    #[error("TLS handshake with the client failed: {0}")]
    TlsHandshake(std::io::Error),
    /// Direct TLS (PostgreSQL 17's `sslnegotiation=direct`) is only
    /// PostgreSQL's when the client says so by ALPN.
    #[error("client negotiated TLS directly without ALPN \"postgresql\"")]
    DirectTlsWithoutAlpn,
    #[error("client sent an encryption request inside its TLS session")]
    EncryptionRequestInsideTls,
    #[error("client sent {0} where startup was expected")]
    UnexpectedStartup(&'static str),
    #[error("user {0:?} is not configured in pgsplit: add a [[users]] entry for it (the client was told \"password authentication failed\", as for a wrong password)")]
    UnknownUser(String),
    #[error("startup packet has no user")]
    NoUser,
    #[error("authentication failed for user {0:?}")]
    AuthFailed(String),
    /// `[auth_query]` found no password that can check this client: no
    /// such role, NOLOGIN, no password, or an md5 hash for a SCRAM login.
    #[error("role {0:?} has no password in PostgreSQL that can check this login (no such role, NOLOGIN, no password, or an md5 hash where auth = \"scram-sha-256\"); the client was told \"password authentication failed\"")]
    NoStoredPassword(String),
    #[error("could not look up the password of role {0:?} with [auth_query]: {1}")]
    Lookup(String, crate::login::lookup::LookupError),
    #[error("replication connections are not supported")]
    Replication,
    #[error(
        "no server took the request within timeouts.query_wait_timeout ({0:?}); it was not run"
    )]
    QueryWaitTimeout(std::time::Duration),
    #[error("client idle in a transaction for longer than timeouts.idle_transaction_timeout ({0:?}); disconnected, the transaction rolled back")]
    IdleInTransaction(std::time::Duration),
    #[error("client idle for longer than timeouts.client_idle_timeout ({0:?}); disconnected")]
    IdleSession(std::time::Duration),
    #[error("a client message needs {need} bytes buffered; limits.client_buffer_budget ({limit}) has {used} in use")]
    BufferBudget {
        need: usize,
        limit: usize,
        used: usize,
    },
    #[error("user {0:?} is not an admin and cannot use the admin console")]
    ConsoleNotAllowed(String),
    #[error("client limit of {0} reached")]
    TooManyClients(usize),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("no free connection to backend {backend:?} within {waited:?}")]
    PoolExhausted {
        backend: String,
        database: String,
        user: String,
        size: usize,
        waited: std::time::Duration,
    },
    /// pgsplit is shutting down: the session had nothing running, or its
    /// transaction outlived `timeouts.shutdown_timeout` (`cut`).
    #[error("pgsplit is shutting down")]
    AdminShutdown {
        cut: Option<std::time::Duration>,
        in_flight: bool,
    },
    /// The attached server went away (or refused a write as a demoted
    /// primary): handled by the session, which stays open.
    #[error("lost the server: {why}")]
    ServerLost { why: String, loss: Loss },
}

/// How the attached server was lost, which decides who hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// The connection failed or closed without a word: the server may be
    /// down, so other sessions skip it until a check says otherwise.
    Gone,
    /// The server ended this session's connection with a FATAL (a
    /// terminated backend, a protocol violation, a shutdown): it was up
    /// enough to say so, and its health check decides for the others.
    /// A protocol violation is never sent again elsewhere.
    Fatal { protocol_violation: bool },
    /// A write refused with 25006 by the server believed to be primary.
    ReadOnly,
}

impl From<ReadError> for SessionError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => SessionError::ClientIo(e),
            ReadError::Protocol(e) => SessionError::ClientProtocol(e),
            ReadError::TruncatedMessage => SessionError::ClientTruncated,
        }
    }
}

/// What to send the client before closing, if anything.
pub enum Reply {
    None,
    Error(ErrorInfo),
    /// A server's own ErrorResponse, relayed verbatim so the client sees
    /// exactly what PostgreSQL said (e.g. `database "x" does not exist`).
    Raw(Frame),
}

impl SessionError {
    pub fn reply(&self) -> Reply {
        use SessionError::*;
        let info = match self {
            ClientIo(_) | ClientTruncated | ClientGone | TlsHandshake(_) => return Reply::None,
            EncryptionRequestInsideTls => ErrorInfo::fatal("08P01", "received an encryption request on a connection that is already encrypted")
                .hint("This is a bug in the client or its driver."),
            TlsRequired => ErrorInfo::fatal("28000", "pgsplit requires TLS: this connection did not use it")
                .hint("Connect with sslmode=require (or verify-ca / verify-full); pgsplit is configured with tls.client_tls = \"require\"."),
            DirectTlsWithoutAlpn => ErrorInfo::fatal("08P01", "received a direct TLS connection without the ALPN protocol \"postgresql\"")
                .hint("Use a client that sends ALPN \"postgresql\" with sslnegotiation=direct (libpq 17 and later), or the default sslnegotiation=postgres."),
            ClientProtocol(e) => ErrorInfo::fatal("08P01", format!("invalid message from client: {e}"))
                .hint("This is a bug in the client or its driver; pgsplit closed this connection and keeps serving others."),
            UnknownMessage(tag) => ErrorInfo::fatal("08P01", format!("invalid frontend message type {tag}"))
                .hint("This is a bug in the client or its driver; pgsplit closed this connection and keeps serving others."),
            StartupTimeout => ErrorInfo::fatal("08006", "canceling authentication due to timeout")
                .hint("The client must finish startup within timeouts.client_startup."),
            DataAfterEncryptionRequest => ErrorInfo::fatal("08P01", "received unencrypted data after an encryption request, before pgsplit answered it")
                .hint("The client must wait for the answer to SSLRequest or GSSENCRequest before sending anything else; this is a client bug or someone tampering with the connection."),
            UnexpectedStartup(what) => ErrorInfo::fatal("08P01", format!("expected a password message, got {what}")),
            NoUser => ErrorInfo::fatal("28000", "no PostgreSQL user name specified in startup packet"),
            // The same answer for both, as PostgreSQL gives: a client must
            // not learn which user names exist. The log tells them apart.
            AuthFailed(u) | UnknownUser(u) | NoStoredPassword(u) => ErrorInfo::fatal("28P01", format!("password authentication failed for user \"{u}\"")),
            Lookup(u, e @ crate::login::lookup::LookupError::Unreachable(_)) => ErrorInfo::fatal("08006", format!("pgsplit cannot check the password of user \"{u}\" now: {e}"))
                .hint("Try again once a server is up; pgsplit looks passwords up in PostgreSQL ([auth_query])."),
            Lookup(u, e) => ErrorInfo::fatal("28000", format!("pgsplit could not look up the password of user \"{u}\": {e}"))
                .hint("Check [auth_query] in the pgsplit configuration (user, password, database, query) and what auth_query.user may read."),
            Replication => ErrorInfo::fatal("0A000", "replication connections are not supported through pgsplit")
                .hint("Connect replication clients (pg_basebackup, pg_receivewal, standbys) to the server directly."),
            QueryWaitTimeout(d) => ErrorInfo::fatal("57014", "canceling the request: no server could take it in time (query_wait_timeout)")
                .detail(format!("It waited {} for a server connection and was not run.", humantime::format_duration(*d)))
                .hint("Retry it; if this repeats, raise pool.pool_size or timeouts.query_wait_timeout, or look for sessions holding server connections (SHOW pool_nodes)."),
            IdleInTransaction(d) => ErrorInfo::fatal("25P03", "terminating connection due to idle-in-transaction timeout")
                .detail(format!("The transaction was idle for more than {} (timeouts.idle_transaction_timeout) and was rolled back.", humantime::format_duration(*d))),
            IdleSession(d) => ErrorInfo::fatal("57P05", "terminating connection due to idle-session timeout")
                .detail(format!("The connection was idle for more than {} (timeouts.client_idle_timeout).", humantime::format_duration(*d))),
            BufferBudget { need, limit, used } => ErrorInfo::fatal("53200", "out of memory: pgsplit cannot buffer this message now")
                .detail(format!("The message needs {need} bytes; client messages buffered by all sessions may take limits.client_buffer_budget = {limit} bytes, {used} of which are in use."))
                .hint("Send smaller messages (COPY in chunks, fewer rows per statement) or raise limits.client_buffer_budget; other sessions are unaffected."),
            ConsoleNotAllowed(user) => ErrorInfo::fatal("28000", format!("pgsplit: user \"{user}\" may not use the admin console"))
                .detail("The databases \"pgbouncer\" and \"pgsplit\" are pgsplit's admin console, open to users with admin = true.")
                .hint("Set admin = true in the user's [[users]] entry, or connect to a real database."),
            TooManyClients(n) => ErrorInfo::fatal("53300", "sorry, too many clients already")
                .detail(format!("pgsplit is serving its limit of {n} client connections."))
                .hint("Raise limits.max_client_connections, or close idle connections."),
            Backend(e) => return backend_reply(e),
            PoolExhausted { .. } => pool_error(self),
            AdminShutdown { cut: None, .. } => ErrorInfo::fatal("57P01", "terminating connection due to administrator command")
                .detail("pgsplit is shutting down; nothing was running on this connection.")
                .hint("Reconnect: another pgsplit, or this one once it is back, will serve you."),
            AdminShutdown { cut: Some(d), in_flight } => ErrorInfo::fatal("57P01", "terminating connection due to administrator command")
                .detail(format!(
                    "pgsplit is shutting down and this session's work did not end within timeouts.shutdown_timeout ({}): {}",
                    humantime::format_duration(*d),
                    if *in_flight {
                        "a request was still running, and may or may not have completed."
                    } else {
                        "its open transaction was rolled back."
                    }
                ))
                .hint("Reconnect; check whether the work was done before running it again."),
            ServerLost { why, .. } => ErrorInfo::fatal("08006", format!("pgsplit: lost the server connection: {why}"))
                .hint("Reconnect and retry."),
        };
        Reply::Error(info)
    }
}

fn backend_reply(e: &BackendError) -> Reply {
    use BackendError::*;
    let info = match e {
        Refused { error, .. } => return Reply::Raw(error.clone()),
        OutOfDescriptors { .. } => return Reply::Error(out_of_descriptors(e, true)),
        Connect { .. } | Timeout { .. } => ErrorInfo::fatal("08001", format!("pgsplit: {e}"))
            .hint("Check that the server is running and reachable from pgsplit; the next connection attempt tries again."),
        UnsupportedAuth { .. } => ErrorInfo::fatal("28000", format!("pgsplit: {e}"))
            .hint("Configure the server's pg_hba.conf to use scram-sha-256, md5, password or trust for pgsplit's address."),
        NoPassword { .. } => ErrorInfo::fatal("28P01", format!("pgsplit: {e}"))
            .hint("Set server_password (or a plaintext password) for this user in the pgsplit configuration."),
        Scram { .. } => ErrorInfo::fatal("28P01", format!("pgsplit: {e}"))
            .hint("Check the configured server_password for this user."),
        Tls { .. } => ErrorInfo::fatal("08001", format!("pgsplit: {e}"))
            .hint("Check [tls] server_tls and server_root_cert_file (or the backend's server_tls) against the server's certificate."),
        TlsRefused { .. } => ErrorInfo::fatal("08001", format!("pgsplit: {e}"))
            .hint("Turn ssl on in the server, or lower server_tls to \"prefer\" or \"disable\" for this backend."),
        Closed { .. } | Io { .. } | Protocol { .. } => ErrorInfo::fatal("08006", format!("pgsplit: {e}"))
            .detail("The server connection was lost; a transaction that was open on it has been rolled back by the server.")
            .hint("Reconnect and retry the transaction."),
    };
    Reply::Error(info)
}

/// pgsplit could not open a server connection for lack of descriptors.
fn out_of_descriptors(e: &BackendError, fatal: bool) -> ErrorInfo {
    let message = format!("pgsplit: {e}");
    let info = if fatal {
        ErrorInfo::fatal("53000", message)
    } else {
        ErrorInfo::error("53000", message).detail("The statement was not run.")
    };
    info.hint("Raise pgsplit's open-file limit (ulimit -n, LimitNOFILE=) or lower limits.max_client_connections; the server itself is fine.")
}

/// The error for one statement that could not be started because a server
/// was unreachable. The session goes on: nothing was sent, so a retry is safe.
pub fn statement_error(e: &BackendError) -> ErrorInfo {
    if let BackendError::OutOfDescriptors { .. } = e {
        return out_of_descriptors(e, false);
    }
    if let BackendError::Refused { backend, error } = e {
        if let Ok(pgsplit_protocol::backend::BackendMessage::ErrorResponse(f)) =
            pgsplit_protocol::backend::parse(error)
        {
            return ErrorInfo::error(
                f.code().unwrap_or("08006"),
                format!(
                    "pgsplit: backend \"{backend}\" refused a new connection: {}",
                    f.message().unwrap_or("no message")
                ),
            )
            .hint("The statement was not run; it is safe to retry.");
        }
    }
    ErrorInfo::error("08006", format!("pgsplit: {e}"))
        .detail("The statement was not run.")
        .hint("Retry; check that the server is running and reachable from pgsplit.")
}

/// The error for a request that waited too long for a server connection,
/// or one the pool could not provide; severity ERROR: the session goes on.
pub fn pool_error(e: &SessionError) -> ErrorInfo {
    match e {
        SessionError::PoolExhausted {
            backend,
            database,
            user,
            size,
            waited,
        } => ErrorInfo::error(
            "53300",
            format!(
                "pgsplit: no free server connection to backend \"{backend}\" after {:.1}s: \
                 all {size} connections for database \"{database}\" and user \"{user}\" are busy",
                waited.as_secs_f64()
            ),
        )
        .hint("Raise pool.pool_size (within the server's max_connections) or pool.checkout_timeout, or keep transactions shorter."),
        other => ErrorInfo::error("08006", format!("pgsplit: {other}"))
            .hint("The statement was not run; it is safe to retry."),
    }
}

/// No primary appeared within `health.failover_timeout`: the write was not
/// run. 57P03 (cannot connect now) tells drivers and poolers to retry later.
/// No server may take a read. `primary_reads` says whether the primary
/// could have (it is down or fenced) or is not allowed to.
pub fn no_reader(primary_reads: pgsplit_config::PrimaryReads) -> ErrorInfo {
    let (why, hint) = match primary_reads {
        pgsplit_config::PrimaryReads::Off => (
            "no replica is usable and routing.primary_reads is \"off\"",
            "Bring a replica back, or set routing.primary_reads = \"fallback\" to let the primary serve reads meanwhile.",
        ),
        _ => (
            "no replica is usable and the primary cannot take it either",
            "Retry shortly; SHOW pool_nodes shows which servers are up.",
        ),
    };
    ErrorInfo::error(
        "57P03",
        format!("pgsplit: no server can take this read: {why}"),
    )
    .hint(hint)
}

pub fn no_primary(waited: std::time::Duration, last_error: Option<&str>) -> ErrorInfo {
    let info = ErrorInfo::error(
        "57P03",
        format!(
            "pgsplit: no primary server is available (waited {:.1}s, health.failover_timeout): the primary is down and no standby has been promoted",
            waited.as_secs_f64()
        ),
    )
    .hint("The statement was not run; retry once a standby is promoted (by your failover manager, PGSPLIT PROMOTE, or health.auto_promote). SHOW pool_nodes shows each node's state.");
    match last_error {
        Some(e) => info.detail(format!("Last attempt: {e}.")),
        None => info,
    }
}

/// The server running a request or transaction went away (or was fenced)
/// before the request finished. The session goes on.
pub fn server_lost(backend: &str, why: &str, in_transaction: bool) -> ErrorInfo {
    let info = ErrorInfo::error(
        "08006",
        format!("pgsplit: lost the connection to server \"{backend}\": {why}"),
    );
    if in_transaction {
        info.detail("The transaction was rolled back by the server (if this was its COMMIT, it may or may not have committed); this connection stays usable.")
            .hint("End the transaction with ROLLBACK and run it again.")
    } else {
        info.detail("If the statement wrote, it may or may not have committed; reads are retried by pgsplit when nothing had been returned yet.")
            .hint("Check whether a write took effect before retrying it; this connection stays usable.")
    }
}

/// A `SET pgsplit.*` whose value pgsplit does not take.
pub fn invalid_own_setting(sql: &str, hint: &str) -> ErrorInfo {
    ErrorInfo::error("22023", format!("pgsplit: invalid value in {sql:?}")).hint(hint)
}

/// The request arrived in the aborted transaction of a lost server.
pub fn aborted_transaction() -> ErrorInfo {
    ErrorInfo::error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
    .detail("pgsplit lost the server this transaction ran on; the server rolled it back.")
    .hint("Send ROLLBACK, then run the transaction again.")
}

/// `ROLLBACK TO SAVEPOINT` after the transaction's server was lost.
pub fn savepoint_lost() -> ErrorInfo {
    ErrorInfo::error(
        "3B001",
        "pgsplit: the savepoint is gone with the lost server's transaction",
    )
    .hint("End the transaction with ROLLBACK and run it again.")
}

/// An admin command sent together with other statements.
pub fn admin_not_alone() -> ErrorInfo {
    ErrorInfo::error(
        "0A000",
        "pgsplit: an admin command cannot share a request with other statements",
    )
    .hint("Send SHOW pool_* and PGSPLIT commands on their own.")
}

/// `PGSPLIT PROMOTE` inside a transaction or a pinned session.
pub fn admin_in_transaction(command: &str) -> ErrorInfo {
    ErrorInfo::error(
        "25001",
        format!("pgsplit: {command} cannot run inside a transaction block or a pinned session"),
    )
    .hint("Run it on a connection of its own, outside a transaction.")
}

/// A Bind, Describe or Execute of something the client never prepared
/// (`what` is PostgreSQL's wording of it).
pub fn undefined(code: &'static str, what: String) -> ErrorInfo {
    ErrorInfo::error(code, what)
}

/// An admin command that does not parse (`message` says why).
pub fn admin_syntax(message: String) -> ErrorInfo {
    ErrorInfo::error("42601", message)
}

/// A cluster-changing admin command from a user who is not an admin.
pub fn admin_only(command: &str) -> ErrorInfo {
    ErrorInfo::error("42501", format!("pgsplit: permission denied for {command}"))
        .hint("Only users with admin = true in their [[users]] entry may change the cluster; SHOW pool_nodes is open to everyone.")
}

/// RELOAD of a configuration that cannot be used: `why` has the lines
/// `check-config` prints.
pub fn not_reloaded(why: &str) -> ErrorInfo {
    ErrorInfo::error(
        "F0000",
        "pgsplit: the configuration was not reloaded; nothing changed",
    )
    .detail(why.to_owned())
    .hint("Fix what the detail names and RELOAD again; pgsplit check-config FILE shows the same.")
}

/// An admin command naming a backend that is not configured.
pub fn no_such_backend(name: &str, names: &[&str]) -> ErrorInfo {
    ErrorInfo::error("42704", format!("pgsplit: no backend named {name:?}")).hint(format!(
        "Name a backend ({}) or give its node_id from SHOW pool_nodes.",
        names.join(", ")
    ))
}

/// `PGSPLIT PROMOTE` of a node that is not a healthy standby.
pub fn not_promotable(name: &str) -> ErrorInfo {
    ErrorInfo::error(
        "55000",
        format!("pgsplit: cannot promote {name}: it is not a standby that answers health checks"),
    )
    .hint("SHOW pool_nodes lists each node's pg_status and pg_role.")
}

pub fn not_acceptable(name: &str) -> ErrorInfo {
    ErrorInfo::error(
        "55000",
        format!("pgsplit: cannot accept {name} as the primary: it does not answer health checks as a primary"),
    )
    .hint("PGSPLIT ACCEPT takes a server that is out of recovery; SHOW pool_nodes lists each node's pg_status and pg_role.")
}

pub fn promotion_in_progress() -> ErrorInfo {
    ErrorInfo::error("55006", "pgsplit: a promotion is already in progress")
        .hint("Wait for it to finish (SHOW pool_nodes), then retry if still needed.")
}

/// A switchover given up before anything was promoted.
pub fn switchover_abandoned(name: &str, why: &str) -> ErrorInfo {
    ErrorInfo::error("55006", format!("pgsplit: switchover to {name} abandoned: {why}"))
        .hint("Nothing was promoted and writes go to the old primary again; retry when the cluster is quieter.")
}

pub fn promotion_failed(name: &str, why: &str) -> ErrorInfo {
    ErrorInfo::error("58000", format!("pgsplit: promoting {name} failed: {why}"))
}

/// `pg_promote()` succeeded but the health checks have not seen it.
pub fn promotion_unconfirmed(name: &str, waited: std::time::Duration) -> ErrorInfo {
    ErrorInfo::error(
        "58000",
        format!("pgsplit: {name} was promoted but has not reported as primary within {waited:?}"),
    )
}
