//! Opening a server connection's socket, and TLS on it as the backend's
//! `server_tls` says: an SSLRequest first, then the handshake if the server
//! answers `S`, plaintext on `N` unless TLS is required. Server sessions,
//! health checks and catalog lookups all open their sockets here, so they
//! reach a server the same way.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use pgsplit_config::ServerTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BackendAddr, BackendError};
use crate::wire::Wire;

pub type ServerStream = Wire<tokio_rustls::client::TlsStream<TcpStream>>;

/// SSLRequest: length 8, then the request code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A connected socket to `backend`, over TLS when negotiated; with the
/// address it reached and its descriptor.
pub async fn open(
    backend: &BackendAddr,
    keepalive: Duration,
    user_timeout: Duration,
) -> Result<(ServerStream, SocketAddr, RawFd), BackendError> {
    let err = |source| connect_error(backend, source);
    let addr = backend.resolve().await.map_err(err)?;
    let mut tcp = TcpStream::connect(addr).await.map_err(err)?;
    tcp.set_nodelay(true).map_err(err)?;
    super::sockets::tune(&tcp, keepalive, user_timeout).map_err(err)?;
    let fd = tcp.as_raw_fd();
    let tls = &backend.tls;
    if tls.mode == ServerTls::Disable {
        return Ok((Wire::Plain(tcp), addr, fd));
    }
    tcp.write_all(&SSL_REQUEST).await.map_err(err)?;
    let mut answer = [0u8; 1];
    if tcp.read(&mut answer).await.map_err(err)? == 0 {
        return Err(BackendError::Closed {
            backend: backend.name.clone(),
        });
    }
    match answer[0] {
        b'S' => {
            let stream = tls
                .connect(&backend.host, tcp)
                .await
                .map_err(|e| handshake_error(backend, e))?;
            Ok((Wire::Tls(Box::new(stream), None), addr, fd))
        }
        b'N' if tls.mode == ServerTls::Prefer => Ok((Wire::Plain(tcp), addr, fd)),
        b'N' => Err(BackendError::TlsRefused {
            backend: backend.name.clone(),
            mode: tls.mode.as_str(),
        }),
        other => Err(BackendError::Tls {
            backend: backend.name.clone(),
            reason: format!("it answered SSLRequest with {other:?}, not S or N"),
        }),
    }
}

pub fn connect_error(backend: &BackendAddr, source: std::io::Error) -> BackendError {
    if super::out_of_descriptors(&source) {
        return BackendError::OutOfDescriptors {
            backend: backend.name.clone(),
            source,
        };
    }
    BackendError::Connect {
        backend: backend.name.clone(),
        host: backend.host.clone(),
        port: backend.port,
        source,
    }
}

/// rustls reports a refused certificate (or any TLS-level failure) as
/// InvalidData: a setup problem to state plainly. Anything else is the
/// network's, like a failed connect.
fn handshake_error(backend: &BackendAddr, e: std::io::Error) -> BackendError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        BackendError::Tls {
            backend: backend.name.clone(),
            reason: e.to_string(),
        }
    } else {
        connect_error(backend, e)
    }
}

/// Why a tokio-postgres client could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Open(#[from] BackendError),
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// pgsplit could not open a socket: not the server's fault.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ClientError::Open(BackendError::OutOfDescriptors { .. })
        )
    }
}

/// A tokio-postgres client (health checks, catalog lookups) on a socket
/// opened as sessions open theirs, TLS included.
pub async fn postgres_client(
    backend: &BackendAddr,
    config: &tokio_postgres::Config,
    limit: Duration,
    timeouts: &pgsplit_config::Timeouts,
) -> Result<tokio_postgres::Client, ClientError> {
    // TLS, if any, is already on the stream: tokio-postgres must not ask
    // for it again.
    let mut config = config.clone();
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let connect = async {
        let (stream, _, _) = open(
            backend,
            timeouts.server_keepalive,
            timeouts.server_tcp_user_timeout,
        )
        .await?;
        Ok::<_, ClientError>(config.connect_raw(stream, tokio_postgres::NoTls).await?)
    };
    let (client, conn) = tokio::time::timeout(limit, connect)
        .await
        .map_err(|_| ClientError::Timeout(limit))??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
