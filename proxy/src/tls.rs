//! TLS to clients, with rustls: the certificate pgsplit presents, loaded
//! from the configured PEM files, and the handshake of either negotiation
//! (an SSLRequest answered `S`, or PostgreSQL 17's direct TLS, where the
//! client's first bytes are a TLS ClientHello with ALPN `postgresql`).

use std::path::Path;
use std::sync::Arc;

use pgsplit_config::ClientTls;
use pgsplit_protocol::auth::tls_server_end_point;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The ALPN protocol name PostgreSQL uses (and direct TLS requires).
pub const ALPN: &[u8] = b"postgresql";

/// The first byte of a TLS record carrying a handshake: a client that
/// starts with it negotiates TLS directly.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Why the configured certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("tls.{key}: cannot read {path}: {error}; give the path of a PEM file")]
    Read {
        key: &'static str,
        path: String,
        error: String,
    },
    #[error("tls.client_cert_file: {0} holds no certificate; give a PEM file with the certificate chain")]
    NoCertificate(String),
    #[error("tls.client_key_file and tls.client_cert_file do not fit together: {0}")]
    Mismatch(String),
}

/// TLS for clients: the mode and, unless disabled, the acceptor.
pub struct ClientTlsSetup {
    pub mode: ClientTls,
    acceptor: Option<TlsAcceptor>,
    /// Channel binding data of the certificate (none if its signature
    /// algorithm defines none: then SCRAM-SHA-256-PLUS is not offered).
    end_point: Option<Arc<[u8]>>,
}

impl ClientTlsSetup {
    /// Loads the certificate and key `tls` names (none when TLS is off).
    pub fn load(tls: &pgsplit_config::Tls) -> Result<ClientTlsSetup, TlsConfigError> {
        let mode = tls.client_mode();
        let (acceptor, end_point) = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) if mode != ClientTls::Disable => {
                let (config, end_point) = server_config(cert, key)?;
                (Some(TlsAcceptor::from(Arc::new(config))), end_point)
            }
            _ => (None, None),
        };
        Ok(ClientTlsSetup {
            mode,
            acceptor,
            end_point,
        })
    }

    pub fn end_point(&self) -> Option<Arc<[u8]>> {
        self.end_point.clone()
    }

    /// Whether clients may negotiate TLS.
    pub fn offered(&self) -> bool {
        self.acceptor.is_some()
    }

    /// The TLS handshake on a client connection that asked for it.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let acceptor = self
            .acceptor
            .as_ref()
            .ok_or_else(|| std::io::Error::other("TLS is not configured"))?;
        acceptor.accept(tcp).await
    }
}

/// The server configuration, and the channel binding data of its certificate.
type Loaded = (rustls::ServerConfig, Option<Arc<[u8]>>);

fn server_config(cert: &Path, key: &Path) -> Result<Loaded, TlsConfigError> {
    let read = |key_name, path: &Path| {
        std::fs::read(path).map_err(|e| TlsConfigError::Read {
            key: key_name,
            path: path.display().to_string(),
            error: e.to_string(),
        })
    };
    let cert_pem = read("client_cert_file", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Read {
            key: "client_cert_file",
            path: cert.display().to_string(),
            error: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate(cert.display().to_string()));
    }
    let end_point = tls_server_end_point(&chain[0]).map(Arc::from);
    let key_pem = read("client_key_file", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsConfigError::Read {
        key: "client_key_file",
        path: key.display().to_string(),
        error: format!("no private key in it ({e})"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((config, end_point))
}
