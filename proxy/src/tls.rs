//! TLS to clients, with rustls: the certificate pgsplit presents, loaded
//! from the configured PEM files, and the handshake of either negotiation
//! (an SSLRequest answered `S`, or PostgreSQL 17's direct TLS, where the
//! client's first bytes are a TLS ClientHello with ALPN `postgresql`).

use std::path::Path;
use std::sync::Arc;

use pgsplit_config::{ClientTls, ServerTls};
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
    #[error("tls.{key}: {path} holds no certificate; give a PEM file with certificates")]
    NoCertificate { key: &'static str, path: String },
    #[error("the [tls] certificates and keys do not fit together: {0}")]
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
    let chain = read_certs("client_cert_file", cert)?;
    let end_point = tls_server_end_point(&chain[0]).map(Arc::from);
    let private = read_key("client_key_file", key)?;
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

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| TlsConfigError::Read {
        key,
        path: path.display().to_string(),
        error: e.to_string(),
    })
}

/// The certificates in a PEM file: at least one.
fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Read {
            key,
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            key,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let pem = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsConfigError::Read {
        key,
        path: path.display().to_string(),
        error: format!("no private key in it ({e})"),
    })
}

/// TLS from pgsplit to one backend: its mode and, unless disabled, the
/// connector (certificate checks as the mode says).
pub struct ServerTlsSetup {
    pub mode: ServerTls,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for ServerTlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTlsSetup({:?})", self.mode)
    }
}

impl ServerTlsSetup {
    /// Plaintext only.
    pub fn disabled() -> ServerTlsSetup {
        ServerTlsSetup {
            mode: ServerTls::Disable,
            connector: None,
        }
    }

    /// One setup per backend, in `config.backends` order (backends with
    /// the same mode share one).
    pub fn load_all(
        config: &pgsplit_config::Config,
    ) -> Result<Vec<Arc<ServerTlsSetup>>, TlsConfigError> {
        let mut made: Vec<Arc<ServerTlsSetup>> = Vec::new();
        let mut out = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let mode = b.server_tls.unwrap_or(config.tls.server_tls);
            let setup = match made.iter().find(|s| s.mode == mode) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(ServerTlsSetup::load(&config.tls, mode)?);
                    made.push(Arc::clone(&s));
                    s
                }
            };
            out.push(setup);
        }
        Ok(out)
    }

    fn load(tls: &pgsplit_config::Tls, mode: ServerTls) -> Result<ServerTlsSetup, TlsConfigError> {
        if mode == ServerTls::Disable {
            return Ok(ServerTlsSetup::disabled());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if mode.verifies() {
            let path =
                tls.server_root_cert_file
                    .as_deref()
                    .ok_or_else(|| TlsConfigError::Read {
                        key: "server_root_cert_file",
                        path: String::new(),
                        error: "not set, and verify-ca / verify-full need it".into(),
                    })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("server_root_cert_file", path)? {
                roots.add(cert).map_err(|e| TlsConfigError::Read {
                    key: "server_root_cert_file",
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?;
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?;
            Arc::new(Verify {
                inner: webpki,
                check_name: mode == ServerTls::VerifyFull,
            })
        } else {
            Arc::new(NoCheck(provider))
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&tls.server_cert_file, &tls.server_key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("server_cert_file", cert)?;
                let key = read_key("server_key_file", key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsConfigError::Mismatch(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(ServerTlsSetup {
            mode,
            connector: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
        })
    }

    /// The TLS handshake with a server that accepted SSLRequest; `host` is
    /// the name (or address) its certificate must carry for verify-full.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = self
            .connector
            .as_ref()
            .ok_or_else(|| std::io::Error::other("TLS to servers is disabled"))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::other(format!("{host:?} is not a host name: {e}")))?;
        connector.connect(name, tcp).await
    }
}

/// verify-ca and verify-full: the chain must lead to a configured root;
/// for verify-ca the host name is not compared.
#[derive(Debug)]
struct Verify {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl rustls::client::danger::ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) if !self.check_name => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// prefer and require, as libpq: encrypted, but any certificate will do
/// (the handshake's signatures are still checked).
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
