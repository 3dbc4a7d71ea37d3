//! Server side: connections to PostgreSQL backends. `connect.rs` opens
//! and authenticates one; `server.rs` is what sessions may do with it
//! (its fields are private here); `prepared.rs` tracks the statements it
//! has; `position.rs` reads WAL positions on it for read-your-writes;
//! `pool.rs` keeps idle ones per backend, database and user.

mod connect;
mod credential;
pub mod negotiate;
pub mod pool;
mod position;
mod prepared;
mod server;
pub mod sockets;

pub use prepared::{Prepare, Prepared};

pub use connect::{ConnectParams, ServerConn};
pub use credential::{Credential, Method};

use pgsplit_protocol::Frame;

/// Why a server connection could not be used. Whether a retry elsewhere is
/// safe is decided by the caller, which knows if bytes reached the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("cannot connect to backend \"{backend}\" ({host}:{port}): {source}")]
    Connect {
        backend: String,
        host: String,
        port: u16,
        source: std::io::Error,
    },
    /// pgsplit itself could not open a socket: the server is not at fault
    /// and is not taken out of service.
    #[error(
        "pgsplit has no file descriptor left for a connection to backend \"{backend}\": {source}"
    )]
    OutOfDescriptors {
        backend: String,
        source: std::io::Error,
    },
    #[error("backend \"{backend}\" did not complete startup within {secs:.1}s")]
    Timeout { backend: String, secs: f64 },
    /// The server refused the login or the session (bad password for the
    /// server user, unknown database...): its own ErrorResponse, to relay.
    #[error("backend \"{backend}\" refused the connection")]
    Refused { backend: String, error: Frame },
    #[error("backend \"{backend}\" asks for authentication method {method}, which pgsplit cannot perform")]
    UnsupportedAuth { backend: String, method: String },
    #[error("backend \"{backend}\" asks user \"{user}\" for {method:?} authentication, which pgsplit cannot answer: {why}")]
    NoPassword {
        backend: String,
        user: String,
        method: Method,
        why: &'static str,
    },
    #[error("backend \"{backend}\" failed SCRAM authentication: {reason}")]
    Scram { backend: String, reason: String },
    #[error("backend \"{backend}\" closed the connection")]
    Closed { backend: String },
    /// The TLS handshake failed: a certificate that does not verify, no
    /// protocol in common.
    #[error("TLS with backend \"{backend}\" failed: {reason}")]
    Tls { backend: String, reason: String },
    #[error("backend \"{backend}\" does not accept TLS, which server_tls = \"{mode}\" requires")]
    TlsRefused { backend: String, mode: &'static str },
    #[error("I/O error talking to backend \"{backend}\": {source}")]
    Io {
        backend: String,
        source: std::io::Error,
    },
    #[error("backend \"{backend}\" broke the protocol: {source}")]
    Protocol {
        backend: String,
        source: pgsplit_protocol::ProtocolError,
    },
}

impl BackendError {
    /// The server is down, starting, stopping or unreachable: worth trying
    /// again (or elsewhere) during a failover. A refusal for any other
    /// reason (unknown database, bad credentials) would only repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::Closed { .. }
            | BackendError::Io { .. } => true,
            BackendError::Refused { error, .. } => matches!(
                pgsplit_protocol::backend::parse(error),
                Ok(pgsplit_protocol::backend::BackendMessage::ErrorResponse(f))
                    if f.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
            ),
            _ => false,
        }
    }
}

pub use crate::topology::BackendAddr;

/// This process (EMFILE) or the whole system (ENFILE) is out of file
/// descriptors: a local shortage, not a server failure.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_local_and_never_blames_the_server() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(out_of_descriptors(&emfile));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(!out_of_descriptors(&refused));
        let local = BackendError::OutOfDescriptors {
            backend: "r1".into(),
            source: emfile,
        };
        assert!(!local.is_transient(), "not a reason to skip the server");
    }
}
